"""The web app people act through: the desk console (starter/console.py, behind sign-in),
approval links from their mail or chat, the customer's rating and reopen links, and (in
development) the outbox of every message sent.

    escalation-web [--host 127.0.0.1] [--port 8000] [--dev]

`GET /approvals/<token>` shows the request and changes nothing (mail scanners follow links);
`POST` sends the approver's decision as the validated Update, as the token's approver and
no one else (with an OpenID provider configured, only while signed in as that approver). A
tampered, expired or foreign token gets 403 and nothing reaches the case.
Needs $ESCALATION_SECRET and $ESCALATION_WEB_URL (in --dev: the worker's own defaults), and
for the console $ESCALATION_OIDC_ISSUER, $ESCALATION_OIDC_CLIENT_ID and
$ESCALATION_OIDC_CLIENT_SECRET (in --dev on loopback: "sign in as").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from sqlalchemy import select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities import health, logs, tracing
from activities.codec import data_converter
from activities.keys import KeyStore, MasterKeys
from activities.links import ApprovalClaim, InvalidToken, Links, VerdictClaim
from activities.metrics import Metrics
from activities.policy_file import PolicySource
from activities.records import MessageRow, Records
from starter.api import with_proof
from starter.codec_server import CodecServer
from starter.config import Settings, connect
from starter.console import Console
from starter.signin import (
    OidcConfig,
    SignIn,
    console_unavailable,
    is_loopback,
    missing_console_config,
)
from workflows.models import ApprovalRecord, CaseStatus, PendingApproval, workflow_id_for
from workflows.policy import Policy
from workflows.rules import find_person
from workflows.wording import fmt_duration, fmt_money, fmt_when

log = logging.getLogger("escalation_desk.web")

PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
)
_URL = re.compile(r"https?://[^\s<>\"']+")


def linkify(text: str) -> Markup:
    """Escaped text whose http(s) addresses are links (the dev outbox)."""
    out, last = [], 0
    for m in _URL.finditer(text):
        shown = m[0] if len(m[0]) <= 60 else m[0][:57] + "…"
        out += [
            str(escape(text[last : m.start()])),
            f'<a href="{escape(m[0])}">{escape(shown)}</a>',
        ]
        last = m.end()
    return Markup("".join([*out, str(escape(text[last:]))]))


PAGES.globals.update(linkify=linkify, money=lambda a: fmt_money(a.amount, a.currency))
PAGES.filters["when"] = fmt_when
PAGES.filters["duration"] = fmt_duration


def _left(due: datetime, now: datetime) -> str:
    """'12m 30s left' / 'overdue 3m' (the page's script keeps it ticking)."""
    seconds = (due - now).total_seconds()
    return f"{fmt_duration(seconds)} left" if seconds > 0 else f"overdue {fmt_duration(-seconds)}"


PAGES.filters["left"] = _left


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(PAGES.get_template(name).render(**context), status_code=status)


def denied(reason: str) -> HTMLResponse:
    return page("denied.html", 403, title="This link cannot be used", reason=reason)


@dataclass
class Situation:
    """Where an approval request stands, as the case tells it now."""

    case: CaseStatus
    request: PendingApproval | None  # still pending, and this approver may decide it
    outcome: str | None  # what happened instead, for the page
    record: ApprovalRecord | None = None  # the decision, once there is one


def _same_request(at: datetime, claim: ApprovalClaim) -> bool:
    return at == datetime.fromisoformat(claim.requested_at)


def situation(case: CaseStatus, claim: ApprovalClaim) -> Situation:
    pending = case.pending_approval
    if pending is not None and _same_request(pending.requested_at, claim):
        if claim.approver in pending.approvers:
            return Situation(case, pending, None)
        return Situation(case, None, f"{claim.approver} may no longer decide this request.")
    for record in case.approvals:
        if _same_request(record.requested_at, claim):
            by = f" by {record.decided_by}" if record.decided_by else ""
            when = fmt_when(record.decided_at)
            note = f": {record.note}" if record.note else ""
            text = f"This request was {record.decision}{by} at {when}{note}."
            return Situation(case, None, text, record)
    return Situation(case, None, f"This request has moved on; the case is now at {case.stage}.")


def create_app(
    client: Client,
    links: Links,
    records: Records | None = None,
    policy: Callable[[], Policy] | None = None,
    dev: bool = False,
    oidc: OidcConfig | None = None,
    host: str = "127.0.0.1",
    session_seconds: int | None = None,
    keys: KeyStore | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The app; the console is there with a provider (`oidc`), or in `dev` on a loopback
    `host` ("sign in as"), and with the records to list cases from; the codec server with
    the cases' `keys`; `/metrics` with the SDK's too when given this process's `metrics`."""
    app = FastAPI(
        title="Escalation desk",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **tracing.app_options(),
    )
    health.count_requests(app)
    health.add_routes(app, health.Readiness(client, records), metrics)
    tracing.instrument_app(app)
    policy = policy or PolicySource()
    signin = SignIn(
        app,
        policy,
        page,
        links.base_url,
        links.secret,
        oidc,
        dev and is_loopback(host),
        **({"session_seconds": session_seconds} if session_seconds else {}),
    )
    if keys is not None:
        CodecServer(app, keys, signin, oidc, dev and is_loopback(host))
    if signin.enabled and records is not None:
        Console(app, client, records, policy, signin, page, links.secret)
    else:
        log.warning("desk console off: %s", missing_console_config())

        @app.get("/", response_class=HTMLResponse)
        async def no_console() -> HTMLResponse:
            return console_unavailable(page)

    def why(claim: ApprovalClaim, request: PendingApproval | None) -> str:
        p: Policy = policy()
        person = find_person(p, claim.approver)
        if person is None or request is None:
            return ""
        limit = fmt_money(person.approval_limit, p.currency)
        return f"{person.name}, whose approval limit ({limit}) covers this amount"

    async def look(
        token: str, request: Request
    ) -> tuple[ApprovalClaim, Situation] | HTMLResponse | RedirectResponse:
        try:
            claim = links.read_approval(token)
        except InvalidToken as err:
            return denied(str(err).capitalize() + ".")
        if oidc is not None:  # a forwarded link is no use to anyone else
            person = signin.person(request)
            if person is None:
                return signin.to_signin(request)
            if person.id != claim.approver:
                return denied(f"This link is {claim.approver}'s; you are signed in as {person.id}.")
        handle = client.get_workflow_handle(workflow_id_for(claim.case_id))
        try:
            case = await handle.query("status", result_type=CaseStatus)
        except RPCError:
            return page("denied.html", 404, title="Case not found", reason="No such case.")
        return claim, situation(case, claim)

    def show(claim: ApprovalClaim, sit: Situation, **extra: Any) -> HTMLResponse:
        context: dict[str, Any] = {
            "title": f"Approval for case {claim.case_id}",
            "case": sit.case,
            "request": sit.request or sit.record or sit.case.pending_approval,
            "approver": claim.approver,
            "why": why(claim, sit.request),
            "open": sit.request is not None and not extra.get("outcome"),
            "outcome": sit.outcome,
            "outcome_class": "warn",
        }
        return page("approval.html", **(context | extra))

    @app.get("/approvals/{token}", response_class=HTMLResponse)
    async def approval(token: str, request: Request) -> Response:
        found = await look(token, request)
        if isinstance(found, Response):
            return found
        return show(*found)

    @app.post("/approvals/{token}", response_class=HTMLResponse)
    async def decide(
        token: str,
        request: Request,
        decision: str = Form(...),
        note: str = Form(""),
        reason: str = Form(""),
    ) -> Response:
        found = await look(token, request)
        if isinstance(found, Response):
            return found
        claim, sit = found
        if sit.request is None:  # decided already, or moved on: nothing is sent
            return show(claim, sit)
        if decision not in ("approve", "reject"):
            return show(claim, sit, error="decision: choose approve or reject")
        if decision == "reject" and not reason.strip():
            return show(claim, sit, error="reason: a rejection needs a reason")
        payload: dict[str, Any] = {"by": claim.approver, "via": "web"}
        payload.update({"note": note.strip()} if decision == "approve" else {"reason": reason})
        payload = with_proof(payload, links.secret, decision, sit.case)
        handle = client.get_workflow_handle(workflow_id_for(claim.case_id))
        try:
            await handle.execute_update(decision, payload)
        except WorkflowUpdateFailedError as err:
            cause = getattr(err.cause, "message", None) or str(err.cause or err)
            after = await look(token, request)
            if isinstance(after, Response):
                return after
            return show(*after, error=f"Not sent: {cause}")
        after = await look(token, request)
        if isinstance(after, Response):
            return after
        done = "Approved" if decision == "approve" else "Rejected"
        return show(
            after[0],
            Situation(after[1].case, None, None, after[1].record),
            outcome=f"{done} as {claim.approver}. The case has your decision.",
            outcome_class="ok",
        )

    async def verdict(token: str) -> tuple[VerdictClaim, CaseStatus] | HTMLResponse:
        """The claim and the case it answers, or the page to show instead (a bad link, or
        a case that has moved on: nothing is sent then)."""
        try:
            claim = links.read_verdict(token)
        except InvalidToken as err:
            return denied(str(err).capitalize() + ".")
        try:
            case = await client.get_workflow_handle(workflow_id_for(claim.case_id)).query(
                "status", result_type=CaseStatus
            )
        except RPCError:
            return page("denied.html", 404, title="Case not found", reason="No such case.")
        if moved := verdict_state(claim, case):
            return verdict_page(claim, case, outcome=moved, outcome_class="warn")
        return claim, case

    def verdict_page(claim: VerdictClaim, case: CaseStatus, **extra: Any) -> HTMLResponse:
        context: dict[str, Any] = {"title": f"Your case {claim.case_id}", "case": case}
        return page("verdict.html", **(context | extra))

    def verdict_state(claim: VerdictClaim, case: CaseStatus) -> str | None:
        """Why this link can do nothing more, or None."""
        if case.stage != "resolved":
            return f"Your case is {case.stage.replace('_', ' ')} now; this link has done its part."
        if case.resolutions != claim.resolution:
            return "Your case has been resolved again since; please use the latest message."
        return None

    @app.get("/feedback/{token}", response_class=HTMLResponse)
    async def feedback_page(token: str, score: int = 5) -> HTMLResponse:
        found = await verdict(token)
        if isinstance(found, HTMLResponse):
            return found
        claim, case = found
        given = [f for f in case.feedback if f.resolution == claim.resolution]
        if given:
            said = f"You rated this {given[0].score}/5. Thank you!"
            return verdict_page(claim, case, outcome=said, outcome_class="ok")
        return verdict_page(claim, case, form="rating", score=min(max(score, 1), 5))

    @app.post("/feedback/{token}", response_class=HTMLResponse)
    async def feedback_send(
        token: str, score: int = Form(...), comment: str = Form("")
    ) -> HTMLResponse:
        found = await verdict(token)
        if isinstance(found, HTMLResponse):
            return found
        claim, case = found
        payload = {"score": score, "comment": comment.strip()}
        return await send_verdict(claim, case, "customer_feedback", payload, "Thank you!")

    @app.get("/reopen/{token}", response_class=HTMLResponse)
    async def reopen_page(token: str) -> HTMLResponse:
        found = await verdict(token)
        if isinstance(found, HTMLResponse):
            return found
        claim, case = found
        return verdict_page(claim, case, form="reopen")

    @app.post("/reopen/{token}", response_class=HTMLResponse)
    async def reopen_send(token: str, reason: str = Form("")) -> HTMLResponse:
        found = await verdict(token)
        if isinstance(found, HTMLResponse):
            return found
        claim, case = found
        if not reason.strip():
            return verdict_page(claim, case, form="reopen", error="reason: tell us what is wrong")
        payload = {"by": "customer", "reason": reason.strip()}
        done = "Your case is open again: we are on it and will keep you updated."
        return await send_verdict(claim, case, "reopen", payload, done)

    async def send_verdict(
        claim: VerdictClaim, case: CaseStatus, name: str, payload: dict[str, Any], done: str
    ) -> HTMLResponse:
        handle = client.get_workflow_handle(workflow_id_for(claim.case_id))
        try:
            await handle.execute_update(name, payload)
        except WorkflowUpdateFailedError as err:
            cause = getattr(err.cause, "message", None) or str(err.cause or err)
            return verdict_page(claim, case, error=f"Not sent: {cause}")
        except RPCError:
            return verdict_page(claim, case, error="Your case is closed; please contact us.")
        after = await handle.query("status", result_type=CaseStatus)
        return verdict_page(claim, after, outcome=done, outcome_class="ok")

    if dev and records is not None:

        @app.get("/outbox", response_class=HTMLResponse)
        async def outbox(limit: int = 200) -> HTMLResponse:
            async with records.transaction() as s:
                rows = (
                    await s.scalars(
                        select(MessageRow).order_by(MessageRow.id.desc()).limit(min(limit, 1000))
                    )
                ).all()
            return page("outbox.html", title="Outbox", rows=rows)

        @app.get("/outbox/{message_id}/html")
        async def outbox_html(message_id: int) -> Response:
            async with records.transaction() as s:
                row = await s.get(MessageRow, message_id)
            if row is None or not row.html:
                return Response("no such message", status_code=404)
            return HTMLResponse(row.html)

    return app


async def serve(
    client: Client,
    links: Links,
    host: str,
    port: int,
    records: Records | None = None,
    dev: bool = True,
    policy: Callable[[], Policy] | None = None,
    oidc: OidcConfig | None = None,
    session_seconds: int | None = None,
    keys: KeyStore | None = None,
) -> None:
    app = create_app(client, links, records, policy, dev, oidc, host, session_seconds, keys)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    await health.Server(config).serve()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="escalation-web", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--dev", action="store_true", help="also serve /outbox and 'sign in as'; dev secret"
    )
    parser.add_argument("--data-dir", default="data", help="where --dev keeps its secret")
    args = parser.parse_args(argv)
    try:
        logs.configure()
        links = Links.from_env(Path(args.data_dir) if args.dev else None)
        oidc = OidcConfig.from_env()
        masters = MasterKeys.from_env(Path(args.data_dir) if args.dev else None)
    except ValueError as err:
        raise SystemExit(f"configuration error: {err}") from None
    if links is None:
        raise SystemExit(
            "configuration error: ESCALATION_SECRET and ESCALATION_WEB_URL are needed "
            "(or run with --dev)"
        )
    if oidc is None and not (args.dev and is_loopback(args.host)):
        print(f"escalation-web: {missing_console_config()}; serving the links only", flush=True)

    tracing.setup("escalation-web")

    async def run() -> None:
        records = Records.from_url()
        tracing.instrument_records(records)
        keys = KeyStore(records.twin(), masters) if masters else None
        metrics = Metrics(records, PolicySource())
        client = await connect(Settings(), data_converter(keys), metrics.runtime)
        log.info("escalation-web on http://%s:%d", args.host, args.port)
        app = create_app(
            client,
            links,
            records,
            dev=args.dev,
            oidc=oidc,
            host=args.host,
            keys=keys,
            metrics=metrics,
        )
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
        )
        await uvicorn.Server(config).serve()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
