"""Record the history of a full case for the replay test:

    python -m tests.record_history [ID [SEVERITY]]   # critical: a case paged again

Run it when a deliberate, patched change lands, and keep the older files: every history
here must keep replaying, since cases started on the old code may still be running.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.policy_file import load_policy
from tests.conftest import BIN, Desk, record_store
from workflows import search_attributes as sa
from workflows.models import CaseReport

HERE = Path(__file__).parent / "histories"


async def main(case_id: str = "REPLAY-1", severity: str = "high") -> None:
    binary = (
        str(BIN / "temporal-test-server")
        if (BIN / "temporal-test-server").exists()
        else shutil.which("temporal-test-server")
    )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary, data_converter=pydantic_data_converter
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={
                k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in sa.ALL
            },
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with record_store(f"sqlite:///{tmp}/r.db") as records:
            desk = Desk(env, records, load_policy())
            async with desk.worker():
                cid = case_id
                level = "low" if severity == "long" else severity
                opened = await desk.api.open(desk.case(cid, severity=level))
                who = (await desk.settled(cid)).assignee
                if severity == "critical":  # paged again twice, then acknowledged
                    await env.sleep(timedelta(minutes=11))
                    await desk.api.send(cid, "acknowledge", {"by": who})
                    await env.sleep(timedelta(minutes=20))
                    await desk.api.send(cid, "resolve", {"by": who, "resolution": "restarted"})
                elif severity == "long":  # continues as new: the history kept is the first run
                    await long_path(desk, cid, who)
                else:
                    await full_path(env, desk, cid, who)
                if (await desk.api.status(cid)).stage == "resolved":
                    await after_resolution(env, desk, cid)
                report = await desk.api.report(cid)
                handle = desk.client.get_workflow_handle(f"case-{cid}", run_id=opened.run_id)
                history = await handle.fetch_history()
    await _save(env, case_id, history, report)


async def full_path(env: WorkflowEnvironment, desk: Desk, cid: str, who: str | None) -> None:
    """Warning, approval, a pause, an invalid signal, a manual and an automatic escalation."""
    await env.sleep(timedelta(minutes=50))  # ack warning fires
    await desk.api.send(cid, "acknowledge", {"by": who})
    action = {"kind": "refund", "amount": 250, "currency": "USD"}
    await desk.api.send(cid, "request_approval", {"by": who, "action": action})
    unproven = {"by": "sup-lee", "note": "typed into a Temporal client"}
    await desk.api.handle(cid).signal("approve", unproven)  # noted and ignored: no proof
    await env.sleep(timedelta(seconds=5))
    await desk.api.send(cid, "approve", {"by": "sup-lee", "note": "duplicate charge"})
    await desk.api.send(cid, "wait_for_customer", {"by": who, "question": "Which card?"})
    await env.sleep(timedelta(hours=3))
    await desk.api.send(cid, "customer_replied", {"message": "Visa 4242"})
    await desk.api.handle(cid).signal("acknowledge", {"by": "nobody"})  # invalid
    await desk.api.send(cid, "escalate", {"by": who, "reason": "contract question"})
    who = (await desk.settled(cid)).assignee
    await env.sleep(timedelta(hours=9))  # tier 3 resolve breach -> tier 4
    who = (await desk.settled(cid)).assignee
    await desk.api.send(cid, "resolve", {"by": who, "resolution": "refunded and credited"})


async def after_resolution(env: WorkflowEnvironment, desk: Desk, cid: str) -> None:
    """Rated, reopened by the customer, resolved again, and closed at the window's end."""
    await desk.api.send(cid, "customer_feedback", {"score": 2, "comment": "slow"})
    await desk.api.send(cid, "reopen", {"by": "customer", "reason": "charged again"})
    who = (await desk.settled(cid)).assignee
    await desk.api.send(cid, "acknowledge", {"by": who})
    payload = {"by": who, "resolution": "refunded again", "root_cause": "billing_error"}
    await desk.api.send(cid, "resolve", payload)
    await env.sleep(timedelta(days=15))


async def long_path(desk: Desk, cid: str, who: str | None) -> None:
    """Enough waits and replies to continue as new."""
    await desk.api.send(cid, "acknowledge", {"by": who})
    for i in range(200):
        await desk.api.send(cid, "wait_for_customer", {"by": who, "question": f"q{i}"})
        await desk.api.send(cid, "customer_replied", {"message": f"a{i}"})
    await desk.api.send(cid, "resolve", {"by": who, "resolution": "done"})


async def _save(
    env: WorkflowEnvironment, case_id: str, history: WorkflowHistory, report: CaseReport
) -> None:
    await env.shutdown()
    HERE.mkdir(exist_ok=True)
    out = HERE / f"case-{case_id}.json"  # the name is the workflow id replay needs
    out.write_text(history.to_json())
    print(
        f"{out}: {len(history.events)} events, outcome {report.outcome}, tiers "
        f"{[t.tier for t in report.tiers]}"
    )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
