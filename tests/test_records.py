"""The record store on SQLite and PostgreSQL: idempotent writes, forward-only snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jinja2 import TemplateNotFound
from sqlalchemy import event, func, select, update
from temporalio.exceptions import ApplicationError

from activities.case_activities import CaseActivities
from activities.channels import Channels, Delivery, MemorySender, Transient
from activities.policy_file import load_policy
from activities.records import (
    AssignmentRow,
    CaseRow,
    MessageRow,
    Records,
    TimelineRow,
    database_url,
)
from activities.relay import Relay
from tests.conftest import until
from workflows import evolve, rules, transitions
from workflows.activity_models import (
    AssignRequest,
    CaseSnapshot,
    CustomerContext,
    OpenCaseRequest,
    OutboundMessage,
    Transition,
)
from workflows.events import Assigned
from workflows.models import CaseInput, TimelineEntry
from workflows.policy import Policy
from workflows.state import Opening

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def case_input(case_id: str = "C-1", customer: str = "cust-1") -> CaseInput:
    return CaseInput.model_validate(
        {
            "case_id": case_id,
            "customer": {"id": customer, "name": "Ada", "email": "ada@example.com"},
            "subject": "Charged twice",
            "category": "billing",
            "severity": "high",
            "opened_by": "agent-1",
        }
    )


def snapshot(case_id: str, step: int, run: str = "run-1", **changes: Any) -> CaseSnapshot:
    data: dict[str, object] = {
        "case_id": case_id,
        "workflow_id": f"case-{case_id}",
        "run_id": run,
        "step": step,
        "customer_id": "cust-1",
        "customer_name": "Ada",
        "subject": "Charged twice",
        "category": "billing",
        "channel": "phone",
        "severity": "high",
        "reported_severity": "high",
        "stage": "resolve",
        "tier": 2,
        "department": "billing",
        "assignee": None,
        "sla_breached": False,
        "opened_at": T0,
        "policy_version": "v1",
    }
    data.update(changes)
    return CaseSnapshot.model_validate(data)


def transition(case_id: str, step: int, entries: list[str], **changes: Any) -> Transition:
    return Transition(
        key=f"case-{case_id}:run-1:s{step}",
        snapshot=snapshot(case_id, step, **changes),
        timeline=[
            TimelineEntry(seq=step * 10 + i, at=T0, what=what, details="")
            for i, what in enumerate(entries)
        ],
        messages=[
            OutboundMessage(
                key=f"case-{case_id}:run-1:m{step}",
                channel="customer",
                recipient="cust-1",
                address="ada@example.com",
                subject=f"step {step}",
                body="hello",
            )
        ],
    )


async def open_case(
    acts: CaseActivities, case_id: str, run: str = "run-1", customer: str = "cust-1"
):
    return await acts.open_case(
        OpenCaseRequest(
            case=case_input(case_id, customer),
            workflow_id=f"case-{case_id}",
            run_id=run,
            opened_at=T0,
        )
    )


def activities(records: Records, policy: Policy) -> tuple[CaseActivities, MemorySender]:
    notifier = MemorySender()
    return CaseActivities(records, Channels({"log": notifier}), lambda: policy), notifier


async def deliver(acts: CaseActivities, batch: int = 200) -> None:
    """Run a relay over the outbox until everything queued went out."""
    relay = Relay(acts.records, acts.channels, poll=0.01, batch=batch)
    task = asyncio.create_task(relay.run())
    try:
        await relay.drain()
    finally:
        relay.stop()
        await task


async def count(records: Records, table: type, *where: Any) -> int:
    async with records.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def test_open_case_is_idempotent_and_reads_history(
    any_records: Records, policy: Policy
) -> None:
    acts, _ = activities(any_records, policy)
    await open_case(acts, "C-1")
    await open_case(acts, "C-2")
    ctx = await open_case(acts, "C-3")
    again = await open_case(acts, "C-3")  # a retry
    assert ctx.recent_cases == again.recent_cases == 2
    assert ctx.open_cases == 2 and sorted(ctx.recent_case_ids) == ["C-1", "C-2"]
    assert ctx.policy.version == policy.version
    assert await count(any_records, CaseRow) == 3


async def test_a_closed_case_cannot_be_opened_again(any_records: Records, policy: Policy) -> None:
    acts, _ = activities(any_records, policy)
    await open_case(acts, "C-9")
    await acts.record_transition(
        transition("C-9", 1, ["reported up"], stage="closed", closed_at=T0, outcome="resolved")
    )
    with pytest.raises(ApplicationError, match="case_id: case C-9 was closed") as err:
        await open_case(acts, "C-9", run="run-2")
    assert err.value.non_retryable


async def test_retried_transition_writes_and_sends_once(
    any_records: Records, policy: Policy
) -> None:
    acts, notifier = activities(any_records, policy)
    await open_case(acts, "C-1")
    t = transition("C-1", 1, ["acknowledged", "customer updated"])
    await acts.record_transition(t)
    await acts.record_transition(t)  # delivered twice by the server: a retry after a timeout
    await deliver(acts)
    await acts.record_transition(t)  # and once more after the relay sent it
    await deliver(acts)
    assert await count(any_records, TimelineRow, TimelineRow.case_id == "C-1") == 2
    assert await count(any_records, MessageRow, MessageRow.case_id == "C-1") == 1
    assert [m.subject for m in notifier.sent] == ["step 1"]
    assert await count(any_records, MessageRow, MessageRow.sent_at.is_(None)) == 0


async def test_a_transition_that_fails_midway_leaves_the_records_as_they_were(
    any_records: Records, policy: Policy
) -> None:
    """The case row moves first in the transaction, the messages are rendered after it: a
    message that cannot be rendered undoes the move (the activity fails and is retried)."""
    acts, _ = activities(any_records, policy)
    await open_case(acts, "C-1")
    await acts.record_transition(transition("C-1", 1, ["acknowledged"]))
    broken = transition("C-1", 2, ["resolved"], stage="resolved")
    broken.messages[0].template = "no-such-template"
    with pytest.raises(TemplateNotFound):
        await acts.record_transition(broken)
    async with any_records.sessions() as s:
        row = await s.get(CaseRow, "C-1")
    assert row is not None and (row.step, row.stage) == (1, "resolve")
    assert await count(any_records, TimelineRow, TimelineRow.case_id == "C-1") == 1
    assert await count(any_records, MessageRow, MessageRow.case_id == "C-1") == 1


async def test_a_relay_with_its_batch_full_waits_for_a_send_and_goes_on(
    any_records: Records, policy: Policy
) -> None:
    acts, notifier = activities(any_records, policy)
    await open_case(acts, "C-1")
    for step in range(1, 8):
        await acts.record_transition(transition("C-1", step, [f"line {step}"]))
    await asyncio.wait_for(deliver(acts, batch=2), 30)  # more due than the batch holds
    assert sorted(m.subject for m in notifier.sent) == [f"step {i}" for i in range(1, 8)]
    assert await count(any_records, MessageRow, MessageRow.sent_at.is_(None)) == 0


class Collected:
    """Where an activity hands its new rows when no relay runs yet (the Handoff protocol)."""

    lease = timedelta(seconds=60)

    def __init__(self) -> None:
        self.rows: list[Delivery] = []

    def handoff(self, deliveries: list[Delivery]) -> None:
        self.rows.extend(deliveries)


async def test_handed_off_messages_go_out_while_the_records_are_held(
    any_records: Records, policy: Policy
) -> None:
    """What the activities hand the relay is sent at once, not after the relay's own turn at
    the records: on SQLite that turn queues behind every activity's transaction (one
    connection), which held a herd's messages 16 s behind their transitions."""
    notifier = MemorySender()
    collected = Collected()
    acts = CaseActivities(
        any_records, Channels({"log": notifier}), lambda: policy, handoff=collected
    )
    await open_case(acts, "C-1")
    await acts.record_transition(transition("C-1", 1, ["acknowledged"]))
    await acts.record_transition(transition("C-1", 2, ["resolved"]))
    first, second = collected.rows
    relay = Relay(any_records, acts.channels, poll=120)
    relay.handoff([first])  # handed before the relay runs: sent by its loop
    async with any_records.transaction() as s:  # the records are held meanwhile
        await s.execute(update(CaseRow).where(CaseRow.case_id == "C-1").values(severity="high"))
        task = asyncio.create_task(relay.run())
        await until(_sent(notifier, 1), "the first send", within=5)
        relay.handoff([second])  # handed while the relay runs: sent without the loop
        await until(_sent(notifier, 2), "the second send", within=5)
    try:
        await asyncio.wait_for(relay.drain(), 15)  # and both are marked sent once free
    finally:
        relay.stop()
        await task
    assert [m.subject for m in notifier.sent] == ["step 1", "step 2"]
    assert await count(any_records, MessageRow, MessageRow.sent_at.is_(None)) == 0


