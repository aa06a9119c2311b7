"""`escalate`: open cases, read them, and send them messages from a shell.

Every message command sends a validated Update (the refusal comes back at once) unless
`--signal` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from activities import tracing
from activities.erasure import StillOpen, cases_of, erase
from activities.keys import MASTER, MasterKeys, erased_at, rotate
from activities.migrate import current, head, upgrade
from activities.records import Records
from starter.api import CaseClient, CaseError, parse_since, validate_case, with_proof
from starter.config import exit_now
from starter.demo import run_demo
from starter.reporting import build_report, case_history, case_messages, write_chart
from starter.views import (
    print_history,
    print_listing,
    print_messages,
    print_report,
    print_status,
)
from starter.whatif import simulate_command
from workflows.messages import MESSAGES, Message
from workflows.models import SEVERITIES, workflow_id_for
from workflows.wording import fmt_when, iso_z


def message_flags(message: Message) -> list[tuple[str, dict[str, Any]]]:
    """The command's flags, one per payload field (a nested model's fields flattened)."""
    flags = []
    for name, info in _fields(message.model):
        options: dict[str, Any] = {}
        if name in message.cli_defaults:
            options["default"] = message.cli_defaults[name]
        elif info.is_required():
            options["required"] = True
        else:
            options["default"] = info.default
        if info.annotation is float:
            options["type"] = float
        if info.description:
            options["help"] = info.description
        flags.append((f"--{name.replace('_', '-')}", options))
    return flags


def _fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    found = []
    for name, info in model.model_fields.items():
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            found += _fields(inner)
        else:
            found.append((name, info))
    return found


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

    ms = sub.add_parser("messages", help="a case's outbox: every message it sent, and its state")
    ms.add_argument("case_id")
    ms.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="volume, tiers, breaches, approvals from the records")
    rp.add_argument("--since", help="only cases opened since (ISO date or datetime)")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--chart", metavar="PNG", help="also write a chart to this file")

    sim = sub.add_parser(
        "simulate", help="what a candidate policy would do to the desk's cases, side by side"
    )
    sim.add_argument("--policy", required=True, help="the candidate policy file (TOML)")
    sim.add_argument(
        "--current", help="the policy to compare with (default $ESCALATION_POLICY or bundled)"
    )
    sim.add_argument("--since", help="the recorded cases opened in this last span (default 30d)")
    sim.add_argument(
        "--from",
        dest="start",
        help="recorded cases opened from (ISO date); with --synthetic: the month's first day",
    )
    sim.add_argument("--to", help="... up to (ISO date; default now)")
    sim.add_argument("--synthetic", type=int, metavar="N", help="simulate N generated cases")
    sim.add_argument("--days", type=int, default=30, help="over this many days (--synthetic)")
    sim.add_argument("--seed", type=int, default=1, help="the generator's seed (--synthetic)")
    sim.add_argument(
        "--save",
        action="store_true",
        help="write the synthetic cases, as the current policy ran them, to the records",
    )
    sim.add_argument("--json", action="store_true")
    sim.add_argument("--chart", metavar="PNG", help="also write the side-by-side figures")

    db = sub.add_parser("db", help="the records' schema")
    db.add_argument("action", choices=["upgrade", "current"])

    er = sub.add_parser(
        "erase", help="forget a customer or a case: destroy its keys, scrub the records"
    )
    who = er.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="every case of this customer id")
    who.add_argument("--case", help="one case id")
    er.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    ks = sub.add_parser("keys", help="the cases' data keys")
    ks.add_argument("action", choices=["rotate"], help="re-wrap every key under the current master")

    d = sub.add_parser("demo", help="open a handful of realistic cases")
    d.add_argument("--prefix", help="case id prefix (default D-<timestamp>)")

    for message in MESSAGES.values():
        m = sub.add_parser(message.command, help=f"{message.senders}: {message.meaning}")
        m.add_argument("case_id")
        for flag, opts in message_flags(message):
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


def message_payload(message: Message, args: argparse.Namespace) -> dict[str, Any]:
    """The payload from the command's flags, nested as the message's model nests it."""

    def collect(model: type[BaseModel]) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for name, info in model.model_fields.items():
            inner = info.annotation
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                payload[name] = collect(inner)
            elif (value := getattr(args, name)) is not None:
                payload[name] = value
        return payload

    return collect(message.model)


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
        parts.append(f"StartTime >= '{iso_z(since)}'")
    if args.query:
        parts.append(f"({args.query})")
    return " AND ".join(parts)


async def open_case(args: argparse.Namespace) -> int:
    case = validate_case(case_from_args(args))  # refuse bad input before connecting
    opened = await (await CaseClient.connect()).open(case)
    if args.json:
        print(json.dumps(opened.__dict__))
    else:
        verb = "opened" if opened.created else "already open"
        print(f"case {opened.case_id} {verb} (workflow {opened.workflow_id})")
    return 0


async def erased(case_id: str) -> datetime | None:
    """When the case's data was erased, if the records say so (None: not, or no records)."""
    records = Records.from_url()
    try:
        return await erased_at(records, workflow_id_for(case_id))
    except (OSError, SQLAlchemyError):
        return None
    finally:
        await records.close()


