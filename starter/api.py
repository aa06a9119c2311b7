"""The Python API backends, operators and supervisors use to talk to cases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.codec import converter_from_env
from starter.config import Settings, connect
from workflows import proofs
from workflows import search_attributes as sa
from workflows.messages import MESSAGES
from workflows.models import (
    WORKFLOW_TYPE,
    CaseInput,
    CaseReport,
    CaseStatus,
    MessageResult,
    describe_validation_error,
    workflow_id_for,
)


class CaseError(Exception):
    """A request the desk refused; the message says why (and names the field).

    `retryable` marks a transient failure (the server was busy or unreachable): sending the
    same message again, with the same update id, is safe.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


TRANSIENT = {
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}


# what the server answers while a case's worker is gone and no other has taken its tasks yet
# (a worker killed under load: bench/, README); any worker polling again ends it
WORKER_GONE = "no poller seen for task queue recently"


def is_transient(err: RPCError) -> bool:
    """Busy or unreachable server, broken connection, a case's worker gone for now: worth
    the same call again."""
    text = err.message.lower()
    return (
        err.status in TRANSIENT
        or "timeout expired" in text
        or "h2 protocol error" in text
        or (err.status == RPCStatusCode.FAILED_PRECONDITION and WORKER_GONE in text)
    )


def _rpc_error(case_id: str, err: RPCError) -> CaseError:
    return CaseError(f"case {case_id}: {err.message}", retryable=is_transient(err))


@dataclass(frozen=True)
class OpenedCase:
    case_id: str
    workflow_id: str
    run_id: str | None
    created: bool


@dataclass(frozen=True)
class CaseListing:
    case_id: str
    workflow_id: str
    status: str
    stage: str | None
    tier: int | None
    severity: str | None
    department: str | None
    assignee: str | None
    customer_id: str | None
    sla_breached: bool | None
    sla_deadline: datetime | None
    started: datetime | None


def validate_case(data: CaseInput | dict[str, Any]) -> CaseInput:
    if isinstance(data, CaseInput):
        return data
    try:
        return CaseInput.model_validate(data)
    except ValidationError as err:
        raise CaseError(f"invalid case: {describe_validation_error(err)}") from None


def validate_message(name: str, payload: dict[str, Any]) -> Any:
    message = MESSAGES.get(name)
    if message is None:
        raise CaseError(f"unknown message {name!r} (one of {', '.join(MESSAGES)})")
    try:
        return message.parse(payload)
    except ValidationError as err:
        raise CaseError(f"invalid {name}: {describe_validation_error(err)}") from None


