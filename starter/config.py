"""Settings from the environment, with the embedded defaults."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import NoReturn

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from activities import tracing
from activities.codec import PLAIN


@dataclass(frozen=True)
class Settings:
    address: str = field(
        default_factory=lambda: os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    )
    namespace: str = field(default_factory=lambda: os.environ.get("TEMPORAL_NAMESPACE", "default"))
    task_queue: str = field(
        default_factory=lambda: os.environ.get("ESCALATION_TASK_QUEUE", "escalations")
    )
    api_key: str | None = field(default_factory=lambda: os.environ.get("TEMPORAL_API_KEY") or None)
    tls: bool = field(
        default_factory=lambda: os.environ.get("TEMPORAL_TLS", "").lower() in ("1", "true", "yes")
    )


async def connect(
    settings: Settings | None = None,
    converter: DataConverter | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """A client with the desk's data converter (activities/codec.py: encrypted payloads
    when a master key is configured), tracing when it is set up (activities/tracing.py),
    on `runtime` (the one whose metrics a process exports)."""
    s = settings or Settings()
    return await Client.connect(
        s.address,
        namespace=s.namespace,
        data_converter=converter or PLAIN,
        api_key=s.api_key,
        tls=s.tls or bool(s.api_key),
        plugins=tracing.plugins(),
        runtime=runtime,
    )


def exit_now(code: int) -> NoReturn:
    """Leave without interpreter finalization once the work is done and flushed.

    The SDK's Rust runtime keeps threads that can touch the interpreter while it is being torn
    down, which now and then aborts a finished process with "Fatal Python error:
    PyGILState_Release" and exit status 134 (temporalio/sdk-python#300). A backend scripting
    `escalate` needs the real exit status, so the entry points end here instead.
    """
    tracing.flush()  # spans still in the batch go out first
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe
            stream.flush()
    os._exit(code)
