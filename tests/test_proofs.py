"""Decisions carry proof: an approval is taken only with the desk's signature for this
approver, this request and this moment; anything else is refused naming `proof` and leaves
no trace (Updates), or is noted and ignored (Signals). On the real dev server, whose
rejected Updates leave nothing in history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from starter.api import CaseClient, CaseError, with_proof
from workflows import proofs

from .conftest import TEST_SECRET, Desk, until

REFUND = {"kind": "refund", "amount": 250, "currency": "USD"}


def test_a_proof_binds_case_message_person_request_and_time() -> None:
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    good = proofs.sign(TEST_SECRET, "C-1", "approve", "sup-lee", "r1", now)
    assert proofs.check(good, "C-1", "approve", "sup-lee", "r1", now) is None
    assert "another case" in str(proofs.check(good, "C-2", "approve", "sup-lee", "r1", now))
    assert "another message" in str(proofs.check(good, "C-1", "reject", "sup-lee", "r1", now))
    assert "another person" in str(proofs.check(good, "C-1", "approve", "sup-mara", "r1", now))
    assert "another request" in str(proofs.check(good, "C-1", "approve", "sup-lee", "r2", now))
    later = now + proofs.PROOF_LIFETIME + timedelta(seconds=1)
    assert proofs.check(good, "C-1", "approve", "sup-lee", "r1", later) == "proof: expired"
    forged = proofs.sign("another-secret-0123456789", "C-1", "approve", "sup-lee", "r1", now)
    assert "not signed by this desk" in str(
        proofs.check(forged, "C-1", "approve", "sup-lee", "r1", now)
    )
    tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert "not signed" in str(proofs.check(tampered, "C-1", "approve", "sup-lee", "r1", now))
    assert proofs.check("garbage", "C-1", "approve", "sup-lee", "r1", now) == "proof: not a proof"


@pytest.mark.devserver
async def test_an_approval_needs_the_desks_proof(
    dev_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(dev_env)
    raw = CaseClient(desk.client, desk.task_queue)  # a Temporal client that signs nothing
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="high")
        await desk.api.send(cid, "acknowledge", {"by": st.assignee})
        await desk.api.send(cid, "request_approval", {"by": st.assignee, "action": REFUND})
        case = await desk.api.status(cid)
        assert case.pending_approval is not None
        before = len((await desk.api.handle(cid).fetch_history()).events)
        asked = case.pending_approval.requested_at
        other_request = case.model_copy(
            update={
                "pending_approval": case.pending_approval.model_copy(
                    update={"requested_at": asked - timedelta(minutes=5)}
                )
            }
        )
        refused = {
            "needs a signed proof": {"by": "sup-lee"},
            "another person": with_proof({"by": "sup-mara"}, TEST_SECRET, "approve", case)
            | {"by": "sup-lee"},
            "another request": with_proof({"by": "sup-lee"}, TEST_SECRET, "approve", other_request),
            "expired": with_proof(
                {"by": "sup-lee"},
                TEST_SECRET,
                "approve",
                case,
                datetime.now(UTC) - timedelta(hours=1),
            ),
            "not signed by this desk": with_proof(
                {"by": "sup-lee"}, "a-foreign-secret-0123456789", "approve", case
            ),
        }
        for why, payload in refused.items():
            with pytest.raises(CaseError, match=f"proof: .*{why}"):
                await raw.send(cid, "approve", payload)
        assert len((await desk.api.handle(cid).fetch_history()).events) == before
        assert (await desk.api.status(cid)).pending_approval is not None

        await raw.send(cid, "approve", {"by": "sup-lee", "note": "typed in"}, as_signal=True)

        async def noted() -> bool:
            lines = (await desk.api.status(cid)).timeline
            return any(e.what == "message ignored" and "proof:" in e.details for e in lines)

        await until(noted, "the unproven signal noted")
        assert (await desk.api.status(cid)).pending_approval is not None  # and ignored

        signed = with_proof({"by": "sup-lee", "note": "checked"}, TEST_SECRET, "approve", case)
        result = await raw.send(cid, "approve", signed)  # an Update with its proof: taken
        assert result is not None and result.message == "approved"
        after = await desk.api.status(cid)
        assert [(a.decision, a.decided_by) for a in after.approvals] == [("approved", "sup-lee")]

        await desk.api.send(cid, "request_approval", {"by": st.assignee, "action": REFUND})
        again = await desk.api.status(cid)
        proven = with_proof({"by": "sup-lee", "reason": "no"}, TEST_SECRET, "reject", again)
        await raw.send(cid, "reject", proven, as_signal=True)  # a Signal with its proof: taken

        async def rejected() -> bool:
            return [a.decision for a in (await desk.api.status(cid)).approvals] == [
                "approved",
                "rejected",
            ]

        await until(rejected, "the proven signal taken")
