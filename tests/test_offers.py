"""Which actions the console offers a person: asked of the case's own decisions, as a table."""

from __future__ import annotations

import pytest

from workflows.events import Acknowledged, ApprovalRequested, Escalated, Resolved
from workflows.models import Action
from workflows.offers import offered
from workflows.state import CaseState

from .core_cases import ASSIGNEE, T0, assigned, identified, with_events

REFUND = Action(kind="refund", amount=250, currency="USD")


def fresh() -> CaseState:
    return assigned(identified())  # high billing case at tier 2, held by bill-ana


def acknowledged() -> CaseState:
    return with_events(fresh(), Acknowledged(ASSIGNEE))


def awaiting_approval() -> CaseState:
    return with_events(
        acknowledged(),
        ApprovalRequested(ASSIGNEE, REFUND, ["sup-lee", "sup-mara", "exec-holt"], ["sup-lee"], T0),
    )


def at_tier_3() -> CaseState:
    return assigned(with_events(acknowledged(), Escalated(ASSIGNEE, "needs a lead")), "sup-lee")


def resolved() -> CaseState:
    s = with_events(acknowledged(), Resolved(ASSIGNEE, "Refunded"))
    s.stage, s.finish = "resolved", None
    return s


TABLE = [
    # (case, person, what they are offered)
    (
        fresh,
        ASSIGNEE,
        ["acknowledge", "wait_for_customer", "resolve", "escalate", "transfer", "request_approval"],
    ),
    (fresh, "sup-lee", ["escalate", "transfer"]),  # supervises tier 2 of billing
    (fresh, "bill-omar", []),  # a colleague: sees the case, may do nothing to it
    (fresh, "tech-raj", []),
    (fresh, "exec-holt", ["escalate", "transfer"]),
    (
        acknowledged,
        ASSIGNEE,
        ["wait_for_customer", "resolve", "escalate", "transfer", "request_approval"],
    ),
    (awaiting_approval, "sup-lee", ["escalate", "transfer", "approve", "reject"]),
    (awaiting_approval, "exec-holt", ["escalate", "transfer", "approve", "reject"]),
    (awaiting_approval, ASSIGNEE, ["wait_for_customer", "resolve", "escalate", "transfer"]),
    (awaiting_approval, "bill-omar", []),
    (at_tier_3, "sup-mara", ["deescalate"]),  # a supervisor at the case's tier
    (at_tier_3, "exec-vance", ["escalate", "transfer"]),
    (resolved, ASSIGNEE, ["reopen"]),
    (resolved, "sup-lee", []),
]


@pytest.mark.parametrize(("case", "person", "expected"), TABLE)
def test_offers_come_from_the_decisions(case: object, person: str, expected: list[str]) -> None:
    state = case()  # type: ignore[operator]
    assert offered(state, person, T0) == expected


def test_nothing_is_offered_before_the_case_is_identified() -> None:
    assert offered(None, ASSIGNEE, T0) == []
