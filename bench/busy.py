"""Escalations when the desk is busiest, each beside a bare reference in the same run.

- flood: critical cases whose 30-second acknowledgement deadline falls while thousands of
  new cases are being opened as fast as a client can;
- herd: a thousand business-hours deadlines falling in the same second (business hours
  start, one business minute to acknowledge), beside a thousand bare workflows sleeping to
  one instant and then running one activity (the floor the server sets); and how far behind
  the decisions the relay delivers what they queued.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from temporalio.client import Client

from activities.records import MessageRow, Records
from bench.drivers import case_json, retrying
from bench.processes import BENCH_POLICY, probe_policy, start_worker
from bench.report import Report, percentile
from bench.workloads import (
    assigned_in_records,
    breach_lateness,
    first_lines,
    gather_limited,
    settle_all,
    terminate_all,
)
from starter.api import CaseClient


def stats(values: list[float]) -> dict[str, float | int | None]:
    return {
        "measured": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3) if values else None,
    }


async def open_one(desk: CaseClient, cid: str, i: int, severity: str) -> None:
    await retrying(lambda: desk.open(case_json(cid, i, severity, f"c-{cid}")))


async def flood(
    report: Report, client: Client, address: str, db_url: str, n: int, probes: int, ack: int
) -> None:
    """`probes` critical cases reach their acknowledgement deadline (`ack` s; 30 in the full
    run) while `n` new cases are being opened as fast as the client can."""
    tq = f"flood-{uuid.uuid4().hex[:6]}"
    worker = start_worker("case", address, tq, db_url, probe_policy(ack))
    desk = CaseClient(client, tq)
    run = uuid.uuid4().hex[:6]
    probe_ids = [f"F{run}-probe-{i}" for i in range(probes)]
    flood_ids = [f"F{run}-{i}" for i in range(n)]
    try:
        await gather_limited(
            [desk.open(case_json(c, i, "critical", f"fp-{c}")) for i, c in enumerate(probe_ids)]
        )
        await settle_all(desk, probe_ids)  # their deadlines: `ack` s from now
        started = asyncio.get_running_loop().time()
        await gather_limited([open_one(desk, c, i, "low") for i, c in enumerate(flood_ids)], 200)
        opened_s = asyncio.get_running_loop().time() - started

        async def all_assigned() -> float:
            await assigned_in_records(db_url, flood_ids)
            return asyncio.get_running_loop().time() - started

        assigned = asyncio.create_task(all_assigned())
        lateness = await breach_lateness(desk, probe_ids, db_url)
        assigned_s = await assigned
        await terminate_all(client, [f"case-{c}" for c in probe_ids + flood_ids])
    finally:
        worker.stop()
    report.results["flood"] = {
        "opened": n,
        "opened_per_s": round(n / opened_s, 1),
        "assigned_per_s": round(n / assigned_s, 1),
        "probes": probes,
        "lateness_s": stats(lateness),
    }
    print(f"  flood: {report.results['flood']}")


async def assignment_rate(
    report: Report, client: Client, address: str, db_url: str, n: int
) -> None:
    """`n` new cases opened as fast as a client can, on records of their own: how fast the
    desk assigns them as the open cases pile up to `n` (the whole fill, first open to last
    assignee in the records)."""
    tq = f"fill-{uuid.uuid4().hex[:6]}"
    worker = start_worker("case", address, tq, db_url, BENCH_POLICY)
    desk = CaseClient(client, tq)
    ids = [f"A{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
    try:
        started = asyncio.get_running_loop().time()
        opening = asyncio.create_task(
            gather_limited([open_one(desk, c, i, "low") for i, c in enumerate(ids)], 200)
        )
        await assigned_in_records(db_url, ids)
        elapsed = asyncio.get_running_loop().time() - started
        await opening
        await terminate_all(client, [f"case-{c}" for c in ids])
    finally:
        worker.stop()
    report.results["assignment_rate"] = {"open": n, "assigned_per_s": round(n / elapsed, 1)}
    print(f"  assignment rate: {report.results['assignment_rate']}")


def herd_policy(start: datetime, ack: int) -> Path:
    """The benchmark policy with low cases on a business clock whose day starts at `start`
    (every day of the week) and `ack` business seconds to acknowledge at tier 2."""
    text = BENCH_POLICY.read_text()
    text = text.replace(
        "start_tier =",
        'sla_clock = { low = "business", medium = "calendar", high = "calendar", '
        'critical = "calendar" }\nstart_tier =',
        1,
    )
    text = re.sub(r'ack = \{ low = "[^"]+"', f'ack = {{ low = "{ack}s"', text, count=1)
    text = text.replace('version = "bench-1"', 'version = "bench-herd"')
    text += (
        f"\n[business_hours]\ndays = [0, 1, 2, 3, 4, 5, 6]\n"
        f"start = {start:%H:%M:%S}\nend = 23:59:59\n"
    )
    path = Path(tempfile.gettempdir()) / f"escalation-bench-herd-{start:%H%M%S}.toml"
    path.write_text(text)
    return path


async def herd(
    report: Report, client: Client, address: str, db_url: str, n: int, lead: float, ack: int
) -> None:
    """`n` low cases opened before business hours start `lead` seconds from now, each with
    `ack` business seconds to acknowledge: their deadlines fall in the same second."""
    now = datetime.now(UTC)
    start = (now + timedelta(seconds=lead)).replace(microsecond=0)
    # the business day (start to 23:59:59) must hold the deadline and the minutes after it
    if (start + timedelta(seconds=ack + 180)).date() != now.date():
        print("  herd: skipped (too close to midnight UTC for a business day today)")
        return
    tq = f"herd-{uuid.uuid4().hex[:6]}"
    worker = start_worker("case", address, tq, db_url, herd_policy(start, ack))
    desk = CaseClient(client, tq)
    run = uuid.uuid4().hex[:6]
    ids = [f"H{run}-{i}" for i in range(n)]
    due = start + timedelta(seconds=ack)
    try:
        await gather_limited([open_one(desk, c, i, "low") for i, c in enumerate(ids)], 100)
        await settle_all(desk, ids)
        settled_early = datetime.now(UTC) < start
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        lateness = await breach_lateness(desk, ids, db_url)
        await asyncio.sleep(5)  # what the escalations queued goes out
        lag, after_decision, after_due = await delivery_lag(db_url, ids, due)
        await terminate_all(client, [f"case-{c}" for c in ids])
    finally:
        worker.stop()
    report.results["herd"] = {
        "cases": n,
        "settled_before_the_day_started": settled_early,
        "escalation_lateness_s": stats(lateness),
        "delivery_after_its_transition_s": stats(lag),
        "delivery_after_the_decision_s": stats(after_decision),
        "delivery_after_the_deadline_s": stats(after_due),
    }
    print(f"  herd: {report.results['herd']}")


async def delivery_lag(
    db_url: str, ids: list[str], due: datetime
) -> tuple[list[float], list[float], list[float]]:
    """Messages the herd's escalations queued: sent after their row was written (the relay's
    lag), after the case decided the escalation (the records' lag too), and after the
    deadline that caused them (s)."""
    records = Records.from_url(db_url)
    decided = first_lines("ack SLA breached", ids).subquery()
    try:
        async with records.sessions() as s:
            rows = (
                await s.execute(
                    select(MessageRow.created_at, MessageRow.sent_at, decided.c.at)
                    .join(decided, decided.c.case_id == MessageRow.case_id)
                    .where(MessageRow.created_at >= due)
                )
            ).all()
    finally:
        await records.close()
    sent = [(c, t, d) for c, t, d in rows if t is not None]
    return (
        [(t - c).total_seconds() for c, t, _ in sent],
        [(t - d).total_seconds() for _, t, d in sent],
        [(t - due).total_seconds() for _, t, _ in sent],
    )


async def bare_herd(report: Report, client: Client, base_tq: str, n: int, lead: float) -> None:
    """`n` bare workflows sleeping to one instant, each then running one activity."""
    instant = datetime.now(UTC) + timedelta(seconds=lead)
    run = uuid.uuid4().hex[:6]
    wids = [f"herd-{run}-{i}" for i in range(n)]
    await gather_limited(
        [client.start_workflow("HerdSleeper", instant, id=w, task_queue=base_tq) for w in wids],
        100,
    )
    late: list[float] = []

    async def finished(w: str) -> None:
        late.append(float(await client.get_workflow_handle(w).result()))

    await gather_limited([finished(w) for w in wids], 200)
    report.results["bare_herd"] = {"workflows": n, "finished_late_s": stats(late)}
    print(f"  bare herd: {report.results['bare_herd']}")
