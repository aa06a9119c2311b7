"""Every kept history must replay on the current code: a change that would break running
cases fails here (put such a change behind workflow.patched and record a new history)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import workflow_runner
from workflows.case import (
    CONCURRENT_RECORDER,
    CONTINUE_AS_NEW,
    RENOTIFY,
    RESOLVED_STAGE,
    TIMER_CLOCK,
    EscalationCase,
)
from workflows.handlers import CASE_V2, CASE_V3, CASE_V4, CASE_V5, SIGNAL_PROOF

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
TEXTS = {path: path.read_text() for path in HISTORIES}


def test_histories_are_kept() -> None:
    assert HISTORIES, "no recorded histories under tests/histories"


async def replay(
    stem: str, events: list[dict[str, Any]], sandbox: str = "strict"
) -> Exception | None:
    """Replayed in the strict sandbox (a non-deterministic call fails), or as the worker
    runs the cases (`off`, ESCALATION_WORKFLOW_SANDBOX's default)."""
    replayer = Replayer(
        workflows=[EscalationCase],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(sandbox),
    )
    history = WorkflowHistory.from_json(stem, {"events": events})
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return result.replay_failure


@pytest.mark.parametrize("sandbox", ["strict", "off"])
@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path, sandbox: str) -> None:
    # the stem is the workflow id
    assert await replay(path.stem, json.loads(TEXTS[path])["events"], sandbox) is None


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
    assert any(TIMER_CLOCK in p for p in seen), "no history reads the clock on a fired timer"
    assert any(TIMER_CLOCK not in p for p in seen), "no history from before the clock read"
    assert any(RENOTIFY in p for p in seen), "no history pages an assignee again"
    assert any(RENOTIFY not in p for p in seen), "no history from before paging again"
    assert any(RESOLVED_STAGE in p for p in seen), "no history keeps a resolved case open"
    assert any(RESOLVED_STAGE not in p for p in seen), "no history closes at the resolution"
    assert any(CONTINUE_AS_NEW in p for p in seen), "no history continues as new"
    assert any(SIGNAL_PROOF in p for p in seen), "no history checks a Signal's proof"
    assert any(SIGNAL_PROOF not in p for p in seen), "no history from before proofs"
    for patch in (CASE_V2, CASE_V3, CASE_V4, CASE_V5):
        current = [p for p in seen if patch in p]
        assert len(current) >= 3, f"no {patch} histories (a plain, a paged-again, a long case)"
        assert all(p == {patch} for p in current), "a current case meets one patch, not each"
        assert any(patch not in p for p in seen), f"no history from before {patch}"


STALE_CLOCK = Path(__file__).parent / "histories" / "case-SR-142428.json"
CLOCKED_ON_TIME = Path(__file__).parent / "histories" / "case-CLOCK-1.json"
CLOCKED_AFTER_RESTART = Path(__file__).parent / "histories" / "case-CLOCK-2.json"


def stale_after_timers(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each task that delivers a fired timer carries the previous task's time, as the worker
    saw it once after a server restart (case-SR-142428, event 24)."""
    out, last_started, after_timer = [], None, False
    for event in events:
        event = dict(event)
        kind = event["eventType"]
        if kind == "EVENT_TYPE_TIMER_FIRED":
            after_timer = True
        elif kind == "EVENT_TYPE_WORKFLOW_TASK_STARTED":
            if after_timer and last_started is not None:
                event["eventTime"] = last_started
            last_started, after_timer = event["eventTime"], False
        out.append(event)
    return out


@pytest.mark.parametrize("path", [CLOCKED_ON_TIME, CLOCKED_AFTER_RESTART], ids=lambda p: p.stem)
async def test_a_case_decides_after_a_fired_timer_at_the_time_it_read(path: Path) -> None:
    """Both cases ran on the dev server with 30 s ack windows and read the clock through a
    local activity after each fired timer. CLOCK-1's warning and breach fired on time;
    CLOCK-2's server was down from its assignment until 10 s past its ack deadline, so the
    warning timer fired late and the case escalated at once without a warning. Their
    decisions replay the same whatever time the timer's task carries."""
    events = json.loads(TEXTS[path])["events"]
    assert TIMER_CLOCK in patches_in(TEXTS[path])
    stale = stale_after_timers(events)
    assert stale != events
    assert await replay(path.stem, events) is None
    assert await replay(path.stem, stale) is None


async def test_a_case_from_before_the_clock_read_depends_on_the_task_time() -> None:
    """Why the clock is read: case-SR-142428 ran with the stale time in task 24 and replays
    only with it; with the time the server recorded for that task it takes another path."""
    events = json.loads(TEXTS[STALE_CLOCK])["events"]
    assert await replay(STALE_CLOCK.stem, events) is None
    recorded = [
        {**e, "eventTime": "2026-11-23T03:07:49.465238273Z"} if e["eventId"] == "24" else e
        for e in events
    ]
    failure = await replay(STALE_CLOCK.stem, recorded)
    assert failure is not None and "Nondeterminism" in str(failure)


RACE = Path(__file__).parent / "histories" / "case-RACE-1.json"


async def test_an_update_taken_in_the_task_that_brought_the_assignment_replays() -> None:
    """case-RACE-1: the assignment's result waited out a sticky task's timeout, and the
    assignee's acknowledge was accepted in the task that delivered that result, before the
    assignment's own commands (seen under load). On replay the SDK runs the Update before
    the result: the handler waits for the assignment instead of refusing what history says
    it accepted, and the case replays to its end."""
    events = json.loads(TEXTS[RACE])["events"]
    kinds = [e["eventType"].removeprefix("EVENT_TYPE_") for e in events]
    done = kinds.index("ACTIVITY_TASK_COMPLETED", kinds.index("ACTIVITY_TASK_COMPLETED") + 1)
    assert kinds[done + 1 : done + 7] == [
        "WORKFLOW_TASK_SCHEDULED",
        "WORKFLOW_TASK_TIMED_OUT",
        "WORKFLOW_TASK_SCHEDULED",
        "WORKFLOW_TASK_STARTED",
        "WORKFLOW_TASK_COMPLETED",
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
    ]
    assert kinds[-1] == "WORKFLOW_EXECUTION_COMPLETED"
    assert await replay(RACE.stem, events) is None


CHEAPER = Path(__file__).parent / "histories" / "case-V3-1.json"


def local_activities(events: list[dict[str, Any]]) -> list[str]:
    """The local activities a history ran, in order."""
    return [
        json.loads(base64.b64decode(a["details"]["data"]["payloads"][0]["data"]))["activity_type"]
        for e in events
        if (a := e.get("markerRecordedEventAttributes", {})).get("markerName")
        == "core_local_activity"
    ]


async def test_a_current_case_closes_its_reopen_window_without_reading_the_clock() -> None:
    """case-V3-1 read the clock after each fired SLA timer, and not after its reopen window's
    end (closing decides nothing by the time). It replays as recorded and with every fired
    timer's task given the previous task's time."""
    events = json.loads(TEXTS[CHEAPER])["events"]
    kinds = [e["eventType"].removeprefix("EVENT_TYPE_") for e in events]
    fired = kinds.count("TIMER_FIRED")
    ran = local_activities(events)
    assert fired >= 3 and ran.count("read_clock") == fired - 1  # all but the window's end
    last = len(kinds) - 1 - kinds[::-1].index("TIMER_FIRED")
    assert "MARKER_RECORDED" not in kinds[last:]
    stale = stale_after_timers(events)
    assert stale != events
    assert await replay(CHEAPER.stem, events) is None
    assert await replay(CHEAPER.stem, stale) is None
