"""The trace a message came in on, carried to the activity that records what it changed.

The recorder runs as the case's own task, under the trace that started the case; a person's
Update runs under the trace of their click. Keeping the Update's context and attaching it
while the recorder starts its activity makes the click, the Update, the record and the
delivery one trace. Reading and attaching a context adds no command: replay is unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def current() -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_of(carrier: dict[str, str]) -> context.Context:
    return _PROPAGATOR.extract(carrier)


@contextmanager
def attached(carrier: dict[str, str] | None) -> Iterator[None]:
    if not carrier:
        yield
        return
    token = context.attach(context_of(carrier))
    try:
        yield
    finally:
        context.detach(token)
