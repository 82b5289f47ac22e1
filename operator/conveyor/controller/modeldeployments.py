"""The ModelDeployment shell: observe, ask the core what to do, apply, report.

Passes run on the operator's work queue on the same control model as Runs (controller.passes): the
ModelDeployment is read from the watch cache, its status is written only over the version the pass read
and folded back into the cache, a write refused as stale redoes the pass on a fresh read (the monitoring
windows a refused pass consumed are kept for the redo, its Events never posted), and each pass asks for
the next one at the resync or sooner, when the core says a decision falls due (a canary step's pause
ending, a drift window filling, a retraining rate limit running out).

One pass: resolve the model the source names (core.modelsource), observe the serving Deployments
and ask their pods for metrics and refusals (controller.scrape), plan the rollout
(core.rollout.plan_rollout), apply the owned objects (kube.workloads), then watch the current
model (core.monitoring: drift from the servers' input counters, live accuracy from sampled
predictions joined with fed-back labels) and start a retraining Run when the core says so.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from conveyor.api.base import GROUP, VERSION, Condition, ConditionStatus
from conveyor.api.modeldeployment import (
    LiveAccuracy,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RetrainingStatus,
    ServedModel,
)
from conveyor.api.pipeline import Pipeline, PipelineSpec
from conveyor.api.run import Run
from conveyor.api.store import StoreConfig
from conveyor.components.modelio import ArtifactMetadata, read_metadata
from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.locks import Coalescer
from conveyor.controller.passes import HeldObjects, Requeue, StatusObjects, timed_pass
from conveyor.controller.pipelines import LABEL_PIPELINE, LABEL_TRIGGER
from conveyor.controller.scrape import (
    ServerSamples,
    W,
    category_totals,
    feature_totals,
    fetch_metrics,
    readiness_error,
    version_stats,
    window_delta,
)
from conveyor.core import modelsource, monitoring
from conveyor.core.monitoring import (
    CategoryWindow,
    FeatureReference,
    FeatureWindow,
    Reference,
    Verdict,
    category_reference,
)
from conveyor.core.rollout import (
    DeploymentView,
    Event,
    ServingObservation,
    ServingPlan,
    VersionStats,
    plan_rollout,
    version_of,
)
from conveyor.core.status import set_condition
from conveyor.core.validation import issues_from_pydantic
from conveyor.kube.cluster import Cluster, ClusterRefused
from conveyor.kube.timestamps import parse_timestamp
from conveyor.kube.watchcache import WatchCache
from conveyor.kube.workloads import Workloads
from conveyor.manifests import serving
from conveyor.manifests.names import (
    ANNOTATION_MODEL_DIGEST,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_MODEL_VERSION,
    LABEL_TRACK,
    label_value,
)
from conveyor.storage.factory import open_store
from conveyor.storage.s3 import download_object
from conveyor.storage.store import ArtifactStore, StoreUnavailable

log = logging.getLogger("conveyor.serving")

FINISHED = ("Succeeded", "Failed", "Cancelled")
MONITORING_RETENTION_OBJECTS = 2000
CACHE_TRUST_RESYNCS = 6
"""A cached ModelDeployment is read afresh (GET) once it has not been seen for this many resyncs: a steady one
changes rarely, so trusting its copy for one resync only would make nearly every resync pass a GET; a watch
that missed an event (a deletion among them) is trusted no longer than this."""
MODEL_MAX_BYTES = 2 * 1024**3
"""The largest model outside the artifact store whose metadata is read by downloading it (no sidecar)."""


@dataclass
class _Watch:
    """In-memory monitoring state of one ModelDeployment (rebuilt after a restart, nothing lost but one window)."""

    counters: dict[str, dict[str, FeatureWindow]] = field(default_factory=dict)
    """pod uid → cumulative per-feature sums last seen."""
    category_counters: dict[str, dict[str, CategoryWindow]] = field(default_factory=dict)
    """pod uid → cumulative per-category counts last seen, by categorical feature."""
    window: dict[str, FeatureWindow] = field(default_factory=dict)
    categories: dict[str, CategoryWindow] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    """Each feature's latest verdict, kept while its next window fills."""
    version: str | None = None
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    labels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def fork(self) -> _Watch:
        """A copy a pass folds into, kept only once the pass's status is written: a pass whose write is refused
        as stale leaves the windows it measured for its redo."""
        return replace(
            self,
            counters=dict(self.counters),
            category_counters=dict(self.category_counters),
            window=copy.deepcopy(self.window),
            categories=copy.deepcopy(self.categories),
            verdicts=dict(self.verdicts),
            predictions=dict(self.predictions),
            labels=dict(self.labels),
        )


