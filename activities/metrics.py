"""The desk's Prometheus metrics, served on one `/metrics` per process.

Two sources make one scrape: the SDK runtime's own Prometheus exporter (the SDK's metrics,
and what cases count through the workflow's replay-safe meter, workflows/measures.py), bound
to a private loopback port; and this process's prometheus-client registry (the relay's
deliveries, the web app's requests, and gauges read from the records at scrape time).
Labels carry no case id and no personal data.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from sqlalchemy import func, select
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from activities.records import CaseRow, MessageRow, Records
from workflows.measures import BUCKETS
from workflows.policy import Policy

disable_created_metrics()  # no `_created` series beside every counter and histogram

NOTIFICATIONS = Counter(
    "escalation_notifications_total",
    "Outbox deliveries by channel and outcome (sent, retried, failed)",
    ["channel", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "escalation_notification_delivery_seconds",
    "From a message's outbox row to its channel's acceptance",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
OUTBOX_PENDING = Gauge("escalation_outbox_pending", "Messages queued, by channel", ["channel"])
OUTBOX_OLDEST = Gauge(
    "escalation_outbox_oldest_pending_seconds",
    "Age of the oldest queued message, by channel",
    ["channel"],
)
CASES_OPEN = Gauge(
    "escalation_cases_open", "Cases not closed, by stage and severity", ["stage", "severity"]
)
POLICY_TARGETS = Gauge(
    "escalation_policy_target_seconds",
    "The policy's SLA targets, for dashboards to draw beside the measured times",
    ["clock", "tier", "severity"],
)
WEB_REQUESTS = Counter(
    "escalation_web_requests_total", "Web app requests by route and status", ["route", "status"]
)
WEB_SECONDS = Histogram(
    "escalation_web_request_seconds",
    "Web app request duration by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Metrics:
    """One process's metrics: the runtime whose exporter it reads (its clients and workers
    must be made on `runtime`), and the records whose gauges each scrape refreshes."""

    def __init__(
        self, records: Records | None = None, policy: Callable[[], Policy] | None = None
    ) -> None:
        self.records, self.policy = records, policy
        port = free_port()
        self.sdk_url = f"http://127.0.0.1:{port}/metrics"
        self.runtime = Runtime(
            telemetry=TelemetryConfig(
                # the SDK core's own lines go through Python logging (logs.py: text or JSON)
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
                ),
                metrics=PrometheusConfig(
                    bind_address=f"127.0.0.1:{port}",
                    durations_as_seconds=True,
                    unit_suffix=True,
                    histogram_bucket_overrides=BUCKETS,  # by base name
                ),
            )
        )

    async def scrape(self) -> bytes:
        if self.records is not None:
            await refresh_gauges(self.records)
        if self.policy is not None:
            show_targets(self.policy())
        try:  # not through HTTPX: an instrumented client would trace every scrape
            sdk = await asyncio.to_thread(_fetch, self.sdk_url)
        except OSError:  # the exporter is this process's own: only while starting
            sdk = b""
        return own() + b"\n" + sdk


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return bytes(answer.read())


def own() -> bytes:
    """This process's prometheus-client metrics (without the SDK's)."""
    return bytes(generate_latest(REGISTRY))


async def refresh_gauges(records: Records) -> None:
    """Open cases and the outbox, read from the records (every worker reads the same
    desk: a dashboard takes max() across instances)."""
    now = datetime.now(UTC)
    async with records.sessions() as s:
        cases = (
            await s.execute(
                select(CaseRow.stage, CaseRow.severity, func.count())
                .where(CaseRow.closed_at.is_(None))
                .group_by(CaseRow.stage, CaseRow.severity)
            )
        ).all()
        outbox = (
            await s.execute(
                select(MessageRow.medium, func.count(), func.min(MessageRow.created_at))
                .where(MessageRow.status == "queued")
                .group_by(MessageRow.medium)
            )
        ).all()
    CASES_OPEN.clear()
    for stage, severity, n in cases:
        CASES_OPEN.labels(stage, severity).set(n)
    OUTBOX_PENDING.clear()
    OUTBOX_OLDEST.clear()
    for medium, n, oldest in outbox:
        OUTBOX_PENDING.labels(medium).set(n)
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            OUTBOX_OLDEST.labels(medium).set(max(0.0, (now - oldest).total_seconds()))


def show_targets(policy: Policy) -> None:
    POLICY_TARGETS.clear()
    for tier in policy.tiers:
        for clock, targets in (("ack", tier.ack), ("resolve", tier.resolve)):
            for severity, target in targets.items():
                POLICY_TARGETS.labels(clock, str(tier.level), severity).set(target)  # seconds


def delivered(medium: str, outcome: str, queued_at: datetime | None = None) -> None:
    NOTIFICATIONS.labels(medium, outcome).inc()
    if queued_at is not None:
        seconds = (datetime.now(UTC) - queued_at).total_seconds()
        DELIVERY_SECONDS.labels(medium).observe(max(0.0, seconds))


def web_request(route: str, status: int, started: float) -> None:
    WEB_REQUESTS.labels(route, str(status)).inc()
    WEB_SECONDS.labels(route).observe(time.perf_counter() - started)
