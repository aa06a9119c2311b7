"""What a change to a case writes besides its state: a line in its timeline (the audit
trail, and what the records have not had yet) and notices for the outbox (a template and
its facts; activities/render.py turns them into messages)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workflows import rules
from workflows.activity_models import OutboundMessage
from workflows.models import Channel, TimelineEntry
from workflows.state import CaseState

# How the timeline words each way a person's message can come (`Via`).
VIA = {
    "web": "the desk console",
    "cli": "CLI",
    "api": "API",
    "update": "Update",
    "signal": "Signal (e.g. the Temporal UI)",
}


def note(
    timeline: list[TimelineEntry],
    now: datetime,
    what: str,
    by: str | None,
    tier: int | None,
    details: str,
    unrecorded: list[TimelineEntry] | None = None,
    via: str | None = None,
) -> None:
    if via:
        details = f"{details} (via {VIA[via]})".lstrip()
    entry = TimelineEntry(
        seq=len(timeline) + 1, at=now, what=what, by=by, tier=tier, details=details, via=via
    )
    timeline.append(entry)
    if unrecorded is not None:
        unrecorded.append(entry)


def line(
    state: CaseState, now: datetime, what: str, by: str | None, details: str, via: str | None = None
) -> None:
    note(state.timeline, now, what, by, state.tier, details, state.unrecorded, via)


def _queue(
    state: CaseState,
    channel: Channel,
    recipient: str,
    address: str,
    template: str,
    facts: dict[str, Any],
) -> None:
    state.messages_queued += 1
    state.outbox.append(
        OutboundMessage(
            key=f"{state.key_prefix}:m{state.messages_queued}",
            channel=channel,
            recipient=recipient,
            address=address,
            template=template,
            facts=facts,
        )
    )


def notify(state: CaseState, person_id: str, template: str, **facts: Any) -> None:
    person = rules.find_person(state.policy, person_id)
    if person is not None:
        _queue(state, "internal", person.id, person.email, template, facts)


def tell_customer(state: CaseState, template: str, **facts: Any) -> None:
    customer = state.case.customer
    _queue(state, "customer", customer.id, customer.email, template, facts)
