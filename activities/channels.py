"""The channels a message leaves by: mail (SMTP), chat and the like (Apprise), signed
webhooks (Standard Webhooks), and the log. Each sender takes one delivery and either returns
(the channel accepted it) or raises Transient (try again later) or Permanent (never again).

Configured by environment (see README, Delivery); with nothing configured every message goes
to the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, parseaddr
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import apprise
import httpx
from standardwebhooks import Webhook

log = logging.getLogger("escalation_desk.messages")

SEND_TIMEOUT = 15.0  # seconds a channel may take to accept one message


class Transient(Exception):
    """The channel may take it later: connection refused, SMTP 4xx, HTTP 5xx, a timeout."""


class Permanent(Exception):
    """The channel will never take it: SMTP 5xx (unknown mailbox), HTTP 4xx, a bad URL."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on one channel, as the outbox keeps it; `key` is its identity everywhere
    (Message-ID, webhook-id), so a message sent twice by a retry is recognisable as one."""

    key: str
    case_id: str
    medium: str
    channel: str  # audience: internal | customer
    recipient: str
    address: str
    subject: str
    body: str
    recipient_name: str | None = None
    html: str | None = None
    short: str | None = None
    target: str | None = None
    payload: dict[str, Any] | None = None
    attempts: int = 0
    queued_at: datetime | None = None
    traceparent: str | None = None
    leased_until: datetime | None = None  # handed to a relay with its row already leased


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> None: ...


class LogSender:
    """Writes each message to the `escalation_desk.messages` log (the default channel)."""

    async def send(self, delivery: Delivery) -> None:
        log.info(
            "%s message to %s <%s>: %s [%s]",
            delivery.channel,
            delivery.recipient,
            delivery.address,
            delivery.subject,
            delivery.key,
        )


class MemorySender:
    """Keeps what it was given, for a caller that wants to look (tests, the demo)."""

    def __init__(self) -> None:
        self.sent: list[Delivery] = []

    async def send(self, delivery: Delivery) -> None:
        self.sent.append(delivery)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool
    sender: str

    @classmethod
    def parse(cls, url: str, sender: str) -> SmtpConfig:
        """`smtp://[user:password@]host:port[?starttls=true]` or `smtps://` (implicit TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                f"ESCALATION_SMTP_URL: expected smtp://host:port or smtps://host:port, got {url!r}"
            )
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        implicit = parts.scheme == "smtps"
        if not sender or "@" not in parseaddr(sender)[1]:
            raise ValueError(
                f"ESCALATION_MAIL_FROM: a sender address is needed for mail, got {sender!r}"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit,
            start_tls=starttls and not implicit,
            sender=sender,
        )


def message_id(key: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "escalation-desk.invalid"
    return f"<{key.replace(':', '.')}@{domain}>"


def email_message(delivery: Delivery, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = formataddr((delivery.recipient_name or delivery.recipient, delivery.address))
    msg["Subject"] = delivery.subject
    msg["Message-ID"] = message_id(delivery.key, sender)
    msg["X-Escalation-Case"] = delivery.case_id
    msg.set_content(delivery.body)
    if delivery.html:
        msg.add_alternative(delivery.html, subtype="html")
    return msg


class MailSender:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, delivery: Delivery) -> None:
        c = self.config
        try:
            await aiosmtplib.send(
                email_message(delivery, c.sender),
                sender=parseaddr(c.sender)[1],
                recipients=[delivery.address],
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.use_tls,
                start_tls=c.start_tls,
                timeout=SEND_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            codes = [r.code for r in err.recipients]
            reason = "; ".join(f"{r.code} {r.message}" for r in err.recipients)
            raise (Permanent if all(c >= 500 for c in codes) else Transient)(reason) from None
        except aiosmtplib.SMTPResponseException as err:
            reason = f"{err.code} {err.message}"
            raise (Permanent if err.code >= 500 else Transient)(reason) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            raise Transient(f"{type(err).__name__}: {err}") from None


class AppriseSender:
    """Apprise's `notify` blocks: it runs on a thread pool of its own, one URL per delivery,
    so each chat channel retries on its own and none holds up the event loop."""

    def __init__(self, threads: int = 8) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="apprise")

    def _notify(self, delivery: Delivery) -> None:
        target = delivery.target or ""
        app = apprise.Apprise()
        if not app.add(target):
            raise Permanent(f"not an Apprise URL: {_redact(target)}")
        body = delivery.short or delivery.subject
        if not app.notify(body=body, title=delivery.subject):
            raise Transient(f"{_redact(target)} did not take the message")

    async def send(self, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self._notify, delivery)


class WebhookSender:
    """Case events for backends, signed to the Standard Webhooks spec."""

    def __init__(self, secret: str, client: httpx.AsyncClient | None = None) -> None:
        self.signer = Webhook(secret)
        self.client = client or httpx.AsyncClient(timeout=SEND_TIMEOUT)

    async def send(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.payload, separators=(",", ":"))
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.key,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(delivery.key, now, body),
        }
        try:
            response = await self.client.post(delivery.target or "", content=body, headers=headers)
        except httpx.HTTPError as err:
            raise Transient(f"{type(err).__name__}: {err}") from None
        code = response.status_code
        if code < 300:
            return
        reason = f"HTTP {code} {response.reason_phrase}"
        if code >= 500 or code in (408, 425, 429):
            raise Transient(reason)
        raise Permanent(reason)


def _redact(url: str) -> str:
    """An Apprise URL carries its tokens; keep only the scheme and host in reasons."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…" if parts.scheme else "…"


@dataclass
class Channels:
    """The senders by medium and what the records need to route a message to them."""

    senders: dict[str, Sender]
    webhook_url: str | None = None

    def __post_init__(self) -> None:
        # chat URLs come from the policy, so Apprise is always there; the log is the default
        self.senders.setdefault("chat", AppriseSender())
        self.senders.setdefault("log", LogSender())

    @property
    def mail(self) -> bool:
        return "mail" in self.senders

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, log_sender: Sender | None = None
    ) -> Channels:
        env = dict(os.environ) if env is None else env
        senders: dict[str, Sender] = {"log": log_sender or LogSender()}
        if url := env.get("ESCALATION_SMTP_URL"):
            senders["mail"] = MailSender(SmtpConfig.parse(url, env.get("ESCALATION_MAIL_FROM", "")))
        webhook_url = env.get("ESCALATION_WEBHOOK_URL") or None
        if webhook_url:
            secret = env.get("ESCALATION_WEBHOOK_SECRET", "")
            if not secret.startswith("whsec_"):
                raise ValueError("ESCALATION_WEBHOOK_SECRET: expected a whsec_… secret")
            senders["webhook"] = WebhookSender(secret)
        return cls(senders=senders, webhook_url=webhook_url)