async def test_handed_off_messages_are_sent_and_recorded_without_a_claim(
    any_records: Records, policy: Policy
) -> None:
    """A claim is a write transaction (SQLite's one writer): the relay claims at start, on a
    wake-up and when a retry or a lease falls due, never for what was handed to it."""
    notifier = MemorySender()
    collected = Collected()
    acts = CaseActivities(
        any_records, Channels({"log": notifier}), lambda: policy, handoff=collected
    )
    await open_case(acts, "C-1")
    for step in (1, 2, 3):
        await acts.record_transition(transition("C-1", step, [f"line {step}"]))
    claims: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE messages SET attempts="):
            claims.append(statement)

    for engine in any_records.engines:
        event.listen(engine, "before_cursor_execute", seen)
    relay = Relay(any_records, acts.channels, poll=120)
    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: _claimed(claims, 1), "the claim at start", within=5)
        for d in collected.rows:
            relay.handoff([d])
            await until(_sent(notifier, len(notifier.sent) + 1), "a send", within=5)

        async def recorded() -> bool:
            return await count(any_records, MessageRow, MessageRow.sent_at.is_(None)) == 0

        await until(recorded, "every send recorded", within=10)
    finally:
        relay.stop()
        await task
        for engine in any_records.engines:
            event.remove(engine, "before_cursor_execute", seen)
    assert [m.subject for m in notifier.sent] == ["step 1", "step 2", "step 3"]
    assert len(claims) == 1, f"{len(claims)} claims for 3 handed-off messages"


