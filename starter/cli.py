"""`escalate`: open cases, read them, and send them messages from a shell.

Every message command sends a validated Update (the refusal comes back at once) unless
`--signal` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError

from activities.migrate import current, head, upgrade
from activities.records import Records, TimelineRow
from starter.api import CaseClient, CaseError, CaseListing, validate_case
from starter.config import exit_now
from starter.demo import run_demo
from starter.reporting import DeskReport, build_report, case_history, write_chart
from workflows.models import SEVERITIES, CaseStatus
from workflows.wording import fmt_duration

MESSAGE_ARGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "acknowledge": [("--by", {"required": True})],
    "resolve": [("--by", {"required": True}), ("--resolution", {"required": True})],
    "escalate": [
        ("--by", {"required": True}),
        ("--reason", {"required": True}),
        ("--department", {"help": "transfer to this department instead of going up a tier"}),
    ],
    "request-approval": [
        ("--by", {"required": True}),
        ("--kind", {"default": "refund"}),
        ("--amount", {"required": True, "type": float}),
        ("--currency", {"default": "USD"}),
    ],
    "approve": [("--by", {"required": True}), ("--note", {"default": ""})],
    "reject": [("--by", {"required": True}), ("--reason", {"required": True})],
    "wait-for-customer": [("--by", {"required": True}), ("--question", {"required": True})],
    "customer-replied": [("--message", {"required": True})],
    "customer-escalate": [("--reason", {"required": True})],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="escalate", description="Escalation desk command line")
    sub = p.add_subparsers(dest="command", required=True)

    o = sub.add_parser("open", help="open a case from a JSON file or from flags")
    o.add_argument("--file", "-f", help="case JSON ('-' for standard input)")
    o.add_argument("--case-id")
    o.add_argument("--customer-id")
    o.add_argument("--customer-name")
    o.add_argument("--customer-email")
    o.add_argument("--vip", action="store_true")
    o.add_argument("--subject")
    o.add_argument("--description", default="")
    o.add_argument("--category")
    o.add_argument("--severity", help="/".join(SEVERITIES))
    o.add_argument("--channel", default="email")
    o.add_argument("--opened-by")
    o.add_argument("--action-kind", default="refund")
    o.add_argument("--amount", type=float, help="requested action amount")
    o.add_argument("--currency", default="USD")
    o.add_argument("--json", action="store_true")

    s = sub.add_parser("status", help="a case's current state")
    s.add_argument("case_id")
    s.add_argument("--json", action="store_true")

    r = sub.add_parser("result", help="wait for a case to close and print its report")
    r.add_argument("case_id")

    ls = sub.add_parser("list", help="cases from Temporal visibility")
    ls.add_argument("--stage")
    ls.add_argument("--tier", type=int)
    ls.add_argument("--severity")
    ls.add_argument("--department")
    ls.add_argument("--assignee")
    ls.add_argument("--customer")
    ls.add_argument("--breached", action="store_true")
    ls.add_argument("--open", action="store_true", help="running cases only")
    ls.add_argument("--since", help="opened since (ISO date or datetime, UTC if no zone)")
    ls.add_argument("--query", default="", help="extra visibility query")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")

    h = sub.add_parser("history", help="a case's audit trail from the records")
    h.add_argument("case_id")
    h.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="volume, tiers, breaches, approvals from the records")
    rp.add_argument("--since", help="only cases opened since (ISO date or datetime)")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--chart", metavar="PNG", help="also write a chart to this file")

    db = sub.add_parser("db", help="the records' schema")
    db.add_argument("action", choices=["upgrade", "current"])

    d = sub.add_parser("demo", help="open a handful of realistic cases")
    d.add_argument("--prefix", help="case id prefix (default D-<timestamp>)")

    for name, args in MESSAGE_ARGS.items():
        m = sub.add_parser(name, help=f"send {name.replace('-', '_')}")
        m.add_argument("case_id")
        for flag, opts in args:
            m.add_argument(flag, **opts)
        m.add_argument("--signal", action="store_true", help="send as a fire-and-forget Signal")
    return p


def case_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise CaseError(f"{args.file}: not valid JSON: {err}") from None
        if not isinstance(loaded, dict):
            raise CaseError(f"{args.file}: the case must be a JSON object")
        return loaded
    customer = {
        "id": args.customer_id,
        "name": args.customer_name,
        "email": args.customer_email,
        "vip": args.vip,
    }
    data: dict[str, Any] = {
        "case_id": args.case_id,
        "customer": {k: v for k, v in customer.items() if v is not None},
        "subject": args.subject,
        "description": args.description,
        "category": args.category,
        "severity": args.severity,
        "channel": args.channel,
        "opened_by": args.opened_by,
    }
    data = {k: v for k, v in data.items() if v is not None}
    if args.amount is not None:
        data["requested_action"] = {
            "kind": args.action_kind,
            "amount": args.amount,
            "currency": args.currency,
        }
    return data


def message_payload(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "request_approval":
        return {
            "by": args.by,
            "action": {"kind": args.kind, "amount": args.amount, "currency": args.currency},
        }
    payload = {}
    for flag, _ in MESSAGE_ARGS[name.replace("_", "-")]:
        key = flag.lstrip("-").replace("-", "_")
        value = getattr(args, key)
        if value is not None:
            payload[key] = value
    return payload


def relative(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "—"
    now = now or datetime.now(UTC)
    delta = (when - now).total_seconds()
    return f"in {fmt_duration(delta)}" if delta >= 0 else f"overdue {fmt_duration(-delta)}"


def print_status(st: CaseStatus) -> None:
    print(f"Case {st.case_id}: {st.subject or ''}")
    print(f"  stage       {st.stage}" + (f" ({st.outcome})" if st.outcome else ""))
    print(f"  severity    {st.severity} (reported {st.reported_severity})")
    print(f"  tier        {st.tier} {st.tier_name or ''}")
    print(f"  department  {st.department}   escalation {st.escalation_type}")
    ack = " (acknowledged)" if st.acknowledged else ""
    print(f"  assignee    {st.assignee or '—'}{ack}")
    print(f"  ack by      {relative(st.deadlines.ack_by)}")
    print(f"  resolve by  {relative(st.deadlines.resolve_by)}")
    print(f"  breached    {st.sla_breached}   paused {st.paused}   breaches {len(st.breaches)}")
    if st.pending_approval:
        pa = st.pending_approval
        print(
            f"  approval    {pa.action.kind} {pa.action.amount:.2f} {pa.action.currency} "
            f"asked {', '.join(pa.notified)} (may decide: {', '.join(pa.approvers)})"
        )
    print("  timeline")
    for e in st.timeline:
        who = f" by {e.by}" if e.by else ""
        print(f"    {e.at:%Y-%m-%d %H:%M:%S} {e.what}{who}: {e.details}".rstrip(": "))


def listing_without_clock(r: CaseListing) -> str:
    """No SLA deadline set: in resolve and not breached, its clocks wait for the customer."""
    if r.stage == "resolve" and not r.sla_breached and r.status == "running":
        return "paused"
    return ""


def print_listing(rows: list[CaseListing]) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    table.add_column("case", no_wrap=True)  # an operator copies it into the next command
    for col in ("stage", "tier", "severity", "dept", "assignee"):
        table.add_column(col)
    table.add_column("next deadline", no_wrap=True)
    for r in rows:
        deadline = relative(r.sla_deadline) if r.sla_deadline else listing_without_clock(r)
        style = "red" if deadline.startswith("overdue") or r.sla_breached else ""
        table.add_row(
            r.case_id,
            r.stage or r.status,
            str(r.tier or ""),
            r.severity or "",
            r.department or "",
            r.assignee or "",
            ("BREACHED " if r.sla_breached else "") + deadline,
            style=style,
        )
    console = Console()
    if not console.is_terminal:  # piped to a file or a script: never cut a row short
        console = Console(width=200)
    console.print(table)
    print(f"{len(rows)} cases")


def print_history(case_id: str, rows: list[TimelineRow]) -> None:
    table = Table(title=f"Case {case_id}", box=box.SIMPLE_HEAD)
    for col in ("#", "when (UTC)", "tier", "what", "by", "details"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.seq),
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            str(r.tier or ""),
            r.what,
            r.by or "",
            r.details,
        )
    Console().print(table)


def print_report(rep: DeskReport) -> None:
    console = Console()
    since = f" since {rep.since:%Y-%m-%d %H:%M}" if rep.since else ""
    console.print(f"[bold]{rep.cases} cases{since}[/]: {rep.open} open, {rep.closed} closed")
    vol = Table(title="Volume by department and severity", box=box.SIMPLE_HEAD)
    vol.add_column("department")
    for sev in SEVERITIES:
        vol.add_column(sev, justify="right")
    vol.add_column("total", justify="right")
    for dept, counts in rep.volume.items():
        vol.add_row(dept, *[str(counts[s]) for s in SEVERITIES], str(sum(counts.values())))
    console.print(vol)
    tiers = Table(title="Tiers (closed cases)", box=box.SIMPLE_HEAD)
    for col in ("tier", "visits", "median time", "p90 time", "breaches", "breach rate"):
        tiers.add_column(col, justify="right")
    for t in rep.tiers:
        rate = f"{100 * t.breach_rate:.0f}%" if t.breach_rate is not None else "—"
        tiers.add_row(
            str(t.tier),
            str(t.visits),
            _dur(t.median_hours),
            _dur(t.p90_hours),
            str(t.breaches),
            rate,
        )
    console.print(tiers)
    a = rep.approvals
    rate = f"{100 * a.approval_rate:.0f}%" if a.approval_rate is not None else "—"
    console.print(
        f"Approvals: {a.requested} requested, {a.approved} approved, {a.rejected} rejected, "
        f"{a.expired} expired, {a.withdrawn} withdrawn; approval rate {rate}; "
        f"time to decision median {_dur(a.median_hours_to_decision)}, "
        f"p90 {_dur(a.p90_hours_to_decision)}"
    )
    r = rep.resolution_hours
    first = rep.resolved_at_first_tier
    console.print(
        f"Resolution: {rep.resolved} resolved; p50 {_dur(r['p50'])}, p90 {_dur(r['p90'])}, "
        f"p99 {_dur(r['p99'])}; "
        f"{f'{100 * first:.0f}%' if first is not None else '—'} resolved at the first tier; "
        f"{rep.sla_breached_cases} breached at the top tier; {rep.hard_cap_cases} closed by the cap"
    )


def _dur(hours: float | None) -> str:
    """Hours from the report as a manager reads them: '1d 4h', '2h 10m', '36s'."""
    return "—" if hours is None else fmt_duration(hours * 3600)


def parse_since(text: str) -> datetime:
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        raise CaseError(f"since: {text!r} is not an ISO date or datetime") from None
    return (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)


def list_query(args: argparse.Namespace) -> str:
    parts = []
    for attr, value in (
        ("CaseStage", args.stage),
        ("CaseSeverity", args.severity),
        ("CaseDepartment", args.department),
        ("CaseAssignee", args.assignee),
        ("CustomerId", args.customer),
    ):
        if value:
            parts.append(f"{attr} = '{value}'")
    if args.tier is not None:
        parts.append(f"CaseTier = {args.tier}")
    if args.breached:
        parts.append("SlaBreached = true")
    if args.open:
        parts.append("ExecutionStatus = 'Running'")
    if args.since:
        since = parse_since(args.since)
        parts.append(f"StartTime >= '{since.isoformat().replace('+00:00', 'Z')}'")
    if args.query:
        parts.append(f"({args.query})")
    return " AND ".join(parts)


async def run(args: argparse.Namespace) -> int:
    if args.command == "open":
        case = validate_case(case_from_args(args))  # refuse bad input before connecting
        desk = await CaseClient.connect()
        opened = await desk.open(case)
        if args.json:
            print(json.dumps(opened.__dict__))
        else:
            verb = "opened" if opened.created else "already open"
            print(f"case {opened.case_id} {verb} (workflow {opened.workflow_id})")
        return 0
    if args.command in ("history", "report", "db"):
        return await run_records(args)
    desk = await CaseClient.connect()
    if args.command == "status":
        st = await desk.status(args.case_id)
        if args.json:
            print(st.model_dump_json(indent=2))
        else:
            print_status(st)
        return 0
    if args.command == "result":
        print((await desk.report(args.case_id)).model_dump_json(indent=2))
        return 0
    if args.command == "list":
        rows = await desk.list(list_query(args), limit=args.limit)
        if args.json:
            print(json.dumps([r.__dict__ for r in rows], default=str, indent=2))
        else:
            print_listing(rows)
        return 0
    if args.command == "demo":
        await run_demo(desk, args.prefix)
        return 0
    name = args.command.replace("-", "_")
    result = await desk.send(args.case_id, name, message_payload(name, args), args.signal)
    if result is None:
        print(f"{name} signal sent to {args.case_id}")
    else:
        print(
            f"{args.case_id}: {result.message} (stage {result.stage}, tier {result.tier}, "
            f"assignee {result.assignee or '—'})"
        )
    return 0


async def run_records(args: argparse.Namespace) -> int:
    """Commands that read the records ($DATABASE_URL), not Temporal."""
    records = Records.from_url()
    try:
        if args.command == "db":
            if args.action == "upgrade":
                print(f"database at revision {await upgrade(records.engine)}")
            else:
                print(f"database at revision {await current(records.engine)} (head {head()})")
            return 0
        if args.command == "history":
            rows = await case_history(records, args.case_id)
            if not rows:
                raise CaseError(f"case_id: no records for case {args.case_id}")
            if args.json:
                out = [
                    {
                        "seq": r.seq,
                        "at": r.at.isoformat().replace("+00:00", "Z"),
                        "tier": r.tier,
                        "what": r.what,
                        "by": r.by,
                        "details": r.details,
                    }
                    for r in rows
                ]
                print(json.dumps(out, indent=2))
            else:
                print_history(args.case_id, rows)
            return 0
        since = parse_since(args.since) if args.since else None
        rep = await build_report(records, since)
        if args.json:
            print(rep.model_dump_json(indent=2))
        else:
            print_report(rep)
        if args.chart:
            print(f"chart written to {write_chart(rep, Path(args.chart))}")
        return 0
    finally:
        await records.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except CaseError as err:
        print(f"escalate: {err}", file=sys.stderr)
        code = 2
    except (OSError, OperationalError) as err:
        print(f"escalate: {err}", file=sys.stderr)
        code = 1
    except RuntimeError as err:  # connection failures surface as RuntimeError
        print(f"escalate: {err}", file=sys.stderr)
        code = 1
    exit_now(code)


if __name__ == "__main__":
    main()
