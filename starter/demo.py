"""`escalate demo`: a morning's worth of escalations across departments and severities."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from starter.api import CaseClient, CaseError

CASES: list[dict[str, Any]] = [
    {
        "customer": {"id": "cust-42", "name": "Ada Lopez", "email": "ada@example.com"},
        "subject": "Charged twice for invoice 8812",
        "description": "Card statement shows two charges of 250.00 USD on the same day.",
        "category": "billing",
        "severity": "high",
        "channel": "phone",
        "requested_action": {"kind": "refund", "amount": 250.0, "currency": "USD"},
    },
    {
        "customer": {
            "id": "cust-7",
            "name": "Northwind Ltd",
            "email": "ops@northwind.example",
            "vip": True,
        },
        "subject": "API returns 502 for all orders since 09:10",
        "description": "Production integration down; orders are queuing on their side.",
        "category": "outage",
        "severity": "critical",
        "channel": "phone",
    },
    {
        "customer": {"id": "cust-311", "name": "Bo Chen", "email": "bo.chen@example.com"},
        "subject": "Locked out after password reset",
        "category": "login",
        "severity": "medium",
        "channel": "chat",
    },
    {
        "customer": {"id": "cust-58", "name": "Greta Olsen", "email": "greta@example.com"},
        "subject": "Parcel marked delivered, never arrived",
        "category": "delivery",
        "severity": "medium",
        "channel": "email",
        "requested_action": {"kind": "reshipment", "amount": 89.0, "currency": "EUR"},
    },
    {
        "customer": {"id": "cust-902", "name": "Ravi Kumar", "email": "ravi@example.com"},
        "subject": "Export to CSV drops the last column",
        "category": "bug",
        "severity": "low",
        "channel": "web",
    },
    {
        "customer": {"id": "cust-42", "name": "Ada Lopez", "email": "ada@example.com"},
        "subject": "Annual plan renewed at the wrong price",
        "category": "invoice",
        "severity": "medium",
        "channel": "email",
        "requested_action": {"kind": "credit", "amount": 1200.0, "currency": "USD"},
    },
    {
        "customer": {"id": "cust-77", "name": "Lena Fischer", "email": "lena@example.com"},
        "subject": "Return label rejected by the carrier",
        "category": "returns",
        "severity": "low",
        "channel": "social",
    },
    {
        "customer": {
            "id": "cust-5",
            "name": "Contoso Retail",
            "email": "it@contoso.example",
            "vip": True,
        },
        "subject": "Suspicious logins on the admin account",
        "category": "security",
        "severity": "high",
        "channel": "phone",
    },
]


async def _settled(desk: CaseClient, case_id: str, tries: int = 100) -> str | None:
    for _ in range(tries):
        with_status = await desk.status(case_id)
        if with_status.stage == "resolve" and with_status.assignee:
            return with_status.assignee
        await asyncio.sleep(0.2)
    return None


async def run_demo(desk: CaseClient, prefix: str | None = None) -> list[str]:
    prefix = prefix or datetime.now(UTC).strftime("D-%y%m%d%H%M%S")
    ids = []
    for i, data in enumerate(CASES, start=1):
        case = {**data, "case_id": f"{prefix}-{i:02d}", "opened_by": f"agent-{i + 2}"}
        opened = await desk.open(case)
        ids.append(opened.case_id)
        print(
            f"opened {opened.case_id}: {data['severity']:8} {data['category']:9} {data['subject']}"
        )
    assignees = {cid: await _settled(desk, cid) for cid in ids}

    async def act(cid: str, name: str, payload: dict[str, Any], what: str) -> None:
        try:
            result = await desk.send(cid, name, payload)
            print(f"  {cid}: {what} -> {result.message if result else 'sent'}")
        except CaseError as err:
            print(f"  {cid}: {what} refused: {err}")

    def who(cid: str) -> str:
        return assignees[cid] or "nobody"

    c = ids
    await act(c[0], "acknowledge", {"by": who(c[0])}, "assignee acknowledges")
    await act(
        c[0],
        "request_approval",
        {"by": who(c[0]), "action": {"kind": "refund", "amount": 250.0, "currency": "USD"}},
        "refund 250 USD needs a supervisor",
    )
    await act(c[1], "acknowledge", {"by": who(c[1])}, "senior engineer acknowledges")
    await act(c[2], "acknowledge", {"by": who(c[2])}, "assignee acknowledges")
    await act(
        c[2],
        "wait_for_customer",
        {"by": who(c[2]), "question": "Which email address did you sign up with?"},
        "waiting on the customer (clock paused)",
    )
    await act(c[3], "acknowledge", {"by": who(c[3])}, "assignee acknowledges")
    await act(
        c[3],
        "resolve",
        {"by": who(c[3]), "resolution": "Carrier confirmed loss; replacement shipped."},
        "resolved",
    )
    await act(
        c[4],
        "escalate",
        {
            "by": who(c[4]),
            "reason": "Needs billing to check the export totals",
            "department": "billing",
        },
        "functional transfer to billing",
    )
    await act(c[5], "acknowledge", {"by": who(c[5])}, "assignee acknowledges")
    await act(
        c[5],
        "escalate",
        {"by": who(c[5]), "reason": "Credit above my authority and contract question"},
        "manual escalation up a tier",
    )
    await act(
        c[7],
        "customer_escalate",
        {"reason": "I want to speak to a manager"},
        "customer asks to escalate",
    )
    print(f"\n{len(ids)} demo cases. Try: escalate list --open   |   escalate status {c[0]}")
    print("UI: http://localhost:8233  (filter e.g. CaseStage='resolve' AND CaseTier=3)")
    web = os.environ.get("ESCALATION_WEB_URL", "http://127.0.0.1:8000")
    print(f"Desk console: {web}/  (with --dev: sign in as sup-lee, log-tom, exec-vance, ...)")
    return ids
