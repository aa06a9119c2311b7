"""Cases and bare workflows driven through their happy path, with retries on a busy server."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from starter.api import CaseClient, CaseError, is_transient

BILLABLE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "start",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search attribute upserts",
    EventType.EVENT_TYPE_MARKER_RECORDED: "markers (one per workflow task)",
}
VERSIONING_ONLY = {"TemporalChangeVersion"}


def billable(events: Iterable[HistoryEvent]) -> dict[str, int]:
    """Temporal Cloud's actions as a history shows them (its "Temporal Cloud Actions" page):
    the SDK's own upsert of `TemporalChangeVersion` (a patch's) is exempt, and every marker
    of one workflow task (patches, local activities) is one action. Queries are billed too,
    but are not in a history: a client's polling is the client's cost, not the case's."""
    counts: dict[str, int] = {}
    marker_tasks: set[int] = set()
    for e in events:
        kind = BILLABLE.get(e.event_type)
        if kind is None:
            continue
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            attrs = e.upsert_workflow_search_attributes_event_attributes
            if set(attrs.search_attributes.indexed_fields) <= VERSIONING_ONLY:
                continue
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            task = e.marker_recorded_event_attributes.workflow_task_completed_event_id
            if task in marker_tasks:
                continue
            marker_tasks.add(task)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# --- drivers: one happy path per item ------------------------------------------------------


def case_json(
    case_id: str, i: int, severity: str | None = None, customer: str | None = None
) -> dict[str, Any]:
    categories = ["billing", "refund", "outage", "login", "delivery", "bug", "security"]
    return {
        "case_id": case_id,
        "customer": {
            "id": customer or f"bench-cust-{i % 500}",
            "name": "Bench Customer",
            "email": "b@example.com",
        },
        "subject": f"Benchmark case {i}",
        "category": categories[i % len(categories)],
        "severity": severity or ["low", "medium", "high"][i % 3],
        "channel": "api",
        "opened_by": "bench",
    }


T = TypeVar("T")


def transient(err: BaseException) -> bool:
    if isinstance(err, CaseError):
        return err.retryable
    if isinstance(err, RPCError):
        return is_transient(err)
    return False


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = 30) -> T:
    """What a backend does when the server is saturated: back off and ask again."""
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as err:
            if not transient(err) or attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.5 * 2**attempt, 5.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")


async def poll(check: Callable[[], Awaitable[bool]], interval: float = 1.0) -> None:
    """Ask until yes, once a second: the way a backend waits for a case to reach a stage."""
    while True:
        await asyncio.sleep(interval)
        if await retrying(check):
            return


async def case_happy_path(desk: CaseClient, case_id: str, i: int) -> None:
    holder: dict[str, str] = {}

    async def assigned() -> bool:
        st = await desk.status(case_id)
        if st.stage == "resolve" and st.assignee:
            holder["who"] = st.assignee
            return True
        return False

    await retrying(lambda: desk.open(case_json(case_id, i)))
    await poll(assigned)
    by = holder["who"]
    await retrying(lambda: desk.send(case_id, "acknowledge", {"by": by}, update_id=f"{case_id}-a"))
    resolution = {"by": by, "resolution": "done"}
    await retrying(lambda: desk.send(case_id, "resolve", resolution, update_id=f"{case_id}-r"))
    await retrying(lambda: desk.report(case_id))


async def baseline_happy_path(client: Client, task_queue: str, wid: str) -> None:
    handle = await retrying(
        lambda: client.start_workflow(
            "BaselineCase",
            wid,
            id=wid,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    )

    async def ready() -> bool:
        return bool(await handle.query("ready"))

    await poll(ready)
    await retrying(lambda: handle.execute_update("step", "ack", id=f"{wid}-a"))
    await retrying(lambda: handle.execute_update("step", "resolve", id=f"{wid}-r"))
    await retrying(lambda: handle.result())


async def run_all(coros: list[Awaitable[None]]) -> tuple[float, int]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*coros, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"  {len(failed)} failed, first: {failed[0]!r}", file=sys.stderr)
    return time.perf_counter() - t0, len(results) - len(failed)


async def history_shape(client: Client, wid: str) -> dict[str, Any]:
    hist = await client.get_workflow_handle(wid).fetch_history()
    counts = billable(hist.events)
    return {"events": len(hist.events), "actions": sum(counts.values()), "by_kind": counts}
