"""Runs a worker for the `escalations` task queue; `--dev` also runs the embedded Temporal server.

escalation-worker          # against $TEMPORAL_ADDRESS (a cluster, or a dev server)
escalation-worker --dev    # starts `temporal server start-dev` (UI on :8233), a worker and
                           # the web app (approval links, the dev outbox) on :8000

Beside the workflows and activities, the worker runs the outbox relay that delivers messages
(activities/relay.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import health, logs, tracing
from activities.case_activities import CaseActivities
from activities.channels import Channels, Delivery
from activities.codec import data_converter
from activities.keys import KeyStore, MasterKeys
from activities.links import Links
from activities.metrics import Metrics
from activities.migrate import upgrade
from activities.policy_file import PolicySource
from activities.records import Records
from activities.relay import FailureHook, Relay, failure_text
from activities.render import Renderer
from starter.config import Settings, connect, exit_now
from starter.devserver import DevServer, DevServerError, port_in_use
from starter.signin import OidcConfig
from workflows import proofs
from workflows import search_attributes as sa
from workflows.case import EscalationCase
from workflows.policy import PolicyError

log = logging.getLogger("worker")


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register any missing attribute; existing ones are left alone (safe to run often)."""
    svc = client.operator_service
    have = await svc.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in sa.ALL
        if key.name not in have.custom_attributes
    }
    if not missing:
        return
    try:
        await svc.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as err:
        if "already" not in str(err).lower():
            raise
    log.info("registered search attributes: %s", ", ".join(sorted(missing)))


SANDBOX_MODES = ("off", "on", "strict")


def sandbox_mode() -> str:
    """How the worker runs the cases' code (`ESCALATION_WORKFLOW_SANDBOX`; unset: `off`).

    `strict` is the SDK's sandbox, importing this package afresh under its restrictions for
    every case: a non-deterministic call (a clock, random, I/O) fails the workflow task. The
    tests and the replay of recorded histories run every case path that way, so such a call
    fails CI. `on` is the sandbox with this package imported once (a compile per case and a
    private copy of every function had cost 17 % of worker CPU and 4x a bare workflow's
    memory). `off` runs the same code without the sandbox: the SDK asks the sandbox for a
    serialization context once per payload of every command, each a piece of code compiled
    and run inside it, and that was a fifth of the worker's CPU per case (bench/, README)."""
    mode = os.environ.get("ESCALATION_WORKFLOW_SANDBOX") or "off"
    if mode not in SANDBOX_MODES:
        raise ValueError(
            f"ESCALATION_WORKFLOW_SANDBOX: one of {', '.join(SANDBOX_MODES)}, not {mode!r}"
        )
    return mode


def workflow_runner(mode: str = "off") -> WorkflowRunner:
    """The runner for `mode` (sandbox_mode)."""
    if mode == "off":
        return UnsandboxedWorkflowRunner()
    # Business-hours clocks need real timezone objects: the sandbox hands out ZoneInfo behind
    # a proxy that datetime refuses as a tzinfo. Reading the zone database is deterministic
    # for a given tzdata, so ZoneInfo itself is let through; every other restriction stays.
    members = SandboxRestrictions.invalid_module_members_default
    restrictions = dataclasses.replace(
        SandboxRestrictions.default,
        invalid_module_members=members.with_child_unrestricted("zoneinfo", "ZoneInfo"),
    )
    # the proof key, set by the worker at start, lives in one module shared with the sandbox
    restrictions = restrictions.with_passthrough_modules("workflows.proofs")
    # the trace context is the process's own (tracing.py), shared with the cases it runs
    restrictions = restrictions.with_passthrough_modules("opentelemetry")
    if mode == "strict":
        return SandboxedWorkflowRunner(restrictions=restrictions)
    return SandboxedWorkflowRunner(restrictions=restrictions.with_passthrough_modules("workflows"))


N = TypeVar("N", int, float)


