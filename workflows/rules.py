"""Every decision a case makes, as pure functions of the policy and the case's facts.

No I/O, no clock, no randomness: the workflow passes `now` in, so these are replay-safe and
unit-tested without Temporal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from workflows.models import SEVERITIES, Action, EscalationType, Severity
from workflows.policy import Person, Policy, TierPolicy
from workflows.wording import fmt_duration

# --- identify -------------------------------------------------------------------------------


def raised_severity(
    policy: Policy, severity: Severity, vip: bool, recent_cases: int
) -> tuple[Severity, list[str]]:
    """Severity after the policy's raises: one step for a VIP, one for a repeat escalation."""
    steps, reasons = 0, []
    if vip and policy.severity_raise.vip:
        steps += 1
        reasons.append("VIP customer")
    if recent_cases >= policy.severity_raise.repeat_cases:
        steps += 1
        reasons.append(
            f"{recent_cases} earlier escalations within "
            f"{fmt_duration(policy.severity_raise.repeat_window)}"
        )
    index = min(SEVERITIES.index(severity) + steps, len(SEVERITIES) - 1)
    return SEVERITIES[index], reasons


def route(policy: Policy, category: str) -> tuple[str, str | None]:
    """Category -> (department key, preferred skill)."""
    chosen = policy.routing.get(category.lower(), policy.default_route)
    return chosen.department, chosen.skill


def start_tier(policy: Policy, severity: Severity) -> int:
    return policy.start_tier[severity]


def tier_policy(policy: Policy, level: int) -> TierPolicy:
    for t in policy.tiers:
        if t.level == level:
            return t
    raise KeyError(f"no tier {level} in policy {policy.version}")


def top_tier(policy: Policy) -> int:
    return policy.tiers[-1].level


def next_tier(policy: Policy, level: int) -> int | None:
    levels = [t.level for t in policy.tiers]
    i = levels.index(level)
    return levels[i + 1] if i + 1 < len(levels) else None


def escalation_type_at_start(policy: Policy, level: int) -> EscalationType:
    """Starting above the first desk tier means the case went up the chain of authority."""
    return "hierarchical" if level > policy.tiers[0].level else "functional"


@dataclass(frozen=True)
class Clocks:
    """Absolute SLA instants for one tier visit."""

    ack_by: datetime
    resolve_by: datetime
    ack_warn_at: datetime
    resolve_warn_at: datetime


def clocks(policy: Policy, level: int, severity: Severity, start: datetime) -> Clocks:
    t = tier_policy(policy, level)
    ack, res = t.ack[severity], t.resolve[severity]
    ratio = policy.warning_ratio
    return Clocks(
        ack_by=sla_add(policy, severity, start, ack),
        resolve_by=sla_add(policy, severity, start, res),
        ack_warn_at=sla_add(policy, severity, start, ack * ratio),
        resolve_warn_at=sla_add(policy, severity, start, res * ratio),
    )


def resumed(
    policy: Policy, severity: Severity, c: Clocks, paused_at: datetime, now: datetime
) -> Clocks:
    """The clocks after a pause: each instant keeps the SLA time it had left when paused."""

    def moved(at: datetime) -> datetime:
        if not business_clock(policy, severity):
            return at + (now - paused_at)
        return sla_add(policy, severity, now, sla_left(policy, severity, paused_at, at))

    return Clocks(
        ack_by=moved(c.ack_by),
        resolve_by=moved(c.resolve_by),
        ack_warn_at=moved(c.ack_warn_at),
        resolve_warn_at=moved(c.resolve_warn_at),
    )


def business_clock(policy: Policy, severity: Severity) -> bool:
    return policy.sla_clock.get(severity, "calendar") == "business"


def sla_add(policy: Policy, severity: Severity, start: datetime, seconds: float) -> datetime:
    """The instant `seconds` of SLA time after `start`, on this severity's clock."""
    if not business_clock(policy, severity):
        return start + timedelta(seconds=seconds)
    left = seconds
    for open_at, close_at in _business_windows(policy, start):
        span = (close_at - open_at).total_seconds()
        if left <= span:
            return open_at + timedelta(seconds=left)
        left -= span
    raise AssertionError("unreachable: business windows never end")


def sla_left(policy: Policy, severity: Severity, now: datetime, deadline: datetime) -> float:
    """Seconds of SLA time from `now` to `deadline` on this severity's clock (>= 0)."""
    if deadline <= now:
        return 0.0
    if not business_clock(policy, severity):
        return (deadline - now).total_seconds()
    total = 0.0
    for open_at, close_at in _business_windows(policy, now):
        if open_at >= deadline:
            break
        total += (min(close_at, deadline) - open_at).total_seconds()
    return total


