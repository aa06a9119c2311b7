"""Record a history where one workflow task brought the assignment's result and the
assignee's acknowledge Update together, and the Update was accepted first:

    python -m tests.record_race_history ID

Seen under load: the assignment completed, its task timed out on the worker's sticky queue,
the acknowledge was accepted in the task that followed, and a later replay ran the Update's
handler before the assignment's result (the SDK takes Updates first within one activation).
Live, the validator would refuse the acknowledge on that state; this script records the
accepted shape by letting the acknowledge through without its validator, as the replay of
that case saw it, so test_replay.py holds every version of the case to it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker import _workflow_instance as instance

from activities.case_activities import CaseActivities
from activities.channels import Channels, MemorySender
from activities.policy_file import load_policy
from activities.render import Renderer
from starter.devserver import DevServer
from tests.conftest import record_store, sample_case, sqlite_url
from worker import workflow_runner
from workflows.activity_models import AssignRequest, AssignResult
from workflows.case import EscalationCase

HERE = Path(__file__).parent / "histories"


def without_validator(name: str) -> None:
    """Updates called `name` skip their validator, as they do on replay."""
    apply = instance._WorkflowInstanceImpl._apply_do_update

    def patched(self: Any, job: Any) -> None:
        if job.name == name:
            job.run_validator = False
        apply(self, job)

    instance._WorkflowInstanceImpl._apply_do_update = patched  # type: ignore[method-assign]


async def main(case_id: str) -> None:
    without_validator("acknowledge")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with DevServer(work / "server", log=work / "server.log") as server:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            # the activities in their own runtime: a second worker on the same task queue
            activity_client = await Client.connect(
                server.address,
                data_converter=pydantic_data_converter,
                runtime=Runtime(telemetry=TelemetryConfig()),
            )
            policy = load_policy().model_copy(update={"reopen_window": {}})
            async with record_store(sqlite_url(work)) as records:
                acts = CaseActivities(
                    records, Channels(senders={"log": MemorySender()}), lambda: policy, Renderer()
                )
                held, entered, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
                assigned: list[AssignResult] = []

                @activity.defn(name="assign_case")
                async def assign_case(req: AssignRequest) -> AssignResult:
                    entered.set()
                    await held.wait()
                    assigned.append(await acts.assign_case(req))
                    done.set()
                    return assigned[-1]

                queue = f"race-{uuid.uuid4().hex[:6]}"

                def case_worker() -> Worker:
                    return Worker(
                        client,
                        task_queue=queue,
                        workflows=[EscalationCase],
                        activities=[acts.read_clock, acts.check_proof],
                        no_remote_activities=True,
                        workflow_runner=workflow_runner("strict"),
                        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
                    )

                async with Worker(
                    activity_client,
                    task_queue=queue,
                    activities=[acts.open_case, assign_case, acts.record_transition],
                ):
                    data = sample_case(case_id, severity="high")
                    async with case_worker():
                        handle = await client.start_workflow(
                            "EscalationCase", data, id=f"case-{case_id}", task_queue=queue
                        )
                        await entered.wait()
                    held.set()  # the result waits for a worker; its sticky task times out
                    await done.wait()
                    ack = asyncio.create_task(
                        handle.start_update(
                            "acknowledge",
                            {"by": assigned[0].assignee},
                            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                        )
                    )
                    await asyncio.sleep(2)
                    async with case_worker():
                        print(await (await ack).result())
                        await handle.execute_update(
                            "resolve", {"by": assigned[0].assignee, "resolution": "done"}
                        )
                        await handle.result()
                        history = await handle.fetch_history()
    out = HERE / f"case-{case_id}.json"  # the name is the workflow id replay needs
    out.write_text(history.to_json())
    print(f"{out}: {len(history.events)} events")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.record_race_history")
    parser.add_argument("case_id")
    asyncio.run(main(parser.parse_args().case_id))
