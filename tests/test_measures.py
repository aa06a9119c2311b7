"""What a case counts for operators: a table of events and the samples they give."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from workflows import measures
from workflows.events import (
    Acknowledged,
    ApprovalDecided,
    ApprovalEscalated,
    CustomerAskedAtTop,
    Deescalated,
    Escalated,
    Resolved,
    SlaBreached,
    SlaWarned,
    Transferred,
)
from workflows.state import CaseState, Clock, Due, DueKind

from .core_cases import T0, assigned, identified, with_events
from .test_decisions import pending

LATER = T0 + timedelta(minutes=3)


def fresh() -> CaseState:
    return assigned(identified())


def acked() -> CaseState:
    return with_events(fresh(), Acknowledged("bill-ana"))


def counted(samples: list[measures.Sample]) -> dict[str, Any]:
    return {s.metric: (s.value, dict(s.labels)) for s in samples}


TABLE: list[tuple[str, Any, Any, dict[str, Any]]] = [
    (
        "first acknowledgement: time from the tier's assignment",
        fresh,
        Acknowledged("bill-ana"),
        {"escalation_time_to_acknowledge": (180.0, {"severity": "high"})},
    ),
    ("acknowledged again: nothing", acked, Acknowledged("bill-ana"), {}),
    (
        "resolved without an acknowledgement: both times",
        fresh,
        Resolved("bill-ana", "refunded"),
        {
            "escalation_time_to_acknowledge": (180.0, {"severity": "high"}),
            "escalation_time_to_resolve": (180.0, {"severity": "high"}),
        },
    ),
    (
        "a timeout",
        acked,
        Escalated(None, "ack SLA", automatic=True),
        {"escalation_escalations_total": (1, {"kind": "timeout"})},
    ),
    (
        "a person",
        acked,
        Escalated("bill-ana", "needs a supervisor"),
        {"escalation_escalations_total": (1, {"kind": "manual"})},
    ),
    (
        "the customer",
        acked,
        Escalated("customer", "customer asked: faster"),
        {"escalation_escalations_total": (1, {"kind": "customer"})},
    ),
    ("the customer at the top tier: no escalation", acked, CustomerAskedAtTop("faster"), {}),
    (
        "a transfer",
        acked,
        Transferred("bill-ana", "technical", "a bug"),
        {"escalation_escalations_total": (1, {"kind": "transfer"})},
    ),
    (
        "a de-escalation",
        acked,
        Deescalated("sup-lee", "routine"),
        {"escalation_escalations_total": (1, {"kind": "deescalate"})},
    ),
    (
        "an approval nobody answered in time",
        lambda: pending(fresh()),
        ApprovalEscalated(["sup-lee"], ["exec-holt"], LATER),
        {"escalation_escalations_total": (1, {"kind": "approval_timeout"})},
    ),
    (
        "a breach, by tier and severity",
        fresh,
        SlaBreached(Clock.ACK, T0, top_tier=False),
        {"escalation_sla_breaches_total": (1, {"tier": "2", "severity": "high"})},
    ),
    ("a warning", fresh, SlaWarned(Clock.ACK, LATER), {"escalation_sla_warnings_total": (1, {})}),
    ("a silent warning: not sent, not counted", fresh, SlaWarned(Clock.ACK, T0, silent=True), {}),
    (
        "an approval decided: the decision and the wait",
        lambda: pending(fresh()),
        ApprovalDecided("approved", "sup-lee", ""),
        {
            "escalation_approvals_total": (1, {"decision": "approved"}),
            "escalation_approval_wait": (180.0, {}),
        },
    ),
]


@pytest.mark.parametrize(("what", "state", "event", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_samples_of_an_event(what: str, state: Any, event: Any, expected: dict[str, Any]) -> None:
    assert counted(measures.of_event(state(), event, LATER)) == expected


def test_labels_carry_no_case_or_person() -> None:
    s = fresh()
    samples = measures.opened(s) + measures.of_event(s, Resolved("bill-ana", "x"), LATER)
    values = {v for sample in samples for _, v in sample.labels}
    assert values == {"high", "billing"}
    assert not values & {"M-1", "bill-ana", "cust-1", "Ada Lopez"}


def test_lateness_is_firing_time_minus_due_time() -> None:
    due = Due(at=T0, kind=DueKind.BREACH, label="ack SLA", clock=Clock.ACK, deadline=T0)
    [sample] = measures.late(due, T0 + timedelta(milliseconds=250))
    assert (sample.metric, sample.value, dict(sample.labels)) == (
        "escalation_lateness",
        0.25,
        {"kind": "breach"},
    )


def test_every_metric_has_a_description_and_histograms_have_buckets() -> None:
    names = {s.metric for row in TABLE for s in measures.of_event(row[1](), row[2], LATER)}
    names |= {"escalation_cases_opened_total", "escalation_lateness"}
    assert names == set(measures.COUNTERS) | set(measures.HISTOGRAMS)
    assert set(measures.BUCKETS) == set(measures.HISTOGRAMS)
