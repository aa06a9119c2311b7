"""How a case takes messages: the Temporal handlers of each message in the registry (an
Update with its validator, and a Signal of the same name), and the intake they share:
parse, decide, check the proof, apply. The case shell (case.py) inherits the intake."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import acts, decisions, evolve, measures, proofs, tracecontext
from workflows.activity_models import ProofClaim
from workflows.events import Event
from workflows.messages import MESSAGES, tagged
from workflows.models import MessageResult, Strict, describe_validation_error
from workflows.state import CaseState, Opening

SIGNAL_PROOF = "signal-proof"  # a patch: a Signal's proof is checked (a local activity) first
CASE_V2 = "case-v2"  # a patch: every patch of the case at once (workflows/case.py)
CASE_V3 = "case-v3"  # a patch: case-v2 and a window closed without a clock read (case.py)
CASE_V4 = "case-v4"  # a patch: case-v3 and a new case opened and assigned in one activity
CASE_V5 = "case-v5"  # a patch: case-v4 and a timer kept while the next deadline moves later


class Rejected(ApplicationError):
    """A message refused by validation: reaches an Update's caller, never fails the case."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="MessageRejected", non_retryable=True)


class MessageIntake:
    """What every message goes through; the state and counters are the case's own."""

    _state: CaseState | None
    _opening: Opening
    _mutations: int  # messages applied or noted
    _settled: int  # of those, how many the records have
    _proving: int  # Signals whose proof is being checked
    _trace: dict[str, str] | None
    _meter: measures.Meter

    @property
    def _case(self) -> CaseState:
        assert self._state is not None
        return self._state

    def _current(self) -> bool:
        """A case started on the code with every patch below (the SDK keeps the answer)."""
        return self._v3() or workflow.patched(CASE_V2)

    def _v3(self) -> bool:
        """A case started since case-v3."""
        return self._v4() or workflow.patched(CASE_V3)

    def _v4(self) -> bool:
        """A case started since case-v4."""
        return self._v5() or workflow.patched(CASE_V4)

    def _v5(self) -> bool:
        """A case started since case-v5 (asked first in every run's first task: a new case
        records this one marker only)."""
        return workflow.patched(CASE_V5)

    def _since(self, patch: str) -> bool:
        """Whether the case runs the code since `patch`: a current case always does."""
        return self._current() or workflow.patched(patch)

    def _parse(self, name: str, payload: Any) -> Strict:
        try:
            return tagged(MESSAGES[name].parse(payload), "update")
        except ValidationError as err:
            raise Rejected(f"invalid {name}: {describe_validation_error(err)}") from None

    def _decision(self, name: str, msg: Strict) -> decisions.Decision:
        return decisions.decide(self._state, name, msg, workflow.now())

    def _decide(self, name: str, msg: Strict) -> list[Event]:
        decision = self._decision(name, msg)
        if isinstance(decision, decisions.Refused):
            raise Rejected(decision.reason)
        return decision

    async def _on_update(self, name: str, payload: Any) -> MessageResult:
        """Live, the validator has just decided on this same state, so the decision here is
        not refused. On replay there is no validator, and a task that brought an activity's
        result with an Update may be split differently than it ran: the SDK runs the Update
        first, before the result (an assignment, say) its acceptance relied on. The handler
        then waits for that state instead of failing an Update history says was accepted (a
        non-determinism error that stops the case)."""
        msg = self._parse(name, payload)
        if isinstance(self._decision(name, msg), decisions.Refused):  # only then: no yield
            await workflow.wait_condition(
                lambda: not isinstance(self._decision(name, msg), decisions.Refused)
            )
        events = self._decide(name, msg)
        s = self._case
        self._apply(name, msg, events)
        self._trace = tracecontext.current() or self._trace
        text = decisions.accepted(events, s)
        target = self._mutations
        await workflow.wait_condition(lambda: self._settled >= target)
        return MessageResult(
            accepted=True, message=text, stage=s.stage, tier=s.tier, assignee=s.assignee
        )

    def _check_proof(self, name: str, msg: Strict) -> None:
        """Validators only (they do not run on replay, so the secret may change later)."""
        claim = proofs.claim_for(self._state, name, msg)
        if claim is not None and (reason := proofs.check_claim(claim, workflow.now())):
            raise Rejected(reason)

    async def _proven_signal(self, name: str, msg: Strict, claim: ProofClaim) -> None:
        """A Signal that needs a proof acts once a local activity (its answer recorded, so
        replay does not depend on the secret) has found the proof good."""
        try:
            reason: str = await workflow.execute_local_activity(
                "check_proof",
                claim,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=10),
                summary=f"Check the proof of {name} by {claim.by}",
            )
            if reason:
                self._ignore(name, reason)
            else:
                self._signal_decided(name, msg)
        finally:
            self._proving -= 1

    def _on_signal(self, name: str, payload: Any) -> None:
        """Fire-and-forget: an invalid signal is noted in the timeline and otherwise ignored."""
        try:
            msg = tagged(MESSAGES[name].parse(payload), "signal")
        except ValidationError as err:
            self._ignore(name, describe_validation_error(err))
            return
        claim = proofs.claim_for(self._state, name, msg)
        if claim is not None and self._since(SIGNAL_PROOF):
            self._proving += 1
            asyncio.create_task(self._proven_signal(name, msg, claim))
            return
        self._signal_decided(name, msg)

    def _signal_decided(self, name: str, msg: Strict) -> None:
        decision = self._decision(name, msg)
        if isinstance(decision, decisions.Refused):
            if self._state is None or self._state.stage != "closed":
                self._ignore(name, decision.reason)
            return
        self._apply(name, msg, decision)

    def _ignore(self, name: str, reason: str) -> None:
        self._mutations += 1
        evolve.ignore(self._state or self._opening, name, reason, workflow.now())

    def _apply(self, name: str, msg: Strict, events: list[Event]) -> None:
        self._mutations += 1
        now = workflow.now()
        acts.applied(self._case, name, msg, events, lambda event: self._evolve(event, now))

    def _evolve(self, event: Event, now: datetime) -> None:
        """Count it for operators (from the state before it), then apply it."""
        self._meter.record(measures.of_event(self._case, event, now))
        evolve.apply(self._case, event, now)


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


def register_messages(cls: type) -> None:
    """Every message of the registry as an Update and a Signal of `cls`."""
    for message in MESSAGES.values():
        update, signal = message_handlers(message.name)
        setattr(cls, message.name, update)
        setattr(cls, f"{message.name}_signal", signal)
