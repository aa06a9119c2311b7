"""`escalate` refuses bad input before it connects to anything, naming the field."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import run_escalate, sample_case


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