async def show_status(args: argparse.Namespace) -> int:
    try:
        st = await (await CaseClient.connect()).status(args.case_id)
    except Exception:
        when = await erased(args.case_id)
        if when is None:
            raise
        print(f"case {args.case_id}: its data was erased at {fmt_when(when)}; the records keep")
        print("its times, tiers, severity and outcome (escalate history, escalate report)")
        return 0
    if args.json:
        print(st.model_dump_json(indent=2))
    else:
        print_status(st)
    return 0


async def show_result(args: argparse.Namespace) -> int:
    print((await (await CaseClient.connect()).report(args.case_id)).model_dump_json(indent=2))
    return 0


async def list_cases(args: argparse.Namespace) -> int:
    rows = await (await CaseClient.connect()).list(list_query(args), limit=args.limit)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], default=str, indent=2))
    else:
        print_listing(rows)
    return 0


async def demo(args: argparse.Namespace) -> int:
    await run_demo(await CaseClient.connect(), args.prefix)
    return 0


def dev_secret() -> str | None:
    """The secret `escalation-worker --dev` keeps under ./data/, when run beside it."""
    path = Path("data") / "web-secret"
    return path.read_text().strip() if path.exists() else None


async def send_message(args: argparse.Namespace) -> int:
    message = MESSAGES[args.command.replace("-", "_")]
    desk = await CaseClient.connect()
    payload = message_payload(message, args)
    secret = os.environ.get("ESCALATION_SECRET") or dev_secret()
    if secret and "proof" in message.model.model_fields:  # sign what the case has now
        payload = with_proof(payload, secret, message.name, await desk.status(args.case_id))
    result = await desk.send(args.case_id, message.name, payload, args.signal)
    if result is None:
        print(f"{message.name} signal sent to {args.case_id}")
    else:
        print(
            f"{args.case_id}: {result.message} (stage {result.stage}, tier {result.tier}, "
            f"assignee {result.assignee or '—'})"
        )
    return 0


def on_records(
    command: Callable[[Records, argparse.Namespace], Coroutine[Any, Any, None]],
) -> Callable[[argparse.Namespace], Coroutine[Any, Any, int]]:
    """A command that reads the records ($DATABASE_URL), not Temporal."""

    async def run(args: argparse.Namespace) -> int:
        records = Records.from_url()
        try:
            await command(records, args)
        finally:
            await records.close()
        return 0

    return run


async def schema(records: Records, args: argparse.Namespace) -> None:
    if args.action == "upgrade":
        print(f"database at revision {await upgrade(records.engine)}")
    else:
        print(f"database at revision {await current(records.engine)} (head {head()})")


