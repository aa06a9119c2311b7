"""How a case is opened: the activities that create its records and the identify step,
with the options every activity of the case runs with. The case shell (case.py) inherits it."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows import evolve, measures, transitions
from workflows.activity_models import CustomerContext, OpenCaseRequest, OpenedCase
from workflows.events import Assigned
from workflows.models import CaseInput
from workflows.policy import shared
from workflows.state import CaseState, Opening

ACTIVITY_TIMEOUT = timedelta(seconds=10)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["CaseClosed", "NoCandidates"],
)


class CaseOpening:
    """Each opening runs in its own frame, so the activity's answer (a full policy copy) is
    not kept alive by `run` for the life of the case: the case keeps the shared policy."""

    _state: CaseState | None
    _opening: Opening
    _mutations: int
    _meter: measures.Meter
    _step: int

    def _recorded(self, mark: int) -> None:
        """The case's own (case.py): the records have every message up to `mark`."""
        raise NotImplementedError

    async def _open_and_identify(self, case: CaseInput, now: datetime) -> None:
        """Cases started before case-v4: the case is identified here, assigned after."""
        info = workflow.info()
        ctx: CustomerContext = await workflow.execute_activity(
            "open_case",
            OpenCaseRequest(
                case=case, workflow_id=info.workflow_id, run_id=info.run_id, opened_at=now
            ),
            result_type=CustomerContext,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"Open {case.case_id}: load policy and customer history",
        )
        prefix = f"{info.workflow_id}:{info.run_id}"
        policy = shared(ctx.policy)
        self._state = s = evolve.identify(self._opening, ctx, policy, prefix, workflow.now())
        self._meter.record(measures.opened(s))

    async def _open_and_assign(self, case: CaseInput, now: datetime) -> None:
        """Since case-v4: one activity opens the case, identifies it at `now` as the case
        does here (the same pure code, from the same timeline) and assigns it, writing step
        1. A signal noted while it ran follows the assignment in the timeline."""
        info = workflow.info()
        req = OpenCaseRequest(
            case=case,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            opened_at=now,
            timeline=list(self._opening.timeline),
        )
        mark = self._mutations
        opened: OpenedCase = await workflow.execute_activity(
            "open_and_assign",
            req,
            result_type=OpenedCase,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"Open {case.case_id}: route, assign and notify",
        )
        self._state = s = transitions.identified(req, opened.context, shared(opened.context.policy))
        self._meter.record(measures.opened(s))
        self._step += 1  # step 1, with what it took: open_and_assign wrote it
        evolve.take_records(s)
        assigned = opened.assigned
        evolve.apply(s, Assigned(assigned.assignee, assigned.entry), workflow.now())
        for entry in self._opening.timeline[len(req.timeline) :]:
            evolve.noted(s, entry)
        self._recorded(mark)