def _business_windows(policy: Policy, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Working windows (UTC) from `start` on, the first one cut at `start`."""
    bh = policy.business_hours
    zone = ZoneInfo(policy.timezone)
    day = start.astimezone(zone).date()
    while True:
        if day.weekday() in bh.days and day not in bh.holidays:
            open_at = datetime.combine(day, bh.start, zone).astimezone(UTC)
            close_at = datetime.combine(day, bh.end, zone).astimezone(UTC)
            open_at = max(open_at, start.astimezone(UTC))
            if open_at < close_at:
                yield open_at, close_at
        day += timedelta(days=1)


# --- assign ---------------------------------------------------------------------------------


def on_shift(timezone: str, person: Person, now: datetime) -> bool:
    if person.shift is None:
        return True
    local = now.astimezone(ZoneInfo(timezone))
    if local.weekday() not in person.shift.days:
        return False
    return person.shift.start <= local.time().replace(tzinfo=None) <= person.shift.end


def people_at(policy: Policy, department: str, level: int) -> list[Person]:
    if level == top_tier(policy):
        return list(policy.executives)
    return [p for p in policy.departments[department].people if p.tier == level]


def candidates(
    people: Sequence[Person],
    skill: str | None,
    timezone: str,
    now: datetime,
    exclude: Sequence[str] = (),
) -> list[Person]:
    """Who may take the case: on shift, with the skill if anyone has it, not excluded.

    Falls back step by step (skill, then shift, then exclusion) so a case is never left
    without an assignee while someone works that tier.
    """
    pools = [
        [p for p in people if on_shift(timezone, p, now) and p.id not in exclude],
        [p for p in people if p.id not in exclude],
        list(people),
    ]
    for pool in pools:
        if not pool:
            continue
        skilled = [p for p in pool if skill and skill in p.skills]
        return skilled or pool
    return []


def pick_assignee(
    candidate_ids: Sequence[str],
    open_load: Mapping[str, int],
    last_assigned: Mapping[str, datetime],
) -> str:
    """Least open cases first; ties go round-robin (longest since last assignment, then id)."""
    if not candidate_ids:
        raise ValueError("no candidates to assign")
    never = datetime.min.replace(tzinfo=None)

    def key(pid: str) -> tuple[int, datetime, str]:
        last = last_assigned.get(pid)
        return (open_load.get(pid, 0), last.replace(tzinfo=None) if last else never, pid)

    return min(candidate_ids, key=key)


def find_person(policy: Policy, person_id: str) -> Person | None:
    for exe in policy.executives:
        if exe.id == person_id:
            return exe
    for dept in policy.departments.values():
        for p in dept.people:
            if p.id == person_id:
                return p
    return None


def supervisors(policy: Policy, department: str, level: int) -> list[Person]:
    """Who oversees a case at `level`: the department's next tier up; executives at the top."""
    above = next_tier(policy, level)
    return people_at(policy, department, above if above is not None else level)


def may_escalate(
    policy: Policy, department: str, level: int, person_id: str, assignee: str | None
) -> bool:
    """The assignee or anyone who supervises the case's tier may escalate or transfer it."""
    if person_id == assignee:
        return True
    return any(p.id == person_id for p in supervisors(policy, department, level)) or any(
        e.id == person_id for e in policy.executives
    )


# --- approvals ------------------------------------------------------------------------------


class ApprovalRuleError(ValueError):
    pass


def amount_in_policy_currency(policy: Policy, action: Action) -> float:
    rate = policy.currency_rates.get(action.currency)
    if rate is None:
        known = ", ".join(sorted(policy.currency_rates))
        raise ApprovalRuleError(f"action.currency: {action.currency} is not one of {known}")
    return action.amount * rate


def authority(policy: Policy, person_id: str) -> float:
    person = find_person(policy, person_id)
    return person.approval_limit if person else 0.0


def approvers(policy: Policy, department: str, action: Action, requested_by: str) -> list[str]:
    """Everyone whose authority covers the action, nearest first (lowest tier, then id)."""
    amount = amount_in_policy_currency(policy, action)
    people = [*policy.departments[department].people, *policy.executives]
    able = [p for p in people if p.approval_limit >= amount and p.id != requested_by]
    able.sort(key=lambda p: (p.tier, p.approval_limit, p.id))
    return [p.id for p in able]


def approvers_to_notify(policy: Policy, approvers_list: Sequence[str], round_: int) -> list[str]:
    """Round 0 goes to the nearest tier among the approvers; each timeout goes one tier up."""
    tiers = sorted({authority_tier(policy, a) for a in approvers_list})
    if round_ >= len(tiers):
        return []
    wanted = tiers[round_]
    return [a for a in approvers_list if authority_tier(policy, a) == wanted]


def authority_tier(policy: Policy, person_id: str) -> int:
    person = find_person(policy, person_id)
    return person.tier if person else 0


# --- report-up ------------------------------------------------------------------------------


def report_recipients(
    policy: Policy, department: str, level: int, breached: bool, severity: Severity
) -> list[Person]:
    """The supervisor chain above the case; the executives too when breached or critical."""
    chain: dict[str, Person] = {}
    for p in supervisors(policy, department, level):
        chain[p.id] = p
    if breached or severity == "critical":
        for p in policy.executives:
            chain[p.id] = p
    return list(chain.values())
