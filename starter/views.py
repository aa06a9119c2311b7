"""How the CLI shows cases, listings, audit trails and the desk report to a person."""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.table import Table

from activities.records import MessageRow, TimelineRow
from starter.api import CaseListing
from starter.reporting import DeskReport
from workflows.models import SEVERITIES, CaseStatus
from workflows.wording import fmt_duration


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
    csat = Table(title="Customer satisfaction (resolutions rated)", box=box.SIMPLE_HEAD)
    for col in ("department", "tier", "resolutions", "rated", "rate", "average", "1-5"):
        csat.add_column(col, justify="right" if col != "department" else "left")
    rows = [*rep.csat, *([rep.csat_overall] if rep.csat_overall else [])]
    for c in rows:
        csat.add_row(
            c.department,
            str(c.tier) if c.tier else "",
            str(c.resolutions),
            str(c.responses),
            f"{100 * c.response_rate:.0f}%" if c.response_rate is not None else "—",
            f"{c.average:.2f}" if c.average is not None else "—",
            " ".join(str(c.distribution.get(n, 0)) for n in range(1, 6)),
        )
    console.print(csat)
    reopen = f"{100 * rep.reopen_rate:.0f}%" if rep.reopen_rate is not None else "—"
    console.print(f"Reopened: {rep.reopened_cases} cases ({reopen} of the resolved)")
    causes = "; ".join(
        f"{dept}: " + ", ".join(f"{cause} {n}" for cause, n in counts.items())
        for dept, counts in rep.root_causes.items()
    )
    console.print(f"Root causes: {causes or 'none recorded'}")


def _dur(hours: float | None) -> str:
    """Hours from the report as a manager reads them: '1d 4h', '2h 10m', '36s'."""
    return "—" if hours is None else fmt_duration(hours * 3600)


def print_messages(case_id: str, rows: list[MessageRow]) -> None:
    table = Table(title=f"Case {case_id}: messages", box=box.SIMPLE_HEAD)
    for col in ("queued (UTC)", "to", "via", "subject", "state"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = r.status
        if r.sent_at:
            state = f"sent {r.sent_at:%H:%M:%S}"
        if r.attempts > 1 or r.reason:
            state += f" ({r.attempts} attempts{': ' + r.reason if r.reason else ''})"
        to = f"{r.recipient} <{r.address}>" if r.medium != "webhook" else "webhook"
        table.add_row(f"{r.created_at:%Y-%m-%d %H:%M:%S}", to, r.medium, r.subject, state)
    Console().print(table)
