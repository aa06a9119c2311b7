"""`escalate` refuses bad input before it connects to anything, naming the field; its
case listing reads right at a terminal's width."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from starter.api import CaseListing, is_transient
from starter.views import print_listing
from tests.conftest import run_escalate, sample_case


def escalate(*args: str) -> subprocess.CompletedProcess[str]:
    return run_escalate(*args, env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})


def test_open_with_bad_file_names_the_field(tmp_path: Path) -> None:
    case = sample_case(severity="urgent")
    case["customer"].pop("email")
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    out = escalate("open", "--file", str(path))
    assert out.returncode == 2
    assert "severity: Input should be 'low', 'medium', 'high' or 'critical'" in out.stderr
    assert "customer.email: Field required" in out.stderr
    assert "Traceback" not in out.stderr


def test_open_with_flags_names_missing_fields() -> None:
    out = escalate("open", "--case-id", "C-7", "--severity", "high", "--subject", "x")
    assert out.returncode == 2
    assert "customer.id: Field required" in out.stderr and "category: Field required" in out.stderr
    assert "Traceback" not in out.stderr


def test_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "case.json"
    path.write_text("{not json")
    out = escalate("open", "--file", str(path))
    assert out.returncode == 2 and "not valid JSON" in out.stderr


def test_unreachable_server_is_a_clear_error() -> None:
    out = escalate("status", "C-1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("escalate:")


def test_listing_shows_whole_case_ids_and_paused_clocks(capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)

    def row(case_id: str, **changes: Any) -> CaseListing:
        base: dict[str, Any] = dict(
            case_id=case_id,
            workflow_id=f"case-{case_id}",
            status="running",
            stage="resolve",
            tier=2,
            severity="medium",
            department="accounts",
            assignee="acct-ben",
            customer_id="cust-1",
            sla_breached=False,
            sla_deadline=now + timedelta(hours=2, minutes=10, seconds=30),
            started=now,
        )
        return CaseListing(**{**base, **changes})

    print_listing(
        [
            row("D-261123035216-01"),
            row("D-261123035216-02", sla_deadline=None),  # waiting for the customer
            row("D-261123035216-03", sla_deadline=now - timedelta(minutes=35, seconds=30)),
            row("D-261123035216-04", sla_deadline=None, sla_breached=True, tier=4),
        ]
    )
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if "D-2611" in line}
    assert set(lines) == {f"D-261123035216-0{i}" for i in range(1, 5)}  # never cut short
    assert "in 2h 10m" in lines["D-261123035216-01"]
    assert "paused" in lines["D-261123035216-02"]
    assert "overdue 35m" in lines["D-261123035216-03"]
    assert "BREACHED" in lines["D-261123035216-04"]
    assert "paused" not in lines["D-261123035216-04"]


@pytest.mark.parametrize(
    ("status", "message", "again"),
    [
        # as the server answered Updates while a killed worker's cases waited for another
        (
            RPCStatusCode.FAILED_PRECONDITION,
            "no poller seen for task queue recently, worker may be down",
            True,
        ),
        (RPCStatusCode.FAILED_PRECONDITION, "workflow is not running", False),
        (RPCStatusCode.UNAVAILABLE, "connection refused", True),
        (RPCStatusCode.INVALID_ARGUMENT, "no poller seen for task queue recently", False),
        (RPCStatusCode.NOT_FOUND, "workflow not found for ID: case-X", False),
    ],
)
def test_a_case_whose_worker_is_gone_is_worth_asking_again(
    status: RPCStatusCode, message: str, again: bool
) -> None:
    assert is_transient(RPCError(message, status, b"")) is again
