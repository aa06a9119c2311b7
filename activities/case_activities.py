"""Side effects of a case: open it in the records, assign, record transitions, queue messages.

Each activity is one database transaction keyed by workflow id + run id + step, so a retry
(after a timeout that did write, say) finds its earlier rows and writes nothing twice.
Messages go to the outbox in the same transaction, rendered from the case's notices, one row
per channel they leave by (outbox_rows.py: mail or the log, the person's chat channels, a
webhook per case event); the relay (relay.py) delivers them, so no channel ever holds up a
case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import case_statements as sql
from activities import tracing
from activities.channels import Channels
from activities.outbox_rows import message_rows, webhook_rows
from activities.records import (
    MessageRow,
    Records,
    TimelineRow,
    approver_list,
    table_of,
    timeline_row,
)
from activities.relay import Handoff, delivery_of
from activities.render import Renderer
from workflows import proofs, transitions
from workflows.activity_models import (
    AssignRequest,
    AssignResult,
    CaseSnapshot,
    CustomerContext,
    OpenCaseRequest,
    OpenedCase,
    OutboundMessage,
    ProofClaim,
    Transition,
)
from workflows.models import TimelineEntry
from workflows.policy import Policy
from workflows.rules import candidates, pick_assignee

Row = dict[str, object]


def _now() -> datetime:
    return datetime.now(UTC)


class CaseActivities:
    def __init__(
        self,
        records: Records,
        channels: Channels,
        policy: Callable[[], Policy],
        renderer: Renderer | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self.records = records
        self.channels = channels
        self.policy = policy
        self.renderer = renderer or Renderer()
        # the worker's relay, given each new message row already leased to it (relay.py)
        self.relay = handoff
        self._kept_policies: set[str] = set()  # versions the records have (PolicyRow)

    @activity.defn(name="read_clock")
    async def read_clock(self) -> None:
        """Nothing to do: the case wants this call's recorded completion time (case.py)."""

    @activity.defn(name="check_proof")
    async def check_proof(self, claim: ProofClaim) -> str:
        """A Signal's proof, checked with this worker's secret: "" when it holds, else why not
        (the answer is recorded, so the case replays the same whatever the secret is later)."""
        return proofs.check_claim(claim, _now()) or ""

    @activity.defn(name="open_case")
    async def open_case(self, req: OpenCaseRequest) -> CustomerContext:
        """Create the case row (or take over an unfinished one) and read the customer's history."""
        policy = self.policy()
        ctx, keep = await self.records.run(lambda c: self._open(c, req, policy))
        if keep:  # committed
            self._kept_policies.add(policy.version)
        return ctx

    def _open(
        self, c: Connection, req: OpenCaseRequest, policy: Policy
    ) -> tuple[CustomerContext, bool]:
        """open_case's writes and reads in `c`; and whether it kept the policy version."""
        case = req.case
        window_start = req.opened_at - timedelta(seconds=policy.severity_raise.repeat_window)
        fresh = {
            "case_id": case.case_id,
            "workflow_id": req.workflow_id,
            "run_id": req.run_id,
            "step": 0,
            "customer_id": case.customer.id,
            "customer_name": case.customer.name,
            "customer_vip": case.customer.vip,
            "subject": case.subject,
            "category": case.category,
            "channel": case.channel,
            "severity": case.severity,
            "reported_severity": case.severity,
            "stage": "identify",
            "sla_breached": False,
            "opened_at": req.opened_at,
            "policy_version": policy.version,
        }
        this = {"case": case.case_id}
        upserts = sql.upserts(c.dialect.name)
        if c.scalar(upserts.open_case, fresh) is None:  # a retry, or the id again
            closed_at, run_id = c.execute(sql.OPENED, this).one()
            if closed_at is not None and run_id != req.run_id:
                raise ApplicationError(
                    f"case_id: case {case.case_id} was closed at {closed_at.isoformat()}; "
                    "open a new case id instead",
                    type="CaseClosed",
                    non_retryable=True,
                )
            if run_id != req.run_id:  # a run that ended unclosed (terminated): this one takes over
                c.execute(sql.TAKE_OVER, {**this, "run": req.run_id})
        keep = policy.version not in self._kept_policies
        if keep:
            body = policy.model_dump(mode="json")
            version = {"version": policy.version, "body": body, "first_used_at": req.opened_at}
            c.execute(upserts.keep_policy, version)
        others = {**this, "customer": case.customer.id}
        window = {**others, "since": window_start, "until": req.opened_at}
        recent = c.scalars(sql.RECENT, window).all()
        open_count = c.scalar(sql.OPEN_COUNT, others)
        context = CustomerContext(
            policy=policy,
            recent_cases=len(recent),
            open_cases=int(open_count or 0),
            recent_case_ids=list(recent),
        )
        return context, keep

    @activity.defn(name="open_and_assign")
    async def open_and_assign(self, req: OpenCaseRequest) -> OpenedCase:
        """A new case's first step in one activity: open it, identify it as the case will
        (the same pure code) and assign it, in one transaction. A retry finds both rows by
        their keys."""
        policy = self.policy()

        def work(c: Connection) -> tuple[CustomerContext, bool, AssignResult, list[Row]]:
            ctx, keep = self._open(c, req, policy)
            return ctx, keep, *self._assign(c, transitions.first_assignment(req, ctx))

        ctx, keep, assigned, new = await self.records.run(work)
        if keep:  # committed
            self._kept_policies.add(policy.version)
        self._hand_off(new)
        return OpenedCase(context=ctx, assigned=assigned)

    @activity.defn(name="assign_case")
    async def assign_case(self, req: AssignRequest) -> AssignResult:
        """Pick the least-loaded candidate (round-robin on ties), record it and tell them."""
        assigned, new = await self.records.run(lambda c: self._assign(c, req))
        self._hand_off(new)
        return assigned

    def _assign(self, c: Connection, req: AssignRequest) -> tuple[AssignResult, list[Row]]:
        """assign_case's writes in `c`; and the message rows to hand to the relay once
        committed."""
        t = req.transition
        snap = t.snapshot
        eligible = candidates(req.people, req.skill, req.timezone, _now(), req.exclude)
        if not eligible:
            raise ApplicationError(
                f"nobody works tier {snap.tier} of {snap.department}", type="NoCandidates"
            )
        found = c.execute(sql.CHOSEN, {"key": t.key}).first()
        if found is not None:  # a retry: as it was chosen then
            person_id, open_load, assigned_at = found
        else:
            ids = [c.id for c in eligible]
            loads, last = _loads(c, ids, snap.case_id)
            chosen = req.prefer if req.prefer in ids else pick_assignee(ids, loads, last)
            row = {
                "key": t.key,
                "case_id": snap.case_id,
                "person_id": chosen,
                "tier": snap.tier or 0,
                "department": snap.department or "",
                "open_load": loads.get(chosen, 0),
                "assigned_at": _now(),
            }
            c.execute(sql.ASSIGNMENTS.insert(), [row])
            person_id, open_load, assigned_at = chosen, loads.get(chosen, 0), row["assigned_at"]
        person = next(c for c in req.people if c.id == person_id)
        entry = TimelineEntry(
            seq=req.assigned_seq,
            at=assigned_at,
            what="assigned",
            by=None,
            tier=snap.tier,
            details=(
                f"{person.name} ({person.id}), {req.tier_name}, {req.department_name}; "
                f"{open_load} other open cases"
            ),
        )
        snap = snap.model_copy(
            update={
                "assignee": person.id,
                "stage": "resolve",
                "acknowledged": False,
                "ack_by": req.ack_by,
                "resolve_by": req.resolve_by,
            }
        )
        notice = OutboundMessage(
            key=f"{t.key}:assigned",
            channel="internal",
            recipient=person.id,
            address=person.email,
            template="assigned",
            facts={
                "person": person.id,
                "tier_name": req.tier_name,
                "department_name": req.department_name,
            },
        )
        new = self._write(c, snap, [*t.timeline, entry], [*t.messages, notice], t)
        return AssignResult(assignee=person.id, entry=entry), new

    @activity.defn(name="record_transition")
    async def record_transition(self, t: Transition) -> None:
        """Write the case's new state, timeline lines and outbox in one transaction."""
        snap, timeline, messages = t.snapshot, t.timeline, t.messages
        new = await self.records.run(lambda c: self._write(c, snap, timeline, messages, t))
        self._hand_off(new)

    def _hand_off(self, rows: list[Row]) -> None:
        """After the commit: the relay sends what this transaction queued, at once."""
        if self.relay is not None and rows:
            self.relay.handoff([delivery_of(r) for r in rows])

    def _write(
        self,
        c: Connection,
        snap: CaseSnapshot,
        timeline: Sequence[TimelineEntry],
        messages: Sequence[OutboundMessage],
        t: Transition,
    ) -> list[Row]:
        """Returns the message rows this call inserted (none when a retry finds them)."""
        c.execute(
            sql.MOVE_FORWARD,
            {
                "case": snap.case_id,
                **{col: getattr(snap, col) for col in sql.SNAPSHOT_COLUMNS},
                "approvers": approver_list(snap.approvers),
            },
        )
        now = _now()
        messages = [self.renderer.render(m, snap) for m in messages]
        rows = [timeline_row(snap.workflow_id, snap.run_id, snap.case_id, e) for e in timeline]
        _insert_new(c, TimelineRow, rows)
        mail = self.channels.mail
        deliveries = [d for m in messages for d in message_rows(m, snap, now, self.policy(), mail)]
        if url := self.channels.webhook_url:
            closed_key = f"{t.key}:closed:webhook" if t.report is not None else None
            deliveries += webhook_rows(snap, timeline, closed_key, now, url)
        parent = tracing.traceparent()
        leased = now + self.relay.lease if self.relay is not None else None
        for d in deliveries:
            d["traceparent"] = parent
            if leased is not None:  # handed to this worker's relay after the commit
                d["lease_until"], d["attempts"] = leased, 1
        inserted = _insert_new(c, MessageRow, deliveries)
        if t.report is not None:
            r = t.report
            # one report per case (its workflow id's key): one of later case time replaces an
            # earlier one (the resolution's, by the one at close); a late retry changes nothing
            report = {
                "key": f"{snap.workflow_id}:report",
                "case_id": r.case_id,
                "outcome": r.outcome,
                "severity": r.severity,
                "department": r.department,
                "sla_breached": r.sla_breached,
                "duration_seconds": r.duration_seconds,
                "created_at": now,
                "body": r.model_dump(mode="json"),
            }
            c.execute(sql.upserts(c.dialect.name).keep_report, [report])
        return inserted


