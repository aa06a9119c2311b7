"""After the resolution, on the time-skipping server with the real activities: the reopen
window, the customer's rating, reopening, root causes, de-escalation, and a long case that
continues as new."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment

from activities.records import CaseRow, Records, ReportRow
from starter.api import CaseError
from starter.reporting import build_report, write_chart
from workflows import carry
from workflows.handlers import CASE_V5
from workflows.models import WORKFLOW_TYPE, CaseStatus, MessageResult, workflow_id_for
from workflows.policy import Policy

from .conftest import Desk
from .core_cases import assigned, identified

WEEK = timedelta(days=7)


async def resolved_case(desk: Desk, **changes: Any) -> tuple[str, CaseStatus]:
    cid, st = await desk.open_assigned(**changes)
    await desk.api.send(cid, "acknowledge", {"by": st.assignee})
    await desk.api.send(cid, "resolve", {"by": st.assignee, "resolution": "Refunded"})
    return cid, await desk.api.status(cid)


async def test_resolved_case_takes_one_rating_then_closes_at_the_window_end(
    ts_env: WorkflowEnvironment, records: Records, windowed_policy: Policy
) -> None:
    desk = Desk(ts_env, records, windowed_policy)
    async with desk.worker():
        cid, st = await resolved_case(desk)
        assert st.stage == "resolved" and st.outcome is None and st.reopen_until is not None
        resolved_at = next(e.at for e in st.timeline if e.what == "reported up")
        assert st.reopen_until - resolved_at == WEEK
        rated = await desk.api.send(cid, "customer_feedback", {"score": 4, "comment": "quick"})
        assert rated is not None and rated.message == "rating 4/5 recorded"
        async with records.sessions() as s:  # the desk report sees it before the close
            body = await s.scalar(select(ReportRow.body).where(ReportRow.case_id == cid))
        assert body is not None and body["feedback"][0]["score"] == 4
        with pytest.raises(CaseError, match="score: this resolution was already rated"):
            await desk.api.send(cid, "customer_feedback", {"score": 1})
        await ts_env.sleep(WEEK - timedelta(minutes=1))
        assert (await desk.api.status(cid)).stage == "resolved"
        await ts_env.sleep(timedelta(minutes=2))
        report = await desk.api.report(cid)
        st = await desk.api.status(cid)
        with pytest.raises(CaseError, match="closed"):
            await desk.api.send(cid, "reopen", {"by": "customer", "reason": "late"})
    assert st.stage == "closed" and st.outcome == "resolved"
    assert [(f.score, f.comment, f.resolution) for f in report.feedback] == [(4, "quick", 1)]
    assert abs((report.closed_at - resolved_at - WEEK).total_seconds()) < 1  # the window end
    assert [e.what for e in report.timeline][-3:] == ["reported up", "customer feedback", "closed"]
    async with records.sessions() as s:
        row = await s.get(CaseRow, cid)
        reports = (await s.scalars(select(ReportRow).where(ReportRow.case_id == cid))).all()
    assert row is not None and row.stage == "closed" and row.closed_at is not None
    assert len(reports) == 1 and reports[0].body["feedback"][0]["score"] == 4  # the final one

    # what the case cost: one patch marker for all the changes since the first cases, and
    # report-up (it lasts as long as one activity) never shown in the search attributes
    history = await desk.client.get_workflow_handle(f"case-{cid}").fetch_history()
    patches, stages = [], []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if "patch-data" in details:
                patches += [json.loads(p.data)["id"] for p in details["patch-data"].payloads]
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if "CaseStage" in fields.indexed_fields:
                stages.append(json.loads(fields.indexed_fields["CaseStage"].data))
    assert patches == [CASE_V5]
    assert stages == ["resolve", "resolved", "closed"]  # opened and assigned at once


async def test_reopen_goes_back_to_the_resolver_with_fresh_clocks(
    ts_env: WorkflowEnvironment, records: Records, windowed_policy: Policy
) -> None:
    desk = Desk(ts_env, records, windowed_policy)
    async with desk.worker():
        cid, st = await resolved_case(desk, severity="high")
        resolver, tier = st.assignee, st.tier
        await ts_env.sleep(timedelta(days=2))
        with pytest.raises(CaseError, match="by: only the customer or the assignee"):
            await desk.api.send(cid, "reopen", {"by": "sup-lee", "reason": "x"})
        done = await desk.api.send(cid, "reopen", {"by": "customer", "reason": "charged again"})
        assert done is not None and done.message == f"reopened at tier {tier}"
        again = await desk.settled(cid)
        reopened_at = next(e.at for e in again.timeline if e.what == "reopened")
        assert again.tier == tier and again.assignee == resolver
        assert again.deadlines.ack_by is not None
        assert again.deadlines.ack_by - reopened_at <= timedelta(hours=1, seconds=5)  # fresh
        await desk.api.send(cid, "acknowledge", {"by": resolver})
        await desk.api.send(cid, "resolve", {"by": resolver, "resolution": "Refunded twice"})
        await desk.api.send(cid, "customer_feedback", {"score": 2, "comment": "took two goes"})
        await ts_env.sleep(WEEK + timedelta(minutes=1))
        report = await desk.api.report(cid)
    assert [r.by for r in report.reopens] == ["customer"]
    assert [(f.score, f.resolution) for f in report.feedback] == [(2, 2)]
    assert [t.tier for t in report.tiers] == [tier, tier]
    await desk.delivered()
    told = [m.recipient for m in desk.notifier.sent if m.subject.startswith("Reopened")]
    assert set(told) == {"sup-lee", "sup-mara"}  # the supervisors of the tier


async def test_root_cause_required_for_high_cases(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    strict = policy.model_copy(update={"root_cause_required": ["high", "critical"]})
    desk = Desk(ts_env, records, strict)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="high")
        with pytest.raises(CaseError, match="root_cause: required for high cases"):
            await desk.api.send(cid, "resolve", {"by": st.assignee, "resolution": "done"})
        with pytest.raises(CaseError, match="root_cause: 'gremlins' is not one of"):
            await desk.api.send(
                cid, "resolve", {"by": st.assignee, "resolution": "x", "root_cause": "gremlins"}
            )
        payload = {"by": st.assignee, "resolution": "done", "root_cause": "billing_error"}
        await desk.api.send(cid, "resolve", payload)
        report = await desk.api.report(cid)
    assert report.root_cause == "billing_error"


async def test_deescalation_by_a_supervisor_of_the_tier(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    desk = Desk(ts_env, records, policy)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="high")
        with pytest.raises(CaseError, match="lowest desk tier"):
            await desk.api.send(cid, "deescalate", {"by": "sup-lee", "reason": "x"})
        await desk.api.send(cid, "escalate", {"by": st.assignee, "reason": "refund over limit"})
        up = await desk.settled(cid)
        assert up.tier == 3
        with pytest.raises(CaseError, match="by: bill-ana is not a supervisor at tier 3"):
            await desk.api.send(cid, "deescalate", {"by": "bill-ana", "reason": "x"})
        with pytest.raises(CaseError, match="by: sup-ito is not a supervisor at tier 3"):
            await desk.api.send(cid, "deescalate", {"by": "sup-ito", "reason": "x"})
        await ts_env.sleep(timedelta(minutes=10))
        down = await desk.api.send(cid, "deescalate", {"by": "sup-lee", "reason": "granted"})
        assert down is not None and down.message == "handed down to tier 2"
        st = await desk.settled(cid)
        handed = next(e.at for e in st.timeline if e.what == "de-escalated")
    assert st.tier == 2 and st.assignee in {"bill-ana", "bill-kim", "bill-omar"}
    assert st.deadlines.ack_by is not None
    assert timedelta(minutes=59) < st.deadlines.ack_by - handed <= timedelta(hours=1, seconds=5)


async def test_a_case_of_a_thousand_messages_continues_as_new_and_counts_every_step(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    """Acknowledge, then rounds of wait/reply and approval request/decision: 1,000 messages.
    The case continues as new (more than once), answers across each boundary, and its report
    counts every step."""
    desk = Desk(ts_env, records, policy)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="low")
        who = st.assignee
        assert who is not None
        handle = desk.api.handle(cid)
        first_run = (await handle.describe()).run_id
        await desk.api.send(cid, "acknowledge", {"by": who})
        sent = 1
        rounds = 0
        action = {"kind": "refund", "amount": 250, "currency": "USD"}
        while sent < 999:
            if rounds % 2 == 0:
                await desk.api.send(cid, "wait_for_customer", {"by": who, "question": "?"})
                await desk.api.send(cid, "customer_replied", {"message": f"answer {rounds}"})
            else:
                await desk.api.send(cid, "request_approval", {"by": who, "action": action})
                decision = "approve" if rounds % 4 == 1 else "reject"
                body = {"by": "sup-lee", "note": "ok"} if decision == "approve" else {}
                body = body or {"by": "sup-lee", "reason": "not this time"}
                await desk.api.send(cid, decision, body)
            sent += 2
            rounds += 1
            if rounds % 50 == 0:  # the status answers, across every continue-as-new
                assert (await desk.api.status(cid)).assignee == who
        await desk.api.send(cid, "resolve", {"by": who, "resolution": "settled"})
        sent += 1
        report = await asyncio.wait_for(desk.api.report(cid), 60)
        history_lengths = await runs_of(desk, cid, first_run)
    assert len(history_lengths) >= 2  # continued as new at least once
    print(f"1,000-message case: {len(history_lengths)} runs, events per run {history_lengths}")
    whats = [e.what for e in report.timeline]
    waits = (rounds + 1) // 2  # the even rounds
    assert whats.count("waiting for customer") == whats.count("customer replied") == waits
    assert len(report.approvals) == rounds - waits
    assert [a.decision for a in report.approvals[:2]] == ["approved", "rejected"]
    assert whats.count("acknowledged") == 1 and whats[-1] == "reported up"
    assert sent == 1000
    assert max(history_lengths) < 5_000  # far from the server's 50,000


async def runs_of(desk: Desk, cid: str, run_id: str) -> list[int]:
    """The history length of each run of a case, following its continue-as-new chain."""
    lengths = []
    while True:
        history = await desk.client.get_workflow_handle(
            f"case-{cid}", run_id=run_id
        ).fetch_history()
        lengths.append(len(history.events))
        last = history.events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            return lengths
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id


async def test_the_desk_report_counts_ratings_reopens_and_root_causes(
    ts_env: WorkflowEnvironment, records: Records, windowed_policy: Policy, tmp_path: Path
) -> None:
    desk = Desk(ts_env, records, windowed_policy)
    async with desk.worker():
        cases = []
        for score, cause in ((5, "billing_error"), (3, "billing_error"), (None, "process_gap")):
            cid, st = await desk.open_assigned(severity="high")
            await desk.api.send(cid, "acknowledge", {"by": st.assignee})
            payload = {"by": st.assignee, "resolution": "done", "root_cause": cause}
            await desk.api.send(cid, "resolve", payload)
            if score is not None:
                await desk.api.send(cid, "customer_feedback", {"score": score})
            cases.append((cid, st.assignee))
        cid, who = cases[2]
        await desk.api.send(cid, "reopen", {"by": "customer", "reason": "not fixed"})
        await desk.settled(cid)
        await desk.api.send(cid, "resolve", {"by": who, "resolution": "fixed", "root_cause": cause})
        await desk.api.send(cid, "customer_feedback", {"score": 2})
        await ts_env.sleep(WEEK + timedelta(hours=1))
        for cid, _ in cases:
            await desk.api.report(cid)
    rep = await build_report(records)
    billing = next(c for c in rep.csat if c.department == "billing" and c.tier == 2)
    assert (billing.resolutions, billing.responses) == (4, 3)  # a reopen is one more to rate
    assert billing.average == round((5 + 3 + 2) / 3, 2)
    assert billing.distribution == {1: 0, 2: 1, 3: 1, 4: 0, 5: 1}
    assert rep.reopened_cases == 1 and rep.reopen_rate == round(1 / 3, 3)
    assert rep.root_causes == {"billing": {"billing_error": 2, "process_gap": 1}}
    assert rep.resolution_hours["p99"] is not None and rep.resolution_hours["p99"] < 24  # not 7d
    chart = write_chart(rep, tmp_path / "report.png")
    assert chart.stat().st_size > 10_000


async def test_a_message_in_the_first_task_of_a_continued_run_is_taken(
    dev_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    """A message that reaches a long case's next run together with its start (the first
    workflow task) is handled by the carried state, not refused as "still being identified"."""
    desk = Desk(dev_env, records, policy)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="low")
        who = st.assignee
        assert who is not None
        await desk.api.handle(cid).terminate("replaced by its carried run")
        # the same case, as a run would carry it across continue-as-new
        state = assigned(identified(case_id=cid), who)
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            WORKFLOW_TYPE,
            carry.carried(state, 50),
            id=workflow_id_for(cid),
            task_queue=desk.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        answer = await desk.client.execute_update_with_start_workflow(
            "acknowledge",
            {"by": who},
            start_workflow_operation=start,
            result_type=MessageResult,
        )
        assert answer.accepted, answer
        # (its deadlines, carried from the core's fixed clock, have passed: it escalates next)
        status = await desk.api.status(cid)
        assert any(e.what == "acknowledged" and e.by == who for e in status.timeline)
        assert status.assignee is not None
        await desk.api.send(cid, "resolve", {"by": status.assignee, "resolution": "settled"})
        after = await desk.api.status(cid)
    assert after.stage == "resolved"  # its carried policy keeps it open for a reopen
    assert [e.what for e in after.timeline].count("acknowledged") == 1
