"""Every path of a case on the time-skipping server, with the real activities on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.records import CaseRow, MessageRow, ReportRow, TimelineRow
from starter.api import CaseError
from tests.conftest import Desk
from workflows.models import CaseReport

pytestmark = pytest.mark.asyncio


async def history_events(desk: Desk, case_id: str) -> list[int]:
    hist = await desk.api.handle(case_id).fetch_history()
    return [e.event_type for e in hist.events]


WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}


def without_workflow_tasks(events: list[int]) -> list[int]:
    return [e for e in events if e not in WORKFLOW_TASK_EVENTS]


async def test_happy_path_records_everything_once(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case()
        opened = await desk.api.open(data)
        assert opened.created
        st = await desk.settled(data["case_id"])
        assert st.tier == 2 and st.department == "billing"
        assert st.assignee in {"bill-ana", "bill-kim"}  # skill "invoices" or on shift
        assert st.escalation_type == "functional"
        assert st.deadlines.ack_by is not None and st.deadlines.ack_by.tzinfo is not None
        ack = await desk.api.send(data["case_id"], "acknowledge", {"by": st.assignee})
        assert ack is not None and ack.message == "acknowledged"
        done = await desk.api.send(
            data["case_id"], "resolve", {"by": st.assignee, "resolution": "Refunded duplicate"}
        )
        assert done is not None
        report = await desk.api.report(data["case_id"])
    assert isinstance(report, CaseReport)
    assert report.outcome == "resolved" and report.resolved_by == st.assignee
    assert [t.tier for t in report.tiers] == [2]
    assert report.breaches == [] and not report.sla_breached
    whats = [e.what for e in report.timeline]
    assert whats == ["opened", "identified", "assigned", "acknowledged", "resolved", "reported up"]
    async with desk.records.sessions() as s:
        row = await s.get(CaseRow, data["case_id"])
        assert row is not None and row.stage == "closed" and row.outcome == "resolved"
        seqs = (
            await s.scalars(select(TimelineRow.seq).where(TimelineRow.case_id == row.case_id))
        ).all()
        assert sorted(seqs) == list(range(1, len(whats) + 1))
        assert await s.scalar(select(func.count()).select_from(ReportRow)) == 1
        messages = (await s.scalars(select(MessageRow))).all()
    assert all(m.sent_at is not None for m in messages)
    assert len(desk.notifier.sent) == len(messages)
    recipients = [m.recipient for m in messages]
    assert st.assignee in recipients and data["customer"]["id"] in recipients
    assert "sup-lee" in recipients  # report goes to the billing supervisors


async def test_ack_timeout_escalates_with_warning_first(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case(severity="high")  # tier 2 ack within 1h, warning at 45m
        await desk.api.open(data)
        first = await desk.settled(data["case_id"])
        await ts_env.sleep(timedelta(minutes=50))
        st = await desk.api.status(data["case_id"])
        assert st.tier == 2 and [e.what for e in st.timeline][-1] == "ack SLA warning"
        await ts_env.sleep(timedelta(minutes=11))
        st = await desk.settled(data["case_id"])
    assert st.tier == 3 and st.escalation_type == "hierarchical"
    assert st.assignee in {"sup-lee", "sup-mara"}
    assert [(b.tier, b.clock) for b in st.breaches] == [(2, "ack")]
    assert st.breaches[0].assignee == first.assignee
    assert not st.sla_breached
    warned = [m for m in desk.notifier.sent if "SLA warning" in m.subject]
    assert {m.recipient for m in warned} == {"sup-lee", "sup-mara"}


async def test_business_clock_waits_out_the_weekend(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    now = await ts_env.get_current_time()
    # Friday 18:00 UTC, after business hours, with a working Monday after it
    friday = (now + timedelta(days=(4 - now.weekday()) % 7)).replace(
        hour=18, minute=0, second=0, microsecond=0
    )
    while friday <= now or (friday + timedelta(days=3)).date() in (
        desk.policy.business_hours.holidays
    ):
        friday += timedelta(days=7)
    monday_close = (friday + timedelta(days=3)).replace(hour=17)
    await ts_env.sleep(friday - now)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="low")  # ack within 8 business hours
        assert st.deadlines.ack_by == monday_close
        await ts_env.sleep(monday_close - timedelta(minutes=1) - await ts_env.get_current_time())
        st = await desk.api.status(cid)
        assert st.tier == 2 and st.breaches == []
        assert [e.what for e in st.timeline][-1] == "ack SLA warning"  # Monday 15:00
        await ts_env.sleep(timedelta(minutes=2))
        st = await desk.settled(cid)
    assert st.tier == 3 and [(b.tier, b.clock) for b in st.breaches] == [(2, "ack")]
    assert st.breaches[0].deadline == monday_close


async def test_resolve_timeout_escalates(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case(severity="high")  # tier 2 resolve within 1d
        await desk.api.open(data)
        st = await desk.settled(data["case_id"])
        await desk.api.send(data["case_id"], "acknowledge", {"by": st.assignee})
        await ts_env.sleep(timedelta(hours=23))
        assert (await desk.api.status(data["case_id"])).tier == 2
        await ts_env.sleep(timedelta(hours=1, minutes=1))
        st = await desk.settled(data["case_id"])
        assert st.tier == 3
        assert [(b.tier, b.clock) for b in st.breaches] == [(2, "resolve")]
        # the previous assignee no longer holds the case
        with pytest.raises(CaseError, match="not the assignee"):
            await desk.api.send(data["case_id"], "resolve", {"by": "bill-ana", "resolution": "x"})


async def test_a_deadline_moved_later_keeps_its_timer_and_the_next_fires_on_time(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    """Acknowledging moves the next deadline from the ack warning (45 m) to the customer
    update (8 h): the pending timer is kept (a timer is a billed action); it rings at 45 m
    with nothing due and sets the next one, and every deadline after fires at its second."""
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="high")  # tier 2: ack 1h, resolve 1d
        await desk.api.send(cid, "acknowledge", {"by": st.assignee})
        acked = await desk.api.status(cid)
        await ts_env.sleep(timedelta(hours=2))
        quiet = await desk.api.status(cid)
        events = without_workflow_tasks(await history_events(desk, cid))
        await ts_env.sleep(timedelta(hours=17))
        st = await desk.api.status(cid)
    assert [e.what for e in quiet.timeline][-1] == "acknowledged"  # the ring did nothing
    acked_at = events.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    assert EventType.EVENT_TYPE_TIMER_FIRED in events, "the ack warning's timer was not kept"
    rang = events.index(EventType.EVENT_TYPE_TIMER_FIRED)
    assert EventType.EVENT_TYPE_TIMER_STARTED in events[:acked_at]  # the ack warning's
    between = events[acked_at:rang]  # the acknowledgement set no timer and cancelled none
    assert EventType.EVENT_TYPE_TIMER_STARTED not in between
    assert EventType.EVENT_TYPE_TIMER_CANCELED not in between
    assert events[rang + 1 :].count(EventType.EVENT_TYPE_TIMER_STARTED) == 1  # the next one
    assert events.count(EventType.EVENT_TYPE_TIMER_FIRED) == 1
    assert acked.deadlines.resolve_by is not None and acked.opened_at is not None
    due = {
        "customer updated": [acked.opened_at + timedelta(hours=8) * i for i in (1, 2)],
        "resolve SLA warning": [acked.deadlines.resolve_by - timedelta(hours=6)],  # at 75 %
    }
    for what, ats in due.items():
        fired = [e.at for e in st.timeline if e.what == what]
        assert len(fired) == len(ats), what
        assert all(abs((f - at).total_seconds()) < 1 for f, at in zip(fired, ats, strict=True))


async def test_top_tier_breach_reports_up_and_stays_open(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case(severity="critical", category="outage")  # starts at tier 3, 15m acks
        await desk.api.open(data)
        st = await desk.settled(data["case_id"])
        assert (
            st.tier == 3 and st.escalation_type == "hierarchical" and st.department == "technical"
        )
        await ts_env.sleep(timedelta(minutes=16))
        st = await desk.settled(data["case_id"])
        assert st.tier == 4 and st.assignee in {"exec-holt", "exec-vance"} and not st.sla_breached
        await ts_env.sleep(timedelta(minutes=16))
        st = await desk.api.status(data["case_id"])
        assert st.sla_breached and st.stage == "resolve"
        desc = await desk.api.handle(data["case_id"]).describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
        assert desc.typed_search_attributes.get(
            __import__("workflows.search_attributes").search_attributes.SLA_BREACHED
        )
    breach_reports = [m for m in desk.notifier.sent if "SLA breached at the top tier" in m.subject]
    assert {m.recipient for m in breach_reports} == {"exec-holt", "exec-vance"}


async def test_approval_goes_to_next_approver_and_rejects_unauthorised(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="high")
        await desk.api.send(cid, "acknowledge", {"by": st.assignee})
        with pytest.raises(CaseError, match="within .* own authority"):
            await desk.api.send(
                cid,
                "request_approval",
                {"by": st.assignee, "action": {"kind": "refund", "amount": 80, "currency": "USD"}},
            )
        await desk.api.send(
            cid,
            "request_approval",
            {"by": st.assignee, "action": {"kind": "refund", "amount": 250, "currency": "USD"}},
        )
        st = await desk.api.status(cid)
        assert st.pending_approval is not None
        assert st.pending_approval.approvers == ["sup-lee", "sup-mara", "exec-holt", "exec-vance"]
        assert st.pending_approval.notified == ["sup-lee", "sup-mara"]
        before = await history_events(desk, cid)
        with pytest.raises(CaseError, match="not authorised"):
            await desk.api.send(cid, "approve", {"by": "bill-omar", "note": "fine by me"})
        # A rejected update leaves no update event and changes nothing (this server may add an
        # empty workflow task; the real server's speculative task leaves nothing, see devserver)
        assert without_workflow_tasks(await history_events(desk, cid)) == without_workflow_tasks(
            before
        )
        await ts_env.sleep(timedelta(hours=4, minutes=1))  # high: approvals due within 4h
        st = await desk.api.status(cid)
        assert st.pending_approval is not None
        assert st.pending_approval.notified == ["exec-holt", "exec-vance"]
        assert any(e.what == "approval escalated" for e in st.timeline)
        result = await desk.api.send(
            cid, "approve", {"by": "exec-vance", "note": "duplicate charge"}
        )
        assert result is not None and result.message == "approved"
        st = await desk.api.status(cid)
    assert st.pending_approval is None
    assert [(a.decision, a.decided_by) for a in st.approvals] == [("approved", "exec-vance")]
    asked = [m for m in desk.notifier.sent if m.subject.startswith("Approval needed")]
    asked.sort(key=lambda m: int(m.key.rsplit(":m", 1)[1]))  # queued order; sent concurrently
    assert [m.recipient for m in asked] == ["sup-lee", "sup-mara", "exec-holt", "exec-vance"]


async def test_paused_clock_does_not_expire_and_resumes_with_remaining_time(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case(severity="high")  # tier 2: resolve within 1d
        cid = data["case_id"]
        await desk.api.open(data)
        st = await desk.settled(cid)
        await desk.api.send(cid, "acknowledge", {"by": st.assignee})
        await ts_env.sleep(timedelta(hours=2))
        await desk.api.send(
            cid, "wait_for_customer", {"by": st.assignee, "question": "Which card?"}
        )
        paused = await desk.api.status(cid)
        assert paused.paused and paused.paused_remaining_seconds is not None
        remaining = paused.paused_remaining_seconds["resolve"]
        assert 21.9 * 3600 < remaining <= 22 * 3600
        await ts_env.sleep(timedelta(days=3))
        st = await desk.api.status(cid)
        assert st.tier == 2 and st.breaches == [] and st.paused
        await desk.api.send(cid, "customer_replied", {"message": "The Visa ending 4242"})
        st = await desk.api.status(cid)
        assert not st.paused and st.deadlines.resolve_by is not None
        await ts_env.sleep(timedelta(hours=21))
        assert (await desk.api.status(cid)).tier == 2
        await ts_env.sleep(timedelta(hours=1, minutes=5))
        st = await desk.settled(cid)
    assert st.tier == 3 and [(b.tier, b.clock) for b in st.breaches] == [(2, "resolve")]


async def test_customer_escalation_moves_up_a_tier(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, _ = await desk.open_assigned(severity="medium")
        result = await desk.api.send(cid, "customer_escalate", {"reason": "Third call this week"})
        assert result is not None and result.tier == 3
        st = await desk.settled(cid)
    assert st.tier == 3 and st.escalation_type == "hierarchical"
    assert any(e.what == "escalated" and e.by == "customer" for e in st.timeline)


async def test_functional_transfer_reassigns_in_the_new_department(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="low")
        with pytest.raises(CaseError, match="department: unknown department"):
            await desk.api.send(
                cid, "escalate", {"by": st.assignee, "reason": "x", "department": "legal"}
            )
        await desk.api.send(
            cid,
            "escalate",
            {"by": st.assignee, "reason": "API question", "department": "technical"},
        )
        st = await desk.settled(cid)
    assert st.department == "technical" and st.tier == 2 and st.escalation_type == "functional"
    assert st.assignee in {"tech-raj", "tech-eva", "tech-sam"}


async def test_hard_cap_reports_up_and_closes(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="low")
        await desk.api.send(cid, "acknowledge", {"by": st.assignee})
        await desk.api.send(cid, "wait_for_customer", {"by": st.assignee, "question": "Any news?"})
        await ts_env.sleep(timedelta(days=30))
        report = await desk.api.report(cid)
    assert report.outcome == "hard_cap"
    assert timedelta(seconds=report.duration_seconds) >= timedelta(days=30)
    assert report.breaches == []  # the clock was paused the whole time
    closed = [m for m in desk.notifier.sent if m.subject.startswith("Case report")]
    assert closed and all(m.channel == "internal" for m in closed)


async def test_invalid_signals_are_noted_and_the_case_carries_on(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, st = await desk.open_assigned()
        handle = desk.api.handle(cid)
        await handle.signal("acknowledge", {"who": "nobody"})
        await handle.signal("acknowledge", {"by": "someone-else"})
        await handle.signal("approve", "not even an object")
        await handle.signal("acknowledge", {"by": st.assignee})
        for _ in range(100):
            st = await desk.api.status(cid)
            if st.acknowledged:
                break
            await ts_env.sleep(timedelta(milliseconds=50))
        ignored = [e.details for e in st.timeline if e.what == "message ignored"]
        assert len(ignored) == 3
        assert "by: Field required" in ignored[0]
        assert "not the assignee" in ignored[1]
        assert st.acknowledged
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
        # and it still finishes normally
        await desk.api.send(cid, "resolve", {"by": st.assignee, "resolution": "done"})
        report = await desk.api.report(cid)
    assert report.outcome == "resolved"
    assert [e.what for e in report.timeline].count("message ignored") == 3


async def test_bad_input_is_refused_naming_the_field(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    bad = desk.case(severity="urgent")
    with pytest.raises(CaseError, match="severity"):
        await desk.api.open(bad)
    negative = desk.case(requested_action={"kind": "refund", "amount": -5, "currency": "USD"})
    with pytest.raises(CaseError, match="requested_action.amount"):
        await desk.api.open(negative)
    with pytest.raises(RPCError, match="not found"):  # nothing was started
        await desk.api.handle(bad["case_id"]).describe()
    # A client that skips validation (any language, raw JSON) gets a failed case, not a stuck one.
    async with desk.worker():
        raw = desk.case()
        del raw["customer"]
        handle = await ts_env.client.start_workflow(
            "EscalationCase", raw, id=f"case-{raw['case_id']}", task_queue=desk.task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "customer: Field required" in str(failed.value.cause)


async def test_open_twice_gives_one_case_and_a_closed_id_is_refused(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case()
        first = await desk.api.open(data)
        second = await desk.api.open(data)
        assert first.created and not second.created and first.run_id == second.run_id
        st = await desk.settled(data["case_id"])
        await desk.api.send(data["case_id"], "resolve", {"by": st.assignee, "resolution": "done"})
        await desk.api.report(data["case_id"])
        with pytest.raises(CaseError, match="already closed"):
            await desk.api.open(data)


async def test_history_stays_small(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        data = desk.case()
        await desk.api.open(data)
        st = await desk.settled(data["case_id"])
        await desk.api.send(data["case_id"], "acknowledge", {"by": st.assignee})
        await desk.api.send(data["case_id"], "resolve", {"by": st.assignee, "resolution": "ok"})
        await desk.api.report(data["case_id"])
        events = await history_events(desk, data["case_id"])
    activities = events.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert activities == 3  # open and assign, acknowledge, report
    assert len(events) <= 150
