"""The whole desk as one discrete-event simulation over a virtual clock.

Every case runs through the same pure core as the worker's (`workflows/evolve`,
`workflows/decisions`, `workflows/rules`): what the desk controls is recomputed under the
policy given; what it does not is kept as it was scripted: each case's opening and what
people and customers did, and when. An act goes to whoever holds the role at its time (the
assignee, an approver the policy asks); one the case refuses then (it was already resolved,
say) is counted and dropped. Assignment sees every simulated case's load at each moment and
picks as the worker does (least open cases, then round-robin, on shift, with the skill).
"""

from __future__ import annotations

import gc
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from workflows import acts, decisions, evolve, rules
from workflows.activity_models import CustomerContext
from workflows.events import Assigned, AssignmentStarted
from workflows.messages import MESSAGES
from workflows.models import CaseInput, TimelineEntry
from workflows.policy import Policy
from workflows.state import CaseState, Due, Opening


@dataclass(frozen=True, slots=True)
class Act:
    """What a person or the customer did at `at`: a message as the case takes it, `by` the
    role's placeholder where the simulation names whoever holds it then."""

    ASSIGNEE: ClassVar[str] = "$assignee"
    APPROVER: ClassVar[str] = "$approver"

    at: datetime
    name: str
    payload: dict[str, Any]
    person: str | None = None  # who decided an approval, if the replay's approvers include them


@dataclass(slots=True)
class Scripted:
    """One case as the simulation takes it: its opening and its people's acts; the policy
    it ran with (a run under each case's own policy) and its customer's earlier openings
    outside the simulated set (for severity raises on repeat cases)."""

    case: CaseInput
    opened_at: datetime
    acts: list[Act]
    policy: Policy | None = None
    earlier: list[datetime] = field(default_factory=list)


@dataclass(slots=True)
class CaseRun:
    """What one case did in a run, for the comparison."""

    case_id: str
    department: str
    severity: str
    outcome: str | None
    final_tier: int
    opened_at: datetime
    closed_at: datetime | None
    resolved_at: datetime | None
    escalations: int  # by the policy (timeouts)
    manual_escalations: int
    breaches: Counter[str]
    warnings: int
    tier_seconds: dict[int, float]
    approvals: list[tuple[str, str]]  # (decision, by)
    customer_updates: int
    messages: int
    refused_acts: int
    policy_lines: list[tuple[str, int | None, datetime]]  # (what, tier, at) made by the policy
    escalated_to: list[tuple[int, datetime]] = field(default_factory=list)  # by the policy
    state: CaseState | None = None  # the whole case, when the run keeps it (to save it)
    tiers: tuple[int, ...] = ()  # every tier it went through


@dataclass(slots=True)
class DeskRun:
    """A run of the whole desk under one policy."""

    policy_version: str
    cases: list[CaseRun]
    load_peak: dict[str, int]
    load_mean: dict[str, float]
    events: int


# the lines the policy writes by itself, which a run under a case's own policy reproduces
MADE = {
    "escalated",
    "ack SLA warning",
    "resolve SLA warning",
    "ack SLA breached",
    "resolve SLA breached",
    "hard cap reached",
    "customer updated",
    "re-notified",
    "closed",
}

_OPEN, _ACT, _DUE = 0, 1, 2  # at the same instant: openings, then people, then the clocks


@dataclass
class _Desk:
    policy: Policy
    horizon: datetime
    own: bool
    scripted: list[Scripted]
    keep: bool
    states: list[CaseState | None] = field(default_factory=list)
    version: list[int] = field(default_factory=list)
    load: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    area: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    since: dict[str, datetime] = field(default_factory=dict)
    last: dict[str, datetime] = field(default_factory=dict)
    holder: list[str | None] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    sent: list[Counter[str]] = field(default_factory=list)
    heap: list[tuple[datetime, int, int, int, int]] = field(default_factory=list)
    due: list[Due | None] = field(default_factory=list)  # each case's next timer
    results: list[CaseRun | None] = field(default_factory=list)  # filled as cases close
    events: int = 0

    def hold(self, i: int, person: str | None, now: datetime) -> None:
        """Case `i` is now held by `person` (None: nobody): the loads move."""
        before = self.holder[i]
        if before == person:
            return
        for who, step in ((before, -1), (person, 1)):
            if who is None:
                continue
            if who in self.since:
                self.area[who] += self.load[who] * (now - self.since[who]).total_seconds()
            self.since[who] = now
            self.load[who] += step
            self.peak[who] = max(self.peak[who], self.load[who])
        self.holder[i] = person


