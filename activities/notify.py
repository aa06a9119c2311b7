"""Where internal notifications and customer updates go.

The records keep every message in an outbox whatever the channel; a notifier only delivers.
The logging channel is the default until real channels (mail, chat) are configured.
"""

from __future__ import annotations

import logging
from typing import Protocol

from workflows.activity_models import OutboundMessage

log = logging.getLogger("escalation_desk.messages")


class Notifier(Protocol):
    async def send(self, message: OutboundMessage) -> None: ...


class LogNotifier:
    """Writes each message to the `escalation_desk.messages` log."""

    async def send(self, message: OutboundMessage) -> None:
        log.info(
            "%s message to %s <%s>: %s",
            message.channel,
            message.recipient,
            message.address,
            message.subject,
        )


class MemoryNotifier:
    """Keeps what was sent, for a caller that wants to look (tests, the demo)."""

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> None:
        self.sent.append(message)
