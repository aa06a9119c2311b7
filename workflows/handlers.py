"""The Temporal handlers of one message, made from the registry: an Update with its
validator and a Signal of the same name (two methods, since they share the name)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows.models import MessageResult


def message_handlers(name: str) -> tuple[Any, Any]:
    """One message's Update (with its validator) and Signal, both taking the raw payload so
    a malformed one is refused naming the field, not dropped by the SDK's decoder. `self`
    is the EscalationCase (typed Any: the SDK reads these hints when they are defined)."""

    async def on_update(self: Any, payload: Any = None) -> MessageResult:
        return await self._on_update(name, payload)

    def validate(self: Any, payload: Any = None) -> None:
        """The handler's own decision, result dropped: a refusal leaves no trace in history."""
        msg = self._parse(name, payload)
        self._check_proof(name, msg)
        self._decide(name, msg)

    def on_signal(self: Any, payload: Any = None) -> None:
        self._on_signal(name, payload)

    on_update.__name__ = on_update.__qualname__ = name
    validate.__name__ = validate.__qualname__ = f"validate_{name}"
    on_signal.__name__ = on_signal.__qualname__ = f"{name}_signal"
    update = workflow.update(name=name)(on_update)
    update.validator(validate)
    return update, workflow.signal(name=name)(on_signal)
