"""Operator and manager views from the records of real cases: report, chart, history."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from starter.reporting import build_report, time_unit, write_chart
from tests.conftest import Desk


async def test_report_chart_and_history(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk], tmp_path: Path
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        quick, slow, still_open = (desk.case(severity="high") for _ in range(3))
        for c in (quick, slow, still_open):
            await desk.api.open(c)
        a = await desk.settled(quick["case_id"])
        await desk.api.send(quick["case_id"], "resolve", {"by": a.assignee, "resolution": "done"})
        await desk.api.report(quick["case_id"])  # closed before the clock moves
        b = await desk.settled(slow["case_id"])
        refund = {"kind": "refund", "amount": 250, "currency": "USD"}
        await desk.api.send(
            slow["case_id"], "request_approval", {"by": b.assignee, "action": refund}
        )
        await ts_env.sleep(timedelta(minutes=30))
        await desk.api.send(slow["case_id"], "approve", {"by": "sup-lee", "note": "ok"})
        await ts_env.sleep(timedelta(minutes=31))  # not acknowledged within 1h: tier 3
        b3 = await desk.settled(slow["case_id"])
        assert b3.tier == 3
        await desk.api.send(slow["case_id"], "resolve", {"by": b3.assignee, "resolution": "done"})
        await desk.api.report(slow["case_id"])

    rep = await build_report(desk.records)
    assert (rep.cases, rep.open, rep.closed) == (3, 1, 2)
    assert rep.volume == {"billing": {"low": 0, "medium": 0, "high": 3, "critical": 0}}
    tiers = {t.tier: t for t in rep.tiers}
    assert tiers[2].visits == 2 and tiers[2].breaches == 1 and tiers[2].breach_rate == 0.5
    assert tiers[3].visits == 1 and tiers[3].breaches == 0
    # visits of 0 h and 1 h; the quick case's visit takes a second or so of real time
    assert tiers[2].median_hours == pytest.approx(0.5, abs=0.001)
    assert tiers[2].p90_hours == pytest.approx(0.9, abs=0.001)
    a_stats = rep.approvals
    assert (a_stats.requested, a_stats.approved, a_stats.approval_rate) == (1, 1, 1.0)
    assert a_stats.median_hours_to_decision == 0.5
    assert rep.resolved == 2 and rep.resolved_at_first_tier == 0.5
    assert rep.resolution_hours["p50"] is not None

    png = write_chart(rep, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    url = desk.records.engine.url.render_as_string(hide_password=False)
    code, stdout, _ = await cli({"DATABASE_URL": url}, "history", slow["case_id"], "--json")
    assert code == 0
    rows = json.loads(stdout)
    whats = [r["what"] for r in rows]
    assert whats[:3] == ["opened", "identified", "assigned"]
    assert "approval approved" in whats and "ack SLA breached" in whats and "escalated" in whats
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["at"].endswith("Z") for r in rows)
    code, _, stderr = await cli({"DATABASE_URL": url}, "history", "NOPE-1")
    assert code == 2 and "no records for case NOPE-1" in stderr
    code, stdout, _ = await cli({"DATABASE_URL": url}, "messages", slow["case_id"], "--json")
    assert code == 0
    sent = json.loads(stdout)
    asked = [m for m in sent if m["subject"].startswith("Approval needed: refund 250.00 USD")]
    assert [m["recipient"] for m in asked] == ["sup-lee", "sup-mara"]
    assert all(m["state"] == "sent" and m["sent_at"].endswith("Z") for m in sent)
    assert sent[0]["audience"] == "customer" and sent[0]["body"].startswith("Dear Ada Lopez,")
    assert len({m["key"] for m in sent}) == len(sent)
    code, _, stderr = await cli({"DATABASE_URL": url}, "messages", "NOPE-1")
    assert code == 2 and "no messages for case NOPE-1" in stderr
    code, stdout, _ = await cli({"DATABASE_URL": url}, "report")
    tier2 = next(line for line in stdout.splitlines() if line.split()[:1] == ["2"])
    assert code == 0 and tier2.split()[2:4] == ["30m", "54m"]  # visits of 0 h and 1 h


def test_chart_unit_follows_the_longest_bar() -> None:
    assert time_unit([0.0125, 1.9]) == ("minutes", 60.0)
    assert time_unit([0.5, 2.0]) == ("hours", 1.0)
    assert time_unit([]) == ("minutes", 60.0)


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()
