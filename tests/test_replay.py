"""Every kept history must replay on the current code: a change that would break running
cases fails here (put such a change behind workflow.patched and record a new history)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

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
