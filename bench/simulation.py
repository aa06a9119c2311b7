"""The policy simulator on a month of a large desk: a synthetic month against a candidate
policy (tier-2 acknowledgement for high cases halved), both runs, in a process of its own
so its peak memory is its own.

    .venv/bin/python -m bench.simulation 30000
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime

from activities.policy_file import BUNDLED_POLICY, load_policy
from bench.report import Report
from starter.simulate import simulate
from starter.synthetic import generate
from workflows.policy import policy_from_dict


def measure(n: int) -> dict[str, float | int]:
    current = load_policy(BUNDLED_POLICY)
    data = tomllib.loads(BUNDLED_POLICY.read_text())
    data["tiers"][0]["ack"]["high"] = "30m"
    data["version"] = "bench-candidate"
    candidate = policy_from_dict(data)
    cases = generate(current, n, 30, seed=1, start=datetime(2026, 11, 2, tzinfo=UTC))
    started = time.perf_counter()
    now = simulate(cases, current)
    then = simulate(cases, candidate)
    seconds = time.perf_counter() - started
    events = now.events + then.events
    return {
        "cases": n,
        "seconds_both_runs": round(seconds, 2),
        "events": events,
        "events_per_s": round(events / seconds),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def simulation(report: Report, n: int) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.simulation", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    report.results["simulation"] = json.loads(out.stdout)
    print(f"  simulation: {report.results['simulation']}")


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))))
