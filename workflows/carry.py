"""A case carried across continue-as-new: its whole state as JSON, so a case that lives its
full 30 days or takes hundreds of messages stays far from the history limits."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from workflows.policy import shared
from workflows.state import CaseState

_STATE = TypeAdapter(CaseState)


def carried(state: CaseState, step: int) -> dict[str, Any]:
    """The next run's input: `{"carried": {...}}` (a case input never has that key)."""
    return {"carried": {"state": _STATE.dump_python(state, mode="json"), "step": step}}


def is_carried(raw: Any) -> bool:
    return isinstance(raw, dict) and "carried" in raw


def restored(raw: dict[str, Any]) -> tuple[CaseState, int]:
    data = raw["carried"]
    state = _STATE.validate_python(data["state"])
    state.policy = shared(state.policy)
    return state, int(data["step"])
