"""The case's one pending timer (since case-v5). A timer is a billed action, so it is kept
while it would ring no later than the next deadline: a deadline that moves later (an
acknowledgement moves it past the ack warning) sets no new timer until this one rings, and
one that moves earlier replaces it. A ring before anything is due costs a workflow task,
which is not billed."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow

from workflows.state import Due


class Alarm:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.at: datetime | None = None  # when the pending (or the last) timer rings
        self._rang_at: datetime | None = None  # the instant the last ring was set for

    def now(self) -> datetime:
        """The case's time: the task's, or the instant the last ring was set for when that is
        later (a fired timer's task can carry the previous task's time)."""
        now = workflow.now()
        return now if self._rang_at is None else max(now, self._rang_at)

    def set(self, due: Due, now: datetime) -> None:
        """A timer for `due`, unless the pending one rings no later."""
        if self.pending and self.at is not None and self.at <= due.at:
            return
        self.cancel()
        self.at = due.at
        wait = (due.at - now).total_seconds()
        self._task = asyncio.create_task(workflow.sleep(wait, summary=due.label))

    @property
    def pending(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def rang(self) -> bool:
        return self._task is not None and self._task.done() and not self._task.cancelled()

    def took(self) -> datetime:
        """Clear a ring; the time it was set for (the real time is at least that)."""
        assert self.at is not None and self.rang
        self._task, self._rang_at = None, self.at
        return self.at

    def cancel(self) -> None:
        if self.pending:
            assert self._task is not None
            self._task.cancel()
        self._task = None
