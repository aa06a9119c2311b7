"""What a case counts for operators, as a projection of its events.

`of_event`, `opened` and `late` are pure (a table tests them); `Meter` records their samples
through the workflow's metric meter, which records nothing while a history is replayed, so a
worker restart or a cache eviction never counts a case twice. Labels carry no case id and no
personal data. Histograms are durations: the exporter names them with `_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import MetricCounter, MetricHistogramTimedelta

from workflows.events import (
    Acknowledged,
    ApprovalDecided,
    ApprovalEscalated,
    Deescalated,
    Escalated,
    Event,
    Resolved,
    SlaBreached,
    SlaWarned,
    Transferred,
)
from workflows.state import CaseState, Due

COUNTERS = {
    "escalation_cases_opened_total": "Cases opened",
    "escalation_escalations_total": "Escalations, by what moved the case",
    "escalation_sla_breaches_total": "SLA deadlines passed, by tier and severity",
    "escalation_sla_warnings_total": "SLA warnings sent",
    "escalation_approvals_total": "Approval requests decided, by decision",
}
HISTOGRAMS = {  # exported as <name>_seconds
    "escalation_time_to_acknowledge": "From a tier's assignment to its acknowledgement",
    "escalation_time_to_resolve": "From opening to resolution",
    "escalation_lateness": "A deadline's firing time minus its due time",
    "escalation_approval_wait": "From an approval request to its decision",
}
# seconds; the exporter takes them per histogram (activities/metrics.py)
BUCKETS: dict[str, list[float]] = {
    "escalation_time_to_acknowledge": [15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400],
    "escalation_time_to_resolve": [300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200],
    "escalation_lateness": [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    "escalation_approval_wait": [30, 60, 300, 600, 1800, 3600, 7200, 14400, 86400],
}


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str
    value: float  # a count, or seconds for a histogram
    labels: tuple[tuple[str, str], ...] = ()


def _count(metric: str, **labels: object) -> Sample:
    return Sample(metric, 1, tuple((k, str(v)) for k, v in labels.items()))


def _seconds(metric: str, since: datetime, now: datetime, **labels: object) -> Sample:
    value = max(0.0, (now - since).total_seconds())
    return Sample(metric, value, tuple((k, str(v)) for k, v in labels.items()))


def opened(s: CaseState) -> list[Sample]:
    return [_count("escalation_cases_opened_total", severity=s.severity, department=s.department)]


def late(due: Due, now: datetime) -> list[Sample]:
    """How late a timer fired: the desk's promise is to act at the deadline."""
    return [_seconds("escalation_lateness", due.at, now, kind=due.kind)]


def escalation_kind(event: Event) -> str | None:
    match event:
        case Escalated(automatic=True):
            return "timeout"
        case Escalated(by="customer"):
            return "customer"
        case Escalated():
            return "manual"
        case ApprovalEscalated():
            return "approval_timeout"
        case Transferred():
            return "transfer"
        case Deescalated():
            return "deescalate"
    return None


def of_event(s: CaseState, event: Event, now: datetime) -> list[Sample]:
    """The samples of `event`, read from the state before it is applied."""
    out: list[Sample] = []
    if kind := escalation_kind(event):
        out.append(_count("escalation_escalations_total", kind=kind))
    match event:
        case Acknowledged() | Resolved() if not s.acknowledged and s.assignee:
            since = s.tiers[-1].entered_at if s.tiers else s.opened_at
            out.append(_seconds("escalation_time_to_acknowledge", since, now, severity=s.severity))
    match event:
        case Resolved():
            out.append(
                _seconds("escalation_time_to_resolve", s.opened_at, now, severity=s.severity)
            )
        case SlaBreached():
            out.append(_count("escalation_sla_breaches_total", tier=s.tier, severity=s.severity))
        case SlaWarned(silent=False):
            out.append(_count("escalation_sla_warnings_total"))
        case ApprovalDecided(decision=decision):
            out.append(_count("escalation_approvals_total", decision=decision))
            if s.pending is not None:
                out.append(_seconds("escalation_approval_wait", s.pending.requested_at, now))
    return out


class Meter:
    """The workflow's instruments, made on first use (most cases need few of them)."""

    def __init__(self) -> None:
        self._counters: dict[str, MetricCounter] = {}
        self._histograms: dict[str, MetricHistogramTimedelta] = {}

    def record(self, samples: list[Sample]) -> None:
        for sample in samples:
            labels = dict(sample.labels)
            if sample.metric in HISTOGRAMS:
                self._histogram(sample.metric).record(timedelta(seconds=sample.value), labels)
            else:
                self._counter(sample.metric).add(int(sample.value), labels)

    def _counter(self, name: str) -> MetricCounter:
        if name not in self._counters:
            meter = workflow.metric_meter()
            self._counters[name] = meter.create_counter(name, COUNTERS[name])
        return self._counters[name]

    def _histogram(self, name: str) -> MetricHistogramTimedelta:
        if name not in self._histograms:
            meter = workflow.metric_meter()
            self._histograms[name] = meter.create_histogram_timedelta(name, HISTOGRAMS[name])
        return self._histograms[name]
