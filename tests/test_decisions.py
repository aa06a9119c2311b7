"""The case's decisions as a table: message x stage x actor, against the pure core, with no
Temporal server. Each row: accepted with which events, or refused with which reason."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from workflows import decisions, evolve
from workflows.events import (
    Acknowledged,
    ApprovalDecided,
    ApprovalRequested,
    CustomerAskedAtTop,
    CustomerReplied,
    Deescalated,
    Escalated,
    FeedbackGiven,
    Renotified,
    Reopened,
    Resolved,
    Transferred,
    WaitingForCustomer,
)
from workflows.messages import MESSAGES
from workflows.state import CaseState, DueKind

from .core_cases import ASSIGNEE, T0, assigned, identified, with_events


def pending(state: CaseState) -> CaseState:
    decision = decisions.decide(
        state,
        "request_approval",
        MESSAGES["request_approval"].parse(
            {"by": ASSIGNEE, "action": {"kind": "refund", "amount": 250}}
        ),
        T0,
    )
    assert isinstance(decision, list)
    return with_events(state, *decision)


def at_top_tier() -> CaseState:
    state = assigned(identified(severity="critical", category="outage"), "sup-ito")
    with_events(state, Escalated(None, "test"))
    return assigned(state, "exec-holt")


def staged(stage: str) -> Callable[[], CaseState]:
    def make() -> CaseState:
        state = assigned(identified())
        state.stage = stage  # type: ignore[assignment]
        return state

    return make


def resolved(rated: bool = False) -> CaseState:
    """Resolved by the assignee and reported up, open for the verdict for a week."""
    state = with_events(assigned(identified()), Resolved(ASSIGNEE, "Refunded"))
    with_events(state, decisions.report_up(state, T0 + timedelta(days=7)))
    return with_events(state, FeedbackGiven(4, "quick")) if rated else state


def at_tier_3() -> CaseState:
    return assigned(with_events(assigned(identified()), Escalated(None, "test")), "sup-lee")


def requiring_root_cause() -> CaseState:
    state = assigned(identified())
    state.policy = state.policy.model_copy(update={"root_cause_required": ["high", "critical"]})
    return state


STAGES: dict[str, Callable[[], CaseState | None]] = {
    "identify": lambda: None,
    "assign": identified,
    "resolve": lambda: assigned(identified()),
    "acknowledged": lambda: with_events(assigned(identified()), Acknowledged(ASSIGNEE)),
    "paused": lambda: with_events(
        assigned(identified()), WaitingForCustomer(ASSIGNEE, "Which card?")
    ),
    "approval": lambda: pending(assigned(identified())),
    "top_tier": at_top_tier,
    "report_up": staged("report_up"),
    "closed": staged("closed"),
    "resolved": resolved,
    "rated": lambda: resolved(rated=True),
    "tier_3": at_tier_3,
    "root_cause_required": requiring_root_cause,
}

REFUND_250 = {"kind": "refund", "amount": 250, "currency": "USD"}

# (stage, message, payload, expected events by type, or the refusal's text)
TABLE: list[tuple[str, str, dict[str, Any], list[type] | str]] = [
    # nothing before identify, nothing after resolve
    ("identify", "acknowledge", {"by": ASSIGNEE}, "still being identified"),
    ("identify", "customer_escalate", {"reason": "x"}, "still being identified"),
    ("report_up", "acknowledge", {"by": ASSIGNEE}, "case is report-up; it takes no more"),
    ("closed", "approve", {"by": "sup-lee"}, "case is closed; it takes no more"),
    ("closed", "customer_replied", {"message": "hi"}, "case is closed"),
    # while the next person is picked, nobody holds the case
    ("assign", "acknowledge", {"by": ASSIGNEE}, "being assigned; no one holds it yet"),
    ("assign", "resolve", {"by": ASSIGNEE, "resolution": "x"}, "no one holds it yet"),
    ("assign", "escalate", {"by": "sup-lee", "reason": "x"}, "no one holds it yet"),
    ("assign", "customer_escalate", {"reason": "x"}, "being assigned; try again"),
    # acknowledge
    ("resolve", "acknowledge", {"by": ASSIGNEE}, [Acknowledged]),
    ("resolve", "acknowledge", {"by": "bill-kim"}, "by: bill-kim is not the assignee (bill-ana)"),
    ("resolve", "acknowledge", {"by": "sup-lee"}, "by: sup-lee is not the assignee"),
    ("acknowledged", "acknowledge", {"by": ASSIGNEE}, "already acknowledged"),
    # resolve
    ("resolve", "resolve", {"by": ASSIGNEE, "resolution": "Refunded"}, [Resolved]),
    ("acknowledged", "resolve", {"by": ASSIGNEE, "resolution": "Refunded"}, [Resolved]),
    ("paused", "resolve", {"by": ASSIGNEE, "resolution": "Refunded"}, [Resolved]),
    ("approval", "resolve", {"by": ASSIGNEE, "resolution": "x"}, [ApprovalDecided, Resolved]),
    ("resolve", "resolve", {"by": "exec-holt", "resolution": "x"}, "not the assignee"),
    # escalate: the assignee or a supervisor of the tier
    ("resolve", "escalate", {"by": ASSIGNEE, "reason": "needs a lead"}, [Escalated]),
    ("resolve", "escalate", {"by": "sup-lee", "reason": "taking it"}, [Escalated]),
    ("resolve", "escalate", {"by": "exec-vance", "reason": "taking it"}, [Escalated]),
    ("resolve", "escalate", {"by": "bill-kim", "reason": "x"}, "by: bill-kim is neither"),
    ("resolve", "escalate", {"by": "sup-ito", "reason": "x"}, "neither the assignee"),
    ("top_tier", "escalate", {"by": "exec-holt", "reason": "x"}, "already at the top tier (4)"),
    # escalate with a department: a functional transfer
    (
        "resolve",
        "escalate",
        {"by": ASSIGNEE, "reason": "API", "department": "technical"},
        [Transferred],
    ),
    (
        "approval",
        "escalate",
        {"by": ASSIGNEE, "reason": "API", "department": "technical"},
        [ApprovalDecided, Transferred],
    ),
    (
        "resolve",
        "escalate",
        {"by": ASSIGNEE, "reason": "x", "department": "legal"},
        "department: unknown department 'legal'",
    ),
    (
        "resolve",
        "escalate",
        {"by": ASSIGNEE, "reason": "x", "department": "billing"},
        "department: case is already with billing",
    ),
    (
        "top_tier",
        "escalate",
        {"by": "exec-holt", "reason": "x", "department": "billing"},
        [Transferred],
    ),
    # request_approval: only above the requester's own authority
    ("resolve", "request_approval", {"by": ASSIGNEE, "action": REFUND_250}, [ApprovalRequested]),
    (
        "resolve",
        "request_approval",
        {"by": ASSIGNEE, "action": {**REFUND_250, "amount": 80}},
        "action.amount: 80.00 USD is within bill-ana's own authority",
    ),
    (
        "resolve",
        "request_approval",
        {"by": ASSIGNEE, "action": {**REFUND_250, "currency": "JPY"}},
        "action.currency: JPY is not one of",
    ),
    ("resolve", "request_approval", {"by": "sup-lee", "action": REFUND_250}, "not the assignee"),
    ("approval", "request_approval", {"by": ASSIGNEE, "action": REFUND_250}, "already pending"),
    # approve / reject: only someone whose authority covers it
    ("approval", "approve", {"by": "sup-lee", "note": "ok"}, [ApprovalDecided]),
    ("approval", "approve", {"by": "exec-vance"}, [ApprovalDecided]),
    ("approval", "reject", {"by": "sup-mara", "reason": "no"}, [ApprovalDecided]),
    (
        "approval",
        "approve",
        {"by": "bill-omar"},
        "by: bill-omar is not authorised to decide this (approvers: sup-lee, sup-mara, "
        "exec-holt, exec-vance)",
    ),
    ("approval", "approve", {"by": ASSIGNEE}, "not authorised"),
    ("approval", "reject", {"by": "sup-ito", "reason": "no"}, "not authorised"),
    ("resolve", "approve", {"by": "sup-lee"}, "no approval is pending"),
    ("assign", "reject", {"by": "sup-lee", "reason": "no"}, "no approval is pending"),
    # waiting on the customer
    ("resolve", "wait_for_customer", {"by": ASSIGNEE, "question": "?"}, [WaitingForCustomer]),
    ("paused", "wait_for_customer", {"by": ASSIGNEE, "question": "?"}, "already waiting"),
    ("resolve", "wait_for_customer", {"by": "sup-lee", "question": "?"}, "not the assignee"),
    ("paused", "customer_replied", {"message": "Visa 4242"}, [CustomerReplied]),
    ("resolve", "customer_replied", {"message": "hi"}, "not waiting for the customer"),
    ("assign", "customer_replied", {"message": "hi"}, "not waiting for the customer"),
    # the customer asks to escalate
    ("resolve", "customer_escalate", {"reason": "third call"}, [Escalated]),
    ("paused", "customer_escalate", {"reason": "third call"}, [Escalated]),
    ("top_tier", "customer_escalate", {"reason": "third call"}, [CustomerAskedAtTop]),
    # root cause: from the policy's list; required where the policy says so
    (
        "resolve",
        "resolve",
        {"by": ASSIGNEE, "resolution": "x", "root_cause": "billing_error"},
        [Resolved],
    ),
    (
        "resolve",
        "resolve",
        {"by": ASSIGNEE, "resolution": "x", "root_cause": "gremlins"},
        "root_cause: 'gremlins' is not one of billing_error",
    ),
    (
        "root_cause_required",
        "resolve",
        {"by": ASSIGNEE, "resolution": "x"},
        "root_cause: required for high cases",
    ),
    (
        "root_cause_required",
        "resolve",
        {"by": ASSIGNEE, "resolution": "x", "root_cause": "process_gap"},
        [Resolved],
    ),
    # after the resolution: one rating per resolution, reopen by the customer or the resolver
    ("resolved", "customer_feedback", {"score": 5, "comment": "thanks"}, [FeedbackGiven]),
    ("rated", "customer_feedback", {"score": 1}, "score: this resolution was already rated"),
    ("resolve", "customer_feedback", {"score": 5}, "case is not resolved"),
    ("closed", "customer_feedback", {"score": 5}, "case is closed"),
    ("resolved", "reopen", {"by": "customer", "reason": "charged again"}, [Reopened]),
    ("rated", "reopen", {"by": ASSIGNEE, "reason": "fix did not hold"}, [Reopened]),
    ("resolved", "reopen", {"by": "sup-lee", "reason": "x"}, "by: only the customer or"),
    ("resolve", "reopen", {"by": "customer", "reason": "x"}, "only a resolved case"),
    ("closed", "reopen", {"by": "customer", "reason": "x"}, "case is closed"),
    ("resolved", "acknowledge", {"by": ASSIGNEE}, "case is resolved; reopen it"),
    ("resolved", "customer_escalate", {"reason": "x"}, "case is resolved; ask to reopen"),
    # de-escalation: a supervisor at the case's tier hands it down; not from the lowest
    ("tier_3", "deescalate", {"by": "sup-lee", "reason": "approval granted"}, [Deescalated]),
    ("tier_3", "deescalate", {"by": "sup-mara", "reason": "x"}, [Deescalated]),
    ("tier_3", "deescalate", {"by": "bill-ana", "reason": "x"}, "by: bill-ana is not a supervisor"),
    ("tier_3", "deescalate", {"by": "sup-ito", "reason": "x"}, "not a supervisor at tier 3"),
    ("resolve", "deescalate", {"by": ASSIGNEE, "reason": "x"}, "lowest desk tier (2)"),
    ("top_tier", "deescalate", {"by": "exec-holt", "reason": "x"}, [Deescalated]),
    ("assign", "deescalate", {"by": "sup-lee", "reason": "x"}, "no one holds it yet"),
]


@pytest.mark.parametrize(
    ("stage", "name", "payload", "expected"),
    TABLE,
    ids=[f"{s}-{n}-{p.get('by', 'customer')}-{i}" for i, (s, n, p, _) in enumerate(TABLE)],
)
def test_decision(stage: str, name: str, payload: dict[str, Any], expected: Any) -> None:
    state = STAGES[stage]()
    before = copy.deepcopy(state)
    decision = decisions.decide(state, name, MESSAGES[name].parse(payload), T0)
    assert state == before, "a decision changes nothing"
    if isinstance(expected, str):
        assert isinstance(decision, decisions.Refused), decision
        assert expected in decision.reason
    else:
        assert not isinstance(decision, decisions.Refused), decision.reason
        assert [type(e) for e in decision] == expected


ACTORS = ["bill-ana", "bill-kim", "sup-lee", "sup-ito", "exec-holt", "nobody"]
PAYLOADS: dict[str, Callable[[str], dict[str, Any]]] = {
    "acknowledge": lambda by: {"by": by},
    "resolve": lambda by: {"by": by, "resolution": "done"},
    "escalate": lambda by: {"by": by, "reason": "x"},
    "request_approval": lambda by: {"by": by, "action": REFUND_250},
    "approve": lambda by: {"by": by},
    "reject": lambda by: {"by": by, "reason": "no"},
    "wait_for_customer": lambda by: {"by": by, "question": "?"},
    "customer_replied": lambda by: {"message": f"from {by}"},
    "customer_escalate": lambda by: {"reason": f"from {by}"},
    "deescalate": lambda by: {"by": by, "reason": "x"},
    "customer_feedback": lambda by: {"score": 3, "comment": f"from {by}"},
    "reopen": lambda by: {"by": by, "reason": "x"},
}


def test_every_message_stage_and_actor_is_decided_and_applies_cleanly() -> None:
    """The whole cross product: each decision is a refusal with a reason or events that
    apply to the state without error; only accepted ones change it."""
    assert set(PAYLOADS) == set(MESSAGES)
    started = time.perf_counter()
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}
    for make in STAGES.values():
        for name, payload in PAYLOADS.items():
            for actor in ACTORS:
                state = make()
                before = copy.deepcopy(state)
                decision = decisions.decide(state, name, MESSAGES[name].parse(payload(actor)), T0)
                assert state == before
                if isinstance(decision, decisions.Refused):
                    assert decision.reason
                    outcomes["refused"] += 1
                    continue
                assert state is not None and decision
                outcomes["accepted"] += 1
                for event in decision:
                    evolve.apply(state, event, T0 + timedelta(minutes=1))
                assert state != before
                assert decisions.accepted(decision, state)
    assert outcomes["accepted"] > 40 and outcomes["refused"] > 200
    assert time.perf_counter() - started < 5  # pure functions: no server behind them


def test_clocks_come_due_in_order() -> None:
    """Warning before breach, ack before resolve; an acknowledged case keeps only its resolve
    clock; a paused one only the hard cap."""
    state = assigned(identified())  # high, tier 2: ack 1h (warn 45m), resolve 1d (warn 18h)
    due = decisions.next_due(state)
    assert (due.kind.value, due.clock, due.at) == ("warning", "ack", T0 + timedelta(minutes=45))
    assert due.label == "Tier 2 ack SLA warning (75% of 1h)"
    events = decisions.on_due(state, due, due.at)
    evolve.apply(state, events[0], due.at)
    due = decisions.next_due(state)
    assert (due.kind.value, due.clock, due.label) == ("breach", "ack", "Tier 2 ack SLA (1h)")
    late = decisions.on_due(state, due, due.at)
    assert [type(e).__name__ for e in late] == ["SlaBreached", "Escalated"]
    fresh = with_events(assigned(identified()), Acknowledged(ASSIGNEE))
    due = decisions.next_due(fresh)
    assert (due.kind.value, due.clock) == ("customer_update", None)  # 4h, before the 18h warning
    paused = with_events(fresh, WaitingForCustomer(ASSIGNEE, "?"))
    assert decisions.next_due(paused).kind.value == "hard_cap"


def test_a_warning_due_after_its_deadline_is_silent() -> None:
    state = assigned(identified())
    due = decisions.next_due(state)
    assert due.deadline is not None
    (warned,) = decisions.on_due(state, due, due.deadline + timedelta(seconds=5))
    assert warned.silent  # type: ignore[union-attr]
    (loud,) = decisions.on_due(state, due, due.deadline + timedelta(seconds=5), False)
    assert not loud.silent  # type: ignore[union-attr]


def test_an_unacknowledged_assignee_is_paged_on_schedule_until_ack_or_pause() -> None:
    s = assigned(identified(severity="critical"))
    s.renotify_every = 300
    assert s.paged_at is not None
    due = decisions.next_due(s)
    assert due.kind is DueKind.RENOTIFY and due.at == s.paged_at + timedelta(seconds=300)
    events = decisions.on_due(s, due, due.at + timedelta(seconds=2))
    assert events == [Renotified(ASSIGNEE, 1, due.at)]
    with_events(s, *events)
    assert decisions.next_due(s).at == due.at + timedelta(seconds=300)  # from the schedule
    paused = copy.deepcopy(s)
    with_events(paused, WaitingForCustomer(ASSIGNEE, "Which card?"))
    assert decisions.next_due(paused).kind is not DueKind.RENOTIFY
    with_events(s, Acknowledged(ASSIGNEE))
    assert decisions.next_due(s).kind is not DueKind.RENOTIFY
