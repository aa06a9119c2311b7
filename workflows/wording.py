"""How the case words durations and sums in its audit trail, timer summaries and UI details.

Customer and staff messages are templates (activities/templates); they use these too.
"""

from __future__ import annotations

from datetime import UTC, datetime


def fmt_duration(seconds: float) -> str:
    """3600 -> '1h', 5400 -> '1h 30m', 172800 -> '2d'."""
    seconds = int(round(seconds))
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def fmt_money(amount: float, currency: str) -> str:
    """250 USD -> '250.00 USD'."""
    return f"{amount:.2f} {currency}"


def clock_verb(clock: str) -> str:
    """What a clock waits for: 'ack' -> 'acknowledged', 'resolve' -> 'resolved'."""
    return "acknowledged" if clock == "ack" else "resolved"


def fmt_when(at: datetime | str) -> str:
    """An instant for a person: '2026-11-23 17:30 UTC' (from a datetime or ISO text)."""
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def iso_z(at: datetime) -> str:
    """A UTC instant as raw JSON clients read it: '2026-11-23T10:00:00Z'."""
    return at.isoformat().replace("+00:00", "Z")