async def _claimed(claims: list[str], n: int) -> bool:
    return len(claims) >= n


def _sent(notifier: MemorySender, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(notifier.sent) >= n

    return check


class FailsOnce:
    """A channel down for its first delivery."""

    def __init__(self) -> None:
        self.attempts = 0
        self.delivered = asyncio.Event()

    async def send(self, delivery: Delivery) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise Transient("connection refused")
        self.delivered.set()


async def test_a_retry_goes_out_when_due_not_at_the_next_poll(
    any_records: Records, policy: Policy
) -> None:
    channel = FailsOnce()
    acts = CaseActivities(any_records, Channels({"log": channel}), lambda: policy)
    await open_case(acts, "C-1")
    await acts.record_transition(transition("C-1", 1, ["acknowledged"]))
    relay = Relay(any_records, acts.channels, poll=120, first_backoff=0.3)
    task = asyncio.create_task(relay.run())
    relay.wake()  # as the activity that queued it does
    try:
        await asyncio.wait_for(channel.delivered.wait(), 15)  # not 120 s later
    finally:
        relay.stop()
        await task
    assert channel.attempts == 2
    assert await count(any_records, MessageRow, MessageRow.sent_at.is_(None)) == 0


async def test_snapshot_only_moves_forward(any_records: Records, policy: Policy) -> None:
    acts, _ = activities(any_records, policy)
    await open_case(acts, "C-1")
    await acts.record_transition(
        transition("C-1", 2, ["escalated"], tier=3, assignee=None, stage="assign")
    )
    await acts.record_transition(
        transition("C-1", 1, ["acknowledged"], tier=2, assignee="bill-ana")
    )
    async with any_records.sessions() as s:
        row = await s.get(CaseRow, "C-1")
    assert row is not None and row.tier == 3 and row.step == 2 and row.stage == "assign"
    assert row.opened_at == T0 and row.opened_at.tzinfo is not None


async def test_assignment_is_least_loaded_and_stable_on_retry(
    any_records: Records, policy: Policy
) -> None:
    acts, notifier = activities(any_records, policy)
    people = rules.people_at(policy, "billing", 3)  # sup-lee, sup-mara: no shifts
    for cid in ("C-1", "C-2", "C-3"):
        await open_case(acts, cid)

    def request(cid: str, step: int) -> AssignRequest:
        return AssignRequest(
            transition=Transition(
                key=f"case-{cid}:run-1:s{step}",
                snapshot=snapshot(cid, step, tier=3, stage="assign"),
                timeline=[],
                messages=[],
            ),
            people=people,
            skill=None,
            exclude=[],
            timezone="UTC",
            assigned_seq=4,
            tier_name="Senior",
            department_name="Billing",
        )

    first = await acts.assign_case(request("C-1", 1))
    assert first.assignee == "sup-lee"  # tie on load: round-robin by id when nobody had one
    retry = await acts.assign_case(request("C-1", 1))
    assert retry.assignee == "sup-lee" and retry.entry == first.entry
    second = await acts.assign_case(request("C-2", 1))
    assert second.assignee == "sup-mara"  # sup-lee now holds an open case
    # C-1 assigned again (a later step): the case itself is not its holder's other case
    again = await acts.assign_case(request("C-1", 2).model_copy(update={"assigned_seq": 5}))
    assert again.assignee == "sup-lee" and "; 0 other open cases" in again.entry.details
    third = await acts.assign_case(request("C-3", 1))
    assert third.assignee in {"sup-lee", "sup-mara"}
    assert "; 1 other open cases" in third.entry.details
    assert await count(any_records, AssignmentRow) == 4
    await deliver(acts)
    assigned_notes = [m for m in notifier.sent if m.subject.startswith("New escalation")]
    assert len(assigned_notes) == 4  # the retry sent nothing new
    async with any_records.sessions() as s:
        row = await s.get(CaseRow, "C-1")
        details = await s.scalar(select(TimelineRow.details).where(TimelineRow.case_id == "C-1"))
    assert row is not None and row.assignee == "sup-lee" and row.stage == "resolve"
    assert details is not None and details.startswith("Jordan Lee (sup-lee)")


def test_database_url_accepts_what_users_type() -> None:
    assert database_url("sqlite:///data/x.db").drivername == "sqlite+aiosqlite"
    assert database_url("postgresql://u@h:5432/db").drivername == "postgresql+asyncpg"
    assert database_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert database_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="DATABASE_URL: unsupported database 'mysql'"):
        database_url("mysql://u@h/db")


