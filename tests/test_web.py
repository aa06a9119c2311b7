"""Approvals from the inbox, in a real browser (Debian's Chromium through Playwright): the
link in the mail a supervisor received, the page, the decision, and what cannot be done
with a link that is not theirs. The case runs on the real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright
from temporalio.testing import WorkflowEnvironment

from activities.channels import Channels, MailSender, SmtpConfig
from activities.links import Links
from activities.records import Records
from starter.signin import OidcConfig
from starter.web import serve
from workflows.policy import Policy

from .conftest import TEST_SECRET, Desk, until
from .receivers import Mailbox, free_port, smtp_server

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).parent.parent / "data" / "screenshots"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def history_length(desk: Desk, cid: str) -> int:
    return len((await desk.api.handle(cid).fetch_history()).events)


async def test_approve_from_the_mail_in_a_browser(
    dev_env: WorkflowEnvironment, records: Records, policy: Policy, browser: Browser
) -> None:
    async with web_desk(dev_env, records, policy) as (desk, box, links, port):
        await _approve_in_browser(desk, box, browser, links, port)


@contextlib.asynccontextmanager
async def web_desk(
    env: WorkflowEnvironment,
    records: Records,
    policy: Policy,
    oidc: OidcConfig | None = None,
    session_seconds: int | None = None,
) -> AsyncIterator[tuple[Desk, Mailbox, Links, int]]:
    """A desk mailing through a local SMTP server, with the web app its links point to
    (signing in through `oidc`, else the development "sign in as")."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    links = Links(TEST_SECRET, f"http://127.0.0.1:{port}")
    box = Mailbox()
    with smtp_server(box) as smtp:
        sender = MailSender(SmtpConfig.parse(f"smtp://127.0.0.1:{smtp.port}", "desk@desk.example"))
        desk = Desk(env, records, policy, Channels({"mail": sender}), links)
        web = asyncio.create_task(
            serve(
                desk.client,
                links,
                "127.0.0.1",
                port,
                records,
                policy=lambda: policy,
                oidc=oidc,
                session_seconds=session_seconds,
            )
        )
        try:
            async with desk.worker():
                yield desk, box, links, port
        finally:
            web.cancel()
            await asyncio.gather(web, return_exceptions=True)


async def _approve_in_browser(
    desk: Desk, box: Mailbox, browser: Browser, links: Links, port: int
) -> None:
    customer = {"id": "cust-w", "name": "Ada <b>Lopez</b>", "email": "ada@example.com"}
    cid, st = await desk.open_assigned(severity="high", customer=customer)
    await desk.api.send(cid, "acknowledge", {"by": st.assignee})
    action = {"kind": "refund", "amount": 250, "currency": "USD"}
    await desk.api.send(cid, "request_approval", {"by": st.assignee, "action": action})

    def approval_mail() -> str | None:
        for m in box.to("jordan.lee@desk.example"):
            if str(m["Subject"]).startswith("Approval needed"):
                body = m.get_body(("plain",))
                return body.get_content() if body else None
        return None

    async def mailed() -> str | None:
        return approval_mail()

    text = await until(mailed, "the approval mail to sup-lee", within=30)
    url = re.search(r"http://127\.0\.0\.1:\d+/approvals/\S+", text)
    assert url is not None, text
    link = url[0]

    page = await browser.new_page()
    before = await history_length(desk, cid)
    response = await page.goto(link)
    assert response is not None and response.status == 200
    await page.screenshot(path=str(SHOTS / "approval-open.png"), full_page=True)
    content = await page.content()
    assert cid in content and "Ada &lt;b&gt;Lopez&lt;/b&gt;" in content
    assert "refund 250.00 USD" in content and str(st.assignee) in content
    assert "Jordan Lee, whose approval limit" in content
    assert await history_length(desk, cid) == before  # looking changes nothing

    await page.fill("#note", "duplicate charge confirmed")
    await page.click("#approve-form button")
    await page.wait_for_selector("#outcome, #error", timeout=15000)
    assert await page.query_selector("#error") is None, await page.inner_text("main")
    outcome = await page.inner_text("#outcome")
    assert outcome.startswith("Approved as sup-lee")
    await page.screenshot(path=str(SHOTS / "approval-done.png"), full_page=True)
    status = await desk.api.status(cid)
    assert status.pending_approval is None
    assert [(a.decision, a.decided_by, a.note) for a in status.approvals] == [
        ("approved", "sup-lee", "duplicate charge confirmed")
    ]
    line = next(e for e in status.timeline if e.what == "approval approved")
    assert line.by == "sup-lee" and line.details.endswith("(via the desk console)")

    # a second use: shows what happened, sends nothing
    after = await history_length(desk, cid)
    await page.goto(link)
    assert "This request was approved by sup-lee" in (await page.inner_text("#outcome"))
    assert await page.query_selector("#approve-form") is None
    async with httpx.AsyncClient() as http:
        again = await http.post(link, data={"decision": "reject", "reason": "changed my mind"})
        assert again.status_code == 200 and "was approved by sup-lee" in again.text
        # one character changed: 403, and nothing reaches the case
        token = link.rsplit("/", 1)[1]
        i = len(token) // 2
        tampered = (
            link[: -len(token)] + token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        )
        for method in ("get", "post"):
            bad = await http.request(method, tampered, data={"decision": "approve"})
            assert bad.status_code == 403
        claim = links.read_approval(token)  # the same claim, signed with another secret
        foreign = Links("another-secret-0123456789", links.base_url).approval_url(claim)
        assert (await http.get(foreign)).status_code == 403
    response = await page.goto(tampered)
    assert response is not None and response.status == 403
    await page.screenshot(path=str(SHOTS / "approval-tampered.png"), full_page=True)
    assert await history_length(desk, cid) == after

    # the dev outbox: every message, newest first, links clickable
    response = await page.goto(f"http://127.0.0.1:{port}/outbox")
    assert response is not None and response.status == 200
    await page.screenshot(path=str(SHOTS / "outbox.png"), full_page=True)
    anchors = await page.eval_on_selector_all(
        "a[href*='/approvals/']", "els => els.map(e => e.href)"
    )
    assert link in anchors


