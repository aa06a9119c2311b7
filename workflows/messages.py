"""Every message a case takes, declared once: its name, payload model, who may send it and
what it means. The workflow's Update, validator and Signal handlers, the Python API's
validation, the CLI's commands and flags, and the README's table all come from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from workflows.models import (
    Acknowledge,
    Approve,
    CustomerEscalate,
    CustomerFeedback,
    CustomerReplied,
    Deescalate,
    Escalate,
    Reject,
    Reopen,
    RequestApproval,
    Resolve,
    Strict,
    WaitForCustomer,
)


@dataclass(frozen=True)
class Message:
    name: str
    model: type[Strict]
    senders: str
    meaning: str
    cli_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> str:
        """The CLI command: `request_approval` -> `request-approval`."""
        return self.name.replace("_", "-")

    def parse(self, payload: Any) -> Strict:
        """Validate a raw payload (ValidationError names the field)."""
        if isinstance(payload, BaseModel):
            payload = payload.model_dump()
        return self.model.model_validate(payload)


_CLI = {"via": "cli"}  # what the `escalate` CLI sends for every staff message

MESSAGES: dict[str, Message] = {
    m.name: m
    for m in (
        Message(
            "acknowledge",
            Acknowledge,
            "the assignee",
            "takes the case; stops the acknowledgement clock",
            cli_defaults=_CLI,
        ),
        Message(
            "resolve",
            Resolve,
            "the assignee",
            "resolves it; goes to report-up",
            cli_defaults=_CLI,
        ),
        Message(
            "escalate",
            Escalate,
            "the assignee or a supervisor of the case",
            "up a tier, or (with `department`) a functional transfer",
            cli_defaults=_CLI,
        ),
        Message(
            "request_approval",
            RequestApproval,
            "the assignee",
            "an action above the assignee's authority",
            cli_defaults={"kind": "refund", **_CLI},
        ),
        Message(
            "approve",
            Approve,
            "an approver of the pending request",
            "grants the pending approval",
            cli_defaults=_CLI,
        ),
        Message(
            "reject",
            Reject,
            "an approver of the pending request",
            "refuses the pending approval",
            cli_defaults=_CLI,
        ),
        Message(
            "wait_for_customer",
            WaitForCustomer,
            "the assignee",
            "asks the customer; pauses the SLA clock",
            cli_defaults=_CLI,
        ),
        Message(
            "customer_replied",
            CustomerReplied,
            "the customer (through the desk)",
            "the customer's answer; resumes the SLA clock",
        ),
        Message(
            "customer_escalate",
            CustomerEscalate,
            "the customer (through the desk)",
            "the customer asks for escalation: up a tier",
        ),
        Message(
            "deescalate",
            Deescalate,
            "a supervisor at the case's tier",
            "hands the case back down a tier; clocks restart there",
            cli_defaults=_CLI,
        ),
        Message(
            "customer_feedback",
            CustomerFeedback,
            "the customer (rating link)",
            "the customer's rating after the resolution, once per resolution",
        ),
        Message(
            "reopen",
            Reopen,
            "the customer (`by` customer) or the assignee who resolved it",
            "back to the resolving tier within the reopen window",
            cli_defaults=_CLI,
        ),
    )
}


def tagged(msg: Strict, how: str) -> Strict:
    """A decision that does not say which way it came is named by how it arrived."""
    if "via" in type(msg).model_fields and getattr(msg, "via", None) is None:
        return msg.model_copy(update={"via": how})
    return msg


def payload_keys(model: type[BaseModel]) -> str:
    """`{"by", "action": {"kind", "amount", "currency"}}`, optional keys marked with `?`."""
    parts = []
    for name, info in model.model_fields.items():
        mark = "" if info.is_required() else "?"
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            parts.append(f'"{name}"{mark}: {payload_keys(inner)}')
        else:
            parts.append(f'"{name}"{mark}')
    return "{" + ", ".join(parts) + "}"


def markdown_table() -> str:
    """The README's table of messages."""
    rows = ["| name | payload | who may send it | meaning |", "|---|---|---|---|"]
    for m in MESSAGES.values():
        rows.append(f"| `{m.name}` | `{payload_keys(m.model)}` | {m.senders} | {m.meaning} |")
    return "\n".join(rows)
