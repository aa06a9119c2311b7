"""On the real dev server (`temporal server start-dev`): JSON from any client, visibility
queries, one workflow per case, no-trace rejections, and a worker killed mid-case."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.records import MessageRow, Records, TimelineRow
from starter.api import CaseClient, CaseError
from starter.devserver import DevServer, DevServerError
from tests.conftest import (
    BIN,
    Desk,
    SigningCaseClient,
    record_store,
    run_escalate,
    sample_case,
    sqlite_url,
    start_worker_process,
    until,
)
from workflows.models import CaseStatus

pytestmark = [pytest.mark.asyncio, pytest.mark.devserver]


def target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def assigned(api: CaseClient, case_id: str) -> CaseStatus | None:
    st = await api.status(case_id)
    return st if st.stage == "resolve" and st.assignee else None


def temporal(env: WorkflowEnvironment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "temporal"), *args, "--address", target(env)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_plain_json_from_the_cli_reaches_resolve_and_is_searchable(
    dev_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(dev_env)
    data = desk.case(severity="high")
    cid = data["case_id"]
    async with desk.worker():
        started = temporal(
            dev_env,
            "workflow",
            "start",
            "--type",
            "EscalationCase",
            "--task-queue",
            desk.task_queue,
            "--workflow-id",
            f"case-{cid}",
            "--input",
            json.dumps(data),
        )
        assert started.returncode == 0, started.stderr
        desk.api.opened.append(f"case-{cid}")
        st = await until(lambda: assigned(desk.api, cid), "assignment")
        assert st.tier == 2 and st.department == "billing"

        async def listed() -> bool:
            out = temporal(
                dev_env,
                "workflow",
                "list",
                "--output",
                "json",
                "--query",
                f"CaseStage='resolve' AND CaseSeverity='high' AND CaseId='{cid}'",
            )
            return f"case-{cid}" in out.stdout

        await until(listed, "visibility")
        rows = await until(
            lambda: desk.api.list(
                f"CaseId = '{cid}' AND CaseTier = 2 AND CaseDepartment = 'billing'"
            ),
            "list",
        )
        assert rows[0].assignee == st.assignee and rows[0].sla_deadline is not None
        assert rows[0].sla_deadline.tzinfo is not None


async def test_same_case_twice_is_one_workflow_and_rejections_leave_no_trace(
    dev_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(dev_env)
    data = desk.case()
    cid = data["case_id"]
    async with desk.worker():
        first, second = await asyncio.gather(desk.api.open(data), desk.api.open(data))
        assert first.run_id == second.run_id and {first.created, second.created} == {True, False}
        st = await until(lambda: assigned(desk.api, cid), "assignment")
        handle = desk.api.handle(cid)
        before = len((await handle.fetch_history()).events)
        with pytest.raises(CaseError, match="not the assignee"):
            await desk.api.send(cid, "acknowledge", {"by": "someone-else"})
        with pytest.raises(CaseError, match="no approval is pending"):
            await desk.api.send(cid, "approve", {"by": "sup-lee"})
        assert len((await handle.fetch_history()).events) == before
        await desk.api.send(cid, "resolve", {"by": st.assignee, "resolution": "done"})
        report = await desk.api.report(cid)
        assert report.outcome == "resolved"
        with pytest.raises(CaseError, match="already closed"):
            await desk.api.open(data)


async def test_worker_killed_mid_case_finishes_without_duplicates(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    task_queue = f"kill-{uuid.uuid4().hex[:6]}"
    db_url = sqlite_url(tmp_path)
    api = SigningCaseClient(dev_env.client, task_queue)
    cid = f"K-{uuid.uuid4().hex[:8]}"
    data = sample_case(cid)
    log = tmp_path / "worker.log"
    worker = start_worker_process(target(dev_env), task_queue, db_url, log)
    try:
        await api.open(data)
        st = await until(lambda: assigned(api, cid), "assignment", within=60)
        await api.send(cid, "acknowledge", {"by": st.assignee})
        # Kill it hard while it holds the case in its cache, with work arriving.
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        killed_at = datetime.now(UTC)
        await api.send(
            cid,
            "request_approval",
            {"by": st.assignee, "action": {"kind": "refund", "amount": 250, "currency": "USD"}},
            as_signal=True,
        )
        worker = start_worker_process(target(dev_env), task_queue, db_url, log)
        await until(lambda: _pending(api, cid), "the approval request after restart", within=60)
        await api.send(cid, "approve", {"by": "sup-lee", "note": "ok"})
        await api.send(cid, "resolve", {"by": st.assignee, "resolution": "refunded"})
        report = await asyncio.wait_for(api.report(cid), 60)
        # what the killed worker's relay held goes out once its lease runs out
        await until(lambda: _all_sent(db_url, cid), "every message sent", within=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    assert report.outcome == "resolved"
    assert [a.decision for a in report.approvals] == ["approved"]
    async with record_store(db_url) as records:
        timeline, messages = await _rows(records, cid)
    seqs = [t.seq for t in timeline]
    assert sorted(seqs) == list(range(1, len(report.timeline) + 1))  # every line once
    assert [t.what for t in sorted(timeline, key=lambda t: t.seq)] == [
        e.what for e in report.timeline
    ]
    keys = Counter(m.key for m in messages)
    assert max(keys.values()) == 1
    assert all(m.sent_at is not None for m in messages)
    log_text = log.read_text()
    logged = Counter(re.findall(r"message to .*\[(\S+)\]$", log_text, re.MULTILINE))
    assert set(logged) == set(keys)  # every message reached its channel
    # Once marked sent, a message is never offered again. Only one the killed worker had
    # handed over but not yet marked goes out a second time, under the same key.
    created = {m.key: m.created_at for m in messages}
    assert all(created[k] < killed_at for k, n in logged.items() if n > 1)


async def _pending(api: CaseClient, cid: str) -> bool:
    return (await api.status(cid)).pending_approval is not None


async def _all_sent(db_url: str, cid: str) -> bool:
    async with record_store(db_url, fresh=False) as records:
        _, messages = await _rows(records, cid)
    return bool(messages) and all(m.status == "sent" for m in messages)


async def _rows(records: Records, cid: str) -> tuple[list[TimelineRow], list[MessageRow]]:
    async with records.sessions() as s:
        timeline = list(
            (await s.scalars(select(TimelineRow).where(TimelineRow.case_id == cid))).all()
        )
        messages = list(
            (await s.scalars(select(MessageRow).where(MessageRow.case_id == cid))).all()
        )
    return timeline, messages


async def test_escalate_commands_exit_cleanly_against_a_server(
    dev_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk], tmp_path: Path
) -> None:
    """A backend scripting `escalate` relies on its exit status, run after run."""
    desk = make_desk(dev_env)
    data = desk.case(severity="high")
    cid = data["case_id"]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(data))
    env = {"TEMPORAL_ADDRESS": target(dev_env), "ESCALATION_TASK_QUEUE": desk.task_queue}

    def escalate(*args: str) -> subprocess.CompletedProcess[str]:
        return run_escalate(*args, env=env)

    async with desk.worker():
        opened = await asyncio.to_thread(escalate, "open", "--file", str(path))
        desk.api.opened.append(f"case-{cid}")
        assert opened.returncode == 0, opened.stderr
        st = await until(lambda: assigned(desk.api, cid), "assignment")
        runs = [await asyncio.to_thread(escalate, "status", cid) for _ in range(8)]
        ack = await asyncio.to_thread(escalate, "acknowledge", cid, "--by", str(st.assignee))
        missing = await asyncio.to_thread(escalate, "status", "NO-SUCH-CASE")
    for run in [*runs, ack]:
        assert run.returncode == 0 and "Fatal Python error" not in run.stderr, run.stderr
        assert cid in run.stdout
    assert missing.returncode == 2 and missing.stderr.startswith("escalate:")
    assert "Fatal Python error" not in missing.stderr


async def test_dev_server_started_again_when_a_port_was_taken(tmp_path: Path) -> None:
    """A port taken between picking and binding makes the server exit: start it elsewhere."""
    server = DevServer(tmp_path / "server", log=tmp_path / "server.log")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))  # bound, not listening: refuses connections
        await asyncio.to_thread(server.start)
        try:
            assert server.port != taken.getsockname()[1]
            client = await Client.connect(server.address)
            info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
            assert info.server_version
        finally:
            await asyncio.to_thread(server.stop)
    assert "address already in use" in (tmp_path / "server.log").read_text()


async def test_dev_server_on_a_taken_fixed_port_fails_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = DevServer(tmp_path / "server", port, port + 1, log=tmp_path / "server.log")
        expected = rf"(?s)exit 1 on port {port}.*address already in use"
        with pytest.raises(DevServerError, match=expected):
            await asyncio.to_thread(server.start, 60, 2)
