"""Traces: OpenTelemetry, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Every client and worker carries temporalio's OpenTelemetry plugin, whose interceptor parents
an Update's handling on the caller's span (the older TracingInterceptor only links it to the
workflow's start), so a click in the console, its Update, the activity that records it and
the relay's delivery of the mail it queued are one trace. The outbox row keeps the
`traceparent` of the activity that queued it; the relay's delivery span continues from it.
Without an endpoint nothing is set up and nothing is exported.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from opentelemetry import context, trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from workflows import tracecontext

if TYPE_CHECKING:
    from activities.records import Records

_configured = False


def setup(service: str) -> bool:
    """The OTLP pipeline, when the standard environment asks for one."""
    if _configured or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return _configured
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased
    from temporalio.contrib.opentelemetry import create_tracer_provider

    name = os.environ.get("OTEL_SERVICE_NAME", service)
    # the operator's OTEL_TRACES_SAMPLER when set, else every trace but lone status queries
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(QuietQueries())
    provider = create_tracer_provider(
        resource=Resource.create({"service.name": name}), sampler=sampler
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)
    return True


class QuietQueries(Sampler):
    """Root spans of queries are not recorded: the console, the CLI and backends polling a
    case's status would otherwise make most of the traces, each of one span. A query made
    within a traced request (a click) follows its parent and is kept."""

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if name.startswith(("HandleQuery:", "QueryWorkflow:")):
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "QuietQueries"


class _EvictedContext(logging.Filter):
    """A cached case evicted while its trace context is attached unwinds in another
    context, and OpenTelemetry logs an ERROR with a traceback for the detach it could not
    do (temporalio/sdk-python#441): noise, nothing is lost. Only that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        stray = record.getMessage() == "Failed to detach context" and "different Context" in str(
            err
        )
        return not stray


def use(provider: Any) -> None:
    """Install `provider` as the process's tracer provider and instrument the libraries the
    desk speaks through (HTTPX for webhooks and sign-in)."""
    global _configured
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    trace.set_tracer_provider(provider)
    logging.getLogger("opentelemetry.context").addFilter(_EvictedContext())
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    _configured = True


def flush(timeout_ms: int = 5000) -> None:
    """Export what the batch holds (a process leaving by os._exit skips atexit)."""
    if _configured:
        provider: Any = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush(timeout_ms)


def plugins() -> list[Any]:
    """What a client carries (its workers inherit it): nothing unless tracing is set up."""
    if not _configured:
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def instrument_records(records: Records, sql: bool | None = None) -> None:
    """A span per SQL statement under the activity or request that ran it: off unless
    `ESCALATION_TRACE_SQL` is set (or `sql`): a case runs 25 statements, a span each, beside
    the 16 spans of the rest of its tracing, which cost the worker about 11 % of its CPU
    (README, Benchmark)."""
    if sql is None:
        sql = os.environ.get("ESCALATION_TRACE_SQL", "").lower() in ("1", "true", "yes")
    if _configured and sql:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # its declared range ends below the SQLAlchemy in use; the event API it hooks is stable
        SQLAlchemyInstrumentor().instrument(engines=records.engines, skip_dep_check=True)


QUIET_PATHS = ("/healthz", "/readyz", "/metrics")
# FastAPI from 0.16x traces its requests itself once a tracer provider is set; the
# instrumentation package would then trace each request twice
NATIVE_FASTAPI = "telemetry" in inspect.signature(FastAPI).parameters


def app_options(traced: bool = True) -> dict[str, Any]:
    """FastAPI(...) options: requests traced but for health checks and scrapes (`traced`),
    or not at all (the worker's operations endpoints)."""
    if not NATIVE_FASTAPI:
        return {}
    if not traced:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {"telemetry": {"exclude": lambda scope: scope.get("path") in QUIET_PATHS}}


def instrument_app(app: Any) -> None:
    if _configured and not NATIVE_FASTAPI:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls=",".join(QUIET_PATHS))


def traceparent() -> str | None:
    """The current span as a W3C `traceparent`, to keep beside what it queued."""
    return tracecontext.current().get("traceparent") if _configured else None


@contextmanager
def continued(parent: str | None, name: str, **attributes: Any) -> Iterator[None]:
    """A span under `parent` (a stored `traceparent`), or no span when tracing is off."""
    if not _configured:
        yield
        return
    ctx = tracecontext.context_of({"traceparent": parent}) if parent else context.Context()
    with _tracer(trace.get_tracer_provider()).start_as_current_span(
        name, context=ctx, kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        yield


@functools.cache
def _tracer(provider: Any) -> trace.Tracer:
    """The desk's own tracer (a new one per span cost a tenth of the span)."""
    return provider.get_tracer("escalation_desk")


def trace_id() -> str | None:
    span = trace.get_current_span().get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else None
