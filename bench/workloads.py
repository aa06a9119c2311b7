"""The measurements: throughput, update round-trip, timer precision, parked cases, a
worker killed under load. Each fills its part of the report."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from activities.records import CaseRow, Records, TimelineRow
from bench.drivers import (
    baseline_happy_path,
    case_happy_path,
    case_json,
    history_shape,
    poll,
    retrying,
    run_all,
)
from bench.processes import BENCH_SECRET, probe_policy, start_worker, windowed_policy
from bench.report import Report, percentile
from starter.api import CaseClient, with_proof
from workflows.models import CaseStatus, MessageResult


async def throughput(
    report: Report,
    client: Client,
    cases: Client,
    case_tq: str,
    base_tq: str,
    sizes: list[int],
    tag: str = "",
) -> None:
    """The bare workflow through `client`, the product's cases through `cases` (with the
    codec when the case worker encrypts); results under `throughput{tag}_n{N}`."""
    desk = CaseClient(cases, case_tq)
    run = uuid.uuid4().hex[:6]
    for n in sizes:
        elapsed_b, ok_b = await run_all(
            [baseline_happy_path(client, base_tq, f"base-{run}-{n}-{i}") for i in range(n)]
        )
        elapsed_c, ok_c = await run_all(
            [case_happy_path(desk, f"B{run}-{n}-{i}", i) for i in range(n)]
        )
        report.results[f"throughput{tag}_n{n}"] = {
            "n": n,
            "baseline_per_s": round(ok_b / elapsed_b, 2),
            "cases_per_s": round(ok_c / elapsed_c, 2),
            "baseline_completed": ok_b,
            "cases_completed": ok_c,
        }
        print(f"  N={n}{tag}: baseline {ok_b / elapsed_b:.1f}/s, cases {ok_c / elapsed_c:.1f}/s")
    if not tag:
        report.results["case_history"] = await history_shape(cases, f"case-B{run}-{sizes[0]}-0")
        report.results["baseline_history"] = await history_shape(client, f"base-{run}-{sizes[0]}-0")


async def windowed_cost(report: Report, cases: Client, address: str, db_url: str) -> None:
    """One happy path under the bundled policy with its reopen window (made seconds long),
    to its close: what a case costs as shipped."""
    tq = f"windowed-{uuid.uuid4().hex[:6]}"
    worker = start_worker("case", address, tq, db_url, policy=windowed_policy())
    try:
        case_id = f"WIN-{uuid.uuid4().hex[:6]}"
        await case_happy_path(CaseClient(cases, tq), case_id, 0)
        await cases.get_workflow_handle(f"case-{case_id}").result()
        report.results["case_history_windowed"] = await history_shape(cases, f"case-{case_id}")
    finally:
        worker.stop()


async def update_latency(
    report: Report,
    client: Client,
    cases: Client,
    case_tq: str,
    base_tq: str,
    samples: int,
    tag: str = "",
) -> None:
    desk = CaseClient(cases, case_tq)
    run = uuid.uuid4().hex[:6]
    ids = [f"U{run}-{i}" for i in range(samples)]
    await asyncio.gather(*[desk.open(case_json(cid, i)) for i, cid in enumerate(ids)])
    holders: dict[str, str] = {}
    for cid in ids:

        async def assigned(cid: str = cid) -> bool:
            st = await desk.status(cid)
            if st.stage == "resolve" and st.assignee:
                holders[cid] = st.assignee
                return True
            return False

        await poll(assigned, 0.1)
        await desk.send(cid, "acknowledge", {"by": holders[cid]})
        # above every supervisor's authority, so it needs an approver whoever holds the case
        action = {"kind": "refund", "amount": 6000, "currency": "USD"}
        await desk.send(cid, "request_approval", {"by": holders[cid], "action": action})
    case_ms = []
    for cid in ids:
        st: CaseStatus = await desk.status(cid)
        assert st.pending_approval is not None
        approver = st.pending_approval.notified[0]
        decision = with_proof({"by": approver, "note": "ok"}, BENCH_SECRET, "approve", st)
        t0 = time.perf_counter()
        result: MessageResult | None = await desk.send(cid, "approve", decision)
        case_ms.append((time.perf_counter() - t0) * 1000)
        assert result is not None and result.accepted
    base_ms = []
    for i in range(samples):
        wid = f"ubase-{run}-{i}"
        handle = await client.start_workflow("BaselineCase", wid, id=wid, task_queue=base_tq)
        await poll(lambda h=handle: h.query("ready"), 0.1)  # type: ignore[misc]
        t0 = time.perf_counter()
        await handle.execute_update("step", "approve")
        base_ms.append((time.perf_counter() - t0) * 1000)
    for cid in ids:
        await desk.handle(cid).terminate("benchmark over")
    for i in range(samples):
        await client.get_workflow_handle(f"ubase-{run}-{i}").terminate("benchmark over")
    report.results[f"approval_update_ms{tag}"] = {
        "samples": samples,
        "case_p50": round(percentile(case_ms, 50), 1),
        "case_p99": round(percentile(case_ms, 99), 1),
        "baseline_p50": round(percentile(base_ms, 50), 1),
        "baseline_p99": round(percentile(base_ms, 99), 1),
    }
    print(f"  approval update{tag}: {report.results[f'approval_update_ms{tag}']}")


async def timer_precision(
    report: Report, client: Client, address: str, db_url: str, n: int, probes: int, ack: int
) -> None:
    """How late an SLA escalation fires with n cases open on the worker.

    n low-severity cases park on hours-long timers; then `probes` critical cases start at
    5 a second, each escalating `ack` s after assignment (bench/policy.toml: 30). Lateness is
    the time between a probe's ack deadline and the moment its breach was handled.
    """
    tq = f"timers-{uuid.uuid4().hex[:6]}"
    worker = start_worker("case", address, tq, db_url, probe_policy(ack))
    desk = CaseClient(client, tq)
    run = uuid.uuid4().hex[:6]
    parked = [f"P{run}-bg-{i}" for i in range(n)]
    probe_ids = [f"P{run}-probe-{i}" for i in range(probes)]
    lateness: list[float] = []
    try:

        async def open_parked(i: int, cid: str) -> None:
            await retrying(lambda: desk.open(case_json(cid, i, "low", f"park-{cid}")))

        await gather_limited([open_parked(i, c) for i, c in enumerate(parked)], 100)
        await settle_all(desk, parked)
        for i, cid in enumerate(probe_ids):
            await desk.open(case_json(cid, i, "critical", f"probe-{cid}"))
            await asyncio.sleep(0.2)

        await asyncio.sleep(ack)
        lateness = await breach_lateness(desk, probe_ids, db_url, within=120)
        await terminate_all(client, [f"case-{c}" for c in parked + probe_ids])
    finally:
        worker.stop()
    report.results["escalation_lateness_s"] = {
        "open_cases": n + probes,
        "probes": probes,
        "measured": len(lateness),
        "p50": round(percentile(lateness, 50), 3),
        "p99": round(percentile(lateness, 99), 3),
        "max": round(max(lateness), 3) if lateness else None,
    }
    print(f"  escalation lateness: {report.results['escalation_lateness_s']}")


async def breach_lateness(
    desk: CaseClient, ids: list[str], db_url: str, within: float = 180
) -> list[float]:
    """Per case: when it handled its acknowledgement breach, after the deadline (s).

    Watched in the records, as the console reads them: one query a second for all the cases,
    so the watching adds no work to the worker being measured (a status query per case per
    second did: 100 queries a second during a herd). The breach's time is the case's own
    (its timeline line); its deadline is then read from each case once."""
    fired = await _first_in_timeline(db_url, ids, "ack SLA breached", within)
    found: list[float] = []

    async def one(cid: str) -> None:
        st = await retrying(lambda: desk.status(cid))
        if st.breaches:
            found.append((fired[cid] - st.breaches[0].deadline).total_seconds())

    await gather_limited([one(c) for c in fired], 100)
    return found


def first_lines(what: str, ids: Iterable[str]) -> Select[str, datetime]:
    """Each case's first timeline line `what`: (case id, its time)."""
    return (
        select(TimelineRow.case_id, func.min(TimelineRow.at).label("at"))
        .where(TimelineRow.what == what, TimelineRow.case_id.in_(ids))
        .group_by(TimelineRow.case_id)
    )


