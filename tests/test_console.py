"""The desk console, signed in through a real OpenID provider (oidc-provider-mock on
127.0.0.1), in Debian's Chromium: My cases, the link from the assignment mail, acknowledge
and resolve, a supervisor's approval from /desk, acknowledging a storm at once; and every
refusal: a stranger, a forged form, an expired session, a case of another department, a
forwarded approval link, an action the case refuses."""

from __future__ import annotations

import asyncio
import base64
import html
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from playwright.async_api import Browser, Page
from sqlalchemy import select
from temporalio.api.common.v1 import Payload
from temporalio.testing import WorkflowEnvironment

from activities.codec import CaseCodec
from activities.keys import KeyStore, MasterKeys
from activities.links import Links
from activities.records import Records, TimelineRow
from starter.signin import OidcConfig
from starter.web import serve
from workflows.models import CaseStatus
from workflows.policy import Policy

from .conftest import TEST_SECRET, Desk, until
from .oidc_provider import oidc_provider
from .receivers import Mailbox, free_port, web_up
from .test_web import SHOTS, browser, history_length, web_desk

__all__ = ["browser"]  # the browser fixture, shared with the approval-link tests

USERS = [
    {"sub": "tom", "email": "tom.becker@desk.example", "email_verified": True},
    {"sub": "lee", "email": "jordan.lee@desk.example", "email_verified": True},
    {"sub": "raj", "email": "raj.patel@desk.example", "email_verified": True},
    {"sub": "stranger", "email": "stranger@elsewhere.example", "email_verified": True},
    {"sub": "unverified", "email": "ines.costa@desk.example", "email_verified": False},
]
PARCEL = {"category": "delivery", "subject": "Parcel never arrived", "requested_action": None}
REFUND = {"kind": "refund", "amount": 250, "currency": "USD"}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcConfig]:
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    with oidc_provider(free_port(), USERS, log) as url:
        yield OidcConfig(url, "escalation-desk", "desk-client-secret")


@pytest.fixture
async def console(
    dev_env: WorkflowEnvironment, records: Records, policy: Policy, issuer: OidcConfig
) -> AsyncIterator[tuple[Desk, Mailbox, Links, str]]:
    async with web_desk(dev_env, records, policy, issuer) as (desk, box, links, port):
        base = f"http://127.0.0.1:{port}"
        await until(lambda: web_up(base), "the web app", within=15)
        yield desk, box, links, base


async def sign_in(http: httpx.AsyncClient, base: str, sub: str, next: str = "/") -> httpx.Response:
    """Through the provider's login form, as a browser would: the desk's redirect, the
    provider's form (pick `sub`), the callback."""
    to_provider = await http.get(f"{base}/signin", params={"next": next})
    assert to_provider.status_code in (302, 303), to_provider.text
    back = await http.post(to_provider.headers["location"], data={"sub": sub})
    assert back.status_code in (302, 303), back.text
    signed = await http.get(back.headers["location"])
    if signed.status_code == 303:  # in: on to the page asked for
        return await http.get(base + signed.headers["location"])
    return signed


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found[1]


async def browser_sign_in(page: Page, url: str, sub: str) -> None:
    await page.goto(url)  # to sign-in, to the provider's form
    await page.click(f"button[value='{sub}']")
    await page.wait_for_url(re.compile(re.escape(url.split("?")[0]) + "$"))


async def mail_to(box: Mailbox, address: str, subject_start: str, case_id: str) -> str:
    async def found() -> str | None:
        for m in box.to(address):
            subject = str(m["Subject"])
            if subject.startswith(subject_start) and case_id in subject:
                body = m.get_body(("plain",))
                return body.get_content() if body else None
        return None

    text: str = await until(found, f"a mail to {address}: {subject_start}", within=30)
    return text


def line(status: CaseStatus, what: str) -> tuple[str | None, str | None, str]:
    entry = next(e for e in status.timeline if e.what == what)
    return entry.by, entry.via, entry.details


async def recorded(records: Records, case_id: str, what: str) -> tuple[str | None, str | None]:
    async with records.transaction() as s:
        row = await s.scalar(
            select(TimelineRow).where(TimelineRow.case_id == case_id, TimelineRow.what == what)
        )
    assert row is not None, f"no {what} line in the records of {case_id}"
    return row.by, row.via


