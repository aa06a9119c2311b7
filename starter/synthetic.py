"""A plausible month of cases for a desk without history: arrivals by hour of day and day
of week, the policy's categories and severities, and people who answer after a long-tailed
while. The same seed gives the same cases."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from starter.simulate import Act, Scripted
from workflows.models import Action, CaseInput, Customer, Severity
from workflows.policy import Policy

# relative arrivals per hour of day (UTC): a business day with a lunch dip and a quiet night
HOURLY = [1, 1, 1, 1, 1, 2, 4, 8, 14, 16, 15, 13, 10, 13, 15, 14, 12, 9, 6, 4, 3, 2, 2, 1]
WEEKDAY = [1.0, 0.95, 0.95, 0.9, 0.85, 0.3, 0.25]  # Monday first
SEVERITIES: list[tuple[Severity, float]] = [
    ("low", 0.40),
    ("medium", 0.35),
    ("high", 0.20),
    ("critical", 0.05),
]
# a person's median time to acknowledge, by severity (seconds); the tail is log-normal
ACK_MEDIAN: dict[Severity, float] = {"critical": 240, "high": 900, "medium": 2400, "low": 5400}
WORK_MEDIAN: dict[Severity, float] = {
    "critical": 3600,
    "high": 4 * 3600,
    "medium": 10 * 3600,
    "low": 20 * 3600,
}
SPREAD = 0.9  # sigma of the log-normal: a few answer at several times the median


def generate(
    policy: Policy, n: int, days: int, seed: int = 1, start: datetime | None = None
) -> list[Scripted]:
    """`n` cases over `days` days from `start` (unless given: a Monday, 00:00 UTC, enough
    whole weeks back that the month ends by today), each with what its people and customer
    do and when."""
    if n < 1 or days < 1:
        raise ValueError("--synthetic and --days: positive numbers")
    rng = random.Random(seed)
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=today.weekday() + 7 * math.ceil(days / 7))
    weights = [
        WEEKDAY[(start + timedelta(days=d)).weekday()] * h for d in range(days) for h in HOURLY
    ]
    hours = rng.choices(range(len(weights)), weights=weights, k=n)
    hours.sort()
    categories = sorted(policy.routing) or ["general"]
    customers = max(1, n // 3)
    out: list[Scripted] = []
    for i, hour in enumerate(hours):
        opened = start + timedelta(hours=hour, seconds=rng.uniform(0, 3600))
        opened = opened.replace(microsecond=0)
        severity = rng.choices([s for s, _ in SEVERITIES], [w for _, w in SEVERITIES])[0]
        who = rng.randrange(customers)
        customer = Customer(
            id=f"cust-{who}",
            name=f"Customer {who}",
            email=f"customer{who}@example.org",
            vip=who % 40 == 0,
        )
        case = CaseInput(
            case_id=f"S-{seed}-{i + 1}",
            customer=customer,
            subject=f"Synthetic case {i + 1}",
            category=rng.choice(categories),
            severity=severity,
            channel=rng.choice(["email", "phone", "chat", "web"]),
            opened_by="synthetic",
        )
        out.append(Scripted(case, opened, _acts(rng, severity, opened)))
    return out


def _after(rng: random.Random, median: float) -> timedelta:
    return timedelta(seconds=round(median * math.exp(rng.gauss(0, SPREAD))))


def _acts(rng: random.Random, severity: Severity, opened: datetime) -> list[Act]:
    """Acknowledge, sometimes ask the customer (who replies) and ask for a refund's approval
    (which an approver decides), then resolve."""
    at = opened + _after(rng, ACK_MEDIAN[severity])
    acts = [Act(at, "acknowledge", {"by": Act.ASSIGNEE})]
    work = _after(rng, WORK_MEDIAN[severity])
    if rng.random() < 0.2:
        asked = at + work / 3
        acts.append(Act(asked, "wait_for_customer", {"by": Act.ASSIGNEE, "question": "?"}))
        replied = asked + _after(rng, 4 * 3600)
        acts.append(Act(replied, "customer_replied", {"message": "reply"}))
        at = replied
    if rng.random() < 0.1:
        asked = at + work / 3
        amount = round(min(5000.0, 50 * math.exp(rng.gauss(1.5, 1.0))), 2)
        action = Action(kind="refund", amount=amount, currency="USD")
        acts.append(
            Act(asked, "request_approval", {"by": Act.ASSIGNEE, "action": action.model_dump()})
        )
        decided = asked + _after(rng, 1800)
        acts.append(Act(decided, "approve", {"by": Act.APPROVER}))
        at = decided
    acts.append(Act(at + work, "resolve", {"by": Act.ASSIGNEE, "resolution": "done"}))
    return acts