def positive(name: str, kind: Callable[[str], N]) -> N | None:
    """$`name` as a positive finite number (None when unset); anything else is refused naming it
    (an infinite timeout would fail later, in `timedelta`, without the variable's name)."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        number = kind(value)
    except ValueError:
        number = kind("0")
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name}: a positive finite number, not {value!r}")
    return number


def activity_slots() -> int | None:
    """How many activities one worker runs at once (`ESCALATION_MAX_ACTIVITIES`; unset: the
    SDK's 100). Fewer leave more of the process to the cases' decisions and queries, at the
    price of throughput: every activity then waits its turn on the server (10 halved the
    flood's assignment rate; bench/, README)."""
    return positive("ESCALATION_MAX_ACTIVITIES", int)


def cached_cases() -> int | None:
    """How many cases one worker keeps in memory (`ESCALATION_CACHED_CASES`; unset: the SDK's
    1,000). A case out of the cache replays its whole history when its next timer fires or
    message arrives, so a worker holding more open cases than this pays a replay at each of
    their deadlines; each cached case costs about 120 KB of memory (bench/, README)."""
    return positive("ESCALATION_CACHED_CASES", int)


STICKY_SECONDS = 30.0  # the SDK's is 10 s


def sticky_timeout() -> timedelta:
    """How long a case's next workflow task waits for the worker that holds the case in its
    cache before the server hands it to any worker, which replays the history first
    (`ESCALATION_STICKY_SECONDS`; unset: 30 s, the SDK's is 10 s). In a herd of 1,000
    deadlines in one second the busy worker's queue runs past 10 s: cases time out of it, are
    replayed, and the last escalation came 1.3-1.9x as late as the bare herd's; with 30 s,
    0.66-0.95x. What it costs: a flood's critical deadlines fired 0.2-2.5 s late at p99 with
    it, 0.3-1.4 s without; and tasks already queued for a worker that died wait this long (a
    worker that stops polling is skipped after 10 s whatever this is; clients retry the
    server's "no poller seen" meanwhile). bench/, README."""
    seconds = positive("ESCALATION_STICKY_SECONDS", float)
    return timedelta(seconds=STICKY_SECONDS if seconds is None else seconds)


def build_worker(
    client: Client,
    task_queue: str,
    activities: CaseActivities,
    sandbox: str | None = None,
    **options: Any,
) -> Worker:
    """The cases' worker; `sandbox` as in sandbox_mode (unset: the environment's)."""
    if (slots := activity_slots()) is not None:
        options.setdefault("max_concurrent_activities", slots)
    if (cached := cached_cases()) is not None:
        options.setdefault("max_cached_workflows", cached)
    options.setdefault("sticky_queue_schedule_to_start_timeout", sticky_timeout())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[EscalationCase],
        activities=[
            activities.open_case,
            activities.assign_case,
            activities.open_and_assign,
            activities.record_transition,
            activities.read_clock,
            activities.check_proof,
        ],
        workflow_runner=workflow_runner(sandbox or sandbox_mode()),
        **options,
    )


async def connect_with_retry(
    settings: Settings,
    converter: DataConverter | None = None,
    attempts: int = 30,
    runtime: Runtime | None = None,
) -> Client:
    """A worker may start before its server (compose, k8s): keep trying for a while."""
    for attempt in range(1, attempts + 1):
        try:
            return await connect(settings, converter, runtime)
        except RuntimeError as err:
            if attempt == attempts:
                raise
            log.warning("cannot reach Temporal at %s yet (%s); retrying", settings.address, err)
            await asyncio.sleep(min(2.0 * attempt, 10.0))
    raise AssertionError("unreachable")


def tell_case(client: Client) -> FailureHook:
    """The relay's hook for a message given up: a line in the running case's timeline."""

    async def on_failed(d: Delivery, reason: str) -> None:
        handle = client.get_workflow_handle(f"case-{d.case_id}")
        await handle.signal("delivery_failed", failure_text(d, reason))

    return on_failed


async def run_worker(
    settings: Settings,
    records: Records,
    policy: PolicySource,
    channels: Channels | None = None,
    links: Links | None = None,
    stop: asyncio.Event | None = None,
    migrate: bool = True,
    web_port: int | None = None,
    masters: MasterKeys | None = None,
    metrics_addr: str | None = None,
) -> None:
    keys = KeyStore(records.twin(), masters) if masters else None
    proofs.configure(links.secret if links else os.environ.get("ESCALATION_SECRET"))
    metrics = Metrics(records, policy) if metrics_addr else None
    runtime = metrics.runtime if metrics else None
    client = await connect_with_retry(settings, data_converter(keys), runtime=runtime)
    tracing.instrument_records(records)
    await ensure_search_attributes(client, settings.namespace)
    if migrate:
        log.info("records at schema revision %s", await upgrade(records.engine))
    channels = channels or Channels.from_env()
    relay = Relay(records, channels, on_failed=tell_case(client))
    acts = CaseActivities(records, channels, policy, Renderer(links=links), handoff=relay)
    worker = build_worker(client, settings.task_queue, acts)
    log.info(
        "worker on %s, namespace %s, task queue %s, policy %s; delivery by %s",
        settings.address,
        settings.namespace,
        settings.task_queue,
        policy.policy.version,
        ", ".join(sorted(channels.senders)),
    )
    tasks = [asyncio.create_task(relay.run(), name="relay")]
    if metrics is not None and metrics_addr is not None:
        ops = health.ops_app(health.Readiness(client, records, worker), metrics)
        tasks.append(asyncio.create_task(health.serve(ops, metrics_addr), name="ops"))
        log.info("metrics and health: http://%s/metrics /healthz /readyz", metrics_addr)
    if web_port is not None and links is not None:
        from starter.web import serve

        web = serve(
            client,
            links,
            "127.0.0.1",
            web_port,
            records,
            True,
            policy,
            OidcConfig.from_env(),
            keys=keys,
        )
        tasks.append(asyncio.create_task(web, name="web"))
        log.info("desk console: %s/  (dev outbox: %s/outbox)", links.base_url, links.base_url)
    try:
        async with worker:
            await (stop or asyncio.Event()).wait()
        with contextlib.suppress(TimeoutError):  # a clean stop hands over what is queued
            await relay.drain(within=5)
    finally:
        relay.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(tasks[0]), 10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await records.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="escalation-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also run the embedded dev server + UI")
    parser.add_argument("--data-dir", default="data", help="where --dev keeps its files (./data)")
    parser.add_argument("--port", type=int, default=7233, help="--dev frontend port")
    parser.add_argument("--ui-port", type=int, default=8233, help="--dev Web UI port")
    parser.add_argument("--web-port", type=int, default=8000, help="--dev web app port")
    parser.add_argument("--policy", help="policy file (default $ESCALATION_POLICY or bundled)")
    parser.add_argument(
        "--no-migrate", action="store_true", help="do not bring the records' schema to head"
    )
    args = parser.parse_args(argv)
    try:
        logs.configure()
    except ValueError as err:
        raise SystemExit(f"configuration error: {err}") from None
    tracing.setup("escalation-worker")
    try:
        policy = PolicySource(args.policy)
    except PolicyError as err:
        raise SystemExit(f"policy error: {err}") from None
    settings = Settings()
    server: DevServer | None = None
    if args.dev:  # the links in messages point at this web app; its codec serves this UI
        os.environ.setdefault("ESCALATION_WEB_URL", f"http://127.0.0.1:{args.web_port}")
        ui = f"http://localhost:{args.ui_port} http://127.0.0.1:{args.ui_port}"
        os.environ.setdefault("ESCALATION_UI_ORIGIN", ui)
        os.environ.setdefault("ESCALATION_METRICS_ADDR", "127.0.0.1:9464")
    metrics_addr = os.environ.get("ESCALATION_METRICS_ADDR") or None
    try:
        if metrics_addr:
            health.parse_addr(metrics_addr)
        channels = Channels.from_env()
        links = Links.from_env(Path(args.data_dir) if args.dev else None)
        OidcConfig.from_env()  # all three variables or none
        masters = MasterKeys.from_env(Path(args.data_dir) if args.dev else None)
        sandbox_mode(), activity_slots(), cached_cases(), sticky_timeout()  # refused at start
    except ValueError as err:
        raise SystemExit(f"configuration error: {err}") from None
    if args.dev:
        ports: tuple[int, ...] = (args.port, args.ui_port, args.web_port)
        if metrics_addr:
            ports += (health.parse_addr(metrics_addr)[1],)
        for port in ports:
            if port_in_use(port):
                raise SystemExit(
                    f"port {port} is already in use (another `escalation-worker --dev`?); "
                    "stop it, pick --port / --ui-port / --web-port, or set ESCALATION_METRICS_ADDR"
                )
        data = Path(args.data_dir)
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{data / 'escalations.db'}")
        codec = f"{links.base_url}/codec" if links and masters else None
        server = DevServer(data, args.port, args.ui_port, codec_endpoint=codec)
        try:
            server.start()
        except DevServerError as err:
            raise SystemExit(str(err)) from None
        settings = Settings(address=server.address, namespace="default")
        log.info("Temporal UI: http://localhost:%d  (frontend %s)", server.ui_port, server.address)
    try:
        web_port = args.web_port if args.dev else None
        asyncio.run(
            _serve(
                settings,
                policy,
                channels,
                links,
                not args.no_migrate,
                web_port,
                masters,
                metrics_addr,
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop(timeout=15)
    exit_now(0)


async def _serve(
    settings: Settings,
    policy: PolicySource,
    channels: Channels,
    links: Links | None,
    migrate: bool,
    web_port: int | None,
    masters: MasterKeys | None,
    metrics_addr: str | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    records = Records.from_url()
    await run_worker(
        settings,
        records,
        policy,
        channels,
        links,
        stop=stop,
        migrate=migrate,
        web_port=web_port,
        masters=masters,
        metrics_addr=metrics_addr,
    )


if __name__ == "__main__":
    main()
