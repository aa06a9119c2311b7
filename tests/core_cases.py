"""Cases built with the pure core alone (no Temporal): the bundled policy, a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from activities.policy_file import load_policy
from workflows import evolve
from workflows.activity_models import CustomerContext
from workflows.events import Assigned, AssignmentStarted
from workflows.models import CaseInput, TimelineEntry
from workflows.state import CaseState, Opening

POLICY = load_policy()
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, within everyone's shift
ASSIGNEE = "bill-ana"
CASE = {
    "case_id": "M-1",
    "customer": {"id": "cust-1", "name": "Ada Lopez", "email": "ada@example.com"},
    "subject": "Charged twice",
    "category": "billing",
    "severity": "high",
    "opened_by": "agent-7",
}


def identified(**changes: Any) -> CaseState:
    opening = Opening()
    evolve.open_case(opening, CaseInput.model_validate({**CASE, **changes}), T0)
    ctx = CustomerContext(policy=POLICY, recent_cases=0, open_cases=0, recent_case_ids=[])
    return evolve.identify(opening, ctx, POLICY, "case-M-1:run", T0)


def assigned(state: CaseState, who: str = ASSIGNEE) -> CaseState:
    evolve.apply(state, AssignmentStarted(), T0)
    entry = TimelineEntry(seq=len(state.timeline), at=T0, what="assigned")
    evolve.apply(state, Assigned(who, entry), T0)
    return state


def with_events(state: CaseState, *events: Any) -> CaseState:
    for event in events:
        evolve.apply(state, event, T0)
    return state