def with_proof(
    payload: dict[str, Any],
    secret: str | None,
    name: str,
    case: CaseStatus,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The payload with the desk's signed proof (workflows/proofs.py) for the request the
    case has now; as it is without a secret, or for a message that takes no proof."""
    model = MESSAGES[name].model.model_fields
    if not secret or "proof" not in model or payload.get("proof"):
        return payload
    pending = case.pending_approval
    request = proofs.request_of(name, pending.requested_at if pending else None, case.tier)
    by = str(payload.get("by", ""))
    proof = proofs.sign(secret, case.case_id, name, by, request, now or datetime.now(UTC))
    return {**payload, "proof": proof}


def static_summary(case: CaseInput) -> str:
    vip = " · VIP" if case.customer.vip else ""
    return (
        f"{case.case_id} · {case.severity} · {case.category} · {case.customer.name}{vip}: "
        f"{case.subject}"
    )[:400]


def static_details(case: CaseInput) -> str:
    lines = [
        f"**Customer:** {case.customer.name} ({case.customer.id}, {case.customer.email})"
        + (" — VIP" if case.customer.vip else ""),
        f"**Reported severity:** {case.severity}",
        f"**Category:** {case.category} · **Channel:** {case.channel} · "
        f"**Opened by:** {case.opened_by}",
    ]
    if case.requested_action:
        a = case.requested_action
        lines.append(f"**Requested:** {a.kind} {a.amount:.2f} {a.currency}")
    if case.description:
        lines.append(case.description[:1500])
    return "\n\n".join(lines)


# Task-queue priority by severity (1 first; 3 is the server's default): where workflow tasks
# wait on the server, a critical case's (its timers' too) go before a flood of low ones.
PRIORITY = {"critical": 1, "high": 2, "medium": 3, "low": 4}


class CaseClient:
    def __init__(self, client: Client, task_queue: str = "escalations") -> None:
        self.client = client
        self.task_queue = task_queue

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> CaseClient:
        s = settings or Settings()
        return cls(await connect(s, converter_from_env()), s.task_queue)

    def handle(self, case_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id_for(case_id))

    async def open(self, data: CaseInput | dict[str, Any]) -> OpenedCase:
        """Open a case once: an open case is returned as it is, a closed id is refused."""
        case = validate_case(data)
        wid = workflow_id_for(case.case_id)
        try:
            handle = await self.client.start_workflow(
                WORKFLOW_TYPE,
                case,
                id=wid,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.CASE_ID, case.case_id),
                        SearchAttributePair(sa.CUSTOMER_ID, case.customer.id),
                        SearchAttributePair(sa.CASE_STAGE, "identify"),
                        SearchAttributePair(sa.CASE_SEVERITY, case.severity),
                        SearchAttributePair(sa.SLA_BREACHED, False),
                    ]
                ),
                static_summary=static_summary(case),
                static_details=static_details(case),
                priority=Priority(priority_key=PRIORITY[case.severity]),
            )
            return OpenedCase(case.case_id, wid, handle.result_run_id, created=True)
        except WorkflowAlreadyStartedError:
            desc = await self.client.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(
                    namespace=self.client.namespace, execution=WorkflowExecution(workflow_id=wid)
                )
            )
            info = desc.workflow_execution_info
            status = WorkflowExecutionStatus(info.status)
            if status == WorkflowExecutionStatus.RUNNING:
                return OpenedCase(case.case_id, wid, info.execution.run_id, created=False)
            raise CaseError(
                f"case_id: case {case.case_id} is already closed ({status.name.lower()}); "
                "open a new case id instead"
            ) from None

    async def status(self, case_id: str) -> CaseStatus:
        try:
            return await self.handle(case_id).query("status", result_type=CaseStatus)
        except RPCError as err:
            raise _rpc_error(case_id, err) from None

    async def send(
        self,
        case_id: str,
        name: str,
        payload: dict[str, Any],
        as_signal: bool = False,
        update_id: str | None = None,
    ) -> MessageResult | None:
        """Send a message as a validated Update (default) or a fire-and-forget Signal.

        Give `update_id` to make a retry safe: the server runs one update per id and
        answers a repeat with the first one's result.
        """
        msg = validate_message(name, payload)
        handle = self.handle(case_id)
        try:
            if as_signal:
                await handle.signal(name, msg)
                return None
            return await handle.execute_update(name, msg, id=update_id, result_type=MessageResult)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = cause.__cause__  # type: ignore[assignment]
            raise CaseError(f"{name} refused: {cause.message if cause else err}") from None
        except RPCError as err:
            closed = await self._closed(case_id)
            if closed is not None:
                raise CaseError(
                    f"{name} refused: case {case_id} is closed ({closed}); open a new case instead"
                ) from None
            raise _rpc_error(case_id, err) from None

    async def _closed(self, case_id: str) -> str | None:
        """How a case that no longer takes messages ended, or None if it is running."""
        request = DescribeWorkflowExecutionRequest(
            namespace=self.client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id_for(case_id)),
        )
        try:  # the raw call: only the status is wanted
            desc = await self.client.workflow_service.describe_workflow_execution(request)
        except RPCError:
            return None
        status = WorkflowExecutionStatus(desc.workflow_execution_info.status)
        if status == WorkflowExecutionStatus.RUNNING:
            return None
        return status.name.lower().replace("_", " ")

    async def report(self, case_id: str) -> CaseReport:
        handle = self.client.get_workflow_handle(workflow_id_for(case_id), result_type=CaseReport)
        return await handle.result()

    async def list(self, query: str = "", limit: int = 100) -> list[CaseListing]:
        q = f"WorkflowType = '{WORKFLOW_TYPE}'" + (f" AND ({query})" if query else "")
        found = []
        async for wf in self.client.list_workflows(q, limit=limit):
            attrs = wf.typed_search_attributes
            found.append(
                CaseListing(
                    case_id=attrs.get(sa.CASE_ID) or wf.id.removeprefix("case-"),
                    workflow_id=wf.id,
                    status=wf.status.name.lower() if wf.status else "unknown",
                    stage=attrs.get(sa.CASE_STAGE),
                    tier=attrs.get(sa.CASE_TIER),
                    severity=attrs.get(sa.CASE_SEVERITY),
                    department=attrs.get(sa.CASE_DEPARTMENT),
                    assignee=attrs.get(sa.CASE_ASSIGNEE),
                    customer_id=attrs.get(sa.CUSTOMER_ID),
                    sla_breached=attrs.get(sa.SLA_BREACHED),
                    sla_deadline=attrs.get(sa.SLA_DEADLINE),
                    started=wf.start_time,
                )
            )
        return found


def parse_since(text: str) -> datetime:
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        raise CaseError(f"since: {text!r} is not an ISO date or datetime") from None
    return (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