def simulate(
    scripted: list[Scripted],
    policy: Policy,
    end: datetime | None = None,
    own: bool = False,
    keep: bool = False,
) -> DeskRun:
    """Run every case under `policy` (`own`: under the policy each case ran with, where it
    has one) until it closes or `end` (default: 60 days after the last opening, past any
    hard cap); `keep` each case's whole state in its result."""
    ordered = sorted(range(len(scripted)), key=lambda i: (scripted[i].opened_at, i))
    last = max((c.opened_at for c in scripted), default=None)
    horizon = end or ((last + timedelta(days=60)) if last else datetime.now().astimezone())
    desk = _Desk(policy, horizon, own, scripted, keep)
    n = len(scripted)
    desk.states, desk.version, desk.holder = [None] * n, [0] * n, [None] * n
    desk.refused, desk.sent = [0] * n, [Counter() for _ in range(n)]
    desk.due, desk.results = [None] * n, [None] * n
    recent: dict[str, list[datetime]] = defaultdict(list)
    for order, i in enumerate(ordered):
        c = scripted[i]
        recent[c.case.customer.id].extend(c.earlier)
        heapq.heappush(desk.heap, (c.opened_at, _OPEN, order, i, 0))
        for k, act in enumerate(c.acts):
            heapq.heappush(desk.heap, (act.at, _ACT, order, i, k))
    collecting = gc.isenabled()
    gc.disable()  # a month of cases is millions of objects the collector would walk again
    try:
        _loop(desk, recent)
    finally:
        if collecting:
            gc.enable()
    for person, since in desk.since.items():
        desk.area[person] += desk.load[person] * (horizon - since).total_seconds()
    span = (horizon - min((c.opened_at for c in scripted), default=horizon)).total_seconds()
    runs = [desk.results[i] or _result(desk, scripted[i], i) for i in range(n)]
    return DeskRun(
        policy_version=policy.version,
        cases=runs,
        load_peak=dict(desk.peak),
        load_mean={p: a / span for p, a in desk.area.items()} if span > 0 else {},
        events=desk.events,
    )


def _loop(desk: _Desk, recent: dict[str, list[datetime]]) -> None:
    """Take the events in time order until none is left before the horizon."""
    while desk.heap:
        now, kind, _order, i, arg = heapq.heappop(desk.heap)
        if now > desk.horizon:
            return
        desk.events += 1
        if kind == _OPEN:
            _open(desk, desk.scripted[i], i, now, recent)
        elif kind == _ACT:
            _act(desk, desk.scripted[i].acts[arg], i, now)
        elif arg == desk.version[i]:
            s, due = desk.states[i], desk.due[i]
            if s is not None and due is not None:
                for event in decisions.on_due(s, due, now):
                    evolve.apply(s, event, now)
                _settle(desk, i, now)


def _open(
    desk: _Desk, c: Scripted, i: int, now: datetime, recent: dict[str, list[datetime]]
) -> None:
    policy = c.policy if desk.own and c.policy is not None else desk.policy
    opening = Opening()
    evolve.open_case(opening, c.case, now)
    window = now - timedelta(seconds=policy.severity_raise.repeat_window)
    earlier = [t for t in recent[c.case.customer.id] if t >= window]
    recent[c.case.customer.id].append(now)
    ctx = CustomerContext.model_construct(  # the policy is valid already: no re-check
        policy=policy, recent_cases=len(earlier), open_cases=0, recent_case_ids=[]
    )
    desk.states[i] = evolve.identify(opening, ctx, policy, f"sim-{c.case.case_id}", now)
    _settle(desk, i, now)


def _act(desk: _Desk, act: Act, i: int, now: datetime) -> None:
    s = desk.states[i]
    if s is None:
        return
    payload = dict(act.payload)
    if payload.get("by") == Act.ASSIGNEE:
        payload["by"] = s.assignee or "nobody"
    elif payload.get("by") == Act.APPROVER:
        asked = s.pending.approvers if s.pending else []
        first = s.pending.notified[0] if s.pending and s.pending.notified else "nobody"
        payload["by"] = act.person if act.person in asked else first
    msg = MESSAGES[act.name].parse(payload)
    decision = decisions.decide(s, act.name, msg, now)
    if isinstance(decision, decisions.Refused):
        desk.refused[i] += 1
        return
    acts.applied(s, act.name, msg, decision, lambda event: evolve.apply(s, event, now))
    _settle(desk, i, now)


