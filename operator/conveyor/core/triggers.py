"""Pipeline triggers: when new data under an S3 prefix, or a deployment's drift, starts a Run.

Pure decisions over what the shell observed. Both kinds follow the retraining rules of
ModelDeployments: never two Runs of one trigger at once (a trigger waits while its last Run is
unfinished, and what it saw meanwhile is still new afterwards), and nothing is lost or repeated
across operator restarts because what a trigger has answered lives in the Pipeline's status.

S3: objects are new when modified after the watermark (or at the watermark's second under a key
not answered yet). The first look records the watermark without starting a Run: a trigger starts
Runs for data that arrives after it was created, not for what was already there.
Drift: a Run starts once per drift episode of the named ModelDeployment (an episode begins when
its drift score crosses the threshold, `status.drift.aboveSince`) while its Drifting condition is
True.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from conveyor.api.pipeline import TriggerStatus

MAX_WATERMARK_KEYS = 100


@dataclass(frozen=True)
class ObjectSeen:
    key: str
    modified: datetime


@dataclass(frozen=True)
class TriggerDecision:
    fire: bool
    """Start a Run now."""
    status: TriggerStatus
    """The trigger's status after this look (to be written with the new Run's name when firing)."""
    reason: str = ""


def _after(status: TriggerStatus, obj: ObjectSeen) -> bool:
    if status.watermark is None:
        return True
    return obj.modified > status.watermark or (
        obj.modified == status.watermark and obj.key not in status.watermark_keys
    )


def s3_decision(
    status: TriggerStatus, objects: Sequence[ObjectSeen], last_run_finished: bool, now: datetime
) -> TriggerDecision:
    """Whether new objects under the prefix start a Run, and the watermark that answers them."""
    newest = max((o.modified for o in objects), default=None)
    if status.watermark is None and status.last_fired_at is None:
        keys = sorted(o.key for o in objects if o.modified == newest)[:MAX_WATERMARK_KEYS] if newest else []
        first = status.model_copy(update={"watermark": newest or now, "watermark_keys": keys})
        return TriggerDecision(False, first)
    new = [o for o in objects if _after(status, o)]
    if not new or not last_run_finished:
        return TriggerDecision(False, status)
    assert newest is not None
    at_newest = sorted(o.key for o in objects if o.modified == newest)[:MAX_WATERMARK_KEYS]
    answered = status.model_copy(update={"watermark": newest, "watermark_keys": at_newest, "last_fired_at": now})
    shown = ", ".join(o.key for o in sorted(new, key=lambda o: o.key)[:3])
    more = f" and {len(new) - 3} more" if len(new) > 3 else ""
    return TriggerDecision(True, answered, f"{len(new)} new object(s): {shown}{more}")


def drift_decision(
    status: TriggerStatus,
    drifting: bool,
    episode: datetime | None,
    last_run_finished: bool,
    now: datetime,
    deployment: str,
) -> TriggerDecision:
    """Whether a drift episode of the deployment starts a Run (once per episode)."""
    if not drifting or episode is None or not last_run_finished:
        return TriggerDecision(False, status)
    if status.episode is not None and episode <= status.episode:
        return TriggerDecision(False, status)
    fired = status.model_copy(update={"episode": episode, "last_fired_at": now})
    return TriggerDecision(True, fired, f"model deployment {deployment} reports drift since {episode.isoformat()}")
