"""Customer data stays private: payloads encrypted with a key per case, the codec server that
opens them for people of the desk, erasure by destroying the keys, and key rotation. On the
real dev server, exported with the real `temporal` CLI."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import async_playwright
from sqlalchemy import event, func, select
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.codec import KEY_ID, CaseCodec, data_converter, decode_one, is_encrypted
from activities.keys import KeyStore, MasterKeys, rotate
from activities.links import Links
from activities.records import CaseRow, DataKeyRow, ErasureRow, Records
from starter.devserver import DevServer
from starter.reporting import build_report
from starter.web import create_app, serve
from workflows.policy import Policy

from .conftest import BIN, TEST_SECRET, Desk, record_store, run_escalate, until
from .receivers import free_port, web_up
from .test_web import CHROMIUM, SHOTS

pytestmark = [pytest.mark.asyncio, pytest.mark.devserver]

CUSTOMER = {"id": "cust-zq", "name": "Zelda Quartermain", "email": "zelda.q@example.org"}
SUBJECT = "Refund for order Xyzzy-77"
DESCRIPTION = "Plover charged twice on the same day"
REPLY = "The Visa ending 9931"
QUESTION = "Which card was charged, Ms Quartermain?"
PRIVATE = [CUSTOMER["name"], CUSTOMER["email"], SUBJECT, DESCRIPTION, REPLY, QUESTION]
ENCRYPTED = base64.b64encode(b"binary/encrypted").decode()


def b64(master: bytes) -> str:
    return base64.b64encode(master).decode()


class Sealed:
    """A desk whose every client and worker encrypts, with the codec server beside it."""

    def __init__(self, desk: Desk, keys: KeyStore, master: bytes, base: str, db_url: str) -> None:
        self.desk, self.keys, self.master, self.base, self.db_url = (
            desk,
            keys,
            master,
            base,
            db_url,
        )

    def temporal(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `temporal` CLI against the desk's server, as an operator runs it."""
        return subprocess.run(
            [
                str(BIN / "temporal"),
                *args,
                "--address",
                self.desk.client.service_client.config.target_host,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def show(self, case_id: str, *extra: str) -> str:
        """The case's history as `temporal workflow show --output json` exports it, with
        every payload's data read out of its base64 (what anyone holding the export sees)."""
        out = self.temporal(
            "workflow", "show", "--workflow-id", f"case-{case_id}", "--output", "json", *extra
        )
        assert out.returncode == 0, out.stderr
        return out.stdout + "\n".join(payload_texts(json.loads(out.stdout)))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_escalate(
            *args,
            env={
                "TEMPORAL_ADDRESS": self.desk.client.service_client.config.target_host,
                "ESCALATION_TASK_QUEUE": self.desk.task_queue,
                "DATABASE_URL": self.db_url,
                "ESCALATION_MASTER_KEY": b64(self.master),
            },
        )


@contextlib.asynccontextmanager
async def sealed_desk(
    env: WorkflowEnvironment, records: Records, policy: Policy, db_url: str, dev: bool = True
) -> AsyncIterator[Sealed]:
    master = secrets.token_bytes(32)
    keys = KeyStore(records, MasterKeys(master))
    client = await Client.connect(
        env.client.service_client.config.target_host, data_converter=data_converter(keys)
    )
    desk = Desk(WorkflowEnvironment.from_client(client), records, policy)
    port = free_port()
    links = Links(TEST_SECRET, f"http://127.0.0.1:{port}")
    web = asyncio.create_task(
        serve(client, links, "127.0.0.1", port, records, dev, lambda: policy, keys=keys)
    )
    try:
        async with desk.worker():
            yield Sealed(desk, keys, master, links.base_url, db_url)
    finally:
        web.cancel()
        await asyncio.gather(web, return_exceptions=True)


async def full_case(desk: Desk, **changes: Any) -> str:
    """A case through a customer reply, an approval and the resolution, to its close."""
    cid, st = await desk.open_assigned(
        customer=CUSTOMER, subject=SUBJECT, description=DESCRIPTION, severity="high", **changes
    )
    who = str(st.assignee)
    await desk.api.send(cid, "acknowledge", {"by": who})
    await desk.api.send(cid, "wait_for_customer", {"by": who, "question": QUESTION})
    await desk.api.send(cid, "customer_replied", {"message": REPLY})
    refund = {"kind": "refund", "amount": 250, "currency": "USD"}
    await desk.api.send(cid, "request_approval", {"by": who, "action": refund})
    await desk.api.send(cid, "approve", {"by": "sup-lee", "note": "ok"})
    await desk.api.send(cid, "resolve", {"by": who, "resolution": "Refunded"})
    await desk.api.handle(cid).result()
    return cid


@pytest.fixture
async def sealed_env(
    dev_env: WorkflowEnvironment, policy: Policy, tmp_path: Path
) -> AsyncIterator[tuple[Sealed, Records, str]]:
    """An encrypting desk on its own SQLite records: the desk, its records, their URL."""
    url = f"sqlite:///{tmp_path / 'records.db'}"
    async with record_store(url) as records, sealed_desk(dev_env, records, policy, url) as desk:
        yield desk, records, url


async def test_the_history_is_ciphertext_and_the_codec_server_opens_it(
    sealed_env: tuple[Sealed, Records, str],
) -> None:
    sealed, _records, _url = sealed_env
    cid = await full_case(sealed.desk)
    exported = await asyncio.to_thread(sealed.show, cid)
    assert ENCRYPTED in exported
    for text in PRIVATE:
        assert text not in exported, text
    opened = await asyncio.to_thread(sealed.show, cid, "--codec-endpoint", f"{sealed.base}/codec")
    for text in PRIVATE:
        assert text in opened, text

    # the same through /codec/decode from Python: the case's input, as the UI asks for it
    history = json.loads(exported[: exported.index("\n}\n") + 2])
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    body = {"payloads": started["input"]["payloads"]}
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{sealed.base}/codec/decode", json=body, headers={"X-Namespace": "default"}
        )
    assert answer.status_code == 200
    data = base64.b64decode(answer.json()["payloads"][0]["data"])
    assert CUSTOMER["email"].encode() in data and SUBJECT.encode() in data

    # plain JSON from a backend (no codec) still opens a case the worker encrypts
    plain = sealed.desk.case(severity="low")
    started_plain = await asyncio.to_thread(
        sealed.temporal,
        "workflow",
        "start",
        "--type",
        "EscalationCase",
        "--task-queue",
        sealed.desk.task_queue,
        "--workflow-id",
        f"case-{plain['case_id']}",
        "--input",
        json.dumps(plain),
    )
    assert started_plain.returncode == 0, started_plain.stderr
    sealed.desk.api.opened.append(f"case-{plain['case_id']}")
    assert (await sealed.desk.settled(plain["case_id"])).assignee


async def test_erasure_destroys_the_keys_and_scrubs_the_records(
    sealed_env: tuple[Sealed, Records, str],
) -> None:
    sealed, records, url = sealed_env
    closed = await full_case(sealed.desk)
    still, st = await sealed.desk.open_assigned(customer=CUSTOMER, subject=SUBJECT)
    refused = await asyncio.to_thread(sealed.cli, "erase", "--customer", CUSTOMER["id"], "--yes")
    assert refused.returncode != 0 and still in refused.stderr, refused.stderr
    assert "still open" in refused.stderr
    resolution = {"by": str(st.assignee), "resolution": "Explained the charge"}
    await sealed.desk.api.send(still, "resolve", resolution)
    await until(lambda: _closed_in_records(records, still), "the case closed")

    async with records.transaction() as s:
        wrapped = list((await s.scalars(select(DataKeyRow.wrapped))).all())
    assert len(wrapped) == 2 and all(wrapped)
    done = await asyncio.to_thread(sealed.cli, "erase", "--customer", CUSTOMER["id"], "--yes")
    assert done.returncode == 0, done.stderr
    assert "write-ahead log" not in done.stderr
    assert "erased 2 case(s)" in done.stdout and "2 data key(s) destroyed" in done.stdout
    sealed.keys.forget([f"case-{closed}", f"case-{still}"])

    through_codec = await asyncio.to_thread(
        sealed.show, closed, "--codec-endpoint", f"{sealed.base}/codec"
    )
    for text in PRIVATE:
        assert text not in through_codec, text
    assert ENCRYPTED in through_codec

    raw = await asyncio.to_thread(database_bytes, Path(url.removeprefix("sqlite:///")))
    for text in PRIVATE:
        assert text.encode() not in raw, text
    for key in wrapped:  # nor any earlier version of a destroyed key
        assert key is not None and key not in raw

    rep = await build_report(records, None)
    assert rep.cases >= 2
    async with records.transaction() as s:
        erasures = (await s.scalars(select(ErasureRow))).all()
        destroyed = await s.scalar(
            select(func.count()).select_from(DataKeyRow).where(DataKeyRow.wrapped.is_(None))
        )
    assert [(e.scope, e.cases, e.keys_destroyed) for e in erasures] == [("customer", 2, 2)]
    assert destroyed == 2
    status = await asyncio.to_thread(sealed.cli, "status", closed)
    assert "erased" in status.stdout + status.stderr
    async with httpx.AsyncClient(base_url=sealed.base) as http:  # the console says so too
        page = await http.get("/signin")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        await http.post("/signin/as", data={"person": "exec-vance", "csrf": token})
        gone = await http.get(f"/cases/{closed}")
    assert gone.status_code == 410 and "data was erased" in gone.text


def payload_texts(node: Any) -> list[str]:
    """Every payload's data in an exported history, as text."""
    if isinstance(node, dict):
        found = []
        if "data" in node and "metadata" in node and isinstance(node["data"], str):
            found.append(base64.b64decode(node["data"]).decode("utf-8", "replace"))
        for value in node.values():
            found += payload_texts(value)
        return found
    if isinstance(node, list):
        return [text for item in node for text in payload_texts(item)]
    return []


def database_bytes(db: Path) -> bytes:
    """Everything SQLite keeps on disk for the records: the file and its write-ahead log,
    read beside the desk's own connections (which go on working meanwhile)."""
    wal = Path(f"{db}-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def _closed_in_records(records: Records, case_id: str) -> bool:
    async with records.transaction() as s:
        row = await s.get(CaseRow, case_id)
    return row is not None and row.closed_at is not None


async def test_rotation_rewraps_every_key_under_the_new_master(records: Records) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = CaseCodec(KeyStore(records, MasterKeys(old)), "default", "case-R-1")
    sealed = await before.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
    assert is_encrypted(sealed[0])
    done, kept = await rotate(records, MasterKeys(new, (old,)))
    assert (done, kept) == (1, 0)
    assert await rotate(records, MasterKeys(new, (old,))) == (0, 1)
    after = CaseCodec(KeyStore(records, MasterKeys(new)), "default", "case-R-1")  # old gone
    assert (await after.decode(sealed))[0].data == b'"hi"'
    with pytest.raises(KeyError):  # the old master alone opens nothing any more
        await KeyStore(records, MasterKeys(old)).by_id(
            sealed[0].metadata["encryption-key-id"].decode()
        )
    moved = CaseCodec(KeyStore(records, MasterKeys(new)), "default", "case-R-2")
    other = await moved.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    assert other[0].metadata["encryption-key-id"] != sealed[0].metadata["encryption-key-id"]


async def test_the_codec_server_refuses_strangers_and_answers_the_ui_preflight(
    dev_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    keys = KeyStore(records, MasterKeys(secrets.token_bytes(32)))
    codec = CaseCodec(keys, "default", "case-S-1")
    [payload] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    port = free_port()
    links = Links(TEST_SECRET, f"http://127.0.0.1:{port}")
    web = asyncio.create_task(
        serve(dev_env.client, links, "127.0.0.1", port, records, False, lambda: policy, keys=keys)
    )
    base = f"http://127.0.0.1:{port}"
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
                "data": base64.b64encode(payload.data).decode(),
            }
        ]
    }
    try:
        async with httpx.AsyncClient() as http:
            await until(lambda: web_up(base), "the web app", within=15)
            refused = await http.post(f"{base}/codec/decode", json=body)
            assert refused.status_code == 401 and "x" not in refused.text.replace("x-", "")
            bad = await http.post(
                f"{base}/codec/decode", json=body, headers={"Authorization": "Bearer nope"}
            )
            assert bad.status_code == 403
            preflight = await http.options(
                f"{base}/codec/decode",
                headers={
                    "Origin": "http://localhost:8233",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "http://localhost:8233"
            assert preflight.headers["access-control-allow-credentials"] == "true"
            foreign = await http.options(
                f"{base}/codec/decode", headers={"Origin": "http://evil.example"}
            )
            assert "access-control-allow-origin" not in foreign.headers
    finally:
        web.cancel()
        await asyncio.gather(web, return_exceptions=True)


async def test_the_temporal_ui_shows_a_case_only_through_the_codec_server(
    policy: Policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dev server's UI with its codec endpoint on the desk's web app: while the web app
    refuses (no session, not --dev) the UI shows the case's input encrypted; once it may
    decode (--dev on loopback), the same page shows it in clear."""
    port = free_port()
    server = DevServer(
        tmp_path / "server",
        log=tmp_path / "server.log",
        codec_endpoint=f"http://127.0.0.1:{port}/codec",
    )
    ui = f"http://127.0.0.1:{server.ui_port}"
    monkeypatch.setenv("ESCALATION_UI_ORIGIN", f"{ui} http://localhost:{server.ui_port}")
    await asyncio.to_thread(server.start)
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        env = WorkflowEnvironment.from_client(client)
        url = f"sqlite:///{tmp_path / 'records.db'}"
        async with record_store(url) as records:
            keys = KeyStore(records, MasterKeys(secrets.token_bytes(32)))
            sealed = await Client.connect(server.address, data_converter=data_converter(keys))
            desk = Desk(WorkflowEnvironment.from_client(sealed), records, policy)
            links = Links(TEST_SECRET, f"http://127.0.0.1:{port}")
            async with desk.worker(), async_playwright() as pw:
                cid, _ = await desk.open_assigned(customer=CUSTOMER, subject=SUBJECT)
                browser = await pw.chromium.launch(executable_path=CHROMIUM)
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                shown = {}
                for dev, name in ((False, "ui-without-codec"), (True, "ui-with-codec")):
                    app = create_app(sealed, links, records, lambda: policy, dev, keys=keys)
                    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off")
                    web_server = uvicorn.Server(config)
                    web = asyncio.create_task(web_server.serve())
                    try:
                        await until(lambda: web_up(links.base_url), "the web app", within=15)
                        await page.goto(f"{ui}/namespaces/default/workflows/case-{cid}")
                        await page.wait_for_selector("text=Workflow Type", timeout=30_000)
                        await page.wait_for_timeout(4000)  # the input, through the codec
                        await page.screenshot(path=str(SHOTS / f"{name}.png"))
                        shown[dev] = await page.inner_text("body")
                    finally:  # a clean stop, so the next app can listen on the same port
                        web_server.should_exit = True
                        await asyncio.wait_for(web, 15)
                await browser.close()
        assert CUSTOMER["name"] not in shown[False] and SUBJECT not in shown[False]
        assert "Codec Server could not connect" in shown[False]  # and the input as ciphertext
        assert CUSTOMER["name"] in shown[True] and SUBJECT in shown[True]
        await env.client.workflow_service.get_system_info(GetSystemInfoRequest())
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_case_key_is_read_once_per_process_and_a_burst_makes_one_key_per_case(
    records: Records,
) -> None:
    """A worker decodes a new case's input first (by key id): encoding the case's own
    payloads after it reads nothing more. New cases looked up together each get one key."""
    masters = MasterKeys(secrets.token_bytes(32))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
    [sealed] = await CaseCodec(KeyStore(records, masters), "default", "case-K-1").encode([plain])
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    for engine in records.engines:
        event.listen(engine, "before_cursor_execute", seen)
    try:
        worker = KeyStore(records, masters)
        assert (await decode_one(worker, sealed)).data == b'"x"'
        read = len(statements)
        [again] = await CaseCodec(worker, "default", "case-K-1").encode([plain])
        assert read >= 1 and len(statements) == read  # the decode's read was enough
    finally:
        for engine in records.engines:
            event.remove(engine, "before_cursor_execute", seen)
    assert again.metadata[KEY_ID] == sealed.metadata[KEY_ID]

    burst = [KeyStore(records, masters) for _ in range(2)]  # two processes, 20 new cases
    found = await asyncio.gather(
        *(keys.for_case("default", f"case-B-{i}") for i in range(20) for keys in burst)
    )
    assert all(k is not None for k in found)
    assert len({k.key_id for k in found if k}) == 20  # both processes agree on each case's
    async with records.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(DataKeyRow)) == 21
