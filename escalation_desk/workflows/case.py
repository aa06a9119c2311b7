"""The EscalationCase workflow: identify -> assign -> resolve -> report-up, one case per run.

Message handlers only validate and change state; the main loop does every side effect, one
activity per transition, so each transition is recorded once and in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from .. import search_attributes as sa
    from ..activity_models import (
        AssignRequest,
        AssignResult,
        CaseSnapshot,
        CustomerContext,
        OpenCaseRequest,
        OutboundMessage,
        Transition,
    )
    from ..models import (
        WORKFLOW_TYPE,
        Acknowledge,
        ApprovalRecord,
        Approve,
        Breach,
        CaseInput,
        CaseReport,
        CaseStatus,
        CustomerEscalate,
        CustomerReplied,
        Deadlines,
        Escalate,
        MessageResult,
        PendingApproval,
        Reject,
        RequestApproval,
        Resolve,
        Severity,
        Stage,
        Strict,
        TierVisit,
        TimelineEntry,
        WaitForCustomer,
        describe_validation_error,
        parse_json_object,
        workflow_id_for,
    )
    from ..policy import Policy, shared
    from . import rules
    from .rules import fmt_duration

# workflow.patched ids: each marks a change to the command sequence of running cases.
CONCURRENT_RECORDER = "concurrent-recorder"
# A fired SLA timer reads the clock through a local activity: its recorded completion time
# is the case's time from then on, in the run and in every replay of it
TIMER_CLOCK = "timer-clock"
# A warning that comes due with its deadline already passed says nothing: the breach does
NO_LATE_WARNING = "no-late-warning"

ACTIVITY_TIMEOUT = timedelta(seconds=10)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["CaseClosed", "NoCandidates"],
)


class Rejected(ApplicationError):
    """A message refused by validation: reaches an Update's caller, never fails the case."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="MessageRejected", non_retryable=True)


