"""A worker process for the benchmark: `--kind case` (the product) or `--kind baseline`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from temporalio.worker import Worker

from activities import health, tracing
from activities.case_activities import CaseActivities
from activities.channels import Channels
from activities.codec import data_converter
from activities.keys import KeyStore, MasterKeys
from activities.metrics import Metrics
from activities.migrate import upgrade
from activities.policy_file import PolicySource
from activities.records import Records
from activities.relay import Relay
from bench.baseline import BaselineCase, HerdSleeper, noop
from starter.config import Settings, connect, exit_now
from worker import build_worker, cached_cases
from workflows import proofs


async def serve(kind: str, max_cached: int) -> None:
    settings = Settings()
    proofs.configure(os.environ.get("ESCALATION_SECRET"))
    records = Records.from_url() if kind == "case" else None
    masters = MasterKeys.from_env()
    keys = KeyStore(records.twin(), masters) if records is not None and masters else None
    # metrics and tracing on when the run observes this worker (bench/observed.py)
    addr = os.environ.get("ESCALATION_METRICS_ADDR")
    metrics = Metrics(records, PolicySource()) if addr and records is not None else None
    if tracing.setup("bench-worker") and records is not None:
        tracing.instrument_records(records)
    client = await connect(settings, data_converter(keys), metrics.runtime if metrics else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker: Worker
    relay: asyncio.Task[None] | None = None
    outbox: Relay | None = None
    if kind == "baseline":
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[BaselineCase, HerdSleeper],
            activities=[noop],
            max_cached_workflows=max_cached,
        )
    else:
        assert records is not None
        await upgrade(records.engine)
        channels = Channels.from_env()  # the product's delivery: the log unless configured
        outbox = Relay(records, channels)
        relay = asyncio.create_task(outbox.run())
        acts = CaseActivities(records, channels, PolicySource(), handoff=outbox)
        worker = build_worker(client, settings.task_queue, acts, max_cached_workflows=max_cached)
    ops: asyncio.Task[None] | None = None
    if metrics is not None and addr is not None:
        app = health.ops_app(health.Readiness(client, records, worker), metrics)
        ops = asyncio.create_task(health.serve(app, addr))
    async with worker:
        print("ready", flush=True)
        await stop.wait()
    if ops is not None:
        ops.cancel()
        await asyncio.gather(ops, return_exceptions=True)
    if relay is not None and outbox is not None:
        outbox.stop()
        await asyncio.gather(relay, return_exceptions=True)
    if records is not None:
        await records.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["case", "baseline"], required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # every parked case of a phase stays cached (a case and a bare workflow alike) unless the
    # run asks for the worker's own setting
    asyncio.run(serve(args.kind, cached_cases() or 3000))
    exit_now(0)


if __name__ == "__main__":
    main()