async def history(records: Records, args: argparse.Namespace) -> None:
    rows = await case_history(records, args.case_id)
    if not rows:
        raise CaseError(f"case_id: no records for case {args.case_id}")
    if not args.json:
        print_history(args.case_id, rows)
        return
    out = [
        {
            "seq": r.seq,
            "at": iso_z(r.at),
            "tier": r.tier,
            "what": r.what,
            "by": r.by,
            "details": r.details,
        }
        for r in rows
    ]
    print(json.dumps(out, indent=2))


async def messages(records: Records, args: argparse.Namespace) -> None:
    rows = await case_messages(records, args.case_id)
    if not rows:
        raise CaseError(f"case_id: no messages for case {args.case_id}")
    if not args.json:
        print_messages(args.case_id, rows)
        return
    out = [
        {
            "key": r.key,
            "audience": r.channel,
            "recipient": r.recipient,
            "address": r.address,
            "subject": r.subject,
            "body": r.body,
            "via": r.medium,
            "queued_at": iso_z(r.created_at),
            "state": r.status,
            "attempts": r.attempts,
            "reason": r.reason,
            "sent_at": iso_z(r.sent_at) if r.sent_at else None,
        }
        for r in rows
    ]
    print(json.dumps(out, indent=2))


async def erase_data(records: Records, args: argparse.Namespace) -> None:
    scope = f"customer {args.customer}" if args.customer else f"case {args.case}"
    rows = await cases_of(records, args.customer, args.case)
    if not rows:
        raise CaseError(f"{'customer' if args.customer else 'case'}: no cases of {scope}")
    if not args.yes:
        answer = await asyncio.to_thread(
            input, f"Erase {len(rows)} case(s) of {scope}? This cannot be undone. [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            raise CaseError("erase: not confirmed; nothing was changed")
    try:
        done = await erase(records, args.customer, args.case)
    except StillOpen as err:
        raise CaseError(f"erase refused: {err}") from None
    print(
        f"erased {len(done.cases)} case(s) of {scope}: {', '.join(done.cases)}; "
        f"{done.keys_destroyed} data key(s) destroyed"
    )
    if done.log_cleared is False:
        print(
            "the database's write-ahead log is still in use and keeps earlier versions of "
            "the erased rows; run `escalate erase` again once the desk is quiet",
            file=sys.stderr,
        )


async def keys_command(records: Records, args: argparse.Namespace) -> None:
    try:
        masters = MasterKeys.from_env(Path("data"), create=False)
    except ValueError as err:
        raise CaseError(str(err)) from None
    if masters is None:
        raise CaseError(f"{MASTER}: no master key configured")
    try:
        done, kept = await rotate(records, masters)
    except KeyError as err:
        raise CaseError(f"keys rotate refused: {err.args[0]}; nothing was changed") from None
    print(f"re-wrapped {done} data key(s) under the current master key ({kept} already were)")


async def report(records: Records, args: argparse.Namespace) -> None:
    since = parse_since(args.since) if args.since else None
    rep = await build_report(records, since)
    if args.json:
        print(rep.model_dump_json(indent=2))
    else:
        print_report(rep)
    if args.chart:
        print(f"chart written to {write_chart(rep, Path(args.chart))}")


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "open": open_case,
    "status": show_status,
    "result": show_result,
    "list": list_cases,
    "demo": demo,
    "history": on_records(history),
    "messages": on_records(messages),
    "report": on_records(report),
    "db": on_records(schema),
    "simulate": simulate_command,
    "erase": on_records(erase_data),
    "keys": on_records(keys_command),
    **{m.command: send_message for m in MESSAGES.values()},
}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tracing.setup("escalate")  # with OTEL_EXPORTER_OTLP_ENDPOINT: a command is a trace
    try:
        code = asyncio.run(COMMANDS[args.command](args))
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
