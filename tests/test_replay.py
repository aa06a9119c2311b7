"""Every kept history must replay on the current code: a change that would break running
cases fails here (put such a change behind workflow.patched and record a new history)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    Interceptor,
    Replayer,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from escalation_desk.worker import workflow_runner
from escalation_desk.workflows.case import CONCURRENT_RECORDER, EscalationCase

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
TEXTS = {path: path.read_text() for path in HISTORIES}


def test_histories_are_kept() -> None:
    assert HISTORIES, "no recorded histories under tests/histories"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, TEXTS[path])  # stem: the workflow id
    replayer = Replayer(
        workflows=[EscalationCase],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(strict=True),  # the worker's sandbox, module re-imported
    )
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


def patches_in(text: str) -> set[str]:
    found = set()
    for event in json.loads(text)["events"]:
        attrs = event.get("markerRecordedEventAttributes")
        if attrs and attrs.get("markerName") == "core_patch":
            for payload in attrs["details"]["patch-data"]["payloads"]:
                found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


def test_histories_cover_code_before_and_after_each_patch() -> None:
    seen = [patches_in(text) for text in TEXTS.values()]
    assert any(CONCURRENT_RECORDER in p for p in seen), "no history runs the recorder"
    assert any(CONCURRENT_RECORDER not in p for p in seen), "no history from before it"


STALE_CLOCK = Path(__file__).parent / "histories" / "case-SR-142428.json"


class ActivityInputs(Interceptor):
    """Keeps the input of every activity the workflow schedules."""

    def __init__(self) -> None:
        self.inputs: list[StartActivityInput] = []

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        kept = self.inputs

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
                kept.append(input)
                return super().start_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


async def replay_up_to_task_24(stale: bool) -> ActivityInputs:
    """The case up to the task after the restart, which runs as new on this code."""
    events = [e for e in json.loads(TEXTS[STALE_CLOCK])["events"] if int(e["eventId"]) <= 24]
    assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_STARTED"
    if not stale:
        events[-1] = {**events[-1], "eventTime": "2026-11-23T03:07:49.465238273Z"}
    seen = ActivityInputs()
    replayer = Replayer(
        workflows=[EscalationCase],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(strict=True),
        interceptors=[seen],
    )
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(STALE_CLOCK.stem, {"events": events})
    )
    assert result.replay_failure is None
    return seen


async def test_a_fired_timer_moves_a_stale_task_clock_up_to_its_instant() -> None:
    """case-SR-142428 ran through a server restart. The task that delivered its fired ack
    warning timer (due 03:07:27.1, ack deadline 03:07:34.6) carried the previous task's time,
    03:07:04.6 (event 24 is kept with that time: the history as the worker saw it). The case
    then noted "30s left" and waited 30 s more to escalate. Run that task again on this code:
    the warning is dated at its instant and the breach is 7.5 s away, not 30."""
    seen = await replay_up_to_task_24(stale=True)
    transition = seen.inputs[-1].args[0]
    assert seen.inputs[-1].activity == "record_transition"
    warning = next(e for e in transition.timeline if e.what == "ack SLA warning")
    assert warning.at == datetime(2026, 11, 23, 3, 7, 27, 123837, tzinfo=UTC)
    assert warning.details.startswith("8s left")  # 7.5 s, where the stale clock said 30 s


async def test_a_warning_due_after_its_deadline_is_not_sent() -> None:
    """The same task with the server's time for it (03:07:49, 15 s past the ack deadline):
    the case escalates at once, and no "0s left" warning goes out with the breach."""
    seen = await replay_up_to_task_24(stale=False)
    assert seen.inputs[-1].activity == "assign_case"
    what = [e.what for e in seen.inputs[-1].args[0].transition.timeline]
    assert "ack SLA breached" in what and "escalated" in what
    assert "ack SLA warning" not in what
    messages = seen.inputs[-1].args[0].transition.messages
    assert messages and not any("SLA warning" in m.subject for m in messages)
