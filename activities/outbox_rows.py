"""The outbox rows a transition queues: one per message and medium it leaves by (mail or the
log, the person's chat channels) and one signed webhook event per timeline line a backend
cares about. Built before the transaction that writes them; the relay delivers them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from workflows.activity_models import CaseSnapshot, OutboundMessage
from workflows.models import TimelineEntry
from workflows.policy import Policy
from workflows.rules import find_person

# timeline lines that backends hear about, as Standard Webhooks event types
WEBHOOK_EVENTS = {
    "opened": "opened",
    "assigned": "assigned",
    "escalated": "escalated",
    "transferred": "transferred",
    "ack SLA warning": "sla_warning",
    "resolve SLA warning": "sla_warning",
    "ack SLA breached": "sla_breached",
    "resolve SLA breached": "sla_breached",
    "approval requested": "approval_requested",
    "approval approved": "approval_decided",
    "approval rejected": "approval_decided",
    "resolved": "resolved",
}


def message_rows(
    m: OutboundMessage, snap: CaseSnapshot, now: datetime, policy: Policy, mail: bool
) -> list[dict[str, object]]:
    """Mail (or the log, without a mail server) for every message; an internal one also to
    each chat channel its person keeps for this severity (from the worker's policy: URLs
    hold tokens)."""
    person = find_person(policy, m.recipient) if m.channel == "internal" else None
    name = person.name if person else snap.customer_name if m.channel == "customer" else None
    base: dict[str, object] = {
        "case_id": snap.case_id,
        "channel": m.channel,
        "recipient": m.recipient,
        "recipient_name": name,
        "address": m.address[:254],
        "subject": m.subject[:300],
        "body": m.body,
        "html": m.html,
        "short": m.short,
        "created_at": now,
        "status": "queued",
        "attempts": 0,
    }
    rows = [{**base, "key": m.key, "medium": "mail" if mail else "log"}]
    for i, ch in enumerate(person.channels if person else []):
        if snap.severity in ch.severities:
            rows.append({**base, "key": f"{m.key}:chat{i}", "medium": "chat", "target": ch.url})
    return rows


def webhook_rows(
    snap: CaseSnapshot,
    timeline: Sequence[TimelineEntry],
    closed_key: str | None,
    now: datetime,
    url: str,
) -> list[dict[str, object]]:
    """One signed event per timeline line a backend cares about, and one for the case's
    close under `closed_key` (its report-up); `webhook-id` is the row's key, the same on
    every retry."""
    status = snap.model_dump(mode="json")
    events: list[tuple[str, str, TimelineEntry | None]] = [
        (f"{snap.workflow_id}:{snap.run_id}:t{e.seq}:webhook", WEBHOOK_EVENTS[e.what], e)
        for e in timeline
        if e.what in WEBHOOK_EVENTS
    ]
    if closed_key is not None:
        events.append((closed_key, "closed", None))
    return [
        {
            "key": key,
            "case_id": snap.case_id,
            "channel": "internal",
            "recipient": "webhook",
            "address": url[:254],
            "subject": f"{kind}: {snap.case_id}",
            "body": entry.details if entry else snap.outcome or "",
            "medium": "webhook",
            "target": url,
            "payload": {
                "type": f"case.{kind}",
                "timestamp": (entry.at if entry else now).isoformat(),
                "data": {
                    "case_id": snap.case_id,
                    "event": kind,
                    "timeline": entry.model_dump(mode="json") if entry else None,
                    "status": status,
                },
            },
            "created_at": now,
            "status": "queued",
            "attempts": 0,
        }
        for key, kind, entry in events
    ]
