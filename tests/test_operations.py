"""What operators see of a running desk: the worker's /metrics, /healthz and /readyz, its JSON
logs and OTLP traces, the dashboard's queries, and the compose file's health checks."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities import health
from activities.case_activities import CaseActivities
from activities.channels import Channels, MemorySender
from activities.records import MessageRow, Records
from starter.api import CaseClient
from worker import activity_slots, build_worker, cached_cases, sandbox_mode, sticky_timeout
from workflows.policy import Policy

from .conftest import (
    POSTGRES_URL,
    SigningCaseClient,
    record_store,
    sample_case,
    sqlite_url,
    start_worker_process,
    until,
)
from .receivers import Mailbox, free_port, smtp_server
from .test_faults import Proxy, assigned_at, fast_policy, stop

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "escalation-desk.json"
REFUND = {"kind": "refund", "amount": 250, "currency": "USD"}


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
        return sum(
            s.value
            for f in self.families
            for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def names(self) -> set[str]:
        """Every series name this scrape offers, samples or declared families."""
        out = {s.name for f in self.families for s in f.samples}
        for f in self.families:
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            out |= {f.name + sfx for sfx in ["", *suffixes.get(f.type, [])]}
        return out


async def scrape(base: str) -> Scrape:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{base}/metrics")
    assert answer.status_code == 200
    return Scrape(answer.text)


async def ready(base: str) -> bool:
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"{base}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1 that keeps the spans it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.port = free_port()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/traces")
        async def traces(request: Request) -> Response:
            req = ExportTraceServiceRequest.FromString(await request.body())
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
            return Response(b"", media_type="application/x-protobuf")

        return app

    async def exported(self) -> bool:
        return bool(self.named("deliver mail"))

    def named(self, name: str) -> list[Any]:
        return [s for s in self.spans if s.name == name]


async def mails_settled(db_url: str, cid: str, box: Mailbox) -> bool:
    """Every message of the case is out, and every mail has arrived."""
    async with record_store(db_url, fresh=False) as records, records.sessions() as s:
        rows = (await s.scalars(select(MessageRow).where(MessageRow.case_id == cid))).all()
    mails = sum(1 for r in rows if r.medium == "mail")
    return bool(rows) and all(r.status == "sent" for r in rows) and len(box.messages) >= mails


async def test_a_case_is_counted_once_across_a_worker_restart(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = dev_env.client.service_client.config.target_host
    task_queue = f"ops-{uuid.uuid4().hex[:6]}"
    db_url = sqlite_url(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = SigningCaseClient(dev_env.client, task_queue)
    cid = f"OPS-{uuid.uuid4().hex[:6]}"
    otlp = OtlpReceiver()
    box = Mailbox()
    log = tmp_path / "worker.log"
    receiver = asyncio.create_task(health.serve(otlp.app(), f"127.0.0.1:{otlp.port}"))
    with smtp_server(box) as smtp:
        env = {
            "ESCALATION_METRICS_ADDR": f"127.0.0.1:{port}",
            "ESCALATION_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
            "ESCALATION_MAIL_FROM": "desk@desk.example",
            "ESCALATION_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        policy = fast_policy(tmp_path, ack="10s")
        worker = start_worker_process(address, task_queue, db_url, log, policy, env)
        try:
            await until(lambda: ready(base), "the worker ready", within=60)
            before = await scrape(base)
            await api.open(sample_case(cid, severity="high"))
            first = await until(lambda: assigned_at(api, cid, 2), "tier 2 assignment")
            await api.send(cid, "request_approval", {"by": first.assignee, "action": REFUND})
            st = await api.status(cid)
            assert st.pending_approval is not None
            await api.send(cid, "approve", {"by": st.pending_approval.approvers[0], "note": "ok"})
            # not acknowledged: the deadline escalates it to tier 3
            second = await until(lambda: assigned_at(api, cid, 3), "tier 3 after the ack SLA")
            await api.send(cid, "acknowledge", {"by": second.assignee})
            await until(lambda: mails_settled(db_url, cid, box), "the mails out", within=60)
            mid = await scrape(base)
            # the second worker replays the case's history and goes on from there
            await stop(worker)
            worker = start_worker_process(address, task_queue, db_url, log, policy, env)
            await until(lambda: ready(base), "the second worker ready", within=60)
            await api.send(cid, "resolve", {"by": second.assignee, "resolution": "refunded"})
            report = await asyncio.wait_for(api.report(cid), 60)
            await until(lambda: mails_settled(db_url, cid, box), "the last mails out", within=60)
            end = await scrape(base)
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
                readyz = (await http.get(f"{base}/readyz")).json()
            await until(otlp.exported, "the delivery's span exported")
        finally:
            await stop(worker)
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    high = {"severity": "high"}
    dept = {"department": report.department, **high}
    # the first worker counted what happened while it ran, exactly
    assert mid.value("escalation_cases_opened_total", **dept) == 1
    assert before.value("escalation_cases_opened_total") == 0
    assert mid.value("escalation_escalations_total", kind="timeout") == 1
    assert mid.value("escalation_escalations_total") == 1
    assert mid.value("escalation_sla_breaches_total", tier="2", severity="high") == 1
    assert mid.value("escalation_sla_warnings_total") == 1
    assert mid.value("escalation_approvals_total", decision="approved") == 1
    assert mid.value("escalation_approval_wait_seconds_count") == 1
    assert mid.value("escalation_time_to_acknowledge_seconds_count", **high) == 1
    assert mid.value("escalation_lateness_seconds_count", kind="breach") == 1
    assert mid.value("escalation_lateness_seconds_sum") < 60  # sanity, not a speed target
    # the second replayed it all and counted only what came after: the resolution
    for name in [
        "escalation_cases_opened_total",
        "escalation_escalations_total",
        "escalation_sla_breaches_total",
        "escalation_approvals_total",
        "escalation_time_to_acknowledge_seconds_count",
    ]:
        assert end.value(name) == 0, name
    assert end.value("escalation_time_to_resolve_seconds_count", **high) == 1
    # each mail counted once, by the worker whose relay sent it
    mails = len(box.messages)
    sent = [
        s.value("escalation_notifications_total", channel="mail", outcome="sent")
        for s in (mid, end)
    ]
    assert mails > 0 and sum(sent) == mails
    timed = [
        s.value("escalation_notification_delivery_seconds_count", channel="mail")
        for s in (mid, end)
    ]
    assert sum(timed) == mails
    assert end.value("escalation_outbox_pending") == 0
    assert (
        end.value("escalation_policy_target_seconds", clock="ack", tier="2", severity="high") == 10
    )
    # the SDK's own metrics, in seconds with unit suffixes (the standard dashboards' names)
    assert end.value("temporal_workflow_task_schedule_to_start_latency_seconds_count") > 0
    assert "temporal_worker_task_slots_available" in end.names()
    assert readyz == {
        "status": "ready",
        "checks": {"temporal": "ok", "records": "ok", "worker": "ok"},
    }

    # the dashboard asks only for what the worker (and the web app, same registry) exposes
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    wanted = {n for e in exprs for n in re.findall(r"\b((?:escalation|temporal)_[a-z_]+)", e)}
    assert wanted and not wanted - (mid.names() | end.names())

    # logs: one JSON object per line, with the case and the trace where there is one
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    about = [entry for entry in lines if entry.get("case_id") == cid]
    assert about and any(re.fullmatch(r"[0-9a-f]{32}", e.get("trace_id", "")) for e in about)

    # traces over OTLP: a mail's delivery continues the trace of the activity that queued it
    writes = (
        "RunActivity:record_transition",
        "RunActivity:assign_case",
        "RunActivity:open_and_assign",
    )
    runs = {s.span_id: s for name in writes for s in otlp.named(name)}
    delivery = otlp.named("deliver mail")[0]
    assert delivery.parent_span_id in runs
    assert runs[delivery.parent_span_id].trace_id == delivery.trace_id


async def test_readyz_follows_the_records_database(
    dev_env: WorkflowEnvironment, tmp_path: Path, policy: Policy
) -> None:
    proxy = Proxy(5432)
    await proxy.start()
    url = re.sub(r"@127\.0\.0\.1:5432/", f"@127.0.0.1:{proxy.port}/", POSTGRES_URL)
    records = Records.from_url(url)
    acts = CaseActivities(records, Channels({"log": MemorySender()}), lambda: policy)
    worker = build_worker(dev_env.client, f"ready-{uuid.uuid4().hex[:6]}", acts)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = health.ops_app(health.Readiness(dev_env.client, records, worker), None)
    server = asyncio.create_task(health.serve(app, f"127.0.0.1:{port}"))

    async def answer() -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{base}/readyz")
        return r.status_code, r.json()

    async def unready() -> dict[str, Any] | None:
        status, body = await answer()
        return body if status == 503 else None

    try:
        async with worker:
            await until(lambda: ready(base), "ready", within=30)
            await proxy.cut()
            body = await until(unready, "unready with the database away", within=30)
            assert body["status"] == "unready"
            assert body["checks"]["records"] != "ok"
            assert body["checks"]["temporal"] == body["checks"]["worker"] == "ok"
            await proxy.restore()
            await until(lambda: ready(base), "ready again", within=30)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await proxy.cut()
        await records.close()


def test_every_service_is_health_checked_and_waits_for_what_it_needs() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"prometheus", "grafana", "worker", "web"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dep, how in (service.get("depends_on") or {}).items():
            assert how["condition"] == "service_healthy", (name, dep)
    assert services["worker"]["environment"]["ESCALATION_METRICS_ADDR"] == "0.0.0.0:9464"
    mounts = " ".join(str(v) for v in services["grafana"]["volumes"])
    assert "escalation-desk.json" in mounts
    scraped = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert "9464" in scraped and "web:8000" in scraped


def test_worker_knobs_take_positive_numbers_and_name_the_variable_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ESCALATION_STICKY_SECONDS", raising=False)
    monkeypatch.delenv("ESCALATION_MAX_ACTIVITIES", raising=False)
    monkeypatch.delenv("ESCALATION_CACHED_CASES", raising=False)
    monkeypatch.delenv("ESCALATION_WORKFLOW_SANDBOX", raising=False)
    assert activity_slots() is None and cached_cases() is None  # the SDK's defaults
    assert sandbox_mode() == "off"  # CI runs the cases in the strict sandbox
    for mode in ("on", "strict", "off"):
        monkeypatch.setenv("ESCALATION_WORKFLOW_SANDBOX", mode)
        assert sandbox_mode() == mode
    monkeypatch.setenv("ESCALATION_WORKFLOW_SANDBOX", "yes")
    with pytest.raises(ValueError, match="ESCALATION_WORKFLOW_SANDBOX: one of off, on, strict"):
        sandbox_mode()
    assert sticky_timeout() == timedelta(seconds=30)  # the desk's: a herd stays on its worker
    monkeypatch.setenv("ESCALATION_STICKY_SECONDS", "10")
    monkeypatch.setenv("ESCALATION_MAX_ACTIVITIES", "10")
    monkeypatch.setenv("ESCALATION_CACHED_CASES", "5000")
    assert sticky_timeout() == timedelta(seconds=10) and activity_slots() == 10
    assert cached_cases() == 5000
    for bad in ("0", "-5", "soon", "inf", "nan"):
        monkeypatch.setenv("ESCALATION_STICKY_SECONDS", bad)
        with pytest.raises(ValueError, match="ESCALATION_STICKY_SECONDS"):
            sticky_timeout()
        monkeypatch.setenv("ESCALATION_MAX_ACTIVITIES", bad)
        with pytest.raises(ValueError, match="ESCALATION_MAX_ACTIVITIES"):
            activity_slots()
        monkeypatch.setenv("ESCALATION_CACHED_CASES", bad)
        with pytest.raises(ValueError, match="ESCALATION_CACHED_CASES"):
            cached_cases()


async def test_the_worker_is_built_with_the_operators_knobs(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, policy: Policy
) -> None:
    monkeypatch.setenv("ESCALATION_STICKY_SECONDS", "12.5")
    monkeypatch.setenv("ESCALATION_MAX_ACTIVITIES", "10")
    monkeypatch.setenv("ESCALATION_CACHED_CASES", "5000")
    monkeypatch.setenv("ESCALATION_WORKFLOW_SANDBOX", "on")
    records = Records.from_url(f"sqlite:///{tmp_path}/r.db")
    acts = CaseActivities(records, Channels({"log": MemorySender()}), lambda: policy)
    config = build_worker(dev_env.client, f"knobs-{uuid.uuid4().hex[:6]}", acts).config()
    assert isinstance(config.get("workflow_runner"), SandboxedWorkflowRunner)
    monkeypatch.delenv("ESCALATION_WORKFLOW_SANDBOX")
    config = build_worker(dev_env.client, f"knobs-{uuid.uuid4().hex[:6]}", acts).config()
    assert isinstance(config.get("workflow_runner"), UnsandboxedWorkflowRunner)
    assert config.get("max_cached_workflows") == 5000
    assert config.get("max_concurrent_activities") == 10
    assert config.get("sticky_queue_schedule_to_start_timeout") == timedelta(seconds=12.5)
    await records.close()


async def test_a_case_waits_on_the_server_in_the_order_of_its_severity(
    dev_env: WorkflowEnvironment,
) -> None:
    """Opened through the API, a case carries the task-queue priority of its severity: when
    tasks queue on the server, a critical case's are handed out first."""
    desk = CaseClient(dev_env.client, f"prio-{uuid.uuid4().hex[:6]}")  # no worker: they wait
    keys = {}
    for severity in ("critical", "high", "medium", "low"):
        cid = f"PR-{severity}-{uuid.uuid4().hex[:6]}"
        opened = await desk.open(sample_case(cid, severity=severity))
        described = await dev_env.client.get_workflow_handle(opened.workflow_id).describe()
        keys[severity] = described.raw_description.workflow_execution_info.priority.priority_key
        await desk.handle(cid).terminate("test over")
    assert keys == {"critical": 1, "high": 2, "medium": 3, "low": 4}
