"""Table tests for core objects_to_delete: which resource-step objects a pass deletes (fix 3 of the issue #20
review: a delete that failed once is asked again, because the function is asked every pass)."""

from __future__ import annotations

import pytest

from conveyor.api.run import StepPhase
from conveyor.core.planner import StepState
from conveyor.core.resourcesteps import objects_to_delete

RUNNING, SUCCEEDED, FAILED, PENDING = StepPhase.RUNNING, StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.PENDING


@pytest.mark.parametrize(
    ("states", "run_over", "gone", "expected"),
    [
        # the running attempt keeps its object
        ({"tune": StepState(RUNNING, attempts=1)}, False, set(), []),
        # a step that ended: its attempt's object goes
        ({"tune": StepState(SUCCEEDED, attempts=1)}, False, set(), [("tune", 1)]),
        # ...until the shell saw it deleted (or 404)
        ({"tune": StepState(SUCCEEDED, attempts=1)}, False, {("tune", 1)}, []),
        # a delete that failed is not in `gone`: asked again on the next pass
        ({"tune": StepState(FAILED, attempts=2)}, False, {("tune", 1)}, [("tune", 2)]),
        # a retry running its third attempt: the first two attempts' objects go, not the third
        ({"tune": StepState(RUNNING, attempts=3)}, False, set(), [("tune", 1), ("tune", 2)]),
        # waiting for the retry's backoff: the ended attempt's object goes
        ({"tune": StepState(PENDING, attempts=1)}, False, set(), [("tune", 1)]),
        # never started: nothing to delete
        ({"tune": StepState(PENDING, attempts=0)}, True, set(), []),
        # the Run is over: every object goes, even one still marked running
        ({"tune": StepState(RUNNING, attempts=2)}, True, {("tune", 1)}, [("tune", 2)]),
        # fan-out items of a resource step are resource objects too
        (
            {"tune[0]": StepState(SUCCEEDED, attempts=1), "tune[1]": StepState(RUNNING, attempts=1)},
            False,
            set(),
            [("tune[0]", 1)],
        ),
        # Job steps have no object of ours to delete
        ({"train": StepState(SUCCEEDED, attempts=1)}, True, set(), []),
    ],
)
def test_objects_to_delete(
    states: dict[str, StepState], run_over: bool, gone: set[tuple[str, int]], expected: list[tuple[str, int]]
) -> None:
    assert objects_to_delete(states, {"tune"}, run_over, gone) == expected