def _insert_new(c: Connection, table: Any, rows: list[Row]) -> list[Row]:
    """Insert rows whose key is not there yet (ON CONFLICT DO NOTHING on both backends);
    returns those inserted."""
    if not rows:
        return []
    columns = {col for row in rows for col in row}
    rows = [{col: row.get(col) for col in columns} for row in rows]  # one shape for a batch
    # the rows as parameters of one constant statement (compiled once per process); on the
    # table, not the ORM entity, which split a batch by the columns its rows leave empty
    stmt = sql.upserts(c.dialect.name).new_rows[table_of(table).name]
    keys = set(c.scalars(stmt, rows).all())
    return [row for row in rows if row["key"] in keys]


def _loads(
    c: Connection, ids: list[str], case_id: str
) -> tuple[dict[str, int], dict[str, datetime]]:
    """Each candidate's other open cases and last assignment, read from indexes alone
    (migration 0007): this runs on SQLite's one writer for every assignment."""
    loads: dict[str, int] = {str(who): int(n) for who, n in c.execute(sql.LOADS, {"ids": ids})}
    holder = c.scalar(sql.HOLDER, {"case": case_id})  # this case is no one's other case
    if holder in loads:
        loads[holder] -= 1
    people = {f"p{i}": who for i, who in enumerate(ids)}
    times = c.execute(sql.last_assigned(len(ids)), people).one()
    return loads, {who: at for who, at in zip(ids, times, strict=True) if at is not None}
