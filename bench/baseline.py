"""The baseline: a bare workflow with a happy-path case's shape and no-op activities.

Same count of activities (4), timers (2, each cancelled by an update) and updates (2) as
open -> acknowledge -> resolve, and no search attributes, records or policy: the most this
server and machine can do for that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import activity, workflow

NOOP_TIMEOUT = timedelta(seconds=10)


@activity.defn(name="baseline_noop")
async def noop(step: str) -> str:
    return step


@workflow.defn(name="BaselineCase")
class BaselineCase:
    def __init__(self) -> None:
        self._steps = 0
        self._settled = 0
        self._ready = False

    @workflow.run
    async def run(self, case_id: str) -> str:
        for step in ("open", "assign"):
            await workflow.execute_activity(noop, step, start_to_close_timeout=NOOP_TIMEOUT)
        self._ready = True
        for expected in (1, 2):
            try:
                await workflow.wait_condition(self._reached(expected), timeout=3600)
            except TimeoutError:
                return "timed out"
            await workflow.execute_activity(
                noop, f"step{expected}", start_to_close_timeout=NOOP_TIMEOUT
            )
            self._settled = expected
        await workflow.wait_condition(workflow.all_handlers_finished)
        return case_id

    def _reached(self, step: int) -> Callable[[], bool]:
        return lambda: self._steps >= step

    @workflow.update(name="step")
    async def step(self, by: str) -> int:
        self._steps += 1
        target = self._steps
        await workflow.wait_condition(lambda: self._settled >= target)
        return target

    @step.validator
    def _validate_step(self, by: str) -> None:
        if not self._ready:
            raise ValueError("not ready")

    @workflow.query(name="ready")
    def ready(self) -> bool:
        return self._ready


@workflow.defn(name="HerdSleeper")
class HerdSleeper:
    """Sleeps to one instant, runs one activity, and says how late it finished (s): a
    thousand of them together are the floor the server sets for a herd of deadlines."""

    @workflow.run
    async def run(self, until: datetime) -> float:
        wait = until - workflow.now()
        if wait > timedelta(0):
            await workflow.sleep(wait)
        await workflow.execute_activity(noop, "woke", start_to_close_timeout=NOOP_TIMEOUT)
        return (workflow.now() - until).total_seconds()
