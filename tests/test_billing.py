"""The benchmark's count of a case's cost, by Temporal Cloud's rules for actions."""

from __future__ import annotations

from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

from bench.drivers import billable

HISTORIES = Path(__file__).with_name("histories")
UPSERT = EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
MARKER = EventType.EVENT_TYPE_MARKER_RECORDED


def events(name: str) -> list[HistoryEvent]:
    return list(WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text()).events)


def test_a_patch_costs_its_marker_not_its_versioning_upsert() -> None:
    history = events("case-V2-1")
    upserts = [e for e in history if e.event_type == UPSERT]
    fields = [
        set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for e in upserts
    ]
    versioning = [f for f in fields if f == {"TemporalChangeVersion"}]
    assert len(versioning) == 1  # case-v2's, written by the SDK beside its marker
    counted = billable(history)
    assert counted["search attribute upserts"] == len(upserts) - 1
    markers = sum(e.event_type == MARKER for e in history)
    assert counted["markers (one per workflow task)"] == markers  # each in its own task here


def test_markers_of_one_workflow_task_are_one_action() -> None:
    def marker(event_id: int, task: int) -> HistoryEvent:
        e = HistoryEvent(event_id=event_id, event_type=MARKER)
        e.marker_recorded_event_attributes.marker_name = "core_local_activity"
        e.marker_recorded_event_attributes.workflow_task_completed_event_id = task
        return e

    started = HistoryEvent(event_id=1, event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    counted = billable([started, marker(5, 4), marker(6, 4), marker(10, 9)])
    assert counted == {"start": 1, "markers (one per workflow task)": 2}