class ModelDeploymentReconciler:
    """One pass over one ModelDeployment. Thread-safe per object; different ones reconcile concurrently."""

    def __init__(
        self,
        cluster: Cluster,
        workloads: Workloads,
        config: OperatorConfig,
        store: ArtifactStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        watched: WatchCache | None = None,
        requeue: Requeue | None = None,
        events: Callable[[dict[str, Any], str, str, str, str], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.workloads = workloads
        self.config = config
        self._store = store
        """The artifact store: models' sidecars and the deployments' monitoring logs (the operator's own; opened
        from `config` when first needed only where none is given)."""
        self.clock = clock
        self.requeue = requeue
        """Told after every pass when the ModelDeployment next wants one, whatever started the pass."""
        self.post_event = events
        """Posts an Event (the operator's is asynchronous: `controller.events.EventRecorder`); else the cluster's."""
        held = HeldObjects(watched, "modeldeployments") if watched is not None else None
        self._objects = StatusObjects(
            cluster, "modeldeployments", "ModelDeployment", held, CACHE_TRUST_RESYNCS * config.resync_seconds
        )
        self.watched = watched
        self._coalescer = Coalescer()
        self._watch: dict[tuple[str, str], _Watch] = {}
        self._metadata: dict[str, ArtifactMetadata] = {}
        self._guard = threading.Lock()

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._watch.pop((namespace, name), None)
        self._coalescer.forget(namespace, name)
        if self.watched is not None:
            self.watched.forget_object("modeldeployments", namespace, name)
        metrics.forget_model_deployment(namespace, name)

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass; returns seconds until the ModelDeployment wants another (None: it is gone)."""
        return self._coalescer.run(namespace, name, lambda: self._timed_pass(namespace, name))

    def _timed_pass(self, namespace: str, name: str) -> float | None:
        return timed_pass(
            "ModelDeployment",
            namespace,
            name,
            lambda fresh: self._pass(namespace, name, fresh),
            resync=self.config.resync_seconds,
            requeue=self.requeue,
        )

    def _event(self, body: dict[str, Any], event: Event) -> None:
        post = self.post_event or self.cluster.event
        post(body, "ModelDeployment", event.type, event.reason, event.message)

    # ------------------------------------------------------------------ one pass

    def _pass(self, namespace: str, name: str, fresh: bool = False) -> float | None:
        body = self._objects.read(namespace, name, fresh)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        now = self.clock()
        generation = body["metadata"].get("generation")
        old = ModelDeploymentStatus.model_validate(body.get("status") or {})
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError as e:
            message = "; ".join(str(i) for i in issues_from_pydantic(e))
            self._report_invalid(body, old, message, now, generation)
            return self.config.resync_seconds
        spec = md.spec
        with self._guard:
            watch = self._watch.get((namespace, name)) or _Watch()
        watch = watch.fork()
        notes: list[Event] = []
        """Events the pass decided, posted only once its status is written."""
        desired, unresolved = self._resolve(namespace, spec, old)
        observed, pods = self._observe(namespace, name, spec)
        plan = plan_rollout(spec, old, desired, observed, now, generation, unresolved)
        status = plan.status
        try:
            self._apply(body, spec, plan, canary_seen=observed.canary is not None)
        except ClusterRefused as e:
            status.conditions = set_condition(
                status.conditions,
                Condition(
                    type="Ready",
                    status=ConditionStatus.FALSE,
                    reason="Refused",
                    message=str(e),
                    last_transition_time=now,
                    observed_generation=generation,
                ),
            )
        due = [plan.wake_at]
        if spec.monitoring is not None and status.current is not None:
            self._monitor(body, spec, status, pods, now, watch, notes)
            due.append(monitoring.decision_due(spec.monitoring, status.drift, status.retraining, now))
        self._write(body, old, status)
        with self._guard:
            self._watch[(namespace, name)] = watch
        metrics.observe_model_deployment(namespace, name, status)
        for event in notes + plan.events:
            self._event(body, event)
        wait = self.config.resync_seconds
        for at in due:
            if at is not None and at > now:  # a time already past is no reason to hurry (a canary short of requests)
                wait = min(wait, max(0.5, (at - self.clock()).total_seconds()))
        return wait

    def _report_invalid(
        self, body: dict[str, Any], old: ModelDeploymentStatus, message: str, now: datetime, gen: int | None
    ) -> None:
        cond = Condition(
            type="Ready",
            status=ConditionStatus.FALSE,
            reason="InvalidSpec",
            message=message,
            last_transition_time=now,
            observed_generation=gen,
        )
        new = old.model_copy(update={"observed_generation": gen, "conditions": set_condition(old.conditions, cond)})
        if new.to_wire() != old.to_wire():
            self._objects.write_status(body, new.to_wire())
            if old.observed_generation != gen:
                self._event(body, Event("Warning", "InvalidSpec", message))

    def _write(self, body: dict[str, Any], old: ModelDeploymentStatus, status: ModelDeploymentStatus) -> None:
        """Only what changed, as a merge patch over the version the pass read (StaleObject if it moved on)."""
        if status.to_wire() != old.to_wire():
            self._objects.write_status(body, merge_patch(old.to_wire(), status.to_wire()))

    # ------------------------------------------------------------------ source

    def _pipeline_spec(self, namespace: str, name: str) -> PipelineSpec:
        body = self.watched.pipeline(namespace, name) if self.watched is not None else None
        if body is None:
            body = self.cluster.get_custom("pipelines", namespace, name)
        if body is None:
            raise modelsource.Unresolved(f"pipeline {name!r} does not exist")
        try:
            return Pipeline.model_validate(body).spec
        except ValidationError as e:
            raise modelsource.Unresolved(f"pipeline {name!r} is invalid: {e.error_count()} problem(s)") from None

    def _resolve(
        self, namespace: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
    ) -> tuple[ServedModel | None, str]:
        source = spec.model
        try:
            if source.uri is not None:
                assert source.digest is not None
                return ServedModel(uri=source.uri, digest=source.digest, version=version_of(source.digest)), ""
            if source.run is not None:
                run = self.cluster.get_custom("runs", namespace, source.run.name)
                if run is None:
                    raise modelsource.Unresolved(f"run {source.run.name!r} does not exist")
                parsed = Run.model_validate(run)
                pipeline_spec = parsed.spec.pipeline_spec
                if pipeline_spec is None and parsed.spec.pipeline_ref is not None:
                    pipeline_spec = self._pipeline_spec(namespace, parsed.spec.pipeline_ref.name)
                return modelsource.run_output(run, source.run, pipeline_spec), ""
            assert source.pipeline is not None
            if not source.pipeline.follow and status.current is not None:
                return status.current, ""
            pipeline_spec = self._pipeline_spec(namespace, source.pipeline.name)
            runs = [
                r
                for r in self.cluster.list_custom("runs", namespace)
                if (r.get("status") or {}).get("pipeline") == source.pipeline.name
            ]
            return modelsource.latest_blessed(source.pipeline.name, pipeline_spec, runs), ""
        except modelsource.Unresolved as e:
            return None, str(e)

    # ------------------------------------------------------------------ observe

    def _observe(
        self, namespace: str, name: str, spec: ModelDeploymentSpec
    ) -> tuple[ServingObservation, dict[str, ServerSamples]]:
        pods = [
            p
            for p in self.workloads.pods(namespace, f"{LABEL_MODEL_DEPLOYMENT}={label_value(name)}")
            if not p["metadata"].get("deletionTimestamp")
        ]
        port = spec.server.port
        samples: dict[str, ServerSamples] = {}
        for pod in pods:
            ip = pod.get("status", {}).get("podIP")
            if ip and pod.get("status", {}).get("phase") == "Running":
                got = fetch_metrics(ip, port)
                if got is not None:
                    samples[pod["metadata"]["uid"]] = got
        views = {track: self._view(namespace, name, track, pods, port) for track in (serving.STABLE, serving.CANARY)}
        canary = views[serving.CANARY]
        stats = (
            version_stats(list(samples.values()), version_of(canary.model_digest))
            if canary is not None and canary.model_digest
            else VersionStats()
        )
        return ServingObservation(views[serving.STABLE], canary, stats), samples

    def _view(
        self, namespace: str, md: str, track: str, pods: list[dict[str, Any]], port: int
    ) -> DeploymentView | None:
        dep = self.workloads.get("apps/v1", "Deployment", namespace, serving.deployment_name(md, track))
        if dep is None:
            return None
        template = dep["spec"]["template"]
        digest = template["metadata"].get("annotations", {}).get(ANNOTATION_MODEL_DIGEST)
        st = dep.get("status", {})
        conditions = {c["type"]: c for c in st.get("conditions", [])}
        progressing = conditions.get("Progressing", {})
        rejection = None
        if digest:
            for pod in pods:
                labels = pod["metadata"].get("labels", {})
                if labels.get(LABEL_TRACK) != track or labels.get(LABEL_MODEL_VERSION) != version_of(digest):
                    continue
                ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in pod.get("status", {}).get("conditions", [])
                )
                ip = pod.get("status", {}).get("podIP")
                if not ready and ip:
                    rejection = readiness_error(ip, port, md)
                    if rejection:
                        break
        return DeploymentView(
            model_digest=digest,
            replicas=int(dep["spec"].get("replicas", 1)),
            ready=int(st.get("readyReplicas", 0)),
            updated=int(st.get("updatedReplicas", 0)),
            total=int(st.get("replicas", 0)),
            generation_observed=int(st.get("observedGeneration", 0)) >= int(dep["metadata"].get("generation", 0)),
            deadline_exceeded=progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded",
            rejection=rejection,
        )

    # ------------------------------------------------------------------ apply

    def _apply(self, body: dict[str, Any], spec: ModelDeploymentSpec, plan: ServingPlan, canary_seen: bool) -> None:
        """Make the objects the plan wants; `canary_seen`: this pass's GET found a canary Deployment (none
        found, none to delete: a DELETE every pass otherwise, answered 404)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if plan.stable_model is None:
            return
        common = serving.ServerSettings(
            image=self.config.server_image,
            command=self.config.server_command,
            credentials_secret=self.config.credentials_secret,
            s3_endpoint=self.config.s3_endpoint,
            monitoring=serving.monitoring_uri(self.config.s3_bucket, self._prefix(), ns, name),
        )
        stable = serving.server_deployment(
            body, spec, plan.stable_model, common, track=serving.STABLE, replicas=spec.autoscaling.min_replicas
        )
        self.workloads.apply(stable, keep=("replicas",))
        if plan.canary_model is not None:
            canary = serving.server_deployment(
                body, spec, plan.canary_model, common, track=serving.CANARY, replicas=plan.canary_replicas
            )
            self.workloads.apply(canary)
        elif canary_seen:
            self.workloads.delete("apps/v1", "Deployment", ns, serving.deployment_name(name, serving.CANARY))
        self.workloads.apply(serving.service(body, spec))
        self.workloads.apply(serving.autoscaler(body, spec))
        if spec.pod_disruption_budget:
            self.workloads.apply(serving.disruption_budget(body))
        else:
            self.workloads.delete("policy/v1", "PodDisruptionBudget", ns, name)
        if self.workloads.has_group("monitoring.coreos.com/v1"):
            self.workloads.apply(serving.service_monitor(body))

    def _prefix(self) -> str:
        p = self.config.s3_prefix.strip("/")
        return f"{p}/" if p else ""

    # ------------------------------------------------------------------ monitoring

    def _artifact_store(self) -> ArtifactStore:
        if self._store is None:
            self._store = open_store(
                StoreConfig(
                    kind="s3",
                    bucket=self.config.s3_bucket,
                    prefix=self.config.s3_prefix,
                    endpoint=self.config.s3_endpoint,
                )
            )
        return self._store

    def model_metadata(self, model: ServedModel) -> ArtifactMetadata | None:
        """The served model's metadata (its training profile is the drift reference, its task scores live
        accuracy), read once per digest from the sidecar beside the model in the artifact store: one small
        GET, never the model itself. A model without a sidecar (stored before sidecars existed, or outside
        the store) is downloaded as before and its metadata read from the artifact."""
        cached = self._metadata.get(model.digest)
        if cached is not None:
            return cached
        try:
            meta = self._sidecar_metadata(model)
            if meta is None:
                meta = self._downloaded_metadata(model)
        except Exception as e:
            log.warning("could not read the metadata of model %s: %s", version_of(model.digest), e)
            return None
        self._metadata[model.digest] = meta
        return meta

    def _sidecar_metadata(self, model: ServedModel) -> ArtifactMetadata | None:
        store = self._artifact_store()
        if model.uri != store.uri_of(model.digest):
            return None  # served from outside the artifact store: no sidecar of ours beside it
        document = store.get_sidecar(model.digest)
        if document is None:
            return None
        try:
            return ArtifactMetadata.model_validate(document)
        except ValidationError as e:
            log.warning(
                "the sidecar of model %s is not its metadata, reading the model: %s", version_of(model.digest), e
            )
            return None

    def _downloaded_metadata(self, model: ServedModel) -> ArtifactMetadata:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            store = self._artifact_store()
            if model.uri == store.uri_of(model.digest):
                store.get_file(model.digest, path)  # through the protocol, digest verified
            else:
                download_object(model.uri, path, self.config.s3_endpoint, max_bytes=MODEL_MAX_BYTES)
            return read_metadata(path)

    def _monitor(
        self,
        body: dict[str, Any],
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        samples: dict[str, ServerSamples],
        now: datetime,
        watch: _Watch,
        notes: list[Event],
    ) -> None:
        assert spec.monitoring is not None and status.current is not None
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        version = version_of(status.current.digest)
        if watch.version != version:
            watch.counters, watch.window, watch.version = {}, {}, version
            watch.category_counters, watch.categories, watch.verdicts = {}, {}, {}
        model_meta = self.model_metadata(status.current)
        if spec.monitoring.drift is not None and model_meta is not None:
            reference = reference_profile(model_meta)
            for uid, pod in samples.items():
                _fold(watch.window, watch.counters, uid, feature_totals(pod, version), reference, FeatureWindow)
                _fold(
                    watch.categories,
                    watch.category_counters,
                    uid,
                    category_totals(pod, version),
                    reference,
                    CategoryWindow,
                )
            for seen in (watch.counters, watch.category_counters):
                for uid in set(seen) - set(samples):
                    del seen[uid]
            judged = monitoring.judge(reference, {**watch.window, **watch.categories})
            if judged:
                # Only judged features start a new window; the others keep filling, with their last verdict.
                watch.verdicts.update(judged)
                for f in judged:
                    watch.window.pop(f, None)
                    watch.categories.pop(f, None)
                measured = monitoring.summarize(watch.verdicts)
                assert measured is not None
                threshold = spec.monitoring.drift.threshold
                status.drift = monitoring.next_drift(status.drift, measured, threshold, now)
                status.drift_score = status.drift.score
            was = next((c for c in status.conditions if c.type == "Drifting"), None)
            report = monitoring.drift_report(spec.monitoring.drift, status.drift, was, now, meta.get("generation"))
            status.conditions = set_condition(status.conditions, report.condition)
            if report.event is not None:
                notes.append(report.event)
        accuracy: LiveAccuracy | None = None
        if spec.monitoring.min_accuracy is not None or spec.monitoring.retrain is not None:
            status.live_accuracy = self._live_accuracy(ns, name, watch, model_meta)
            accuracy = next((a for a in status.live_accuracy if a.version == version), None)
        self._maybe_retrain(body, spec, status, accuracy, now, notes)

    def _live_accuracy(
        self, ns: str, name: str, watch: _Watch, model_meta: ArtifactMetadata | None
    ) -> list[LiveAccuracy]:
        """From the deployment's monitoring log under the store's monitoring/<namespace>/<name>/, read through
        the operator's one store (the log's object keys are relative to the store's prefix, as the servers
        write them)."""
        store = self._artifact_store()
        log_dir = f"monitoring/{ns}/{name}/"
        try:
            for kind, cache in (("predictions/", watch.predictions), ("feedback/", watch.labels)):
                keys = [o.key for o in store.list_objects(log_dir + kind)][-MONITORING_RETENTION_OBJECTS:]
                for key in keys:
                    if key in cache:
                        continue
                    raw = store.get_raw(key)
                    cache[key] = [json.loads(line) for line in (raw or b"").decode().splitlines() if line.strip()]
                for gone in set(cache) - set(keys):
                    del cache[gone]
        except StoreUnavailable as e:
            log.warning("monitoring log of %s/%s unavailable: %s", ns, name, e)
        predictions = [p for lines in watch.predictions.values() for p in lines]
        labels = [lb for lines in watch.labels.values() for lb in lines]
        task = model_meta.task if model_meta is not None else None
        return monitoring.live_accuracy(predictions, labels, task)[-20:]

    def _maybe_retrain(
        self,
        body: dict[str, Any],
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        accuracy: LiveAccuracy | None,
        now: datetime,
        notes: list[Event],
    ) -> None:
        assert spec.monitoring is not None
        trigger = spec.monitoring.retrain
        if trigger is None:
            return
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        last = status.retraining
        finished = True
        if last is not None:
            run = self.cluster.get_custom("runs", ns, last.run)
            finished = run is None or (run.get("status") or {}).get("phase") in FINISHED
        decision = monitoring.retrain_decision(spec.monitoring, status.drift, accuracy, last, finished, now)
        if decision is None:
            return
        # Never two at once, even across an operator restart between creating a Run and recording it.
        selector = f"{LABEL_MODEL_DEPLOYMENT}={label_value(name)},{LABEL_TRIGGER}"
        for run in self.cluster.list_runs(ns, selector):
            if (run.get("status") or {}).get("phase") not in FINISHED:
                status.retraining = RetrainingStatus(
                    run=run["metadata"]["name"],
                    reason=run["metadata"]["labels"].get(LABEL_TRIGGER, decision.reason),
                    message=decision.message,
                    at=parse_timestamp(run["metadata"].get("creationTimestamp")) or now,
                )
                if last is None or last.run != status.retraining.run:
                    # Created by a pass whose status write never landed (refused as stale, or the operator
                    # stopped): this pass records it, and says so.
                    notes.append(self._retraining_started(trigger.pipeline, status.retraining))
                return
        run_body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Run",
            "metadata": {
                "generateName": f"{trigger.pipeline[:40]}-retrain-",
                "namespace": ns,
                "labels": {
                    LABEL_PIPELINE: label_value(trigger.pipeline),
                    LABEL_MODEL_DEPLOYMENT: label_value(name),
                    LABEL_TRIGGER: decision.reason,
                },
            },
            "spec": {"pipelineRef": {"name": trigger.pipeline}, "parameters": trigger.parameters},
        }
        created = self.cluster.create_generated_run(run_body)
        status.retraining = RetrainingStatus(run=created, reason=decision.reason, message=decision.message, at=now)
        notes.append(self._retraining_started(trigger.pipeline, status.retraining))

    @staticmethod
    def _retraining_started(pipeline: str, retraining: RetrainingStatus) -> Event:
        return Event(
            "Normal", "RetrainingStarted", f"started run {retraining.run} of pipeline {pipeline}: {retraining.message}"
        )


def _fold(
    window: dict[str, W],
    seen: dict[str, dict[str, W]],
    uid: str,
    totals: dict[str, W],
    reference: Mapping[str, Reference],
    empty: Callable[[], W],
) -> None:
    """Add what one pod's counters gained since they were last seen to the window of each watched feature."""
    for f, w in window_delta(totals, seen.get(uid)).items():
        if f in reference:
            window.setdefault(f, empty()).add(w)
    seen[uid] = totals


def reference_profile(meta: ArtifactMetadata) -> dict[str, Reference]:
    """What drift compares each training feature with, from the profile saved with the model: mean
    and std of a numeric feature, the top categories' shares of a categorical one (the server counts
    the same categories). Text features and features with no present training value are not watched."""
    out: dict[str, Reference] = {}
    for p in meta.profile or []:
        if p.kind == "numeric" and p.mean is not None and p.std is not None:
            out[p.name] = FeatureReference(p.mean, p.std)
        elif p.kind == "categorical" and p.count > 0:
            out[p.name] = category_reference([(c.value, c.frequency) for c in p.top])
    return out


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: removed keys become null."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {k: merge_patch(old.get(k), v) for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