async def test_the_customer_rates_and_reopens_from_the_resolution_mail(
    dev_env: WorkflowEnvironment, records: Records, windowed_policy: Policy, browser: Browser
) -> None:
    async with web_desk(dev_env, records, windowed_policy) as (desk, box, _links, _port):
        await _rate_and_reopen(desk, box, browser)


async def _rate_and_reopen(desk: Desk, box: Mailbox, browser: Browser) -> None:
    cid, st = await desk.open_assigned(severity="medium")
    await desk.api.send(cid, "acknowledge", {"by": st.assignee})
    await desk.api.send(cid, "resolve", {"by": st.assignee, "resolution": "Refunded"})

    async def resolution_mail() -> str | None:
        for m in box.to("ada@example.com"):
            if str(m["Subject"]).endswith("is resolved"):
                body = m.get_body(("plain",))
                return body.get_content() if body else None
        return None

    text = await until(resolution_mail, "the resolution mail", within=30)
    rate_4 = re.search(r"http://\S+/feedback/\S+\?score=4", text)
    reopen = re.search(r"http://\S+/reopen/\S+", text)
    assert rate_4 is not None and reopen is not None, text

    page = await browser.new_page()
    before = await history_length(desk, cid)
    await page.goto(rate_4[0])
    assert await page.is_checked("input[name=score][value='4']")
    assert await history_length(desk, cid) == before  # a mail scanner's visit rates nothing
    await page.screenshot(path=str(SHOTS / "rating.png"), full_page=True)
    await page.fill("#comment", "Quick and polite")
    await page.click("#rating-form button")
    await page.wait_for_selector("#outcome")
    assert "Thank you" in await page.inner_text("#outcome")
    status = await desk.api.status(cid)
    assert [(f.score, f.comment) for f in status.feedback] == [(4, "Quick and polite")]
    await page.goto(rate_4[0])  # a second visit: already rated, nothing sent
    assert "You rated this 4/5" in await page.inner_text("#outcome")

    await page.goto(reopen[0])
    await page.fill("#reason", "I was charged again this morning")
    await page.click("#reopen-form button")
    await page.wait_for_selector("#outcome")
    assert "open again" in await page.inner_text("#outcome")
    await page.screenshot(path=str(SHOTS / "reopened.png"), full_page=True)
    again = await desk.settled(cid)
    assert [r.by for r in again.reopens] == ["customer"] and again.assignee == st.assignee
    line = next(e for e in again.timeline if e.what == "reopened")
    assert line.details.startswith("I was charged again this morning")