@workflow.defn(name=WORKFLOW_TYPE)
class EscalationCase:
    def __init__(self) -> None:
        self._case: CaseInput | None = None
        self._policy: Policy | None = None
        self._stage: Stage = "identify"
        self._severity: Severity | None = None
        self._reported_severity: Severity | None = None
        self._tier: int | None = None
        self._department: str | None = None
        self._skill: str | None = None
        self._assignee: str | None = None
        self._acknowledged = False
        self._escalation_type: str | None = None
        self._clocks: rules.Clocks | None = None
        self._warned: set[str] = set()
        self._breached_clocks: set[str] = set()
        self._sla_breached = False
        self._paused_at: datetime | None = None
        self._pending: PendingApproval | None = None
        self._approval_round = 0
        self._approvals: list[ApprovalRecord] = []
        self._breaches: list[Breach] = []
        self._tiers: list[TierVisit] = []
        self._timeline: list[TimelineEntry] = []
        self._unrecorded: list[TimelineEntry] = []
        self._outbox: list[OutboundMessage] = []
        self._needs_assign = False
        self._exclude: list[str] = []
        self._finish: str | None = None
        self._resolution: str | None = None
        self._resolved_by: str | None = None
        self._opened_at: datetime | None = None
        self._closed_at: datetime | None = None
        self._hard_cap_at: datetime | None = None
        self._next_customer_update: datetime | None = None
        self._interim_reports: list[str] = []
        self._escalations = 0
        self._step = 0
        self._msg_seq = 0
        self._mutations = 0
        self._settled = 0
        self._sa_sent: dict[str, Any] = {}
        self._recording = False
        self._recorder_stop = False
        self._reads_clock = False

    # --- run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, raw: Any) -> CaseReport:
        case = self._validated_input(raw)
        self._case = case
        now = workflow.now()
        self._opened_at = now
        self._reported_severity = case.severity
        self._note("opened", case.opened_by, f"{case.channel}: {case.subject}")
        self._set_details()
        await self._open_and_identify(case, now)
        self._upsert_search_attributes()
        await self._main_loop()
        self._stage = "report_up"
        self._upsert_search_attributes()
        self._set_details()
        report = await self._report_up()
        self._stage = "closed"
        self._upsert_search_attributes()
        self._set_details()
        self._settled = self._mutations
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    async def _open_and_identify(self, case: CaseInput, now: datetime) -> None:
        """Its own frame, so the activity result (a full policy copy) is not kept alive by
        `run` for the life of the case; the case keeps the shared policy instance."""
        ctx: CustomerContext = await workflow.execute_activity(
            "open_case",
            OpenCaseRequest(
                case=case,
                workflow_id=workflow.info().workflow_id,
                run_id=workflow.info().run_id,
                opened_at=now,
            ),
            result_type=CustomerContext,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"Open {case.case_id}: load policy and customer history",
        )
        self._identify(ctx)

    def _validated_input(self, raw: Any) -> CaseInput:
        try:
            case = parse_json_object(raw, CaseInput)
        except ValidationError as err:
            raise ApplicationError(
                f"invalid case input: {describe_validation_error(err)}",
                type="InvalidCaseInput",
                non_retryable=True,
            ) from None
        assert isinstance(case, CaseInput)
        expected = workflow_id_for(case.case_id)
        if workflow.info().workflow_id != expected:
            raise ApplicationError(
                f"case_id: workflow id must be {expected!r} for case {case.case_id}",
                type="InvalidCaseInput",
                non_retryable=True,
            )
        return case

    # --- identify -----------------------------------------------------------------------

    def _identify(self, ctx: CustomerContext) -> None:
        case = self._require_case()
        policy = self._policy = shared(ctx.policy)
        severity, reasons = rules.raised_severity(
            policy, case.severity, case.customer.vip, ctx.recent_cases
        )
        department, skill = rules.route(policy, case.category)
        tier = rules.start_tier(policy, severity)
        self._severity = severity
        self._escalation_type = rules.escalation_type_at_start(policy, tier)
        self._skill = skill
        self._hard_cap_at = self._opened() + timedelta(seconds=policy.hard_cap)
        raised = f" (raised from {case.severity}: {', '.join(reasons)})" if reasons else ""
        self._note(
            "identified",
            None,
            f"severity {severity}{raised}; {self._escalation_type} escalation to "
            f"{policy.departments[department].name}, tier {tier}; "
            f"{ctx.open_cases} other open and {ctx.recent_cases} recent cases for this customer; "
            f"policy {policy.version}",
        )
        self._enter_tier(tier, department)
        self._tell_customer(
            f"Your case {case.case_id} has been escalated",
            f'We have escalated your case "{case.subject}" to our '
            f"{policy.departments[department].name} team ({rules.tier(policy, tier).name}). "
            f"We will update you at least every "
            f"{fmt_duration(policy.customer_update_every[severity])}.",
        )
        self._next_customer_update = workflow.now() + timedelta(
            seconds=policy.customer_update_every[severity]
        )

    def _enter_tier(self, tier: int, department: str) -> None:
        now = workflow.now()
        if self._tiers and self._tiers[-1].left_at is None:
            visit = self._tiers[-1]
            visit.left_at = now
            visit.seconds = (now - visit.entered_at).total_seconds()
        self._tier = tier
        self._department = department
        self._tiers.append(TierVisit(tier=tier, department=department, entered_at=now))
        self._assignee = None
        self._acknowledged = False
        self._clocks = None
        self._warned = set()
        self._breached_clocks = set()
        self._paused_at = None
        self._stage = "assign"
        self._needs_assign = True

    # --- main loop ----------------------------------------------------------------------

    async def _main_loop(self) -> None:
        if workflow.patched(CONCURRENT_RECORDER):
            await self._run_clocks_with_recorder()
        else:
            await self._run_clocks_then_record()

    async def _run_clocks_with_recorder(self) -> None:
        """The clocks never wait on the records: a recorder task writes transitions in order
        while this loop keeps the SLA timers, so a database outage delays the records, not
        an escalation. Assignment and report-up wait for the recorder, then carry what is
        still unrecorded in their own activity."""
        recorder = asyncio.create_task(self._recorder())
        while True:
            if self._needs_assign:
                await workflow.wait_condition(lambda: not self._recording)
                await self._assign()
            if self._finish is not None:
                break
            due = self._next_due()
            assert due is not None  # the hard cap is always ahead
            at, kind, label = due
            seen = self._mutations
            wait = (at - workflow.now()).total_seconds()
            if wait > 0:
                try:
                    await workflow.wait_condition(
                        self._changed_since(seen), timeout=wait, timeout_summary=label
                    )
                    continue
                except TimeoutError:
                    if workflow.patched(TIMER_CLOCK):
                        # no patch check after the read: its marker would come a task later
                        self._reads_clock = True
                        await self._read_clock(label)
                        continue  # decide again at the time just read: something may be due
            self._fire(kind)
        await workflow.wait_condition(lambda: not self._recording)
        self._recorder_stop = True
        await recorder

    def _changed_since(self, seen: int) -> Callable[[], bool]:
        """Wake the clock loop when a message changed the case (its next deadline may too)."""
        return lambda: bool(self._needs_assign or self._finish or self._mutations != seen)

    async def _recorder(self) -> None:
        while True:
            await workflow.wait_condition(
                lambda: (
                    self._recorder_stop
                    or bool(
                        (self._unrecorded or self._outbox)
                        and not self._needs_assign
                        and self._finish is None
                    )
                )
            )
            if self._recorder_stop:
                return
            self._recording = True
            try:
                await self._record(self._transition_summary())
            finally:
                self._recording = False

    async def _run_clocks_then_record(self) -> None:
        """Cases started before the recorder: each record is written before the next timer
        (kept so those cases replay exactly as they ran)."""
        while True:
            if self._needs_assign:
                await self._assign()
            if self._finish is not None:
                return
            if self._unrecorded or self._outbox:
                await self._record(self._transition_summary())
                continue
            due = self._next_due()
            has_work: Callable[[], bool] = lambda: bool(  # noqa: E731
                self._needs_assign or self._unrecorded or self._outbox or self._finish
            )
            if due is None:
                await workflow.wait_condition(has_work)
                continue
            at, kind, label = due
            wait = (at - workflow.now()).total_seconds()
            if wait > 0:
                try:
                    await workflow.wait_condition(has_work, timeout=wait, timeout_summary=label)
                    continue
                except TimeoutError:
                    pass
            self._fire(kind)

    def _next_due(self) -> tuple[datetime, str, str] | None:
        """The nearest instant at which the case must act by itself, and why."""
        policy = self._require_policy()
        severity = self._require_severity()
        options: list[tuple[datetime, str, str]] = []
        assert self._hard_cap_at is not None
        options.append(
            (self._hard_cap_at, "hard_cap", f"Hard cap ({fmt_duration(policy.hard_cap)})")
        )
        if self._pending is not None and self._pending.due_by is not None:
            who = ", ".join(self._pending.notified)
            options.append(
                (
                    self._pending.due_by,
                    "approval_due",
                    f"Approval by {who} ({fmt_duration(policy.approval_timeout[severity])})",
                )
            )
        if self._stage == "resolve" and self._paused_at is None and self._clocks is not None:
            tier = rules.tier(policy, self._require_tier())
            c = self._clocks
            ack_w = fmt_duration(tier.ack[severity])
            res_w = fmt_duration(tier.resolve[severity])
            name = f"Tier {tier.level}"
            if not self._acknowledged and "ack" not in self._breached_clocks:
                if "ack" not in self._warned:
                    pct = int(policy.warning_ratio * 100)
                    options.append(
                        (c.ack_warn_at, "ack_warn", f"{name} ack SLA warning ({pct}% of {ack_w})")
                    )
                options.append((c.ack_by, "ack_breach", f"{name} ack SLA ({ack_w})"))
            if "resolve" not in self._breached_clocks:
                if "resolve" not in self._warned:
                    pct = int(policy.warning_ratio * 100)
                    options.append(
                        (
                            c.resolve_warn_at,
                            "resolve_warn",
                            f"{name} resolve SLA warning ({pct}% of {res_w})",
                        )
                    )
                options.append((c.resolve_by, "resolve_breach", f"{name} resolve SLA ({res_w})"))
        if self._paused_at is None and self._next_customer_update is not None:
            every = fmt_duration(policy.customer_update_every[severity])
            options.append(
                (self._next_customer_update, "customer_update", f"Customer update (every {every})")
            )
        return min(options, key=lambda o: o[0])

    def _fire(self, kind: str) -> None:
        policy = self._require_policy()
        severity = self._require_severity()
        tier = self._require_tier()
        dept = self._require_department()
        case = self._require_case()
        if kind == "hard_cap":
            self._note("hard cap reached", None, f"open for {fmt_duration(policy.hard_cap)}")
            self._finish = "hard_cap"
        elif kind in ("ack_warn", "resolve_warn"):
            clock = kind.removesuffix("_warn")
            self._warned.add(clock)
            c = self._require_clocks()
            deadline = c.ack_by if clock == "ack" else c.resolve_by
            if deadline <= workflow.now() and (
                self._reads_clock or workflow.patched(NO_LATE_WARNING)
            ):
                return  # the breach is due too (the server was down): warn of nothing
            left = fmt_duration((deadline - workflow.now()).total_seconds())
            verb = "acknowledged" if clock == "ack" else "resolved"
            self._note(f"{clock} SLA warning", None, f"{left} left to be {verb} at tier {tier}")
            for person in rules.supervisors(policy, dept, tier):
                self._send_internal(
                    person.id,
                    f"SLA warning: {case.case_id} not {verb}, {left} left",
                    f"Case {case.case_id} ({severity}, {case.subject}) assigned to "
                    f"{self._assignee} at tier {tier} has {left} left before its {clock} "
                    f"deadline {deadline.isoformat()}.",
                )
        elif kind in ("ack_breach", "resolve_breach"):
            clock = kind.removesuffix("_breach")
            c = self._require_clocks()
            deadline = c.ack_by if clock == "ack" else c.resolve_by
            self._breached_clocks.add(clock)
            self._breaches.append(
                Breach(tier=tier, clock=clock, deadline=deadline, assignee=self._assignee)
            )
            verb = "acknowledged" if clock == "ack" else "resolved"
            self._note(
                f"{clock} SLA breached",
                None,
                f"not {verb} by {deadline.isoformat()} at tier {tier}",
            )
            if rules.next_tier(policy, tier) is None:
                self._sla_breached = True
                self._interim_reports.append(clock)
                self._upsert_search_attributes()
                for person in rules.report_recipients(policy, dept, tier, True, severity):
                    self._send_internal(
                        person.id,
                        f"SLA breached at the top tier: {case.case_id}",
                        f"Case {case.case_id} ({severity}, customer {case.customer.name}) was "
                        f"not {verb} by {deadline.isoformat()} at tier {tier}. "
                        f"Assignee: {self._assignee}. The case stays open.\n\n"
                        + self._report().model_dump_json(indent=2, exclude={"timeline"}),
                    )
            else:
                self._escalate_tier(None, f"{clock} SLA breached at tier {tier}", automatic=True)
        elif kind == "approval_due":
            self._approval_timed_out()
        elif kind == "customer_update":
            self._next_customer_update = workflow.now() + timedelta(
                seconds=policy.customer_update_every[severity]
            )
            self._tell_customer(
                f"Update on your case {case.case_id}",
                f'Your case "{case.subject}" is being worked on by our '
                f"{policy.departments[dept].name} team ({rules.tier(policy, tier).name})."
                + (" We are waiting on a decision about your request." if self._pending else ""),
            )
            self._note("customer updated", None, "scheduled status update")

    # --- transitions --------------------------------------------------------------------

    def _escalate_tier(self, by: str | None, reason: str, automatic: bool) -> None:
        policy = self._require_policy()
        case = self._require_case()
        old_tier, dept = self._require_tier(), self._require_department()
        new_tier = rules.next_tier(policy, old_tier)
        assert new_tier is not None
        previous = self._assignee
        self._escalations += 1
        self._escalation_type = "hierarchical"
        self._note(
            "escalated",
            by,
            f"tier {old_tier} -> {new_tier}{' (automatic)' if automatic else ''}: {reason}",
        )
        self._enter_tier(new_tier, dept)
        self._exclude = [previous] if previous else []
        if previous:
            self._send_internal(
                previous,
                f"{case.case_id} escalated to tier {new_tier}",
                f"Case {case.case_id} moved from you to tier {new_tier}: {reason}",
            )
        for person in rules.supervisors(policy, dept, new_tier):
            self._send_internal(
                person.id,
                f"{case.case_id} escalated to tier {new_tier}",
                f"Case {case.case_id} ({self._severity}, {case.subject}) was escalated from "
                f"tier {old_tier} to tier {new_tier}: {reason}",
            )
        self._tell_customer(
            f"Your case {case.case_id} has been escalated",
            f'Your case "{case.subject}" is now with our {rules.tier(policy, new_tier).name} team.',
        )

    def _transfer(self, by: str, department: str, reason: str) -> None:
        policy = self._require_policy()
        case = self._require_case()
        previous, old = self._assignee, self._require_department()
        self._escalations += 1
        self._escalation_type = "functional"
        self._withdraw_approval(by, f"transferred to {department}")
        self._note("transferred", by, f"{old} -> {department}: {reason}")
        self._skill = None
        self._enter_tier(self._require_tier(), department)
        self._exclude = []
        if previous:
            self._send_internal(
                previous,
                f"{case.case_id} transferred to {policy.departments[department].name}",
                f"Case {case.case_id} was transferred: {reason}",
            )
        self._tell_customer(
            f"Your case {case.case_id} has moved to a specialist team",
            f'Your case "{case.subject}" is now with our '
            f"{policy.departments[department].name} team.",
        )

    async def _assign(self) -> None:
        policy = self._require_policy()
        tier, dept = self._require_tier(), self._require_department()
        self._stage = "assign"
        self._assignee = None
        self._upsert_search_attributes()
        self._set_details()
        tier_name = rules.tier(policy, tier).name
        dept_name = policy.departments[dept].name
        mark = self._mutations
        # Reserve the "assigned" line now so notes made while the activity runs follow it.
        placeholder = TimelineEntry(
            seq=len(self._timeline) + 1, at=workflow.now(), what="assigned", tier=tier
        )
        self._timeline.append(placeholder)
        result: AssignResult = await workflow.execute_activity(
            "assign_case",
            AssignRequest(
                transition=self._take_transition(),
                people=rules.people_at(policy, dept, tier),
                skill=self._skill,
                exclude=self._exclude,
                timezone=policy.timezone,
                assigned_seq=placeholder.seq,
                tier_name=tier_name,
                department_name=dept_name,
            ),
            result_type=AssignResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"Assign tier {tier} {dept_name} and notify",
        )
        self._timeline[placeholder.seq - 1] = result.entry
        self._needs_assign = False
        self._exclude = []
        self._assignee = result.assignee
        self._stage = "resolve"
        self._acknowledged = False
        self._clocks = rules.clocks(policy, tier, self._require_severity(), workflow.now())
        self._tiers[-1].assignees.append(result.assignee)
        self._settled = max(self._settled, mark)
        self._upsert_search_attributes()
        self._set_details()

    async def _record(self, summary: str) -> None:
        mark = self._mutations
        await workflow.execute_activity(
            "record_transition",
            self._take_transition(),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=summary,
        )
        self._settled = max(self._settled, mark)
        self._upsert_search_attributes()
        self._set_details()

    async def _report_up(self) -> CaseReport:
        policy = self._require_policy()
        case = self._require_case()
        tier, dept = self._require_tier(), self._require_department()
        severity = self._require_severity()
        recipients = rules.report_recipients(policy, dept, tier, self._sla_breached, severity)
        self._note(
            "reported up",
            None,
            f"to {', '.join(p.id for p in recipients)}; outcome {self._finish}",
        )
        report = self._report()
        headline = (
            f"Case {case.case_id} {report.outcome.replace('_', ' ')}: {case.subject} "
            f"({severity}, {fmt_duration(report.duration_seconds)}, "
            f"{len(report.breaches)} breaches, "
            f"tiers {', '.join(str(t.tier) for t in report.tiers)})"
        )
        for person in recipients:
            self._send_internal(
                person.id,
                f"Case report: {case.case_id} {report.outcome}",
                headline + "\n\n" + report.model_dump_json(indent=2, exclude={"timeline"}),
            )
        if report.outcome == "resolved":
            self._tell_customer(
                f"Your case {case.case_id} is resolved",
                f'Your case "{case.subject}" has been resolved: {self._resolution}',
            )
        else:
            self._tell_customer(
                f"Your case {case.case_id} has been closed",
                f'Your case "{case.subject}" has been open for '
                f"{fmt_duration(policy.hard_cap)} and was closed and reported to management, "
                "who will contact you directly.",
            )
        self._closed_at = report.closed_at
        transition = self._take_transition(closing=True)
        transition.report = report
        names = ", ".join(p.id for p in recipients)
        await workflow.execute_activity(
            "record_transition",
            transition,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"Report {case.case_id} up to {names}; tell the customer",
        )
        return report

    def _report(self) -> CaseReport:
        case = self._require_case()
        now = workflow.now()
        tiers = [v.model_copy() for v in self._tiers]
        if tiers and tiers[-1].left_at is None:
            tiers[-1].left_at = now
            tiers[-1].seconds = (now - tiers[-1].entered_at).total_seconds()
        return CaseReport(
            case_id=case.case_id,
            outcome=self._finish or "resolved",
            severity=self._require_severity(),
            reported_severity=case.severity,
            customer=case.customer,
            subject=case.subject,
            department=self._require_department(),
            final_tier=self._require_tier(),
            opened_at=self._opened(),
            closed_at=now,
            duration_seconds=(now - self._opened()).total_seconds(),
            tiers=tiers,
            breaches=list(self._breaches),
            sla_breached=self._sla_breached,
            approvals=list(self._approvals),
            resolution=self._resolution,
            resolved_by=self._resolved_by,
            escalations=self._escalations,
            policy_version=self._require_policy().version,
            timeline=list(self._timeline),
        )

    # --- approvals ----------------------------------------------------------------------

    def _start_approval(self, msg: RequestApproval) -> None:
        policy = self._require_policy()
        severity = self._require_severity()
        approvers = rules.approvers(policy, self._require_department(), msg.action, msg.by)
        self._approval_round = 0
        notify = rules.approvers_to_notify(policy, approvers, 0)
        now = workflow.now()
        self._pending = PendingApproval(
            action=msg.action,
            requested_by=msg.by,
            requested_at=now,
            approvers=approvers,
            notified=notify,
            due_by=now + timedelta(seconds=policy.approval_timeout[severity]),
        )
        a = msg.action
        self._note(
            "approval requested",
            msg.by,
            f"{a.kind} {a.amount:.2f} {a.currency}; asked {', '.join(notify)}",
        )
        self._ask_approvers(notify)

    def _ask_approvers(self, people: list[str]) -> None:
        case = self._require_case()
        pending = self._pending
        assert pending is not None
        a = pending.action
        for pid in people:
            self._send_internal(
                pid,
                f"Approval needed: {a.kind} {a.amount:.2f} {a.currency} on {case.case_id}",
                f"{pending.requested_by} asks to {a.kind} {a.amount:.2f} {a.currency} for "
                f"{case.customer.name} on case {case.case_id} ({case.subject}). "
                f"Decide by {pending.due_by.isoformat() if pending.due_by else 'soon'}: "
                f"escalate approve {case.case_id} --by {pid}  |  "
                f"escalate reject {case.case_id} --by {pid} --reason ...",
            )

    def _approval_timed_out(self) -> None:
        policy = self._require_policy()
        pending = self._pending
        assert pending is not None
        self._approval_round += 1
        nxt = rules.approvers_to_notify(policy, pending.approvers, self._approval_round)
        waited = ", ".join(pending.notified)
        if nxt:
            pending.notified = nxt
            pending.due_by = workflow.now() + timedelta(
                seconds=policy.approval_timeout[self._require_severity()]
            )
            self._note(
                "approval escalated", None, f"no decision from {waited}; asked {', '.join(nxt)}"
            )
            self._ask_approvers(nxt)
        else:
            self._decide("expired", None, f"no decision from anyone authorised (last: {waited})")

    def _decide(self, decision: str, by: str | None, note: str) -> None:
        pending = self._pending
        assert pending is not None
        case = self._require_case()
        self._approvals.append(
            ApprovalRecord(
                action=pending.action,
                requested_by=pending.requested_by,
                requested_at=pending.requested_at,
                decision=decision,
                decided_by=by,
                decided_at=workflow.now(),
                note=note,
            )
        )
        self._pending = None
        a = pending.action
        self._note(
            f"approval {decision}", by, f"{a.kind} {a.amount:.2f} {a.currency}: {note}".rstrip(": ")
        )
        if self._assignee:
            self._send_internal(
                self._assignee,
                f"{a.kind} {a.amount:.2f} {a.currency} {decision} on {case.case_id}",
                f"The {a.kind} of {a.amount:.2f} {a.currency} on case {case.case_id} was "
                f"{decision}{' by ' + by if by else ''}. {note}",
            )
        if decision == "approved":
            self._tell_customer(
                f"Your {a.kind} on case {case.case_id} was approved",
                f"Your {a.kind} of {a.amount:.2f} {a.currency} has been approved.",
            )

    def _withdraw_approval(self, by: str | None, why: str) -> None:
        if self._pending is not None:
            self._decide("withdrawn", by, why)

    # --- messages: validation -----------------------------------------------------------

    def _check(self, name: str, msg: Strict) -> str | None:
        """Why a message cannot be accepted now, or None. Shared by updates and signals."""
        if self._stage in ("report_up", "closed"):
            return f"case is {self._stage.replace('_', '-')}; it takes no more messages"
        if self._policy is None:
            return "case is still being identified; try again in a moment"
        policy = self._policy
        by = getattr(msg, "by", None)
        if name == "customer_escalate":
            if self._stage != "resolve":
                return "case is being assigned; try again in a moment"
            return None
        if name == "customer_replied":
            return None if self._paused_at is not None else "case is not waiting for the customer"
        if name in ("approve", "reject"):
            if self._pending is None:
                return "no approval is pending"
            if by not in self._pending.approvers:
                return (
                    f"by: {by} is not authorised to decide this "
                    f"(approvers: {', '.join(self._pending.approvers)})"
                )
            return None
        if self._stage != "resolve" or self._assignee is None:
            return "case is being assigned; no one holds it yet"
        if name == "escalate":
            assert isinstance(msg, Escalate)
            dept, tier = self._require_department(), self._require_tier()
            if not rules.may_escalate(policy, dept, tier, msg.by, self._assignee):
                return (
                    f"by: {msg.by} is neither the assignee ({self._assignee}) "
                    "nor a supervisor of this case"
                )
            if msg.department is not None:
                if msg.department not in policy.departments:
                    known = ", ".join(policy.departments)
                    return f"department: unknown department {msg.department!r} (known: {known})"
                if msg.department == dept:
                    return f"department: case is already with {msg.department}"
                return None
            if rules.next_tier(policy, tier) is None:
                return f"case is already at the top tier ({tier})"
            return None
        if by != self._assignee:
            return f"by: {by} is not the assignee ({self._assignee})"
        if name == "acknowledge":
            return "case is already acknowledged" if self._acknowledged else None
        if name == "resolve":
            return None
        if name == "wait_for_customer":
            return "case is already waiting for the customer" if self._paused_at else None
        if name == "request_approval":
            assert isinstance(msg, RequestApproval)
            if self._pending is not None:
                return "an approval is already pending"
            try:
                amount = rules.amount_in_policy_currency(policy, msg.action)
                approvers = rules.approvers(policy, self._require_department(), msg.action, msg.by)
            except rules.ApprovalRuleError as err:
                return str(err)
            own = rules.authority(policy, msg.by)
            if amount <= own:
                return (
                    f"action.amount: {msg.action.amount:.2f} {msg.action.currency} is within "
                    f"{msg.by}'s own authority ({own:.2f} {policy.currency}); no approval needed"
                )
            if not approvers:
                return "action.amount: nobody's authority covers this amount"
            return None
        return f"unknown message {name}"

    # --- messages: effects --------------------------------------------------------------

    def _apply(self, name: str, msg: Strict) -> str:
        """Change state for an accepted message; side effects are queued for the main loop."""
        self._mutations += 1
        policy = self._require_policy()
        case = self._require_case()
        if isinstance(msg, Acknowledge):
            self._acknowledged = True
            self._note("acknowledged", msg.by, "")
            self._tell_customer(
                f"Your case {case.case_id} is being handled",
                f"A member of our {policy.departments[self._require_department()].name} team "
                f'has taken your case "{case.subject}".',
            )
            return "acknowledged"
        if isinstance(msg, Resolve):
            self._acknowledged = True
            self._resolution = msg.resolution
            self._resolved_by = msg.by
            self._withdraw_approval(msg.by, "case resolved")
            self._note("resolved", msg.by, msg.resolution)
            self._finish = "resolved"
            return "resolved; reporting up"
        if isinstance(msg, Escalate):
            if msg.department:
                self._transfer(msg.by, msg.department, msg.reason)
                return f"transferred to {msg.department}"
            self._escalate_tier(msg.by, msg.reason, automatic=False)
            return f"escalated to tier {self._tier}"
        if isinstance(msg, RequestApproval):
            self._start_approval(msg)
            asked = ", ".join(self._pending.notified) if self._pending else ""
            return f"approval requested from {asked}"
        if isinstance(msg, Approve):
            self._decide("approved", msg.by, msg.note)
            return "approved"
        if isinstance(msg, Reject):
            self._decide("rejected", msg.by, msg.reason)
            return "rejected"
        if isinstance(msg, WaitForCustomer):
            self._paused_at = workflow.now()
            self._note("waiting for customer", msg.by, msg.question)
            self._tell_customer(f"We need your input on case {case.case_id}", msg.question)
            return "SLA clock paused"
        if isinstance(msg, CustomerReplied):
            paused_at, now = self._paused_at, workflow.now()
            assert paused_at is not None
            paused = now - paused_at
            self._paused_at = None
            if self._clocks is not None:
                self._clocks = rules.resumed(
                    self._require_policy(), self._require_severity(), self._clocks, paused_at, now
                )
            if self._next_customer_update is not None:
                self._next_customer_update += paused
            self._note(
                "customer replied",
                "customer",
                f"{msg.message} (clock paused {fmt_duration(paused.total_seconds())})",
            )
            if self._assignee:
                self._send_internal(
                    self._assignee,
                    f"Customer replied on {case.case_id}",
                    msg.message,
                )
            return "SLA clock resumed"
        if isinstance(msg, CustomerEscalate):
            tier = self._require_tier()
            if rules.next_tier(policy, tier) is None:
                self._note(
                    "customer asked to escalate",
                    "customer",
                    f"{msg.reason} (already at the top tier)",
                )
                for person in policy.executives:
                    self._send_internal(
                        person.id,
                        f"Customer asks to escalate {case.case_id} (top tier)",
                        msg.reason,
                    )
                return "noted; case is already at the top tier"
            self._escalate_tier("customer", f"customer asked: {msg.reason}", automatic=False)
            return f"escalated to tier {self._tier}"
        raise AssertionError(f"unhandled message {name}")

    def _refuse_signal(self, name: str, reason: str) -> None:
        self._mutations += 1
        self._note("message ignored", None, f"invalid {name} signal: {reason}")

    async def _handle_update(self, name: str, msg: Strict) -> MessageResult:
        problem = self._check(name, msg)
        if problem is not None:  # state changed since validation
            raise Rejected(problem)
        text = self._apply(name, msg)
        target = self._mutations
        await workflow.wait_condition(lambda: self._settled >= target)
        return MessageResult(
            accepted=True, message=text, stage=self._stage, tier=self._tier, assignee=self._assignee
        )

    def _validate_update(self, name: str, msg: Strict) -> None:
        problem = self._check(name, msg)
        if problem is not None:
            raise Rejected(problem)

    def _handle_signal(self, name: str, model: type[Strict], payload: Any) -> None:
        try:
            msg = parse_json_object(payload, model)
        except ValidationError as err:
            self._refuse_signal(name, describe_validation_error(err))
            return
        problem = self._check(name, msg)
        if problem is not None:
            if self._stage == "closed":
                return
            self._refuse_signal(name, problem)
            return
        self._apply(name, msg)

    # acknowledge
    @workflow.update(name="acknowledge")
    async def acknowledge(self, msg: Acknowledge) -> MessageResult:
        return await self._handle_update("acknowledge", msg)

    @acknowledge.validator
    def _v_acknowledge(self, msg: Acknowledge) -> None:
        self._validate_update("acknowledge", msg)

    @workflow.signal(name="acknowledge")
    def acknowledge_signal(self, payload: Any = None) -> None:
        self._handle_signal("acknowledge", Acknowledge, payload)

    # resolve
    @workflow.update(name="resolve")
    async def resolve(self, msg: Resolve) -> MessageResult:
        return await self._handle_update("resolve", msg)

    @resolve.validator
    def _v_resolve(self, msg: Resolve) -> None:
        self._validate_update("resolve", msg)

    @workflow.signal(name="resolve")
    def resolve_signal(self, payload: Any = None) -> None:
        self._handle_signal("resolve", Resolve, payload)

    # escalate
    @workflow.update(name="escalate")
    async def escalate(self, msg: Escalate) -> MessageResult:
        return await self._handle_update("escalate", msg)

    @escalate.validator
    def _v_escalate(self, msg: Escalate) -> None:
        self._validate_update("escalate", msg)

    @workflow.signal(name="escalate")
    def escalate_signal(self, payload: Any = None) -> None:
        self._handle_signal("escalate", Escalate, payload)

    # request_approval
    @workflow.update(name="request_approval")
    async def request_approval(self, msg: RequestApproval) -> MessageResult:
        return await self._handle_update("request_approval", msg)

    @request_approval.validator
    def _v_request_approval(self, msg: RequestApproval) -> None:
        self._validate_update("request_approval", msg)

    @workflow.signal(name="request_approval")
    def request_approval_signal(self, payload: Any = None) -> None:
        self._handle_signal("request_approval", RequestApproval, payload)

    # approve
    @workflow.update(name="approve")
    async def approve(self, msg: Approve) -> MessageResult:
        return await self._handle_update("approve", msg)

    @approve.validator
    def _v_approve(self, msg: Approve) -> None:
        self._validate_update("approve", msg)

    @workflow.signal(name="approve")
    def approve_signal(self, payload: Any = None) -> None:
        self._handle_signal("approve", Approve, payload)

    # reject
    @workflow.update(name="reject")
    async def reject(self, msg: Reject) -> MessageResult:
        return await self._handle_update("reject", msg)

    @reject.validator
    def _v_reject(self, msg: Reject) -> None:
        self._validate_update("reject", msg)

    @workflow.signal(name="reject")
    def reject_signal(self, payload: Any = None) -> None:
        self._handle_signal("reject", Reject, payload)

    # wait_for_customer
    @workflow.update(name="wait_for_customer")
    async def wait_for_customer(self, msg: WaitForCustomer) -> MessageResult:
        return await self._handle_update("wait_for_customer", msg)

    @wait_for_customer.validator
    def _v_wait_for_customer(self, msg: WaitForCustomer) -> None:
        self._validate_update("wait_for_customer", msg)

    @workflow.signal(name="wait_for_customer")
    def wait_for_customer_signal(self, payload: Any = None) -> None:
        self._handle_signal("wait_for_customer", WaitForCustomer, payload)

    # customer_replied
    @workflow.update(name="customer_replied")
    async def customer_replied(self, msg: CustomerReplied) -> MessageResult:
        return await self._handle_update("customer_replied", msg)

    @customer_replied.validator
    def _v_customer_replied(self, msg: CustomerReplied) -> None:
        self._validate_update("customer_replied", msg)

    @workflow.signal(name="customer_replied")
    def customer_replied_signal(self, payload: Any = None) -> None:
        self._handle_signal("customer_replied", CustomerReplied, payload)

    # customer_escalate
    @workflow.update(name="customer_escalate")
    async def customer_escalate(self, msg: CustomerEscalate) -> MessageResult:
        return await self._handle_update("customer_escalate", msg)

    @customer_escalate.validator
    def _v_customer_escalate(self, msg: CustomerEscalate) -> None:
        self._validate_update("customer_escalate", msg)

    @workflow.signal(name="customer_escalate")
    def customer_escalate_signal(self, payload: Any = None) -> None:
        self._handle_signal("customer_escalate", CustomerEscalate, payload)

    # --- query --------------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> CaseStatus:
        case = self._case
        policy = self._policy
        c = self._clocks
        deadlines = Deadlines()
        remaining: dict[str, float] | None = None
        if c is not None:
            deadlines = Deadlines(
                ack_by=None if self._acknowledged else c.ack_by, resolve_by=c.resolve_by
            )
            if self._paused_at is not None and policy is not None:
                sev, at = self._require_severity(), self._paused_at
                remaining = {"resolve": rules.sla_left(policy, sev, at, c.resolve_by)}
                if not self._acknowledged:
                    remaining["ack"] = rules.sla_left(policy, sev, at, c.ack_by)
        return CaseStatus(
            case_id=case.case_id if case else workflow.info().workflow_id.removeprefix("case-"),
            stage=self._stage,
            severity=self._severity,
            reported_severity=self._reported_severity,
            tier=self._tier,
            tier_name=rules.tier(policy, self._tier).name if policy and self._tier else None,
            department=self._department,
            assignee=self._assignee,
            acknowledged=self._acknowledged,
            escalation_type=self._escalation_type,
            deadlines=deadlines,
            sla_breached=self._sla_breached,
            paused=self._paused_at is not None,
            paused_remaining_seconds=remaining,
            pending_approval=self._pending,
            approvals=self._approvals,
            breaches=self._breaches,
            customer=case.customer if case else None,
            subject=case.subject if case else None,
            category=case.category if case else None,
            requested_action=case.requested_action if case else None,
            policy_version=policy.version if policy else None,
            opened_at=self._opened_at,
            closed_at=self._closed_at,
            outcome=self._finish if self._stage == "closed" else None,
            resolution=self._resolution,
            timeline=self._timeline,
        )

    # --- helpers ------------------------------------------------------------------------

    def _note(self, what: str, by: str | None, details: str) -> None:
        entry = TimelineEntry(
            seq=len(self._timeline) + 1,
            at=workflow.now(),
            what=what,
            by=by,
            tier=self._tier,
            details=details,
        )
        self._timeline.append(entry)
        self._unrecorded.append(entry)

    def _message_key(self) -> str:
        self._msg_seq += 1
        info = workflow.info()
        return f"{info.workflow_id}:{info.run_id}:m{self._msg_seq}"

    def _send_internal(self, person_id: str, subject: str, body: str) -> None:
        person = rules.find_person(self._require_policy(), person_id)
        if person is None:
            return
        self._outbox.append(
            OutboundMessage(
                key=self._message_key(),
                channel="internal",
                recipient=person.id,
                address=person.email,
                subject=subject,
                body=body,
            )
        )

    def _tell_customer(self, subject: str, body: str) -> None:
        case = self._require_case()
        self._outbox.append(
            OutboundMessage(
                key=self._message_key(),
                channel="customer",
                recipient=case.customer.id,
                address=case.customer.email,
                subject=subject,
                body=f"Dear {case.customer.name},\n\n{body}\n\nCase reference: {case.case_id}",
            )
        )

    def _take_transition(self, closing: bool = False) -> Transition:
        self._step += 1
        info = workflow.info()
        case = self._require_case()
        c = self._clocks
        snapshot = CaseSnapshot(
            case_id=case.case_id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            step=self._step,
            customer_id=case.customer.id,
            customer_name=case.customer.name,
            subject=case.subject,
            category=case.category,
            channel=case.channel,
            severity=self._require_severity(),
            reported_severity=case.severity,
            stage="closed" if closing else self._stage,
            tier=self._tier,
            department=self._department,
            assignee=self._assignee,
            sla_breached=self._sla_breached,
            opened_at=self._opened(),
            closed_at=self._closed_at if closing else None,
            outcome=self._finish if closing else None,
            ack_by=c.ack_by if c and not self._acknowledged else None,
            resolve_by=c.resolve_by if c else None,
            policy_version=self._require_policy().version,
        )
        transition = Transition(
            key=f"{info.workflow_id}:{info.run_id}:s{self._step}",
            snapshot=snapshot,
            timeline=self._unrecorded,
            messages=self._outbox,
        )
        self._unrecorded = []
        self._outbox = []
        return transition

    def _transition_summary(self) -> str:
        what = ", ".join(dict.fromkeys(e.what for e in self._unrecorded)) or "update"
        people = list(dict.fromkeys(m.recipient for m in self._outbox if m.channel == "internal"))
        parts = [f"Record {what}"]
        if people:
            parts.append(f"notify {', '.join(people[:3])}{' …' if len(people) > 3 else ''}")
        if any(m.channel == "customer" for m in self._outbox):
            parts.append("tell the customer")
        return "; ".join(parts)

    def _upsert_search_attributes(self) -> None:
        """Send only the attributes whose values changed since the last upsert."""
        case = self._case
        if case is None:
            return
        deadline: datetime | None = None
        if self._clocks is not None and self._paused_at is None and self._stage == "resolve":
            deadline = self._clocks.resolve_by if self._acknowledged else self._clocks.ack_by
        wanted: dict[str, Any] = {
            sa.CASE_ID.name: case.case_id,
            sa.CUSTOMER_ID.name: case.customer.id,
            sa.CASE_STAGE.name: self._stage,
            sa.CASE_TIER.name: self._tier,
            sa.CASE_SEVERITY.name: self._severity,
            sa.CASE_DEPARTMENT.name: self._department,
            sa.CASE_ASSIGNEE.name: self._assignee,
            sa.SLA_BREACHED.name: self._sla_breached,
            sa.SLA_DEADLINE.name: deadline,
        }
        keys = {k.name: k for k in sa.ALL}
        updates = []
        for name, value in wanted.items():
            if name in self._sa_sent and self._sa_sent[name] == value:
                continue
            if value is None and name not in self._sa_sent:
                continue
            self._sa_sent[name] = value
            key = keys[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))
        if updates:
            workflow.upsert_search_attributes(updates)

    def _set_details(self) -> None:
        case = self._case
        if case is None:
            return
        lines = [f"**Stage:** {self._stage.replace('_', '-')}"]
        if self._severity:
            lines.append(f"**Severity:** {self._severity}")
        if self._tier is not None and self._policy is not None:
            lines.append(f"**Tier:** {self._tier} ({rules.tier(self._policy, self._tier).name})")
        if self._department and self._policy is not None:
            lines.append(f"**Department:** {self._policy.departments[self._department].name}")
        acked = " (acknowledged)" if self._acknowledged else ""
        lines.append(f"**Assignee:** {self._assignee or '—'}{acked}")
        if self._clocks is not None and self._stage == "resolve":
            if not self._acknowledged:
                lines.append(f"**Acknowledge by:** {self._clocks.ack_by:%Y-%m-%d %H:%M} UTC")
            lines.append(f"**Resolve by:** {self._clocks.resolve_by:%Y-%m-%d %H:%M} UTC")
        if self._paused_at is not None:
            lines.append(
                f"**Paused:** waiting for the customer since {self._paused_at:%Y-%m-%d %H:%M} UTC"
            )
        if self._pending is not None:
            a = self._pending.action
            lines.append(
                f"**Pending approval:** {a.kind} {a.amount:.2f} {a.currency} — "
                f"asked {', '.join(self._pending.notified)}"
            )
        if self._sla_breached:
            lines.append("**SLA breached at the top tier**")
        if self._finish:
            lines.append(f"**Outcome:** {self._finish}")
        workflow.set_current_details("\n\n".join(lines))

    def _require_case(self) -> CaseInput:
        assert self._case is not None
        return self._case

    def _require_policy(self) -> Policy:
        assert self._policy is not None
        return self._policy

    def _require_severity(self) -> Severity:
        assert self._severity is not None
        return self._severity

    def _require_tier(self) -> int:
        assert self._tier is not None
        return self._tier

    def _require_department(self) -> str:
        assert self._department is not None
        return self._department

    def _require_clocks(self) -> rules.Clocks:
        assert self._clocks is not None
        return self._clocks

    async def _read_clock(self, label: str) -> None:
        """The task that delivers a fired timer can carry the previous task's time (seen once
        after a server restart: a breach due 15 s ago looked 30 s away, and the server's
        history, with the real time, no longer replayed). A local activity's completion time
        becomes the workflow's time and is recorded in its marker, so what the case decides
        next is right now and the same on replay."""
        await workflow.execute_local_activity(
            "read_clock",
            start_to_close_timeout=timedelta(seconds=10),
            summary=f"Read the clock: {label}",
        )

    def _opened(self) -> datetime:
        assert self._opened_at is not None
        return self._opened_at
