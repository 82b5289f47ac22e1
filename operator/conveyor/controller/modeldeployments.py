"""ModelDeployments, as far as the operator carries them out today: validated and answered honestly.

Serving (Deployment, Service, autoscaling, rollouts, drift) is not built yet. Rather than ignore the
objects, the operator validates each one and sets Ready=False with reason NotSupportedYet, so
`kubectl get md` and `kubectl wait` tell the truth.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from conveyor.core.status import set_condition
from conveyor.core.validation import issues_from_pydantic
from conveyor.kube.cluster import Cluster


def reconcile_model_deployment(cluster: Cluster, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    now = datetime.now(UTC)
    generation = meta.get("generation")
    old = ModelDeploymentStatus.model_validate(body.get("status") or {})
    try:
        ModelDeployment.model_validate(body)
    except ValidationError as e:
        reason, message = "InvalidSpec", "; ".join(str(i) for i in issues_from_pydantic(e))
    else:
        reason, message = "NotSupportedYet", "serving models is not supported yet by the operator"
    condition = Condition(
        type="Ready",
        status=ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )
    new = old.model_copy(
        update={"observed_generation": generation, "conditions": set_condition(old.conditions, condition)}
    )
    if new.to_wire() != old.to_wire():
        cluster.patch_status("modeldeployments", meta["namespace"], meta["name"], new.to_wire())
        if old.observed_generation != generation:
            cluster.event(body, "ModelDeployment", "Warning", reason, message)
