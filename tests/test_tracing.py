"""One click in the desk console is one trace: the web request, the Update it sends, the
activity that records it and the relay's delivery of the mail it queued.

Tracing is process-wide (one tracer provider), so this module installs an in-memory
exporter for the rest of the session; the clients made before it carry no tracing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from temporalio.client import Client
from temporalio.contrib.opentelemetry import create_tracer_provider
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities import tracing
from activities.records import Records
from workflows.policy import Policy

from .conftest import until
from .receivers import web_up
from .test_console import csrf_of
from .test_web import web_desk


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = create_tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    return exporter


@pytest.fixture
async def traced_env(
    dev_env: WorkflowEnvironment, spans: InMemorySpanExporter
) -> AsyncIterator[WorkflowEnvironment]:
    address = dev_env.client.service_client.config.target_host
    client = await Client.connect(
        address, data_converter=pydantic_data_converter, plugins=tracing.plugins()
    )
    yield WorkflowEnvironment.from_client(client)


def tree(found: list[Any], root: Any, depth: int = 0) -> list[str]:
    """The spans under `root`, indented by depth (for the failure message and the note)."""
    if re.match(r"(INSERT|UPDATE|SELECT|BEGIN|PRAGMA|connect)\b", root.name):
        return []  # the SQL, left out of the picture
    lines = ["  " * depth + root.name]
    for child in found:
        if child.parent is not None and child.parent.span_id == root.context.span_id:
            lines += tree(found, child, depth + 1)
    return lines


async def test_a_click_in_the_console_is_one_trace_to_the_delivery(
    traced_env: WorkflowEnvironment,
    spans: InMemorySpanExporter,
    records: Records,
    policy: Policy,
) -> None:
    tracing.instrument_records(records, sql=True)
    async with web_desk(traced_env, records, policy) as (desk, box, _, port):
        base = f"http://127.0.0.1:{port}"
        await until(lambda: web_up(base), "the web app", within=15)
        cid, st = await desk.open_assigned(severity="high")
        assert st.assignee
        async with httpx.AsyncClient() as http:
            form = await http.get(f"{base}/signin", params={"next": f"/cases/{cid}"})
            signed = await http.post(
                f"{base}/signin/as",
                data={"person": st.assignee, "csrf": csrf_of(form.text), "next": f"/cases/{cid}"},
            )
            assert signed.status_code == 303
            page = await http.get(f"{base}/cases/{cid}")
            spans.clear()
            acted = await http.post(
                f"{base}/cases/{cid}", data={"action": "acknowledge", "csrf": csrf_of(page.text)}
            )
            assert acted.status_code in (200, 303), acted.text

        def click() -> Any:
            return next(
                (
                    s
                    for s in spans.get_finished_spans()
                    if s.name == "POST /cases/{case_id}"  # the web app's server span
                ),
                None,
            )

        async def delivered() -> list[Any] | None:
            root = click()
            if root is None:
                return None
            mine = [
                s for s in spans.get_finished_spans() if s.context.trace_id == root.context.trace_id
            ]
            return mine if any(s.name == "deliver mail" for s in mine) else None

        found = await until(delivered, "the acknowledgement's mail delivered in the click's trace")
    root = click()
    top = next((s for s in found if s.parent is None), root)  # the test's HTTPX client span
    shape = "\n".join(tree(found, top))
    names = [s.name for s in found]
    for expected in [
        "StartWorkflowUpdate:acknowledge",
        "HandleUpdate:acknowledge",
        "StartActivity:record_transition",
        "RunActivity:record_transition",
        "deliver mail",
    ]:
        assert expected in names, shape
    by_id = {s.context.span_id: s for s in found}

    def ancestors(span: Any) -> list[str]:
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(span.name)
        return out

    delivery = next(s for s in found if s.name == "deliver mail")
    chain = ancestors(delivery)
    assert chain[0] == "RunActivity:record_transition", shape
    assert "HandleUpdate:acknowledge" in chain and "StartWorkflowUpdate:acknowledge" in chain
    assert root.name in chain, shape
    # the SQL the activity ran is in the trace too
    assert any(re.match(r"(INSERT|UPDATE|SELECT)\b", n) for n in names), shape
    print("\n" + shape)


def test_lone_status_queries_are_not_traced_but_a_click_keeps_its_own() -> None:
    quiet = ParentBased(tracing.QuietQueries())
    assert quiet.should_sample(None, 7, "HandleQuery:status").decision == Decision.DROP
    assert quiet.should_sample(None, 7, "RunActivity:x").decision == Decision.RECORD_AND_SAMPLE
    click = SpanContext(7, 9, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    inside = set_span_in_context(NonRecordingSpan(click))
    decision = quiet.should_sample(inside, 7, "HandleQuery:status").decision
    assert decision == Decision.RECORD_AND_SAMPLE