async def watch_records(
    db_url: str, done: Callable[[AsyncSession], Awaitable[bool]], every: float, within: float
) -> None:
    """Read the records every `every` seconds until `done` says so or `within` has passed:
    the console's view of the cases, which puts no load on the worker being measured."""
    records = Records.from_url(db_url, immediate=False)
    deadline = asyncio.get_running_loop().time() + within
    try:
        while asyncio.get_running_loop().time() < deadline:
            async with records.sessions() as s:
                if await done(s):
                    return
            await asyncio.sleep(every)
    finally:
        await records.close()


async def _first_in_timeline(
    db_url: str, ids: list[str], what: str, within: float
) -> dict[str, datetime]:
    """Each case's first timeline line `what` (its time), waiting up to `within` seconds."""
    pending: set[str] = set(ids)
    fired: dict[str, datetime] = {}

    async def all_fired(s: AsyncSession) -> bool:
        for cid, at in (await s.execute(first_lines(what, pending))).all():
            fired[cid] = at
            pending.discard(cid)
        return not pending

    await watch_records(db_url, all_fired, 1, within)
    return fired


async def assigned_in_records(db_url: str, ids: list[str]) -> None:
    """Until every case has an assignee in the records (watched without querying cases)."""

    async def all_assigned(s: AsyncSession) -> bool:
        done = await s.scalar(
            select(func.count())
            .select_from(CaseRow)
            .where(CaseRow.case_id.in_(ids), CaseRow.assignee.is_not(None))
        )
        return done == len(ids)

    await watch_records(db_url, all_assigned, 0.5, float("inf"))


