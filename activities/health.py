"""What operators poll: `/healthz` (the process is alive), `/readyz` (it can do its work:
Temporal answers, the records answer and, for a worker, it is polling its task queue) and
`/metrics`; the worker serves them on `ESCALATION_METRICS_ADDR`, the web app on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from temporalio.client import Client
from temporalio.worker import Worker

from activities import metrics as m
from activities import tracing
from activities.records import Records

log = logging.getLogger("health")
CHECK_TIMEOUT = 3.0


class Readiness:
    def __init__(self, client: Client, records: Records | None, worker: Worker | None = None):
        self.client, self.records, self.worker = client, records, worker

    async def check(self) -> dict[str, str]:
        """Each dependency: "ok" or what is wrong with it."""
        checks: dict[str, Callable[[], Awaitable[None]]] = {"temporal": self._temporal}
        if self.records is not None:
            checks["records"] = self._records
        if self.worker is not None:
            checks["worker"] = self._worker
        results = await asyncio.gather(*(_timed(f()) for f in checks.values()))
        return dict(zip(checks, results, strict=True))

    async def _temporal(self) -> None:
        if not await self.client.service_client.check_health():
            raise RuntimeError("not serving")

    async def _records(self) -> None:
        assert self.records is not None
        async with self.records.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _worker(self) -> None:
        assert self.worker is not None
        if not self.worker.is_running:
            raise RuntimeError("not polling its task queue")


async def _timed(check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g}s"
    except Exception as err:  # any failure is the answer, not an error of this endpoint
        return f"{type(err).__name__}: {err}"[:300]
    return "ok"


def add_routes(app: FastAPI, readiness: Readiness | None, metrics: m.Metrics | None) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        checks = await readiness.check() if readiness is not None else {}
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "unready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def scrape() -> Response:
        body = await metrics.scrape() if metrics is not None else m.own()
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def count_requests(app: FastAPI) -> None:
    """`escalation_web_requests_total{route,status}` by the route's template (never a
    path: it would carry case ids and tokens)."""

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            if path not in tracing.QUIET_PATHS:
                m.web_request(path, status, started)


def ops_app(readiness: Readiness, metrics: m.Metrics | None) -> FastAPI:
    app = FastAPI(
        title="Escalation desk worker",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **tracing.app_options(traced=False),
    )
    add_routes(app, readiness, metrics)
    return app


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"ESCALATION_METRICS_ADDR: expected host:port, got {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class Server(uvicorn.Server):
    """Inside the worker the process's signals stay the worker's own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: Any, addr: str) -> None:
    host, port = parse_addr(addr)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    await Server(config).serve()
