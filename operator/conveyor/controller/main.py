"""The kopf shell: the only importer of kopf. Handlers only trigger reconciles; all decisions are in conveyor.core.

Triggers of a Run's pass: a new Run or a change of its spec, a Job of it ending, a step pod of it
stopping, and the pass's own request for a later one (retries' backoff, timeouts, and a resync in case
something was missed), which also covers every unfinished Run found when the operator starts. The Run,
Job and pod handlers are coroutines that only feed the watch cache and queue the pass (`Requeue`, a work
queue with its own workers): they never wait for a pass, so the watches, and so the cache, keep up however
busy the passes are. Pipelines' and ModelDeployments' passes run on queues of their own, on the Runs' control
model (controller.passes). kopf's own bookkeeping lives in annotations under
conveyor.dev, so `status` is entirely ours.

Everything the handlers act through (clients, reconcilers, queues, the watch cache) is one `Operator`,
built by the start-up handler and handed to every handler in kopf's `memo`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf

from conveyor.api.base import GROUP, VERSION
from conveyor.controller import artifact_gc, metrics
from conveyor.controller.config import OperatorConfig, load_config
from conveyor.controller.events import EventRecorder
from conveyor.controller.modeldeployments import ModelDeploymentReconciler
from conveyor.controller.pipelines import PipelineReconciler
from conveyor.controller.requeue import Requeue
from conveyor.controller.runs import RunReconciler
from conveyor.kube.cluster import Cluster, load_kube_config, pod_job_name, pod_stopped
from conveyor.kube.discovery import missing_resources
from conveyor.kube.watchcache import WatchCache
from conveyor.kube.workloads import Workloads
from conveyor.manifests.names import LABEL_MODEL_DEPLOYMENT, LABEL_RUN
from conveyor.storage.s3 import S3Store

log = logging.getLogger("conveyor.operator")
CONFIG: OperatorConfig = load_config()
"""Read once at import."""
STANDALONE = False
"""Set by the entry point: one replica, whose watches (and so the watch cache) never pause."""


@dataclass(frozen=True)
class Operator:
    """Everything the handlers act through, built once at start-up and handed to them in kopf's memo (no
    module-level singletons). It holds clients, queues and caches; all Run, Pipeline and deployment state
    lives in the objects themselves."""

    config: OperatorConfig
    standalone: bool
    watched: WatchCache
    """Unfinished Runs, step Jobs and pods, Pipelines and ModelDeployments as the watches last showed them
    (passes read them instead of GETting and LISTing)."""
    events: EventRecorder
    runs: RunReconciler
    run_queue: Requeue
    """Every pass of every Run: owed now by an event, or later by the Run's last pass."""
    pipelines: PipelineReconciler
    pipeline_queue: Requeue
    """Every pass of every Pipeline: owed now by an event, or later by its last pass (its next scheduled time,
    or the resync for a schedule or triggers to keep)."""
    serving: ModelDeploymentReconciler
    serving_queue: Requeue
    """Every pass of every ModelDeployment: owed now by an event, or later by its last pass (the resync, or
    sooner when the core says a decision falls due)."""
    cluster: Cluster
    store: S3Store
    stopped: threading.Event = field(default_factory=threading.Event)
    """Set at clean-up: ends the artifact collector."""

    @classmethod
    def build(cls, config: OperatorConfig, standalone: bool) -> Operator:
        """The clients, reconcilers and queues; nothing runs until `start`."""
        cluster = Cluster(load_kube_config())
        store = S3Store(config.s3_bucket, config.s3_prefix, config.s3_endpoint)
        watched = WatchCache()
        events = EventRecorder(cluster.event)

        def run_pass(namespace: str, name: str) -> None:
            runs.reconcile(namespace, name)

        def pipeline_pass(namespace: str, name: str) -> None:
            pipelines.reconcile(namespace, name)

        def serving_pass(namespace: str, name: str) -> None:
            serving.reconcile(namespace, name)

        run_queue = Requeue(run_pass, workers=config.reconcile_workers)
        pipeline_queue = Requeue(pipeline_pass, workers=4)
        serving_queue = Requeue(serving_pass, workers=4)
        runs = RunReconciler(cluster, store, config, watched=watched, requeue=run_queue.after, events=events)
        pipelines = PipelineReconciler(
            Cluster(load_kube_config()), config, requeue=pipeline_queue.after, watched=watched, events=events
        )
        serving_api = load_kube_config()
        serving = ModelDeploymentReconciler(
            Cluster(serving_api),
            Workloads(serving_api),
            config,
            store=store,
            watched=watched,
            requeue=serving_queue.after,
            events=events,
        )
        return cls(
            config=config,
            standalone=standalone,
            watched=watched,
            events=events,
            runs=runs,
            run_queue=run_queue,
            pipelines=pipelines,
            pipeline_queue=pipeline_queue,
            serving=serving,
            serving_queue=serving_queue,
            cluster=cluster,
            store=store,
        )

    def start(self) -> None:
        self.run_queue.start()
        self.pipeline_queue.start()
        self.serving_queue.start()
        artifact_gc.start(self.cluster, self.store, self.config, self.stopped)
        metrics.serve(self.config.metrics_port)

    def stop(self) -> None:
        self.stopped.set()
        self.run_queue.stop()
        self.pipeline_queue.stop()
        self.serving_queue.stop()
        self.events.stop()