def test_time_constants_are_aware() -> None:
    assert (T0 + timedelta(hours=1)).tzinfo is not None


async def test_a_new_case_is_opened_and_assigned_in_one_step_written_once(
    any_records: Records, policy: Policy
) -> None:
    """open_and_assign writes the case's step 1 as the case builds it from the answer, and a
    retry (after another case of the customer was opened) picks the same person and sends
    nothing new."""
    acts, notifier = activities(any_records, policy)
    await open_case(acts, "C-0")  # an earlier case of the customer
    _, req = opened("C-1")
    first = await acts.open_and_assign(req)
    later = OpenCaseRequest(
        case=case_input("C-2"),
        workflow_id="case-C-2",
        run_id="run-1",
        opened_at=T0 + timedelta(minutes=1),
    )
    await acts.open_case(later)
    retry = await acts.open_and_assign(req)
    assert retry.assigned == first.assigned  # the same person, the same line
    assert retry.context.recent_case_ids == first.context.recent_case_ids == ["C-0"]
    # the case's own state from the answer: the lines the records have, in the same order
    state = transitions.identified(req, first.context, policy)
    step = transitions.take(state, "case-C-1", "run-1", 1, T0)
    evolve.apply(state, Assigned(first.assigned.assignee, first.assigned.entry), T0)
    async with any_records.sessions() as s:
        row = await s.get(CaseRow, "C-1")
        lines = (
            await s.scalars(
                select(TimelineRow.what)
                .where(TimelineRow.case_id == "C-1")
                .order_by(TimelineRow.seq)
            )
        ).all()
    assert row is not None and row.step == 1 and row.stage == "resolve"
    assert row.assignee == first.assigned.assignee == state.assignee and row.tier == state.tier
    assert list(lines) == [e.what for e in state.timeline] == ["opened", "identified", "assigned"]
    assert [e.what for e in step.timeline] == ["opened", "identified"]  # and the activity's
    assert state.unrecorded == [] and state.outbox == []  # nothing left for the recorder
    assert await count(any_records, AssignmentRow, AssignmentRow.case_id == "C-1") == 1
    await deliver(acts)
    assert len(notifier.sent) == 2  # the customer's receipt and the assignee's page


async def test_a_run_that_ended_unclosed_is_taken_over_by_the_next(
    any_records: Records, policy: Policy
) -> None:
    """A case whose run ended without closing it (terminated) and is started again under the
    same id: the new run takes the row over from step 0, and its assignment moves it on."""
    acts, _ = activities(any_records, policy)
    await open_case(acts, "C-4")
    await acts.record_transition(transition("C-4", 5, ["escalated"], stage="resolve"))
    _, req = opened("C-4")
    again = await acts.open_and_assign(req.model_copy(update={"run_id": "run-2"}))
    async with any_records.sessions() as s:
        row = await s.get(CaseRow, "C-4")
    assert row is not None and row.run_id == "run-2"
    assert row.step == 1 and row.assignee == again.assigned.assignee


def opened(case_id: str) -> tuple[Opening, OpenCaseRequest]:
    """A case as the workflow opens it, and its request to open and assign it."""
    opening = Opening()
    evolve.open_case(opening, case_input(case_id), T0)
    req = OpenCaseRequest(
        case=case_input(case_id),
        workflow_id=f"case-{case_id}",
        run_id="run-1",
        opened_at=T0,
        timeline=list(opening.timeline),
    )
    return opening, req


def test_a_line_noted_while_the_case_was_opened_follows_its_assignment() -> None:
    opening, req = opened("C-1")
    evolve.ignore(opening, "approve", "the case is still being identified", T0)
    ctx = CustomerContext(policy=load_policy(), recent_cases=0, open_cases=0, recent_case_ids=[])
    state = transitions.identified(req, ctx, ctx.policy)
    transitions.take(state, "case-C-1", "run-1", 1, T0)
    evolve.noted(state, opening.timeline[-1])
    assert [e.seq for e in state.timeline] == [1, 2, 3, 4]
    assert state.timeline[-1].what == "message ignored" and state.unrecorded == state.timeline[-1:]
