"""The policy simulator: known answers on small hand-built desks, a reproducible generator,
fidelity to cases the worker ran, and the `escalate simulate` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.policy_file import BUNDLED_POLICY, load_policy
from activities.records import Records
from starter.comparison import Comparison
from starter.recorded import fidelity_lines
from starter.recorded import load as load_recorded
from starter.simulate import Act, CaseRun, Scripted, simulate
from starter.synthetic import generate
from workflows import rules
from workflows.models import CaseInput, Customer
from workflows.policy import Person, Policy

from .conftest import Desk, run_escalate

BUNDLED = load_policy(BUNDLED_POLICY)
TUESDAY = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


def case(i: int, opened: datetime, severity: str, category: str, *acts: Act) -> Scripted:
    return Scripted(
        CaseInput(
            case_id=f"K-{i}",
            customer=Customer(id=f"c-{i}", name=f"Customer {i}", email=f"c{i}@example.org"),
            subject="Known answer",
            category=category,
            severity=severity,
            opened_by="test",
        ),
        opened,
        list(acts),
    )


def by_assignee(at: datetime, name: str, **payload: Any) -> Act:
    return Act(at, name, {"by": Act.ASSIGNEE, **payload})


def with_tier(policy: Policy, level: int, clock: str, severity: str, seconds: int) -> Policy:
    tiers = [
        t.model_copy(update={clock: {**getattr(t, clock), severity: seconds}})
        if t.level == level
        else t
        for t in policy.tiers
    ]
    return policy.model_copy(update={"tiers": tiers, "version": "candidate"})


def escalations(run: CaseRun) -> list[tuple[int, datetime]]:
    return run.escalated_to


def billing() -> str:
    return next(c for c, r in BUNDLED.routing.items() if r.department == "billing")


def test_halving_the_ack_deadline_turns_an_ack_at_40_minutes_into_an_escalation_at_30() -> None:
    acked, resolved = TUESDAY + timedelta(minutes=40), TUESDAY + timedelta(hours=2)
    scripted = [
        case(
            1,
            TUESDAY,
            "high",
            billing(),
            by_assignee(acked, "acknowledge"),
            by_assignee(resolved, "resolve", resolution="done"),
        )
    ]
    candidate = with_tier(BUNDLED, 2, "ack", "high", 30 * 60)
    [now] = simulate(scripted, BUNDLED).cases
    [then] = simulate(scripted, candidate).cases
    assert escalations(now) == [] and now.final_tier == 2
    assert now.resolved_at == resolved and now.refused_acts == 0
    assert escalations(then) == [(3, TUESDAY + timedelta(minutes=30))]
    assert then.breaches["ack"] == 1 and then.final_tier == 3
    assert then.resolved_at == resolved  # the ack and the resolution went to the tier-3 holder


def test_another_person_at_a_tier_lowers_its_peak_load() -> None:
    scripted = [
        case(
            i,
            TUESDAY + timedelta(minutes=i),
            "high",
            billing(),
            by_assignee(TUESDAY + timedelta(minutes=i + 5), "acknowledge"),
            by_assignee(TUESDAY + timedelta(hours=5), "resolve", resolution="done"),
        )
        for i in range(24)
    ]
    dept = BUNDLED.departments["billing"]
    skill = BUNDLED.routing[billing()].skill
    people = rules.people_at(BUNDLED, "billing", 2)
    tier2 = [p.id for p in rules.candidates(people, skill, BUNDLED.timezone, TUESDAY)]
    skills = [skill] if skill else []
    extra = Person(id="bill-new", name="New Hire", email="new@desk.example", tier=2, skills=skills)
    bigger = dept.model_copy(update={"people": [*dept.people, extra]})
    candidate = BUNDLED.model_copy(
        update={"departments": {**BUNDLED.departments, "billing": bigger}, "version": "c"}
    )
    now, then = simulate(scripted, BUNDLED), simulate(scripted, candidate)
    before = max(now.load_peak[p] for p in tier2)
    after = max(then.load_peak.get(p, 0) for p in [*tier2, "bill-new"])
    assert after < before
    assert before == -(-24 // len(tier2)) and after == -(-24 // (len(tier2) + 1))
    peaks = {r["person"]: r for r in Comparison(now, then).load()}
    assert peaks["bill-new"]["peak current"] == 0 and peaks["bill-new"]["peak candidate"] > 0


def test_a_business_hours_change_moves_the_deadline_as_the_business_clock_says() -> None:
    friday = datetime(2026, 11, 6, 16, 0, tzinfo=UTC)  # one business hour left in the week
    scripted = [case(1, friday, "low", billing())]  # nobody acknowledges
    longer_days = BUNDLED.business_hours.model_copy(update={"end": time(18, 0)})
    candidate = BUNDLED.model_copy(update={"business_hours": longer_days, "version": "c"})
    [now] = simulate(scripted, BUNDLED).cases
    [then] = simulate(scripted, candidate).cases
    monday = datetime(2026, 11, 9, tzinfo=UTC)
    # 8 business hours to acknowledge: Friday 16-17 and Monday 9-16; with days to 18:00,
    # Friday 16-18 and Monday 9-15
    assert escalations(now)[0] == (3, monday + timedelta(hours=16))
    assert escalations(then)[0] == (3, monday + timedelta(hours=15))


def test_the_synthetic_month_is_reproducible_from_its_seed() -> None:
    start = datetime(2026, 11, 2, tzinfo=UTC)
    one = generate(BUNDLED, 300, 14, seed=5, start=start)
    two = generate(BUNDLED, 300, 14, seed=5, start=start)
    other = generate(BUNDLED, 300, 14, seed=6, start=start)
    assert one == two and one != other
    assert all(start <= c.opened_at < start + timedelta(days=14) for c in one)
    weekday = sum(1 for c in one if c.opened_at.weekday() < 5)
    assert weekday > 0.8 * len(one)  # arrivals follow the working week
    assert {c.case.severity for c in one} == {"low", "medium", "high", "critical"}
    a, b = simulate(one, BUNDLED), simulate(two, BUNDLED)
    assert a.cases == b.cases and a.load_peak == b.load_peak


def test_simulate_compares_a_candidate_and_refuses_a_broken_one(tmp_path: Path) -> None:
    text = BUNDLED_POLICY.read_text()
    good = tmp_path / "candidate.toml"
    good.write_text(
        text.replace(
            'ack = { low = "8h", medium = "4h", high = "1h", critical = "15m" }',
            'ack = { low = "8h", medium = "4h", high = "30m", critical = "15m" }',
        ).replace('version = "2026.11-2"', 'version = "candidate-1"')
    )
    args = ["simulate", "--policy", str(good), "--synthetic", "400", "--days", "7"]
    out = run_escalate(*args, "--json", env={})
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["candidate_policy"] == "candidate-1"
    rows = {(r["group"], r["figure"]): r for r in answer["figures"]}
    auto = rows[("overall", "automatic escalations")]
    assert auto["candidate"] > auto["current"] and auto["change"] > 0
    assert rows[("overall", "cases")]["current"] == 400
    assert answer["changed_cases"] and answer["load"]

    chart = tmp_path / "whatif.png"
    shown = run_escalate(*args, "--chart", str(chart), env={})
    assert shown.returncode == 0, shown.stderr
    assert "| overall | automatic escalations |" in shown.stdout
    assert chart.read_bytes()[:4] == b"\x89PNG"

    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace("warning_ratio = 0.75", "warning_ratio = 1.5"))
    refused = run_escalate("simulate", "--policy", str(broken), "--synthetic", "10", env={})
    assert refused.returncode == 2 and "warning_ratio" in refused.stderr


@pytest.mark.asyncio
async def test_cases_run_by_the_worker_replay_exactly_under_their_own_policy(
    ts_env: WorkflowEnvironment, records: Records, windowed_policy: Policy
) -> None:
    """Escalation by timeout, pages, a warning, an approval, a wait for the customer, a
    transfer and a reopen, through the real worker; then the simulator, from the records
    alone, makes the same policy lines at the same seconds."""
    desk = Desk(ts_env, records, windowed_policy)
    t0 = await ts_env.get_current_time()
    async with desk.worker():
        a, _ = await desk.open_assigned(severity="high")
        b, sb = await desk.open_assigned(severity="medium")
        c, sc = await desk.open_assigned(severity="low")
        d, sd = await desk.open_assigned(severity="high")
        e, se = await desk.open_assigned(severity="critical")
        send = desk.api.send

        await send(b, "acknowledge", {"by": str(sb.assignee)})
        refund = {"kind": "refund", "amount": 250, "currency": "USD"}
        await send(b, "request_approval", {"by": str(sb.assignee), "action": refund})
        await send(b, "approve", {"by": "sup-lee", "note": "ok"})
        await send(b, "resolve", {"by": str(sb.assignee), "resolution": "Refunded"})

        await send(c, "acknowledge", {"by": str(sc.assignee)})
        moved = {"by": str(sc.assignee), "reason": "not billing", "department": "technical"}
        await send(c, "escalate", moved)
        sc = await desk.settled(c)
        await send(c, "acknowledge", {"by": str(sc.assignee)})
        await send(c, "resolve", {"by": str(sc.assignee), "resolution": "Fixed"})

        await send(d, "acknowledge", {"by": str(sd.assignee)})
        await send(d, "resolve", {"by": str(sd.assignee), "resolution": "Explained"})
        await send(d, "customer_feedback", {"score": 2})
        await send(d, "reopen", {"by": "customer", "reason": "charged again"})
        sd = await desk.settled(d)
        await send(d, "acknowledge", {"by": str(sd.assignee)})
        await send(d, "resolve", {"by": str(sd.assignee), "resolution": "Refunded"})

        await ts_env.sleep(timedelta(minutes=12))  # the critical case is paged and warned
        await send(e, "acknowledge", {"by": str(se.assignee)})
        await send(e, "resolve", {"by": str(se.assignee), "resolution": "Restored"})

        await ts_env.sleep(timedelta(minutes=50))  # the high case missed its ack at 60 min
        sa = await desk.settled(a)
        assert sa.tier == 3
        await send(a, "acknowledge", {"by": str(sa.assignee)})
        await send(a, "wait_for_customer", {"by": str(sa.assignee), "question": "Which card?"})
        await ts_env.sleep(timedelta(minutes=30))
        await send(a, "customer_replied", {"message": "Visa"})
        await send(a, "resolve", {"by": str(sa.assignee), "resolution": "Refunded"})
        end = await ts_env.get_current_time()

    found = await load_recorded(records, t0 - timedelta(minutes=1), end)
    assert not found.skipped and len(found.scripted) == 5
    replayed = simulate(found.scripted, windowed_policy, end=end, own=True)
    assert fidelity_lines(found.runs, replayed) == []
    runs = {r.case_id: r for r in found.runs}
    assert runs[a].escalations == 1 and runs[a].breaches["ack"] == 1
    assert [w for w, _t, _at in runs[e].policy_lines].count("re-notified") == 2
    assert runs[e].warnings == 1 and runs[b].approvals == [("approved", "sup-lee")]
    assert {r.case_id: r.approvals for r in replayed.cases}[b] == [("approved", "sup-lee")]
    assert all(r.refused_acts == 0 for r in replayed.cases)
    assert [r.messages for r in replayed.cases] == [r.messages for r in found.runs]

    # a candidate that gives high cases 90 minutes: the same case acknowledged in time
    [then] = [
        r
        for r in simulate(found.scripted, with_tier(windowed_policy, 2, "ack", "high", 5400)).cases
        if r.case_id == a
    ]
    assert then.escalations == 0 and then.final_tier == 2


def test_a_saved_synthetic_month_replays_from_the_records(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'records.db'}"}
    assert run_escalate("db", "upgrade", env=env).returncode == 0
    month = ["--synthetic", "300", "--days", "10", "--seed", "4", "--from", "2026-09-07"]
    policy = ["--policy", str(BUNDLED_POLICY)]
    saved = run_escalate("simulate", *policy, *month, "--save", env=env)
    assert saved.returncode == 0, saved.stderr
    assert "saved 300 synthetic case(s)" in saved.stdout
    period = saved.stdout.split("replay them with ", 1)[1].splitlines()[0].split()
    replayed = run_escalate("simulate", *policy, *period, "--json", env=env)
    assert replayed.returncode == 0, replayed.stderr
    answer = json.loads(replayed.stdout)
    assert answer["fidelity"] == {"cases": 300, "not_reproduced": []}
    rows = {(r["group"], r["figure"]): r for r in answer["figures"]}
    escalated = rows[("overall", "automatic escalations")]
    assert escalated["recorded"] == escalated["current"] > 0
    again = run_escalate("simulate", *policy, *month, "--save", env=env)
    assert again.returncode == 2 and "case_id: S-4-" in again.stderr
