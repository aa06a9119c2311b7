"""Record a case's history on the real dev server, with 30 s acknowledgement windows:

    python -m tests.record_dev_history ID             # warning and breach fire on time
    python -m tests.record_dev_history ID --restart   # the server is down through the deadline

The time-skipping server cannot stand in here: these histories exist for what the real
server's clock and a restart do to the times a case's tasks carry (test_replay.py).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from starter.api import CaseClient
from starter.devserver import DevServer
from tests.conftest import sample_case, start_worker_process, until
from tests.test_faults import assigned_at, fast_policy

HERE = Path(__file__).parent / "histories"


async def main(case_id: str, restart: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with DevServer(work / "server", log=work / "server.log") as server:
            worker = start_worker_process(
                server.address, "record", f"sqlite:///{tmp}/r.db", work / "w.log", fast_policy(work)
            )
            try:
                client = await Client.connect(
                    server.address, data_converter=pydantic_data_converter
                )
                api = CaseClient(client, "record")
                await api.open(sample_case(case_id, severity="high"))
                first = await until(lambda: assigned_at(api, case_id, 2), "tier 2 assignment")
                if restart:
                    assert first.deadlines.ack_by is not None
                    await asyncio.to_thread(server.stop)
                    down_until = first.deadlines.ack_by.timestamp() + 10
                    await asyncio.sleep(max(0.0, down_until - time.time()))
                    await asyncio.to_thread(server.start)
                second = await until(lambda: assigned_at(api, case_id, 3), "tier 3", 90)
                await api.send(case_id, "resolve", {"by": second.assignee, "resolution": "done"})
                report = await api.report(case_id)
                history = await api.handle(case_id).fetch_history()
            finally:
                worker.terminate()
                worker.wait(20)
    out = HERE / f"case-{case_id}.json"  # the name is the workflow id replay needs
    out.write_text(history.to_json())
    print(f"{out}: {len(history.events)} events, {[e.what for e in report.timeline]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.record_dev_history")
    parser.add_argument("case_id")
    parser.add_argument("--restart", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.case_id, args.restart))
