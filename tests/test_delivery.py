"""Messages reach people: mail over SMTP, chat through Apprise, signed webhooks, with the
outbox as the source of truth. Real servers on 127.0.0.1 (tests/receivers.py); the cases
run on the time-skipping server, the relay in real time beside them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from activities.channels import Channels, MailSender, SmtpConfig, WebhookSender
from activities.records import MessageRow, Records, TimelineRow
from workflows.policy import PersonChannel, Policy

from .conftest import Desk
from .receivers import Mailbox, Receiver, free_port, http_receiver, smtp_server

SENDER = "Escalation desk <desk@desk.example>"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 random bytes


def mail(port: int) -> MailSender:
    return MailSender(SmtpConfig.parse(f"smtp://127.0.0.1:{port}", SENDER))


async def outbox(records: Records, case_id: str) -> list[MessageRow]:
    async with records.sessions() as s:
        rows = await s.scalars(select(MessageRow).where(MessageRow.case_id == case_id))
        return list(rows.all())


async def full_case(desk: Desk, **changes: Any) -> str:
    """Open, acknowledge, a refund approved by a supervisor, resolve: to its report."""
    cid, st = await desk.open_assigned(**changes)
    await desk.api.send(cid, "acknowledge", {"by": st.assignee})
    action = {"kind": "refund", "amount": 250, "currency": "USD"}
    await desk.api.send(cid, "request_approval", {"by": st.assignee, "action": action})
    await desk.api.send(cid, "approve", {"by": "sup-lee", "note": "duplicate charge"})
    await desk.api.send(cid, "resolve", {"by": st.assignee, "resolution": "Refunded"})
    await desk.api.report(cid)
    return cid


async def test_a_full_case_arrives_by_mail_with_both_parts_and_escaped_html(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    box = Mailbox()
    with smtp_server(box) as smtp:
        desk = Desk(ts_env, records, policy, Channels({"mail": mail(smtp.port)}))
        async with desk.worker():
            customer: dict[str, Any] = {"id": "cust-x", "email": "ada@example.com"}
            customer["name"] = "<script>alert(1)</script> Lopez"
            cid = await full_case(desk, customer=customer)
    rows = await outbox(records, cid)
    assert rows and all(r.medium == "mail" and r.status == "sent" for r in rows)
    assert len(box.messages) == len(rows)  # one mail per message, none twice
    ids = Counter(str(m["Message-ID"]).strip() for m in box.messages)
    assert max(ids.values()) == 1
    assert {str(m["Message-ID"]).strip() for m in box.messages} == {
        f"<{r.key.replace(':', '.')}@desk.example>" for r in rows
    }
    customer_mail = box.to("ada@example.com")
    subjects = [str(m["Subject"]) for m in customer_mail]
    assert any(s.endswith("has been escalated") for s in subjects), subjects
    assert any("resolved" in s for s in subjects)
    asked = [m for m in box.messages if str(m["Subject"]).startswith("Approval needed")]
    assert {str(m["To"]) for m in asked} >= {"Jordan Lee <jordan.lee@desk.example>"}
    for m in box.messages:
        plain = m.get_body(("plain",))
        html = m.get_body(("html",))
        assert plain is not None and html is not None, m["Subject"]
        text, markup = plain.get_content(), html.get_content()
        assert "<script>" not in markup
        if m in customer_mail:
            assert "&lt;script&gt;alert(1)&lt;/script&gt; Lopez" in markup
            assert text.startswith("Dear <script>alert(1)</script> Lopez,")
            assert "/approvals/" not in text + markup  # never an approval link to a customer
    report = next(m for m in box.messages if str(m["Subject"]).startswith("Case report"))
    body = report.get_body(("plain",))
    assert body is not None and "Tiers visited:" in body.get_content()
    assert "{" not in body.get_content()  # laid out for a person, not JSON


async def test_mail_down_then_back_each_mail_once_and_escalation_on_time(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    port = free_port()  # nothing listens here yet: connection refused
    desk = Desk(ts_env, records, policy, Channels({"mail": mail(port)}))
    box = Mailbox()
    async with desk.worker():
        cid, first = await desk.open_assigned(severity="high")  # tier 2 ack within 1h
        await ts_env.sleep(timedelta(minutes=61))
        st = await desk.settled(cid)
        assert st.tier == 3  # the escalation did not wait for the mail
        breach = next(e for e in st.timeline if e.what == "ack SLA breached")
        assert first.deadlines.ack_by is not None
        assert abs((breach.at - first.deadlines.ack_by).total_seconds()) < 1
        await asyncio.sleep(1.0)  # a few attempts against the closed port
        rows = await outbox(records, cid)
        assert all(r.status == "queued" for r in rows)
        assert max(r.attempts for r in rows) >= 2
        assert all("Connect" in (r.reason or "") or "refused" in (r.reason or "") for r in rows)
        with smtp_server(box, port):
            await desk.relay.drain()
            rows = await outbox(records, cid)
    assert rows and all(r.status == "sent" for r in rows)
    received = Counter(str(m["Message-ID"]).strip() for m in box.messages)
    assert len(received) == len(rows) and max(received.values()) == 1


async def test_a_mailbox_refused_for_good_is_failed_once_and_the_case_goes_on(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    box = Mailbox(refuse={"nobody@example.com"})
    with smtp_server(box) as smtp:
        desk = Desk(ts_env, records, policy, Channels({"mail": mail(smtp.port)}))
        async with desk.worker():
            customer = {"id": "cust-y", "name": "No One", "email": "nobody@example.com"}
            cid = await full_case(desk, customer=customer)
            st = await desk.api.status(cid)
    rows = await outbox(records, cid)
    to_customer = [r for r in rows if r.channel == "customer"]
    assert to_customer and all(r.status == "failed" for r in to_customer)
    assert all(r.attempts == 1 and "550" in (r.reason or "") for r in to_customer)
    assert box.refused.count("nobody@example.com") == len(to_customer)  # each tried once
    assert all(r.status == "sent" for r in rows if r.channel == "internal")
    assert st.stage == "closed" and st.outcome == "resolved"
    async with records.sessions() as s:
        notes = (
            await s.scalars(
                select(TimelineRow.details).where(
                    TimelineRow.case_id == cid, TimelineRow.what == "delivery failed"
                )
            )
        ).all()
    assert len(notes) == len(to_customer) and all("550" in n for n in notes)


async def test_webhooks_are_signed_and_each_event_arrives_once(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    receiver = Receiver(SECRET, fail_first=2)  # a backend that is briefly unavailable
    async with http_receiver(receiver) as rx:
        channels = Channels({"webhook": WebhookSender(SECRET)}, webhook_url=f"{rx.url}/hooks")
        desk = Desk(ts_env, records, policy, channels)
        async with desk.worker():
            cid = await full_case(desk)
            await desk.api.status(cid)
    assert receiver.bad_signatures == 0
    assert len(receiver.webhook_ids) == len(set(receiver.webhook_ids))
    kinds = [e["type"] for e in receiver.webhooks]
    assert set(kinds) == {
        "case.opened",
        "case.assigned",
        "case.approval_requested",
        "case.approval_decided",
        "case.resolved",
        "case.closed",
    }
    closed = next(e for e in receiver.webhooks if e["type"] == "case.closed")
    assert closed["data"]["case_id"] == cid
    assert closed["data"]["status"]["stage"] == "closed"
    rows = [r for r in await outbox(records, cid) if r.medium == "webhook"]
    assert sorted(r.key for r in rows) == sorted(receiver.webhook_ids)
    assert max(r.attempts for r in rows) >= 2  # the 503s were retried


async def test_chat_notices_of_a_critical_case_reach_apprise_json(
    ts_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    receiver = Receiver(SECRET)
    async with http_receiver(receiver) as rx:
        url = rx.url.replace("http://", "json://") + "/chat"
        policy = with_chat(policy, url)
        desk = Desk(ts_env, records, policy)
        async with desk.worker():
            cid, st = await desk.open_assigned(severity="critical")  # tier 3
            await desk.api.send(cid, "acknowledge", {"by": st.assignee})
            low, low_st = await desk.open_assigned(severity="low")
            await desk.api.send(low, "acknowledge", {"by": low_st.assignee})
            await desk.delivered()
    assert st.assignee is not None
    mine = [c for c in receiver.chats if c["who"] == st.assignee]
    assert mine and mine[0]["title"].startswith(f"New escalation assigned to you: {cid}")
    assert all(cid in c["title"] for c in receiver.chats)  # the low case chose mail only
    rows = [r for r in await outbox(records, cid) if r.medium == "chat"]
    assert rows and all(r.status == "sent" for r in rows)
    assert len(receiver.chats) == len(rows)


def with_chat(policy: Policy, base: str) -> Policy:
    """Everyone gets a chat channel for critical and high cases."""
    departments = {
        key: dept.model_copy(
            update={
                "people": [
                    p.model_copy(
                        update={
                            "channels": [
                                PersonChannel(url=f"{base}/{p.id}", severities=["high", "critical"])
                            ]
                        }
                    )
                    for p in dept.people
                ]
            }
        )
        for key, dept in policy.departments.items()
    }
    return policy.model_copy(update={"departments": departments})


async def test_an_unacknowledged_critical_case_is_paged_until_acknowledged(
    ts_env: WorkflowEnvironment, make_desk: Callable[[WorkflowEnvironment], Desk]
) -> None:
    desk = make_desk(ts_env)
    every = desk.policy.renotify_every["critical"]
    async with desk.worker():
        cid, st = await desk.open_assigned(severity="critical")
        identified = next(e.at for e in st.timeline if e.what == "identified")
        await ts_env.sleep(timedelta(seconds=2 * every + 30))
        st = await desk.api.status(cid)
        pages = [e for e in st.timeline if e.what == "re-notified"]
        assert len(pages) == 2
        # the first a period after the assignment (an activity's real time after identify)
        first = (pages[0].at - identified).total_seconds()
        assert every <= first < every + 2
        assert abs((pages[1].at - pages[0].at).total_seconds() - every) < 1
        await desk.api.send(cid, "acknowledge", {"by": st.assignee})
        await ts_env.sleep(timedelta(seconds=3 * every))
        st = await desk.api.status(cid)
    assert [e for e in st.timeline if e.what == "re-notified"] == pages  # stopped at the ack
    await desk.delivered()
    paged = [m for m in desk.notifier.sent if m.subject.startswith("Still unacknowledged")]
    assert [m.recipient for m in paged] == [st.assignee, st.assignee]
