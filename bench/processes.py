"""The processes a benchmark run measures: workers it starts, their CPU time and memory."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from activities.policy_file import BUNDLED_POLICY
from workflows.models import Severity

# --- processes ------------------------------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()


BENCH_POLICY = Path(__file__).with_name("policy.toml")
BENCH_SECRET = "benchmark-secret-0123456789"
BENCH_MASTER = bytes(range(32))  # the benchmark's master key (its cases are throwaway)


def closing_policy() -> Path:
    """The bundled policy with cases closing at their resolution: the happy path ends at its
    report-up, not a reopen window (7 days) later (README, Benchmark)."""
    return _bundled_with_window("", "escalation-bench-policy.toml")


def windowed_policy(window: str = "3s") -> Path:
    """The bundled policy with its reopen window, shortened so a run sees the case close: the
    same commands as the bundled 7 days, in seconds."""
    each = ", ".join(f'{s} = "{window}"' for s in get_args(Severity))
    return _bundled_with_window(f"reopen_window = {{ {each} }}", "escalation-bench-windowed.toml")


def probe_policy(ack: int) -> Path:
    """The benchmark policy with `ack` seconds for a critical case to be acknowledged (30 in
    the file): the small run's probes fall due sooner, the same commands either way."""
    path = Path(tempfile.gettempdir()) / f"escalation-bench-probe-{ack}s.toml"
    path.write_text(BENCH_POLICY.read_text().replace('critical = "30s"', f'critical = "{ack}s"'))
    return path


def _bundled_with_window(line: str, name: str) -> Path:
    path = Path(tempfile.gettempdir()) / name
    path.write_text(re.sub(r"^reopen_window = .*$", line, BUNDLED_POLICY.read_text(), flags=re.M))
    return path


def start_worker(
    kind: str,
    address: str,
    task_queue: str,
    db_url: str,
    policy: Path | None = None,
    encrypt: bool = True,
    extra: dict[str, str] | None = None,
) -> Proc:
    """A worker process; a case worker encrypts its cases' payloads unless `encrypt` is off;
    `extra` environment (bench/observed.py: metrics and tracing on)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        **(extra or {}),
        "TEMPORAL_ADDRESS": address,
        "ESCALATION_TASK_QUEUE": task_queue,
        "DATABASE_URL": db_url,
        "LOG_LEVEL": "WARNING",
        "ESCALATION_SECRET": BENCH_SECRET,  # checks the approvals' proofs
    }
    env["ESCALATION_POLICY"] = str(policy or closing_policy())
    env.pop("ESCALATION_MASTER_KEY", None)
    if encrypt and kind == "case":
        env["ESCALATION_MASTER_KEY"] = base64.b64encode(BENCH_MASTER).decode()
    popen = subprocess.Popen(
        [sys.executable, "-m", "bench.worker", "--kind", kind],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert popen.stdout is not None
    line = popen.stdout.readline().decode().strip()
    if line != "ready":
        raise RuntimeError(f"{kind} worker did not start")
    return Proc(popen)