async def shoot(page: Page, name: str) -> None:
    """The page at desktop width, then at a phone's."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})


async def test_the_assignee_signs_in_and_works_the_case_from_the_mail(
    console: tuple[Desk, Mailbox, Links, str], records: Records, browser: Browser
) -> None:
    desk, box, _links, base = console
    cid, st = await desk.open_assigned(severity="high", **PARCEL)
    assert st.assignee == "log-tom"
    mail = await mail_to(box, "tom.becker@desk.example", "New escalation assigned", cid)
    assert f"{base}/cases/{cid}" in mail and "escalate acknowledge" not in mail

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await browser_sign_in(page, f"{base}/", "tom")
    row = page.locator(f"#cases tr[data-case='{cid}']")
    assert await row.count() == 1
    assert "Parcel never arrived" in await row.inner_text()
    countdown = await row.locator("[data-due]").inner_text()
    assert re.fullmatch(r"\d+m \d+s left", countdown), countdown  # 1h to acknowledge
    assert "(1)" in await page.inner_text("#tab-unacknowledged")
    await shoot(page, "console-my-cases")

    await page.goto(f"{base}/cases/{cid}")  # the mail's link: one click to acknowledge
    await shoot(page, "console-case")
    await page.click("#form-acknowledge button")
    await page.wait_for_selector("#flash")
    assert "acknowledged" in await page.inner_text("#flash")
    assert "(acknowledged)" in await page.inner_text("main")
    status = await desk.api.status(cid)
    assert status.acknowledged
    assert line(status, "acknowledged") == ("log-tom", "web", "(via the desk console)")
    assert await recorded(records, cid, "acknowledged") == ("log-tom", "web")

    await page.fill("#form-resolve textarea[name=resolution]", "Carrier re-sent the parcel")
    await page.select_option("#form-resolve select[name=root_cause]", "third_party")
    await page.click("#form-resolve button")
    await page.wait_for_selector("#flash")
    assert "resolved" in await page.inner_text("#flash")
    status = await desk.api.status(cid)
    assert (status.resolution, status.root_cause) == ("Carrier re-sent the parcel", "third_party")
    by, via, details = line(status, "resolved")
    assert (by, via) == ("log-tom", "web") and details.endswith("(via the desk console)")
    assert await recorded(records, cid, "resolved") == ("log-tom", "web")
    assert await page.query_selector("#form-resolve") is None  # nothing more to do


async def test_a_supervisor_approves_from_the_desk(
    console: tuple[Desk, Mailbox, Links, str], browser: Browser
) -> None:
    desk, _box, _links, base = console
    cid, st = await desk.open_assigned(severity="high")
    await desk.api.send(cid, "acknowledge", {"by": st.assignee})
    await desk.api.send(cid, "request_approval", {"by": st.assignee, "action": REFUND})

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await browser_sign_in(page, f"{base}/desk", "lee")
    request = page.locator(f"#approvals tr[data-case='{cid}']")
    assert await request.count() == 1
    assert await page.locator(f"#desk-cases tr[data-case='{cid}']").count() == 1
    await shoot(page, "console-desk")
    await request.locator("button[name=approve]").click()
    await page.wait_for_selector("#flash")
    assert "approved" in await page.inner_text("#flash")
    assert await page.locator(f"#approvals tr[data-case='{cid}']").count() == 0
    status = await desk.api.status(cid)
    assert [(a.decision, a.decided_by) for a in status.approvals] == [("approved", "sup-lee")]
    by, via, details = line(status, "approval approved")
    assert (by, via) == ("sup-lee", "web") and details.endswith("(via the desk console)")


async def test_acknowledge_a_storm_at_once(
    console: tuple[Desk, Mailbox, Links, str], browser: Browser
) -> None:
    desk, _box, _links, base = console
    tom = [(await desk.open_assigned(severity="high", **PARCEL))[0] for _ in range(2)]
    others, _ = await desk.open_assigned(severity="high")  # a billing case: not tom's
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await browser_sign_in(page, f"{base}/", "tom")
    assert await page.locator(f"#cases tr[data-case='{others}']").count() == 0
    tom.append((await desk.open_assigned(severity="high", **PARCEL))[0])
    # the page shows the new case by itself, without a reload
    await page.wait_for_selector(f"#cases tr[data-case='{tom[-1]}']", timeout=15_000)
    for cid in tom:
        await page.check(f"#cases tr[data-case='{cid}'] input[type=checkbox]")
    await page.click("#ack-selected")
    await page.wait_for_selector("#flash")
    flash = await page.inner_text("#flash")
    assert flash.startswith("Acknowledged 3:"), flash
    for cid in tom:
        status = await desk.api.status(cid)
        assert status.acknowledged and line(status, "acknowledged")[:2] == ("log-tom", "web")
    assert not (await desk.api.status(others)).acknowledged  # someone else's: untouched
    assert "(0)" in await page.inner_text("#tab-unacknowledged")


async def test_refusals(
    console: tuple[Desk, Mailbox, Links, str], records: Records, policy: Policy, issuer: OidcConfig
) -> None:
    desk, box, links, base = console
    parcel, _ = await desk.open_assigned(severity="high", **PARCEL)
    billing, st = await desk.open_assigned(severity="high")
    await desk.api.send(billing, "acknowledge", {"by": st.assignee})
    await desk.api.send(billing, "request_approval", {"by": st.assignee, "action": REFUND})

    async with httpx.AsyncClient() as http:  # an email not in the policy
        refused = await sign_in(http, base, "stranger")
        assert refused.status_code == 403
        assert (
            "Signed in as stranger@elsewhere.example, who is not a person of the desk's policy"
            in html.unescape(refused.text)
        )
        assert (await http.get(f"{base}/")).status_code == 303  # and is not signed in
    async with httpx.AsyncClient() as http:
        unverified = await sign_in(http, base, "unverified")
        assert unverified.status_code == 403 and "not verified" in unverified.text

    async with httpx.AsyncClient() as http:  # tom: a forged form, a refused action
        home = await sign_in(http, base, "tom")
        assert home.status_code == 200 and "My cases" in home.text
        page = await http.get(f"{base}/cases/{parcel}")
        token = csrf_of(page.text)
        before = await history_length(desk, parcel)
        forged = await http.post(f"{base}/cases/{parcel}", data={"action": "acknowledge"})
        assert forged.status_code == 403 and "security token" in forged.text
        wrong = {"action": "acknowledge", "csrf": token[::-1]}
        assert (await http.post(f"{base}/cases/{parcel}", data=wrong)).status_code == 403
        bulk = await http.post(f"{base}/acknowledge", data={"case_id": parcel})
        assert bulk.status_code == 403
        assert await history_length(desk, parcel) == before
        assert not (await desk.api.status(parcel)).acknowledged

        small = {
            "action": "request_approval",
            "csrf": token,
            "kind": "refund",
            "amount": "50",
            "currency": "USD",
        }
        said = await http.post(f"{base}/cases/{parcel}", data=small)
        assert said.status_code == 409
        assert "within log-tom's own authority" in html.unescape(said.text), said.text
        assert await history_length(desk, parcel) == before

        # a forwarded approval link, opened while signed in as someone else
        mail = await mail_to(box, "jordan.lee@desk.example", "Approval needed", billing)
        link = re.search(r"http://127\.0\.0\.1:\d+/approvals/\S+", mail)
        assert link is not None, mail
        before = await history_length(desk, billing)
        looked = await http.get(link[0])
        assert looked.status_code == 403 and "sup-lee" in looked.text
        used = await http.post(link[0], data={"decision": "approve", "note": "ok"})
        assert used.status_code == 403
        assert await history_length(desk, billing) == before
        assert (await desk.api.status(billing)).pending_approval is not None

    async with httpx.AsyncClient() as http:  # the link without a session: sign in first
        first = await http.get(link[0])
        assert first.status_code == 303 and first.headers["location"].startswith("/signin")

    async with httpx.AsyncClient() as http:  # a technical specialist and a billing case
        await sign_in(http, base, "raj")
        hidden = await http.get(f"{base}/cases/{billing}")
        missing = await http.get(f"{base}/cases/NO-SUCH-CASE")
        assert hidden.status_code == missing.status_code == 404
        assert "Case not found" in hidden.text and "Case not found" in missing.text
        token = csrf_of((await http.get(f"{base}/")).text)
        before = await history_length(desk, billing)
        sneaky = {"action": "approve", "csrf": token}
        assert (await http.post(f"{base}/cases/{billing}", data=sneaky)).status_code == 404
        assert await history_length(desk, billing) == before

    # an expired session is sent to sign-in (a web app whose sessions last seconds)
    port = free_port()
    short = Links(links.secret, f"http://127.0.0.1:{port}")
    web = asyncio.create_task(
        serve(
            desk.client,
            short,
            "127.0.0.1",
            port,
            records,
            policy=lambda: policy,
            oidc=issuer,
            session_seconds=3,  # room for the sign-in itself on a busy machine
        )
    )
    try:
        other = f"http://127.0.0.1:{port}"
        await until(lambda: web_up(other), "the second web app", within=15)
        async with httpx.AsyncClient() as http:
            assert (await sign_in(http, other, "tom")).status_code == 200
            await asyncio.sleep(3.5)
            expired = await http.get(f"{other}/cases/{parcel}")
            assert expired.status_code == 303
            assert expired.headers["location"] == f"/signin?next=/cases/{parcel}"
    finally:
        web.cancel()
        await asyncio.gather(web, return_exceptions=True)


async def test_without_a_provider_the_console_says_what_is_missing(
    dev_env: WorkflowEnvironment, records: Records, policy: Policy
) -> None:
    port = free_port()
    links = Links(TEST_SECRET, f"http://127.0.0.1:{port}")
    web = asyncio.create_task(
        serve(dev_env.client, links, "127.0.0.1", port, records, dev=False, policy=lambda: policy)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: web_up(base), "the web app", within=15)
        async with httpx.AsyncClient() as http:
            home = await http.get(f"{base}/")
            assert home.status_code == 503
            for variable in (
                "ESCALATION_OIDC_ISSUER",
                "ESCALATION_OIDC_CLIENT_ID",
                "ESCALATION_OIDC_CLIENT_SECRET",
            ):
                assert variable in home.text
            assert (await http.get(f"{base}/signin")).status_code == 503
            as_someone = await http.post(f"{base}/signin/as", data={"person": "exec-holt"})
            assert as_someone.status_code == 404
            assert (await http.get(f"{base}/approvals/not-a-token")).status_code == 403
    finally:
        web.cancel()
        await asyncio.gather(web, return_exceptions=True)


async def provider_token(issuer: OidcConfig, sub: str) -> str:
    """An access token from the provider, as a script of an operator gets one (the code flow
    through the provider's own form)."""
    callback = "http://127.0.0.1:9/callback"  # never called: the code is read off the redirect
    async with httpx.AsyncClient() as http:
        form = await http.get(
            f"{issuer.issuer}/oauth2/authorize",
            params={
                "client_id": issuer.client_id,
                "redirect_uri": callback,
                "response_type": "code",
                "scope": "openid email",
                "state": "s",
                "nonce": "n",
            },
        )
        back = await http.post(str(form.url), data={"sub": sub})
        code = httpx.URL(back.headers["location"]).params["code"]
        token = await http.post(
            f"{issuer.issuer}/oauth2/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": callback},
            auth=(issuer.client_id, issuer.client_secret),
        )
    return str(token.json()["access_token"])


