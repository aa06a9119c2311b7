"""Messages as a client in any language sends them: raw JSON, no client-side validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from workflows.messages import MESSAGES, markdown_table

from .conftest import Desk
from .test_case_paths import history_events, without_workflow_tasks
from .test_decisions import PAYLOADS

# the field a person's or the customer's words go in, for each message
NAME_FIELD = {name: "by" for name in MESSAGES} | {
    "customer_replied": "message",
    "customer_escalate": "reason",
}


def malformed(name: str) -> list[tuple[dict[str, Any], str]]:
    """`{}`, a number where a name goes, an unknown field: each with what the refusal says."""
    valid = PAYLOADS[name]("bill-ana")
    if name == "customer_feedback":  # a score, not a name
        return [
            ({}, "score: Field required"),
            ({**valid, "score": 9}, "score: Input should be less than or equal to 5"),
            ({**valid, "urgent": True}, "urgent: Extra inputs are not permitted"),
        ]
    field = NAME_FIELD[name]
    return [
        ({}, f"{field}: Field required"),
        ({**valid, field: 12345}, f"{field}: Input should be a valid string"),
        ({**valid, "urgent": True}, "urgent: Extra inputs are not permitted"),
    ]


async def test_a_malformed_update_is_refused_naming_the_field_and_leaves_no_trace(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    async with desk.worker():
        cid, st = await desk.open_assigned()
        handle = desk.api.handle(cid)
        before = without_workflow_tasks(await history_events(desk, cid))
        refusals = []
        for name in MESSAGES:
            for payload, says in malformed(name):
                with pytest.raises(WorkflowUpdateFailedError) as failed:
                    await handle.execute_update(name, payload)
                cause = str(failed.value.cause)
                assert f"invalid {name}: " in cause and says in cause, (name, payload, cause)
                refusals.append(cause)
        assert len(refusals) == 3 * len(MESSAGES)
        assert without_workflow_tasks(await history_events(desk, cid)) == before
        after = await desk.api.status(cid)
    assert after.timeline == st.timeline and after.assignee == st.assignee


def test_the_readme_lists_every_message_from_the_registry() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert markdown_table() in readme
