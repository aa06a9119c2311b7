"""What the records get at a step of the case, built the same way by the case and, for its
first step, by the activity that opens and assigns it (open_and_assign): the case then only
replays what that activity already wrote."""

from __future__ import annotations

from datetime import datetime

from workflows import evolve, projections, rules
from workflows.activity_models import (
    AssignRequest,
    CustomerContext,
    OpenCaseRequest,
    Transition,
)
from workflows.events import AssignmentStarted
from workflows.policy import Policy
from workflows.state import CaseState, Opening


def take(
    s: CaseState, workflow_id: str, run_id: str, step: int, now: datetime, closing: bool = False
) -> Transition:
    """The records' step `step`: the state, and the lines and messages not recorded yet."""
    timeline, messages = evolve.take_records(s)
    return Transition(
        key=f"{workflow_id}:{run_id}:s{step}",
        snapshot=projections.snapshot(s, workflow_id, run_id, step, closing),
        timeline=timeline,
        messages=messages,
        # in the reopen window the report follows the customer's verdict as it comes
        report=projections.report(s, now) if s.stage == "resolved" else None,
    )


def assign_request(s: CaseState, transition: Transition, now: datetime) -> AssignRequest:
    """Pick someone for the case's tier, once AssignmentStarted has reserved their line."""
    policy = s.policy
    expected = rules.clocks(policy, s.tier, s.severity, now)
    return AssignRequest(
        transition=transition,
        people=rules.people_at(policy, s.department, s.tier),
        skill=s.skill,
        exclude=s.exclude,
        timezone=policy.timezone,
        assigned_seq=len(s.timeline),  # the line AssignmentStarted reserved
        tier_name=rules.tier_policy(policy, s.tier).name,
        department_name=policy.departments[s.department].name,
        prefer=s.prefer,
        ack_by=expected.ack_by,
        resolve_by=expected.resolve_by,
    )


def identified(req: OpenCaseRequest, ctx: CustomerContext, policy: Policy) -> CaseState:
    """The case identified at its opening time and being assigned: the same state in the
    activity that opens it and, from that activity's answer, in the case."""
    opening = Opening(case=req.case, opened_at=req.opened_at, timeline=list(req.timeline))
    prefix = f"{req.workflow_id}:{req.run_id}"
    state = evolve.identify(opening, ctx, policy, prefix, req.opened_at)
    evolve.apply(state, AssignmentStarted(), req.opened_at)
    return state


def first_assignment(req: OpenCaseRequest, ctx: CustomerContext) -> AssignRequest:
    """The first assignment, as the case would ask for it (its step 1)."""
    s = identified(req, ctx, ctx.policy)
    return assign_request(s, take(s, req.workflow_id, req.run_id, 1, req.opened_at), req.opened_at)
