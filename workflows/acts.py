"""A person's act as the policy simulator replays it: the message, the role its sender held
(so a replay hands it to whoever holds that role then) and its structural fields. Free text
(a resolution, a question, a reason, a note) is left out: it decides nothing, and it is
personal data the records scrub on erasure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workflows.events import Event
from workflows.models import Strict
from workflows.state import CaseState

# the fields of a message that decide something, by message
STRUCTURAL: dict[str, tuple[str, ...]] = {
    "request_approval": ("action",),
    "escalate": ("department",),
    "resolve": ("root_cause",),
    "customer_feedback": ("score",),
}


def role(state: CaseState, name: str, by: str | None) -> str:
    """'assignee', 'approver', 'customer', or the person's id (a supervisor acting)."""
    if by is None or by == "customer":
        return "customer"
    if name in ("approve", "reject"):
        return "approver"
    return "assignee" if by == state.assignee else by


def of(state: CaseState, name: str, msg: Strict) -> dict[str, Any]:
    """The act of `msg`, from the state before it is applied."""
    fields = msg.model_dump(mode="json", include=set(STRUCTURAL.get(name, ())))
    by = getattr(msg, "by", None)
    act: dict[str, Any] = {"name": name, "role": role(state, name, by)}
    if act["role"] == "approver":
        act["person"] = by  # staff, not the customer: who decided, if the replay asks them
    act.update({k: v for k, v in fields.items() if v is not None})
    return act


def applied(
    state: CaseState, name: str, msg: Strict, events: list[Event], apply: Callable[[Event], None]
) -> None:
    """A person's message taken: its events applied, its act on the first line they wrote
    (the case's message intake and the simulator both take messages this way)."""
    act, first = of(state, name, msg), len(state.timeline)
    for event in events:
        apply(event)
    if len(state.timeline) > first:
        state.timeline[first].act = act