def of(memo: kopf.Memo) -> Operator:
    """The operator the start-up handler put in kopf's memo (each object's memo is a shallow copy of it)."""
    op = memo.get("operator")
    if not isinstance(op, Operator):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return op


@kopf.on.startup()
def wait_for_the_api(**_: Any) -> None:
    """Start watching only once the API server serves every resource we watch: kopf checks which exist once,
    after the start-up handlers, and never watches one that was missing then (an API server restarting)."""
    missing = missing_resources(load_kube_config())
    if missing:
        raise kopf.TemporaryError(f"the API server does not serve {', '.join(missing)} yet", delay=1)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # the reconciler posts its own Events, on transitions only
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8
    settings.peering.lifetime = CONFIG.peering_lifetime_seconds
    op = Operator.build(CONFIG, standalone=STANDALONE)
    op.start()
    memo["operator"] = op
    log.info("started: bucket %s, step image %s", CONFIG.s3_bucket, CONFIG.step_image)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    op = memo.get("operator")
    if isinstance(op, Operator):
        op.stop()


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    """Not finished, or finished without its record stored yet (the store was down when it finished)."""
    done = status.get("phase") in ("Succeeded", "Failed", "Cancelled")
    return not done or (bool(status.get("startedAt")) and not status.get("recordUri"))


