"""The desk console: the signed-in pages the people who work cases act from.

`/` my cases, `/desk` a supervisor's tiers and approvals, `/cases/<case_id>` one case with
the actions this person may take now. Lists come from the records (one indexed query, with
the case's subject and customer, which the search attributes must not carry); a case page
asks the case itself (`status`, and `actions` for the buttons: the case's own decisions, not
a second permission table). Every action reaches the case as the signed-in person's policy
id with `via: "web"`; a refusal from the case is shown word for word.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import Select, select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.keys import erased_at
from activities.records import AssignmentRow, CaseRow, MessageRow, Records
from starter.api import with_proof
from starter.signin import Page, SignIn, csrf_ok, csrf_token, forbidden_form, safe_next
from workflows.messages import MESSAGES
from workflows.models import CaseStatus, MessageResult, describe_validation_error, workflow_id_for
from workflows.policy import Person, Policy
from workflows.wording import fmt_when

OPEN_STAGES = ("assign", "resolve")
MY_STAGES = ("assign", "resolve", "resolved")
TABS = {
    "unacknowledged": "Unacknowledged",
    "working": "Working",
    "waiting": "Waiting on customer",
    "reopen": "In the reopen window",
}
LIST_LIMIT = 200  # rows a list shows, most urgent first; the count says how many there are


# --- who sees what -------------------------------------------------------------------------


def is_executive(policy: Policy, person: Person) -> bool:
    return any(e.id == person.id for e in policy.executives)


def department_of(policy: Policy, person: Person) -> str | None:
    for key, dept in policy.departments.items():
        if any(p.id == person.id for p in dept.people):
            return key
    return None


def may_see(
    policy: Policy, person: Person, department: str | None, tier: int | None, involved: bool
) -> bool:
    """The cases of the departments and tiers a person works in (a supervisor's tier covers
    the tiers below it; executives cover all), and any case they have worked on or decide."""
    if involved or is_executive(policy, person):
        return True
    return department_of(policy, person) == department and person.tier >= (tier or 0)


def supervised(policy: Policy, person: Person) -> tuple[str | None, int] | None:
    """What a person's desk covers: (their department, or None for every department; the
    highest tier), or None when they supervise no one (the first desk tier)."""
    if is_executive(policy, person):
        return None, person.tier
    if person.tier <= policy.tiers[0].level:
        return None
    return department_of(policy, person), person.tier


# --- what a row shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: CaseRow
    tab: str
    due: datetime | None  # the next deadline (None: paused, or nothing due)
    due_what: str

    @property
    def marked(self) -> str:
        if self.case.sla_breached or self.case.breaches:
            return "breached"
        return "warned" if self.case.warned else ""


def row(case: Any) -> Row:
    """A case (or its CLOCK_COLUMNS) as a list shows it: its tab and its next deadline."""
    if case.stage == "resolved":
        return Row(case, "reopen", case.reopen_until, "reopen window closes")
    tab = "waiting" if case.paused else "working" if case.acknowledged else "unacknowledged"
    if case.paused:
        return Row(case, tab, None, "paused")
    clocks = [
        (case.ack_by if not case.acknowledged else None, "acknowledge"),
        (case.resolve_by, "resolve"),
        (case.approval_due_by, "approval"),
    ]
    due = [(at, what) for at, what in clocks if at is not None]
    if not due:
        return Row(case, tab, None, "being assigned" if case.stage == "assign" else "")
    at, what = min(due, key=lambda d: d[0])
    return Row(case, tab, at, what)


# what `row` reads of a case: enough to rank a list without loading every case whole
CLOCK_COLUMNS = (
    CaseRow.case_id,
    CaseRow.stage,
    CaseRow.paused,
    CaseRow.acknowledged,
    CaseRow.ack_by,
    CaseRow.resolve_by,
    CaseRow.approval_due_by,
    CaseRow.reopen_until,
)


def urgency(r: Row) -> tuple[int, datetime]:
    far = datetime.max.replace(tzinfo=UTC)
    return (0 if r.tab == "unacknowledged" else 1, r.due or far)


# --- the pages -----------------------------------------------------------------------------


class Console:
    def __init__(
        self,
        app: FastAPI,
        client: Client,
        records: Records,
        policy: Callable[[], Policy],
        signin: SignIn,
        page: Page,
        secret: str,
    ) -> None:
        self.client, self.records, self.policy = client, records, policy
        self.signin, self.page = signin, page
        self.secret = secret  # signs each decision's proof (workflows/proofs.py)
        self._routes(app)

    def render(self, request: Request, person: Person, name: str, **context: Any) -> HTMLResponse:
        status = context.pop("status_code", 200)
        return self.page(
            name,
            status,
            me=person,
            csrf=csrf_token(request),
            flash=request.session.pop("flash", None),
            now=datetime.now(UTC),
            wide=True,
            **context,
        )

    async def rows(self, query: Select[Any], limit: int) -> tuple[list[Row], int]:
        """The `limit` most urgent of the cases `query` selects, and how many it selects. The
        ranking reads the clock columns alone; only the rows shown are loaded whole (a full
        desk is thousands of open cases: whole rows for all of them were most of a page)."""
        async with self.records.transaction() as s:
            clocks = (await s.execute(query.with_only_columns(*CLOCK_COLUMNS))).all()
            ranked = sorted((row(c) for c in clocks), key=urgency)[:limit]
            ids = [r.case.case_id for r in ranked]
            cases = {
                c.case_id: c
                for c in (await s.scalars(select(CaseRow).where(CaseRow.case_id.in_(ids)))).all()
            }
        shown = [replace(r, case=cases[r.case.case_id]) for r in ranked if r.case.case_id in cases]
        return shown, len(clocks)

    def not_found(self, request: Request, person: Person) -> HTMLResponse:
        return self.render(
            request,
            person,
            "denied.html",
            status_code=404,
            title="Case not found",
            reason="No such case, or not one of yours.",
        )

    async def viewing(
        self, request: Request, case_id: str
    ) -> tuple[Person, dict[str, Any]] | Response:
        """Who asks and what they may see of the case, or the page to show instead (sign in
        first; 404 for a case that is not theirs to see, as for one that does not exist)."""
        me = self.signin.person(request)
        if me is None:
            return self.signin.to_signin(request)
        view = await self.case_view(me, case_id)
        if view is None:
            return self.not_found(request, me)
        if "erased" in view:  # its key is destroyed: nothing of it can be read any more
            return self.render(
                request,
                me,
                "denied.html",
                status_code=410,
                title=f"Case {case_id}: data erased",
                reason=f"This case's data was erased at {fmt_when(view['erased'])}.",
                hint="The desk report still counts it; nothing personal remains.",
            )
        return me, view

    async def case_view(self, person: Person, case_id: str) -> dict[str, Any] | None:
        """Everything the case page shows, or None when the person may not see the case."""
        handle = self.client.get_workflow_handle(workflow_id_for(case_id))
        try:
            status, actions = await asyncio.gather(
                handle.query("status", result_type=CaseStatus),
                handle.query("actions", person.id, result_type=list[str]),
            )
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return None
            raise
        except Exception:
            when = await erased_at(self.records, workflow_id_for(case_id))
            if when is None:
                raise
            return {"erased": when}
        async with self.records.transaction() as s:
            worked = await s.scalar(
                select(AssignmentRow.id)
                .where(AssignmentRow.case_id == case_id, AssignmentRow.person_id == person.id)
                .limit(1)
            )
            messages = (
                await s.scalars(
                    select(MessageRow)
                    .where(MessageRow.case_id == case_id)
                    .order_by(MessageRow.id.desc())
                    .limit(200)
                )
            ).all()
        pending = status.pending_approval
        involved = bool(
            worked
            or status.assignee == person.id
            or (pending and person.id in pending.approvers)
            or any(e.by == person.id for e in status.timeline)
        )
        policy = self.policy()
        if not may_see(policy, person, status.department, status.tier, involved):
            return None
        return {
            "case": status,
            "actions": actions,
            "messages": messages,
            "raised": raised_because(status),
            "policy": policy,
            "departments": [d for d in policy.departments if d != status.department],
        }

    def _routes(self, app: FastAPI) -> None:
        signin = self.signin

        @app.get("/", response_class=HTMLResponse)
        async def my_cases(request: Request, tab: str = "", limit: int = LIST_LIMIT) -> Response:
            me = signin.person(request)
            if me is None:
                return signin.to_signin(request)
            query = select(CaseRow).where(
                CaseRow.assignee == me.id,
                CaseRow.closed_at.is_(None),
                CaseRow.stage.in_(MY_STAGES),
            )
            rows, _ = await self.rows(query, 10_000)
            counts = tab_counts(rows)
            shown = [r for r in rows if r.tab == tab] if tab in TABS else rows
            return self.render(
                request,
                me,
                "my_cases.html",
                title="My cases",
                rows=shown[: min(limit, 2000)],
                total=len(shown),
                tab=tab if tab in TABS else "",
                tabs=TABS,
                counts=counts,
                all_count=len(rows),
            )

        @app.get("/desk", response_class=HTMLResponse)
        async def desk(
            request: Request,
            department: str = "",
            tier: str = "",
            severity: str = "",
            stage: str = "",
            limit: int = LIST_LIMIT,
        ) -> Response:
            me = signin.person(request)
            if me is None:
                return signin.to_signin(request)
            policy = self.policy()
            scope = supervised(policy, me)
            rows: list[Row] = []
            total = 0
            if scope is not None:
                query = select(CaseRow).where(
                    CaseRow.closed_at.is_(None), CaseRow.stage.in_(OPEN_STAGES)
                )
                if scope[0] is not None:
                    query = query.where(CaseRow.department == scope[0])
                query = query.where(CaseRow.tier <= scope[1])
                if department:
                    query = query.where(CaseRow.department == department)
                if tier.isdigit():
                    query = query.where(CaseRow.tier == int(tier))
                if severity:
                    query = query.where(CaseRow.severity == severity)
                if stage:
                    query = query.where(CaseRow.stage == stage)
                rows, total = await self.rows(query, min(limit, 2000))
                rows.sort(key=lambda r: r.due or datetime.max.replace(tzinfo=UTC))
            approvals, _ = await self.rows(
                select(CaseRow).where(
                    CaseRow.closed_at.is_(None), CaseRow.approvers.like(f"%,{me.id},%")
                ),
                500,
            )
            return self.render(
                request,
                me,
                "desk.html",
                title="Desk",
                rows=rows,
                total=total,
                approvals=approvals,
                supervises=scope is not None,
                filters={
                    "department": department,
                    "tier": tier,
                    "severity": severity,
                    "stage": stage,
                },
                departments=policy.departments,
                tiers=[t.level for t in policy.tiers],
            )

        @app.get("/cases/{case_id}", response_class=HTMLResponse)
        async def case_page(request: Request, case_id: str) -> Response:
            seen = await self.viewing(request, case_id)
            if isinstance(seen, Response):
                return seen
            me, view = seen
            return self.render(request, me, "case.html", title=f"Case {case_id}", **view)

        @app.post("/cases/{case_id}", response_class=HTMLResponse)
        async def act(request: Request, case_id: str) -> Response:
            form = await request.form()
            fields = {k: str(v) for k, v in form.items()}
            if not csrf_ok(request, fields.get("csrf")):
                return forbidden_form(self.page)
            seen = await self.viewing(request, case_id)
            if isinstance(seen, Response):
                return seen
            me, view = seen
            action = fields.get("action", "")
            try:
                name, payload = message_for(action, fields)
                MESSAGES[name].parse({"by": me.id, "via": "web", **payload})
            except (KeyError, ValueError) as err:
                problem = (
                    describe_validation_error(err)
                    if isinstance(err, ValidationError)
                    else f"action: unknown action {action!r}"
                )
                return self.refusal(request, me, view, problem)
            signed = with_proof(
                {"by": me.id, "via": "web", **payload}, self.secret, name, view["case"]
            )
            result = await self.send(case_id, name, signed)
            if isinstance(result, str):
                view = await self.case_view(me, case_id) or view
                return self.refusal(request, me, view, result)
            request.session["flash"] = f"{case_id}: {result.message}"
            back = safe_next(fields.get("back") or f"/cases/{case_id}")
            return RedirectResponse(back, status_code=303)

        @app.post("/acknowledge", response_class=HTMLResponse)
        async def acknowledge_selected(request: Request) -> Response:
            form = await request.form()
            if not csrf_ok(request, str(form.get("csrf") or "")):
                return forbidden_form(self.page)
            me = signin.person(request)
            if me is None:
                return signin.to_signin(request)
            ids = [str(v) for v in form.getlist("case_id")][:500]
            results = await asyncio.gather(*(self.acknowledge(cid, me) for cid in ids))
            done = [cid for cid, r in zip(ids, results, strict=True) if not isinstance(r, str)]
            refused = [
                f"{cid}: {r}" for cid, r in zip(ids, results, strict=True) if isinstance(r, str)
            ]
            flash = f"Acknowledged {len(done)}: {', '.join(done)}." if done else ""
            if refused:
                flash += " Not acknowledged: " + "; ".join(refused)
            request.session["flash"] = flash.strip() or "Nothing selected."
            return RedirectResponse("/", status_code=303)

    async def acknowledge(self, case_id: str, me: Person) -> MessageResult | str:
        payload: dict[str, Any] = {"by": me.id, "via": "web"}
        if "acknowledge" in self.policy().proof_required:  # a proof needs the case's tier
            handle = self.client.get_workflow_handle(workflow_id_for(case_id))
            case = await handle.query("status", result_type=CaseStatus)
            payload = with_proof(payload, self.secret, "acknowledge", case)
        return await self.send(case_id, "acknowledge", payload)

    async def send(self, case_id: str, name: str, payload: dict[str, Any]) -> MessageResult | str:
        """The Update's answer, or the case's refusal word for word."""
        handle = self.client.get_workflow_handle(workflow_id_for(case_id))
        try:
            return await handle.execute_update(name, payload, result_type=MessageResult)
        except WorkflowUpdateFailedError as err:
            return getattr(err.cause, "message", None) or str(err.cause or err)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return "case is closed; it takes no more messages"
            raise

    def refusal(
        self, request: Request, me: Person, view: dict[str, Any], reason: str
    ) -> HTMLResponse:
        return self.render(
            request,
            me,
            "case.html",
            status_code=409,
            title=f"Case {view['case'].case_id}",
            error=reason,
            **view,
        )


def raised_because(case: CaseStatus) -> str | None:
    """'raised from medium: VIP customer', as identify wrote it; None when not raised."""
    if case.severity is None or case.severity == case.reported_severity:
        return None
    for entry in case.timeline:
        if entry.what == "identified" and (
            found := re.search(r"\((raised [^)]*)\)", entry.details)
        ):
            return found.group(1)
    return f"raised from {case.reported_severity}"


def message_for(action: str, form: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The message a console form sends and its payload (`by` and `via` come from the
    session). KeyError: no such action."""
    text = {k: v.strip() for k, v in form.items()}

    def given(*keys: str) -> dict[str, Any]:
        return {k: text[k] for k in keys if text.get(k)}

    forms: dict[str, tuple[str, dict[str, Any]]] = {
        "acknowledge": ("acknowledge", {}),
        "wait_for_customer": ("wait_for_customer", {"question": text.get("question", "")}),
        "resolve": (
            "resolve",
            {"resolution": text.get("resolution", ""), **given("root_cause")},
        ),
        "escalate": ("escalate", {"reason": text.get("reason", "")}),
        "transfer": (
            "escalate",
            {"reason": text.get("reason", ""), "department": text.get("department", "")},
        ),
        "request_approval": (
            "request_approval",
            {
                "action": {
                    "kind": text.get("kind", ""),
                    "amount": text.get("amount", ""),
                    "currency": text.get("currency", ""),
                }
            },
        ),
        "approve": ("approve", {"note": text.get("note", "")}),
        "reject": ("reject", {"reason": text.get("reason", "")}),
        "deescalate": ("deescalate", {"reason": text.get("reason", "")}),
        "reopen": ("reopen", {"reason": text.get("reason", "")}),
    }
    return forms[action]


def tab_counts(rows: Sequence[Row]) -> dict[str, int]:
    return {t: sum(1 for r in rows if r.tab == t) for t in TABS}
