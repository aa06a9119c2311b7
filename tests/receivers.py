"""Real servers on 127.0.0.1 for the delivery tests: an SMTP server (aiosmtpd) and an HTTP
receiver for webhooks and Apprise's json:// notifications."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """What an SMTP server received; addresses in `refuse` get a permanent 550."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse = refuse or set()
        self.refused: list[str] = []

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            self.refused.append(address)
            return f"550 5.1.1 <{address}>: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, port: int | None = None) -> Any:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port or free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@dataclass
class Receiver:
    """Webhooks (verified against the secret) and chat notifications; the first `fail_first`
    webhook calls answer 503."""

    secret: str
    fail_first: int = 0
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    webhook_ids: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    chats: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    port: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()
        verifier = Webhook(self.secret)

        @app.post("/hooks")
        async def hooks(request: Request) -> Response:
            self.calls += 1
            body = await request.body()
            if self.calls <= self.fail_first:
                return Response(status_code=503)
            try:
                event = verifier.verify(body, dict(request.headers))
            except Exception:
                self.bad_signatures += 1
                return Response(status_code=400)
            self.webhooks.append(event)
            self.webhook_ids.append(request.headers["webhook-id"])
            return Response(status_code=204)

        @app.post("/chat/{who}")
        async def chat(who: str, request: Request) -> dict[str, str]:
            self.chats.append({"who": who, **(await request.json())})
            return {"ok": "yes"}

        return app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def http_receiver(receiver: Receiver) -> AsyncIterator[Receiver]:
    receiver.port = free_port()
    config = uvicorn.Config(
        receiver.app(), host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.02)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


async def web_up(base: str) -> bool:
    """The web app at `base` answers its health check (not yet: False)."""
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"{base}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False
