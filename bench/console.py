"""The desk console under a full desk: My cases, /desk and a case page rendered by
`escalation-web` (its own process, as deployed) while the benchmark's cases sit parked."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

import httpx
from sqlalchemy import func, select

from activities.records import CaseRow, Records
from bench.processes import BENCH_MASTER, BENCH_SECRET, closing_policy
from bench.report import Report, percentile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def signed_in(http: httpx.AsyncClient, person: str) -> None:
    """The development sign-in (loopback only), as the person would click it."""
    page = await http.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    done = await http.post("/signin/as", data={"person": person, "csrf": csrf[1], "next": "/"})
    assert done.status_code == 303, done.text[:500]


async def timed(http: httpx.AsyncClient, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        t0 = time.perf_counter()
        response = await http.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return out


async def console_latency(
    report: Report, address: str, db_url: str, wids: list[str], samples: int
) -> None:
    records = Records.from_url(db_url)
    async with records.transaction() as s:
        busiest = (
            await s.execute(
                select(CaseRow.assignee, func.count())
                .where(CaseRow.closed_at.is_(None), CaseRow.assignee.is_not(None))
                .group_by(CaseRow.assignee)
                .order_by(func.count().desc())
                .limit(1)
            )
        ).one()
        open_cases = await s.scalar(
            select(func.count()).select_from(CaseRow).where(CaseRow.closed_at.is_(None))
        )
    await records.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "DATABASE_URL": db_url,
        "ESCALATION_POLICY": str(closing_policy()),
        "ESCALATION_WEB_URL": base,
        "ESCALATION_MASTER_KEY": base64.b64encode(BENCH_MASTER).decode(),  # reads the cases
        "ESCALATION_SECRET": BENCH_SECRET,
    }
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        web = start_web(port, tmp, env)
        try:
            await _wait(base)
            rng = random.Random(7)
            picks = [w.removeprefix("case-") for w in rng.sample(wids, min(samples, len(wids)))]
            async with (
                httpx.AsyncClient(base_url=base, timeout=30) as mine,
                httpx.AsyncClient(base_url=base, timeout=30) as exe,
            ):
                await signed_in(mine, str(busiest[0]))
                await signed_in(exe, "exec-vance")  # the top tier: every open case
                await timed(mine, ["/"] * 3)  # warm
                my_ms = await timed(mine, ["/"] * samples)
                desk_ms = await timed(exe, ["/desk"] * samples)
                case_ms = await timed(exe, [f"/cases/{c}" for c in picks])
        finally:
            web.terminate()
            web.wait(10)
    result: dict[str, float | int | None] = {
        "open_cases": open_cases,
        "my_cases_rows": int(busiest[1]),
    }
    for name, values in (("my_cases", my_ms), ("desk", desk_ms), ("case_page", case_ms)):
        result[f"{name}_p50_ms"] = round(percentile(values, 50), 1)
        result[f"{name}_p95_ms"] = round(percentile(values, 95), 1)
    report.results["console_ms"] = result
    print(f"  console: {result}")


def start_web(port: int, data_dir: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "starter.web", "--dev", "--port", str(port), "--data-dir", data_dir],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait(base: str) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("escalation-web did not start")
