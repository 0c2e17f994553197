"""The metric table sits below the orchestrator: its copy of the Plan's status
vocabulary must stay the orchestrator's ``SolveStatus``."""

from optim.results import SolveStatus
from replicas.metric_table import CLOSED_LABELS, PLAN_STATUSES


def test_plan_status_vocabulary_is_solve_status() -> None:
    assert set(PLAN_STATUSES) == {s.value for s in SolveStatus}
    assert CLOSED_LABELS["status"] == frozenset(PLAN_STATUSES)