async def settle_all(desk: CaseClient, ids: list[str]) -> None:
    """Wait until every case sits in resolve with an assignee (parked on its timers)."""

    async def settled(c: str) -> None:
        async def check() -> bool:
            st = await desk.status(c)
            return st.stage == "resolve" and st.assignee is not None

        await poll(check, 0.5)

    await gather_limited([settled(c) for c in ids])


async def warm_up(client: Client, kind: str, tq: str, n: int = 50) -> None:
    """Run a few workflows to the end first, so one-off costs (imports, caches, the first
    database connection) are not counted per parked case."""
    run = uuid.uuid4().hex[:6]
    if kind == "case":
        desk = CaseClient(client, tq)
        await asyncio.gather(*[case_happy_path(desk, f"W{run}-{i}", i) for i in range(n)])
    else:
        await asyncio.gather(*[baseline_happy_path(client, tq, f"w{run}-{i}") for i in range(n)])


async def gather_limited(coros: list[Awaitable[Any]], limit: int = 50) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> None:
        async with sem:
            await coro

    await asyncio.gather(*[one(c) for c in coros])


async def park_cases(client: Client, tq: str, n: int) -> list[str]:
    """Open n cases and wait until each sits in resolve, on its SLA timers."""
    desk = CaseClient(client, tq)
    run = uuid.uuid4().hex[:6]
    ids = [f"K{run}-{i}" for i in range(n)]
    await gather_limited([desk.open(case_json(c, i)) for i, c in enumerate(ids)], 100)
    await settle_all(desk, ids)
    return [f"case-{c}" for c in ids]


async def park_baseline(client: Client, tq: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    wids = [f"kbase-{run}-{i}" for i in range(n)]
    await gather_limited(
        [client.start_workflow("BaselineCase", w, id=w, task_queue=tq) for w in wids], 100
    )

    async def ready(w: str) -> None:
        async def check() -> bool:
            return bool(await client.get_workflow_handle(w).query("ready"))

        await poll(check, 0.5)

    await gather_limited([ready(w) for w in wids])
    return wids


async def terminate_all(client: Client, wids: list[str]) -> None:
    await gather_limited(
        [client.get_workflow_handle(w).terminate("benchmark over") for w in wids], 100
    )


async def parked(
    report: Report,
    client: Client,
    sealed: Client,
    address: str,
    db_url: str,
    n: int,
    while_parked: Callable[[list[str]], Awaitable[None]] | None = None,
    idle_window: float = 20,
) -> None:
    """RSS and idle CPU of a worker holding n cases parked on SLA timers (encrypted, and
    plain), vs the baseline; then `while_parked` (the console's renders) runs against the
    parked encrypted cases."""
    out: dict[str, Any] = {"parked": n}
    for name, kind, encrypt in (
        ("baseline", "baseline", False),
        ("case", "case", True),
        ("case_plain", "case", False),
    ):
        tq = f"park-{name}-{uuid.uuid4().hex[:6]}"
        worker = start_worker(kind, address, tq, db_url, encrypt=encrypt)
        c = sealed if encrypt else client
        try:
            await warm_up(c, kind, tq)
            await asyncio.sleep(2)
            rss0 = worker.rss_bytes()
            park = park_cases if kind == "case" else park_baseline
            wids = await park(c, tq, n)
            await asyncio.sleep(5)  # let the last tasks settle
            rss1 = worker.rss_bytes()
            cpu0, t0 = worker.cpu_seconds(), time.monotonic()
            await asyncio.sleep(idle_window)
            idle_pct = 100 * (worker.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            out[name] = {
                "rss_idle_mb": round(rss0 / 2**20, 1),
                "rss_parked_mb": round(rss1 / 2**20, 1),
                "kb_per_cached": round((rss1 - rss0) / n / 1024, 1),
                "idle_cpu_pct_of_core": round(idle_pct, 2),
            }
            if name == "case" and while_parked is not None:
                await while_parked(wids)
            await terminate_all(c, wids)
        finally:
            worker.stop()
    report.results["parked"] = out
    print(f"  parked: {out}")


async def kill_one(report: Report, client: Client, address: str, db_url: str, n: int) -> None:
    tq = f"kill-{uuid.uuid4().hex[:6]}"
    workers = [start_worker("case", address, tq, db_url) for _ in range(2)]
    desk = CaseClient(client, tq)
    run = uuid.uuid4().hex[:6]
    try:
        task = asyncio.ensure_future(
            run_all([case_happy_path(desk, f"X{run}-{i}", i) for i in range(n)])
        )
        await asyncio.sleep(2)
        workers[0].stop(signal.SIGKILL)
        elapsed, ok = await asyncio.wait_for(task, 600)
    finally:
        for w in workers:
            w.stop()
    report.results["worker_killed"] = {"cases": n, "completed": ok, "seconds": round(elapsed, 1)}
    print(f"  one of two workers killed: {ok}/{n} completed in {elapsed:.1f}s")