@kopf.on.event(GROUP, VERSION, "runs")
async def run_changed(
    type: str,
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None
    op = of(memo)
    op.pipelines.run_event(type, dict(body))  # a Pipeline's scheduled and triggered Runs, finished or not
    if type == "DELETED":
        op.runs.forget(namespace, name)
        op.run_queue.forget(namespace, name)
        return
    op.watched.run_event(type, dict(body))
    if type == "ADDED" and op.standalone:
        op.runs.born_watched(namespace, name)
    # Our own status writes come back as events too; a pass is only owed when the Run is new or its spec
    # changed (cancel, approvals), or when this process has not looked at it yet (found unfinished at
    # start-up). Progress is driven by Job and pod events, and each pass asks for the next one it needs.
    spec_changed = status.get("observedGeneration") != meta.get("generation")
    known = op.run_queue.knows(namespace, name)
    if _unfinished(status) and (spec_changed or not status.get("startedAt") or not known):
        op.run_queue.now(namespace, name)


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN: kopf.PRESENT})
async def pod_changed(
    type: str,
    namespace: str | None,
    labels: kopf.Labels,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A step pod that stopped: plan at once, when its container ends, rather than when the kubelet reports the pod's
    phase (~1 s later) or the Job controller marks its Job done (later still)."""
    assert namespace is not None
    op = of(memo)
    pod = dict(body)
    job = pod_job_name(pod)
    seen_stopped = job is not None and op.watched.pod_stopped(namespace, labels[LABEL_RUN], job)
    changed = op.watched.pod_event(type, pod)
    # Only the event that first shows it stopped, also from a watch's (re)listing after an outage: a stopped pod
    # gets further updates (its phase, its Job's tracking finalizer removed, conditions) that tell a pass nothing new.
    if type != "DELETED" and changed and pod_stopped(pod) and not seen_stopped and not meta.get("deletionTimestamp"):
        op.run_queue.now(namespace, labels[LABEL_RUN])


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RUN: kopf.PRESENT})
async def job_changed(
    type: str, namespace: str | None, meta: kopf.Meta, status: kopf.Status, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Only a Job reaching its end matters (its creation is ours, its progress is its pod's), once: later
    updates of an ended Job change nothing a pass reads. A Job that disappears while running is noticed by
    the Run's resync; Jobs found at start-up are read by each unfinished Run's first pass."""
    assert namespace is not None
    op = of(memo)
    changed = op.watched.job_event(type, dict(body))
    ended = any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if type == "DELETED" or not changed or not ended:
        return
    for owner in meta.get("ownerReferences", []):
        # The pass owed for its pod's stop has read the step's end already (the Job ends ~1 s after its pod).
        if owner.get("kind") == "Run" and not op.watched.pod_stopped(namespace, owner["name"], meta["name"]):
            op.run_queue.now(namespace, owner["name"])


# ---------------------------------------------------------------- pipelines
# An event on a Pipeline whose spec changed (or that is new, or not yet looked at by this process) re-validates
# it (its Ready condition) and acts on its schedule and triggers. Passes run on their own work queue, and each
# asks for the next: at the Pipeline's next scheduled time, so a Run is created at its minute, and at the
# resync for a schedule or triggers to keep (Runs that finished: a time Forbid held back, history limits; a
# trigger's next look). The handler only feeds the watch cache and queues.


@kopf.on.event(GROUP, VERSION, "pipelines")
async def pipeline_changed(
    type: str,
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None
    op = of(memo)
    op.watched.pipeline_event(type, dict(body))
    op.watched.object_event("pipelines", type, dict(body))  # whole, status too: what its passes read
    if type == "DELETED":
        op.pipelines.forget(namespace, name)
        op.pipeline_queue.forget(namespace, name)
        return
    # Our own status writes come back as events too: only a new spec, or one this process has not looked at.
    if status.get("observedGeneration") != meta.get("generation") or not op.pipeline_queue.knows(namespace, name):
        op.pipeline_queue.now(namespace, name)


# ---------------------------------------------------------------- model deployments
# An event on a ModelDeployment whose spec changed (or that is new, or not yet looked at by this process) and a
# change in one of its Deployments each queue a pass; the pass itself decides everything, and asks for the
# next one (the resync, which notices canary analysis, drift and accuracy windows and a Pipeline's newly
# blessed model, or sooner: a canary step's pause ending). The handlers only feed the watch cache and queue.


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def model_deployment_changed(
    type: str,
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None
    op = of(memo)
    if type == "DELETED":
        op.serving.forget(namespace, name)
        op.serving_queue.forget(namespace, name)
        return
    op.watched.object_event("modeldeployments", type, dict(body))
    # Our own status writes come back as events too: only a new spec, or one this process has not looked at.
    if status.get("observedGeneration") != meta.get("generation") or not op.serving_queue.knows(namespace, name):
        op.serving_queue.now(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT})
async def server_deployment_changed(
    type: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    assert namespace is not None
    if type != "DELETED":
        of(memo).serving_queue.now(namespace, labels[LABEL_MODEL_DEPLOYMENT])
