"""Metrics and tracing on: the worker serves /metrics (scraped every 5 s, three times as
often as the bundled Prometheus config) and exports every span over OTLP/HTTP to a sink in
this process, which takes and drops them as a collector would accept them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request, Response

from activities import health, tracing
from activities.metrics import free_port


def sink() -> FastAPI:
    app = FastAPI(**tracing.app_options(traced=False))

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        await request.body()
        return Response(b"", media_type="application/x-protobuf")

    return app


@contextlib.asynccontextmanager
async def observing() -> AsyncIterator[dict[str, str]]:
    """The environment of an observed worker; while it lives, its /metrics is scraped."""
    otlp, metrics = free_port(), free_port()
    server = asyncio.create_task(health.serve(sink(), f"127.0.0.1:{otlp}"))

    async def scrape() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                await asyncio.sleep(5)
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(f"http://127.0.0.1:{metrics}/metrics")

    scraper = asyncio.create_task(scrape())
    try:
        yield {
            "ESCALATION_METRICS_ADDR": f"127.0.0.1:{metrics}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}",
        }
    finally:
        for task in (scraper, server):
            task.cancel()
        await asyncio.gather(scraper, server, return_exceptions=True)