async def test_the_codec_server_opens_payloads_for_people_of_the_desk_only(
    dev_env: WorkflowEnvironment, records: Records, policy: Policy, issuer: OidcConfig
) -> None:
    keys = KeyStore(records, MasterKeys(secrets.token_bytes(32)))
    codec = CaseCodec(keys, "default", "case-CODEC-1")
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"Ada"')])
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                "data": base64.b64encode(sealed.data).decode(),
            }
        ]
    }
    port = free_port()
    links = Links(TEST_SECRET, f"http://127.0.0.1:{port}")
    web = asyncio.create_task(
        serve(
            dev_env.client,
            links,
            "127.0.0.1",
            port,
            records,
            False,
            lambda: policy,
            issuer,
            keys=keys,
        )
    )
    base = f"http://127.0.0.1:{port}"

    def opened(answer: httpx.Response) -> bytes:
        assert answer.status_code == 200, answer.text
        return base64.b64decode(answer.json()["payloads"][0]["data"])

    try:
        await until(lambda: web_up(base), "the web app", within=15)
        decode = f"{base}/codec/decode"
        async with httpx.AsyncClient() as http:
            nobody = await http.post(decode, json=body)
            assert nobody.status_code == 401 and "Ada" not in nobody.text
            await sign_in(http, base, "tom")  # the UI's "include credentials": the session
            assert opened(await http.post(decode, json=body)) == b'"Ada"'
        async with httpx.AsyncClient() as http:
            lee = {"Authorization": f"Bearer {await provider_token(issuer, 'lee')}"}
            assert opened(await http.post(decode, json=body, headers=lee)) == b'"Ada"'
            stranger = {"Authorization": f"Bearer {await provider_token(issuer, 'stranger')}"}
            refused = await http.post(decode, json=body, headers=stranger)
            assert refused.status_code == 403 and "Ada" not in refused.text
    finally:
        web.cancel()
        await asyncio.gather(web, return_exceptions=True)
