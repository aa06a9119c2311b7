"""The EscalationCase workflow: the Temporal shell around the pure case core (state,
decisions, evolve, projections). It runs the clock loop and the recorder, which do every side
effect through activities (so each transition is recorded once, in order), and registers one
Update, validator and Signal per message of the registry; handlers only change state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import (
        carry,
        decisions,
        evolve,
        measures,
        offers,
        projections,
        tracecontext,
        transitions,
    )
    from workflows import search_attributes as sa
    from workflows.activity_models import (
        AssignResult,
        Transition,
    )
    from workflows.alarm import Alarm
    from workflows.events import Assigned, AssignmentStarted
    from workflows.handlers import MessageIntake, register_messages
    from workflows.models import (
        WORKFLOW_TYPE,
        CaseReport,
        CaseStatus,
        Stage,
        case_input,
    )
    from workflows.opening import ACTIVITY_RETRY, ACTIVITY_TIMEOUT, CaseOpening
    from workflows.state import CaseState, Due, DueKind, Opening

# workflow.patched ids, each a change to the command sequence of running cases:
CONCURRENT_RECORDER = "concurrent-recorder"  # the records are written beside the clocks
TIMER_CLOCK = "timer-clock"  # a fired timer reads the clock (a local activity) first
NO_LATE_WARNING = "no-late-warning"  # no warning once its deadline has passed as well
RENOTIFY = "renotify"  # an unacknowledged assignee is paged again (policy renotify_every)
RESOLVED_STAGE = "resolved-stage"  # resolved cases stay open for the reopen window
CONTINUE_AS_NEW = "continue-as-new"  # a long case carries its state into a new run
# (and SIGNAL_PROOF, with the message intake in handlers.py)
# CASE_V2 (handlers.py) stands for every change above in the cases started since: a patch
# costs a case a marker and a search-attribute upsert where it is first met, so a new case
# pays for one, not one per change; cases started before it meet the patches one by one, as
# they ran. Its own change: report-up is not shown in the search attributes (it lasts ms).
# CASE_V3 (handlers.py) stands for CASE_V2 and its own change: the reopen window's end
# closes the case without a clock read. CASE_V4 (handlers.py) stands for CASE_V3 and its
# own change: a new case is opened and assigned in one activity (opening.py). CASE_V5
# (handlers.py) stands for CASE_V4 and its own change: one timer at a time (alarm.py).

MAX_HISTORY_EVENTS = 2_000  # well below the server's limits (50k events, 50 MB)


class EscalationCase(CaseOpening, MessageIntake):
    @workflow.init
    def __init__(self, raw: Any) -> None:
        """With the input, before any message is handled: a long case's next run has its
        carried state when the first message across the boundary arrives."""
        self._opening = Opening()
        self._state: CaseState | None = None  # from identify on
        self._step = 0  # transitions taken for the records
        self._mutations = 0  # messages applied or noted
        self._settled = 0  # of those, how many the records have
        self._sa_sent: dict[str, Any] = {}
        self._recording = False
        self._recorder_stop = False
        self._reads_clock = False
        self._proving = 0  # Signals whose proof is being checked
        self._meter = measures.Meter()
        self._trace: dict[str, str] | None = None  # the last Update's trace, for its record
        if carry.is_carried(raw):  # a long case, continued as new: it carries on as it was
            self._state, self._step = carry.restored(raw)
            self._opening.case, self._opening.opened_at = self._case.case, self._case.opened_at

    # --- run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, raw: Any) -> CaseReport:
        self._current()  # decided in a case's first task: on replay, always as it ran
        if not carry.is_carried(raw):  # else __init__ restored the carried state
            try:
                case = case_input(raw, workflow.info().workflow_id)
            except ValueError as err:
                raise ApplicationError(
                    str(err), type="InvalidCaseInput", non_retryable=True
                ) from None
            now = workflow.now()
            evolve.open_case(self._opening, case, now)
            self._set_details()
            if self._v4():
                await self._open_and_assign(case, now)
            else:
                await self._open_and_identify(case, now)
                if self._case.renotify_every and not self._since(RENOTIFY):
                    self._case.renotify_every = None
        self._upsert_search_attributes()
        while True:
            if self._since(CONCURRENT_RECORDER):
                await self._run_clocks_with_recorder()
            else:
                await self._run_clocks_then_record()
            if self._case.window_closed:
                report = await self._close()
                break
            self._enter_stage("report_up")
            report = await self._report_up()
            if self._case.stage != "resolved":
                break
            self._enter_stage("resolved")  # open for the customer's verdict and a reopen
        self._enter_stage("closed")
        self._settled = self._mutations
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() and not self._proving
        )
        return report

    def _enter_stage(self, stage: Stage) -> None:
        self._case.stage = stage
        self._upsert_search_attributes()
        self._set_details()

    # --- the clocks -----------------------------------------------------------------------

    async def _run_clocks_with_recorder(self) -> None:
        """The clocks never wait on the records: a recorder task writes transitions in order
        while this loop keeps the SLA timers, so a database outage delays the records, not
        an escalation. Assignment and report-up wait for the recorder, then carry what is
        still unrecorded in their own activity."""
        s = self._case
        self._recorder_stop = False  # a reopened or continued case runs it again
        recorder = asyncio.create_task(self._recorder())
        alarm = Alarm()  # since case-v5; until it rings, its time is the task's
        while True:
            if s.needs_assign:
                await workflow.wait_condition(lambda: not self._recording)
                await self._assign()
            if s.finish is not None:
                break
            if self._history_is_long() and self._since(CONTINUE_AS_NEW):
                alarm.cancel()
                await self._continue_as_new(recorder)
            due = decisions.next_due(s)
            seen = self._mutations
            now = alarm.now()
            wait = (due.at - now).total_seconds()
            if wait > 0:
                if self._v5():
                    alarm.set(due, now)
                    await workflow.wait_condition(self._changed_since(seen, alarm))
                    if not alarm.rang:
                        continue
                    rang_for, due = alarm.took(), decisions.next_due(s)
                    if due.at > rang_for:  # set for a deadline that has since moved later
                        continue
                else:
                    try:
                        await workflow.wait_condition(
                            self._changed_since(seen), timeout=wait, timeout_summary=due.label
                        )
                        continue
                    except TimeoutError:
                        pass
                # no patch check after the read: its marker would come a task later
                self._reads_clock = self._since(TIMER_CLOCK)
                if self._reads_clock and not self._ends_window(due):
                    await self._read_clock(due.label)
                    continue  # decide again at the time just read: something may be due
            self._fire(due)
        alarm.cancel()
        await workflow.wait_condition(lambda: not self._recording)
        self._recorder_stop = True
        await recorder

    def _ends_window(self, due: Due) -> bool:
        """Since case-v3 the reopen window's end closes the case without a clock read: nothing
        else falls due in the window and closing decides nothing by the time, so the fired
        timer is enough, whatever time its task carries (replay gives the same answer)."""
        return (
            self._v3() and due.kind is DueKind.WINDOW_END and decisions.next_due(self._case) == due
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > MAX_HISTORY_EVENTS
        )

    async def _continue_as_new(self, recorder: asyncio.Task[None]) -> None:
        """At a safe point only: every message applied is recorded and answered, so none in
        flight is lost; one that arrives meanwhile is delivered to the next run."""
        s = self._case
        await workflow.wait_condition(
            lambda: (
                not (self._recording or s.unrecorded or s.outbox)
                and workflow.all_handlers_finished()
            )
        )
        self._recorder_stop = True
        await recorder
        workflow.continue_as_new(carry.carried(s, self._step))

    def _changed_since(self, seen: int, alarm: Alarm | None = None) -> Callable[[], bool]:
        """Wake the clock loop when a message changed the case (its next deadline may too),
        or the alarm rang."""
        return lambda: bool(
            self._case.needs_assign
            or self._case.finish
            or self._mutations != seen
            or (alarm and alarm.rang)
        )

    async def _recorder(self) -> None:
        s = self._case
        while True:
            await workflow.wait_condition(
                lambda: (
                    self._recorder_stop
                    or bool((s.unrecorded or s.outbox) and not s.needs_assign and s.finish is None)
                )
            )
            if self._recorder_stop:
                return
            self._recording = True
            try:
                await self._record(projections.record_summary(s))
            finally:
                self._recording = False

    async def _run_clocks_then_record(self) -> None:
        """Cases started before the recorder: each record is written before the next timer
        (kept so those cases replay exactly as they ran)."""
        s = self._case
        while True:
            if s.needs_assign:
                await self._assign()
            if s.finish is not None:
                return
            if s.unrecorded or s.outbox:
                await self._record(projections.record_summary(s))
                continue
            due = decisions.next_due(s)
            has_work: Callable[[], bool] = lambda: bool(  # noqa: E731
                s.needs_assign or s.unrecorded or s.outbox or s.finish
            )
            wait = (due.at - workflow.now()).total_seconds()
            if wait > 0:
                try:
                    await workflow.wait_condition(has_work, timeout=wait, timeout_summary=due.label)
                    continue
                except TimeoutError:
                    pass
            self._fire(due)

    def _fire(self, due: Due) -> None:
        s, now = self._case, workflow.now()
        quiet = self._reads_clock
        late = due.clock is not None and decisions.sla_deadline(s, due.clock) <= now
        if due.kind is DueKind.WARNING and late and not quiet:
            quiet = self._since(NO_LATE_WARNING)
        breached = s.sla_breached
        self._meter.record(measures.late(due, now))
        for event in decisions.on_due(s, due, now, quiet):
            self._evolve(event, now)
        if s.sla_breached != breached:  # operators see a top-tier breach at once
            self._upsert_search_attributes()

    async def _read_clock(self, label: str) -> None:
        """A fired timer's task can carry the previous task's time (seen after a server
        restart). A local activity's completion time becomes the workflow's time and is kept
        in its marker: what the case decides next is right now, and the same on replay."""
        await workflow.execute_local_activity(
            "read_clock",
            start_to_close_timeout=timedelta(seconds=10),
            summary=f"Read the clock: {label}",
        )

    # --- activities -----------------------------------------------------------------------

    async def _assign(self) -> None:
        s = self._case
        evolve.apply(s, AssignmentStarted(), workflow.now())
        self._upsert_search_attributes()
        self._set_details()
        mark = self._mutations
        request = transitions.assign_request(s, self._take_transition(), workflow.now())
        result: AssignResult = await workflow.execute_activity(
            "assign_case",
            request,
            result_type=AssignResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"Assign tier {s.tier} {request.department_name} and notify",
        )
        evolve.apply(s, Assigned(result.assignee, result.entry), workflow.now())
        self._recorded(mark)

    async def _record(self, summary: str) -> None:
        mark, trace = self._mutations, self._trace
        self._trace = None
        with tracecontext.attached(trace):
            await workflow.execute_activity(
                "record_transition",
                self._take_transition(),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
                summary=summary,
            )
        self._recorded(mark)

    def _recorded(self, mark: int) -> None:
        """The records have every message applied up to `mark`: their Updates may answer."""
        self._settled = max(self._settled, mark)
        self._upsert_search_attributes()
        self._set_details()

    async def _report_up(self) -> CaseReport:
        s, now = self._case, workflow.now()
        until = decisions.reopen_until(s, now)  # none in policies pinned by older cases
        if until is not None and not self._since(RESOLVED_STAGE):
            until = None
        reported = decisions.report_up(s, until)
        evolve.apply(s, reported, now)
        mark = self._mutations
        who = ", ".join(reported.recipients)
        summary = f"Report {s.case.case_id} up to {who}; tell the customer"
        report = await self._record_report(until is None, summary)
        if until is not None:  # the resolve that led here may answer now
            self._recorded(mark)
        return report

    async def _close(self) -> CaseReport:
        """The reopen window ended: the final report, with the customer's verdict."""
        summary = f"Close {self._case.case.case_id}: reopen window ended"
        return await self._record_report(True, summary)

    async def _record_report(self, closing: bool, summary: str) -> CaseReport:
        transition = self._take_transition(closing)
        transition.report = report = projections.report(self._case, workflow.now())
        await workflow.execute_activity(
            "record_transition",
            transition,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=summary,
        )
        return report

    def _take_transition(self, closing: bool = False) -> Transition:
        self._step += 1
        info = workflow.info()
        return transitions.take(
            self._case, info.workflow_id, info.run_id, self._step, workflow.now(), closing
        )

    @workflow.signal(name="delivery_failed")
    def delivery_failed(self, details: str) -> None:
        """The relay gave a message up (the records have the line): the timeline says so."""
        evolve.delivery_failed(self._state or self._opening, details, workflow.now())

    # --- what operators see ---------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> CaseStatus:
        case_id = workflow.info().workflow_id.removeprefix("case-")
        return projections.status(self._state, self._opening, case_id)

    @workflow.query(name="actions")
    def actions(self, by: str) -> list[str]:
        """What `by` may do now (the desk console's buttons), from the case's own decisions."""
        return offers.offered(self._state, by, workflow.now())

    def _upsert_search_attributes(self) -> None:
        """Send only the attributes whose values changed since the last upsert."""
        if self._state is not None and not (self._state.stage == "report_up" and self._current()):
            wanted = projections.search_attributes(self._state)
            if updates := sa.changes(wanted, self._sa_sent):
                workflow.upsert_search_attributes(updates)

    def _set_details(self) -> None:
        workflow.set_current_details(projections.details(self._state))


register_messages(EscalationCase)
workflow.defn(name=WORKFLOW_TYPE)(EscalationCase)