def _settle(desk: _Desk, i: int, now: datetime) -> None:
    """After a change: assign if the case needs it, report up when it finished, drain its
    outbox, and set its next timer."""
    s = desk.states[i]
    assert s is not None
    if s.needs_assign and s.finish is None:
        _assign(desk, s, i, now)
    if s.finish is not None and s.stage not in ("resolved", "closed"):
        s.stage = "report_up"
        evolve.apply(s, decisions.report_up(s, decisions.reopen_until(s, now)), now)
        if s.stage != "resolved":  # else open for the customer's verdict until the window ends
            s.stage = "closed"
    elif s.stage == "resolved" and s.window_closed:
        s.stage, s.closed_at = "closed", now
    _, outbox = evolve.take_records(s)
    for message in outbox:
        desk.sent[i][message.template or ""] += 1
    desk.version[i] += 1
    if s.stage == "closed":  # what the comparison needs, and the state goes
        desk.hold(i, None, now)
        desk.results[i] = _result(desk, desk.scripted[i], i)
        desk.states[i], desk.due[i] = None, None
        return
    due = desk.due[i] = decisions.next_due(s)
    at = max(due.at, now)
    if at <= desk.horizon:
        heapq.heappush(desk.heap, (at, _DUE, 0, i, desk.version[i]))


def _assign(desk: _Desk, s: CaseState, i: int, now: datetime) -> None:
    policy = s.policy
    evolve.apply(s, AssignmentStarted(), now)
    people = rules.people_at(policy, s.department, s.tier)
    eligible = rules.candidates(people, s.skill, policy.timezone, now, s.exclude)
    if not eligible:
        return  # nobody works that tier: the case waits, as the worker's would
    ids = [p.id for p in eligible]
    loads = {pid: desk.load[pid] - (1 if desk.holder[i] == pid else 0) for pid in ids}
    chosen = s.prefer if s.prefer in ids else rules.pick_assignee(ids, loads, desk.last)
    desk.last[chosen] = now
    seq = len(s.timeline)
    entry = TimelineEntry(seq=seq, at=now, what="assigned", by=None, tier=s.tier)
    evolve.apply(s, Assigned(chosen, entry), now)
    desk.sent[i]["assigned"] += 1  # the assignment's own notice to the assignee
    desk.hold(i, chosen, now)


def _result(desk: _Desk, c: Scripted, i: int) -> CaseRun:
    s = desk.states[i]
    assert s is not None
    lines = s.timeline
    entered = {v.entered_at: v.tier for v in s.tiers}
    resolved = [e.at for e in lines if e.what == "resolved"]
    tier_seconds: dict[int, float] = defaultdict(float)
    end = resolved[-1] if resolved and s.finish else (s.closed_at or desk.horizon)
    for visit in s.tiers:  # a tier's time ends at its leaving, or the resolution
        left = min(visit.left_at or end, end) if visit.entered_at <= end else visit.entered_at
        tier_seconds[visit.tier] += (left - visit.entered_at).total_seconds()
    return CaseRun(
        case_id=c.case.case_id,
        department=s.department,
        severity=s.severity,
        outcome=s.finish,
        final_tier=s.tier,
        opened_at=s.opened_at,
        closed_at=s.closed_at,
        tier_seconds=dict(tier_seconds),
        messages=sum(desk.sent[i].values()),
        refused_acts=desk.refused[i],
        escalated_to=[
            (entered.get(e.at, e.tier or 0), e.at)
            for e in lines
            if e.what == "escalated" and e.by is None
        ],
        state=s if desk.keep else None,
        tiers=tuple(sorted({v.tier for v in s.tiers})),
        **line_figures(lines),
    )


def line_figures(lines: Iterable[Any]) -> dict[str, Any]:
    """What a case's timeline says, as the comparison counts it: the same for a simulated
    case's lines and a recorded case's rows (both have what, by, tier, at)."""
    lines = list(lines)
    resolved = [e.at for e in lines if e.what == "resolved"]
    return {
        "resolved_at": resolved[-1] if resolved else None,
        "escalations": sum(1 for e in lines if e.what == "escalated" and e.by is None),
        "manual_escalations": sum(1 for e in lines if e.what == "escalated" and e.by is not None),
        "breaches": Counter(e.what.split()[0] for e in lines if e.what.endswith("SLA breached")),
        "warnings": sum(1 for e in lines if e.what.endswith("SLA warning")),
        "approvals": [
            (e.what.removeprefix("approval "), e.by or "")
            for e in lines
            if e.what.startswith("approval ") and e.what not in NOT_DECISIONS
        ],
        "customer_updates": sum(1 for e in lines if e.what == "customer updated"),
        "policy_lines": [(e.what, e.tier, e.at) for e in lines if e.by is None and e.what in MADE],
    }


NOT_DECISIONS = {"approval requested", "approval escalated"}
