"""The cases the records hold for a period, as the simulator replays them: each case's
opening, its people's acts (timeline.act), the policy version it ran with, and what its
policy did by itself (the lines a replay under that policy must reproduce)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select

from activities.records import (
    CaseRow,
    MessageRow,
    PolicyRow,
    Records,
    ReportRow,
    TimelineRow,
    approver_list,
    timeline_row,
)
from starter.simulate import Act, CaseRun, DeskRun, Scripted, line_figures
from workflows.messages import MESSAGES
from workflows.models import CaseInput, Customer
from workflows.policy import Policy, PolicyError, policy_from_dict
from workflows.projections import report, snapshot
from workflows.state import CaseState

RECORDED = "(recorded)"  # stands for free text, which the records keep out of the act
ROLES = {"assignee": Act.ASSIGNEE, "approver": Act.APPROVER}


@dataclass
class Recorded:
    scripted: list[Scripted] = field(default_factory=list)
    policies: dict[str, Policy] = field(default_factory=dict)
    runs: list[CaseRun] = field(default_factory=list)  # what happened, as the comparison counts
    skipped: dict[str, str] = field(default_factory=dict)  # case id -> why it cannot be replayed

    def desk(self) -> DeskRun:
        return DeskRun("recorded", self.runs, {}, {}, 0)


def act_of(at: datetime, recorded: dict[str, Any]) -> Act:
    """The message a recorded act stands for: its sender by role, its text as a stand-in."""
    name = recorded["name"]
    model: type[BaseModel] = MESSAGES[name].model
    payload = {k: v for k, v in recorded.items() if k not in ("name", "role", "person")}
    role = recorded.get("role", "customer")
    if "by" in model.model_fields:
        payload["by"] = ROLES.get(role, role)
    for key, info in model.model_fields.items():
        if info.is_required() and key not in payload and info.annotation is str:
            payload[key] = RECORDED
    return Act(at, name, payload, recorded.get("person"))


async def load(records: Records, start: datetime, end: datetime) -> Recorded:
    """Every case opened in [start, end)."""
    out = Recorded()
    async with records.transaction() as s:
        cases = (
            await s.scalars(
                select(CaseRow)
                .where(CaseRow.opened_at >= start, CaseRow.opened_at < end)
                .order_by(CaseRow.opened_at, CaseRow.case_id)
            )
        ).all()
        ids = [c.case_id for c in cases]
        lines: dict[str, list[TimelineRow]] = defaultdict(list)
        for row in await s.scalars(
            select(TimelineRow).where(TimelineRow.case_id.in_(ids)).order_by(TimelineRow.seq)
        ):
            lines[row.case_id].append(row)
        sent = dict(
            (
                await s.execute(
                    select(MessageRow.case_id, func.count())
                    .where(MessageRow.case_id.in_(ids), MessageRow.medium.in_(("mail", "log")))
                    .group_by(MessageRow.case_id)  # a message's first medium (chat copies it)
                )
            ).all()
        )
        reports = {
            r.case_id: r.body
            for r in await s.scalars(select(ReportRow).where(ReportRow.case_id.in_(ids)))
        }
        versions = {c.policy_version for c in cases}
        for kept in await s.scalars(select(PolicyRow).where(PolicyRow.version.in_(versions))):
            try:
                out.policies[kept.version] = policy_from_dict(kept.body, f"policy {kept.version}")
            except PolicyError:
                continue
        customers = {c.customer_id for c in cases}
        earlier = (
            await s.execute(
                select(CaseRow.customer_id, CaseRow.opened_at).where(
                    CaseRow.customer_id.in_(customers),
                    CaseRow.opened_at < start,
                    CaseRow.opened_at >= start - timedelta(days=400),
                )
            )
        ).all()
    before: dict[str, list[datetime]] = defaultdict(list)
    for customer, at in earlier:
        before[customer].append(at)
    for c in cases:
        if c.customer_id == "[erased]":
            out.skipped[c.case_id] = "its data was erased"
            continue
        if c.policy_version not in out.policies:
            out.skipped[c.case_id] = f"policy {c.policy_version} is not in the records"
            continue
        rows = lines[c.case_id]
        opened_by = next((r.by for r in rows if r.what == "opened" and r.by), "desk")
        case = CaseInput(
            case_id=c.case_id,
            customer=Customer(
                id=c.customer_id,
                name=RECORDED,
                email="recorded@example.invalid",
                vip=c.customer_vip,
            ),
            subject=RECORDED,
            category=c.category,
            severity=c.reported_severity,
            channel=c.channel,
            opened_by=opened_by,
        )
        acts = [act_of(r.at, r.act) for r in rows if r.act]
        out.scripted.append(
            Scripted(case, c.opened_at, acts, out.policies[c.policy_version], before[c.customer_id])
        )
        out.runs.append(_run(c, rows, sent.get(c.case_id, 0), reports.get(c.case_id)))
    return out


def _run(c: CaseRow, rows: list[TimelineRow], sent: int, report: dict[str, Any] | None) -> CaseRun:
    tier_seconds: dict[int, float] = defaultdict(float)
    for visit in (report or {}).get("tiers", []):
        tier_seconds[int(visit["tier"])] += float(visit.get("seconds") or 0.0)
    return CaseRun(
        case_id=c.case_id,
        department=c.department or "",
        severity=c.severity,
        outcome=c.outcome,
        final_tier=c.tier or 0,
        opened_at=c.opened_at,
        closed_at=c.closed_at,
        tier_seconds=dict(tier_seconds),
        messages=sent,
        refused_acts=0,
        tiers=tuple(sorted({r.tier for r in rows if r.tier is not None})),
        **line_figures(rows),
    )


def first_difference(
    recorded: list[tuple[str, int | None, datetime]],
    replayed: list[tuple[str, int | None, datetime]],
    tolerance: float = 1.0,
) -> str | None:
    """None when the replay made the same policy lines (kind, tier, time to the second)."""
    for i in range(max(len(recorded), len(replayed))):
        a = recorded[i] if i < len(recorded) else None
        b = replayed[i] if i < len(replayed) else None
        if a is None or b is None:
            gone = a or b
            assert gone is not None
            side = "replay only" if a is None else "recorded only"
            return f"line {i + 1}: {side}: {gone[0]} at tier {gone[1]} at {gone[2]:%F %T}"
        if a[:2] != b[:2] or abs((a[2] - b[2]).total_seconds()) > tolerance:
            return (
                f"line {i + 1}: recorded {a[0]} at tier {a[1]} at {a[2]:%F %T}, "
                f"replayed {b[0]} at tier {b[1]} at {b[2]:%F %T.%f}"
            )
    return None


class AlreadyRecorded(ValueError):
    pass


async def save(records: Records, run: DeskRun, policy: Policy, now: datetime) -> int:
    """Write a run's cases (kept with `simulate(..., keep=True)`) as records, as the worker
    would have written them: the case rows, their timelines with each person's act, their
    reports, the policy. A later `simulate --from … --to …` replays them."""
    states = [c.state for c in run.cases if c.state is not None]
    ids = [s.case.case_id for s in states]
    async with records.transaction() as s:
        taken = (await s.scalars(select(CaseRow.case_id).where(CaseRow.case_id.in_(ids)))).all()
        if taken:
            raise AlreadyRecorded(f"case_id: {taken[0]} is in the records already")
        if await s.get(PolicyRow, policy.version) is None:
            body = policy.model_dump(mode="json")
            s.add(PolicyRow(version=policy.version, body=body, first_used_at=now))
        for st in states:
            s.add(_case_row(st))
        await s.flush()
        for st in states:
            wid = f"case-{st.case.case_id}"
            for e in st.timeline:
                s.add(TimelineRow(**timeline_row(wid, "synthetic", st.case.case_id, e)))
            if st.closed_at is not None:
                body = report(st, st.closed_at).model_dump(mode="json")
                s.add(
                    ReportRow(
                        key=f"{wid}:synthetic:report",
                        case_id=st.case.case_id,
                        outcome=body["outcome"],
                        severity=st.severity,
                        department=st.department,
                        sla_breached=st.sla_breached,
                        duration_seconds=body["duration_seconds"],
                        created_at=st.closed_at,
                        body=body,
                    )
                )
    return len(states)


def _case_row(st: CaseState) -> CaseRow:
    """The case row as the worker's records would have it at the end of the run."""
    wid, closing = f"case-{st.case.case_id}", st.closed_at is not None
    snap = snapshot(st, wid, "synthetic", len(st.timeline), closing).model_dump()
    snap["approvers"] = approver_list(snap["approvers"])
    return CaseRow(**snap, customer_vip=st.case.customer.vip)


def fidelity_lines(recorded: list[CaseRun], replayed: DeskRun) -> list[str]:
    """The cases whose replay under their own policy differs, with the first difference."""
    by_id = {c.case_id: c for c in replayed.cases}
    out = []
    for run in recorded:
        diff = first_difference(run.policy_lines, by_id[run.case_id].policy_lines)
        if diff is not None:
            out.append(f"{run.case_id}: {diff}")
    return out
