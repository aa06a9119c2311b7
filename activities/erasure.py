"""A customer (or one case) forgotten: their cases' data keys destroyed, so every copy of
their histories (the server's database, exports, backups) is ciphertext for good, and the
personal data removed from the records and the outbox. What the reports count stays: times,
tiers, severities, departments, outcomes, scores (without comments)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from activities.keys import destroy
from activities.records import CaseRow, ErasureRow, MessageRow, Records, ReportRow, TimelineRow

ERASED = "[erased]"
# the case report's keys that hold nothing personal (the rest is dropped, or scrubbed below)
REPORT_FACTS = {
    "case_id",
    "outcome",
    "severity",
    "reported_severity",
    "department",
    "final_tier",
    "opened_at",
    "closed_at",
    "duration_seconds",
    "tiers",
    "breaches",
    "sla_breached",
    "escalations",
    "policy_version",
    "root_cause",
    "deescalations",
    "resolved_by",
}


class StillOpen(Exception):
    def __init__(self, case_ids: list[str]) -> None:
        super().__init__(
            f"{len(case_ids)} case(s) still open: {', '.join(case_ids)}; erase them once closed"
        )
        self.case_ids = case_ids


@dataclass(frozen=True)
class Erased:
    cases: list[str]
    keys_destroyed: int
    log_cleared: bool | None = None  # SQLite: the write-ahead log emptied (None elsewhere)


def _scrubbed_report(body: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in body.items() if k in REPORT_FACTS}
    kept["customer"] = {"id": ERASED, "name": ERASED, "email": ERASED, "vip": False}
    kept["subject"] = ERASED
    kept["resolution"] = ERASED if body.get("resolution") else None
    kept["approvals"] = [
        {**a, "note": ERASED if a.get("note") else ""} for a in body.get("approvals", [])
    ]
    kept["feedback"] = [{**f, "comment": ""} for f in body.get("feedback", [])]
    kept["reopens"] = [{**r, "reason": ERASED} for r in body.get("reopens", [])]
    kept["timeline"] = [{**e, "details": ERASED} for e in body.get("timeline", [])]
    return kept


async def cases_of(records: Records, customer_id: str | None, case_id: str | None) -> list[CaseRow]:
    async with records.transaction() as s:
        query = select(CaseRow)
        query = (
            query.where(CaseRow.customer_id == customer_id)
            if customer_id is not None
            else query.where(CaseRow.case_id == case_id)
        )
        return list((await s.scalars(query)).all())


async def erase(
    records: Records, customer_id: str | None = None, case_id: str | None = None
) -> Erased:
    """Erase a customer's cases (or one case); StillOpen lists any that are not closed."""
    rows = await cases_of(records, customer_id, case_id)
    still = [r.case_id for r in rows if r.closed_at is None]
    if still:
        raise StillOpen(still)
    ids = [r.case_id for r in rows]
    destroyed = await destroy(records, [r.workflow_id for r in rows])
    async with records.transaction() as s:
        if ids:
            await s.execute(
                update(CaseRow)
                .where(CaseRow.case_id.in_(ids))
                .values(customer_id=ERASED, customer_name=ERASED, subject=ERASED)
            )
            await s.execute(
                update(TimelineRow).where(TimelineRow.case_id.in_(ids)).values(details=ERASED)
            )
            await s.execute(
                update(MessageRow)
                .where(MessageRow.case_id.in_(ids))
                .values(
                    address=ERASED,
                    recipient_name=None,
                    subject=ERASED,
                    body=ERASED,
                    html=None,
                    short=None,
                    payload=None,
                    target=None,
                )
            )
            await s.execute(
                update(MessageRow)
                .where(MessageRow.case_id.in_(ids), MessageRow.channel == "customer")
                .values(recipient=ERASED)
            )
            for report in await s.scalars(select(ReportRow).where(ReportRow.case_id.in_(ids))):
                report.body = _scrubbed_report(report.body)
        s.add(
            ErasureRow(
                at=datetime.now(UTC),
                by=_who(),
                scope="customer" if customer_id is not None else "case",
                cases=len(ids),
                keys_destroyed=destroyed,
            )
        )
    return Erased(ids, destroyed, await _clear_log(records))


async def _clear_log(records: Records) -> bool | None:
    """SQLite keeps the rows' earlier versions as frames of its write-ahead log until a
    checkpoint resets it: copy them into the file (where secure_delete zeroed the old cells)
    and truncate the log. False when a reader kept it in use past the busy timeout."""
    if records.engine.dialect.name != "sqlite":
        return None
    async with records.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy, _log, _done = await cursor.fetchone()
    return busy == 0


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
