"""What managers ask of the records: volume, time in each tier, breaches, approvals, speed.

Computed from the `cases` table (every case, open or closed) and the `reports` table (one
case report per case: written at report-up, replaced by the final one when the reopen window
closes, with the customer's ratings, reopens and root cause).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from activities.records import CaseRow, MessageRow, Records, ReportRow, TimelineRow
from workflows.models import SEVERITIES


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class TierStats(BaseModel):
    tier: int
    visits: int
    median_hours: float | None
    p90_hours: float | None
    breaches: int
    breach_rate: float | None


class ApprovalStats(BaseModel):
    requested: int
    approved: int
    rejected: int
    expired: int
    withdrawn: int
    approval_rate: float | None
    median_hours_to_decision: float | None
    p90_hours_to_decision: float | None


class CsatStats(BaseModel):
    """The customers' verdict on the resolutions of one department's tier."""

    department: str
    tier: int
    resolutions: int
    responses: int
    response_rate: float | None
    average: float | None
    distribution: dict[int, int]  # score -> how many


class DeskReport(BaseModel):
    since: datetime | None
    cases: int
    open: int
    closed: int
    volume: dict[str, dict[str, int]]
    tiers: list[TierStats]
    approvals: ApprovalStats
    resolution_hours: dict[str, float | None]
    resolved: int
    resolved_at_first_tier: float | None
    sla_breached_cases: int
    hard_cap_cases: int
    csat: list[CsatStats] = []
    csat_overall: CsatStats | None = None
    reopened_cases: int = 0
    reopen_rate: float | None = None
    root_causes: dict[str, dict[str, int]] = {}  # department -> cause -> cases


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 4)  # to about a second


async def build_report(records: Records, since: datetime | None = None) -> DeskReport:
    async with records.sessions() as s:
        case_q = select(CaseRow.department, CaseRow.severity, CaseRow.closed_at)
        report_q = select(ReportRow.body)
        if since is not None:
            case_q = case_q.where(CaseRow.opened_at >= since)
            report_q = report_q.join(CaseRow, CaseRow.case_id == ReportRow.case_id).where(
                CaseRow.opened_at >= since
            )
        cases = (await s.execute(case_q)).all()
        bodies: list[dict[str, Any]] = list((await s.scalars(report_q)).all())

    volume: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SEVERITIES, 0))
    for dept, severity, _closed in cases:
        volume[dept or "unassigned"][severity] += 1

    tier_seconds: dict[int, list[float]] = defaultdict(list)
    tier_breaches: Counter[int] = Counter()
    decisions: Counter[str] = Counter()
    decision_hours: list[float] = []
    resolution: list[float] = []
    first_tier = 0
    breached = hard_cap = reopened = 0
    resolutions: Counter[tuple[str, int]] = Counter()
    scores: dict[tuple[str, int], list[int]] = defaultdict(list)
    causes: dict[str, Counter[str]] = defaultdict(Counter)
    for body in bodies:
        where = (body["department"], body["final_tier"])
        feedback = body.get("feedback", [])
        if body["outcome"] == "resolved":  # each reopen is one more resolution to rate
            resolutions[where] += 1 + len(body.get("reopens", []))
        scores[where] += [f["score"] for f in feedback]
        reopened += bool(body.get("reopens"))
        if body.get("root_cause"):
            causes[body["department"]][body["root_cause"]] += 1
        for visit in body["tiers"]:
            tier_seconds[visit["tier"]].append(visit["seconds"])
        for b in body["breaches"]:
            tier_breaches[b["tier"]] += 1
        for a in body["approvals"]:
            decisions[a["decision"]] += 1
            if a["decision"] in ("approved", "rejected"):
                asked = datetime.fromisoformat(a["requested_at"])
                answered = datetime.fromisoformat(a["decided_at"])
                decision_hours.append((answered - asked).total_seconds() / 3600)
        breached += bool(body["sla_breached"])
        if body["outcome"] == "hard_cap":
            hard_cap += 1
        if body["outcome"] == "resolved":
            resolution.append(_to_resolution(body))
            if len({v["tier"] for v in body["tiers"]}) == 1:
                first_tier += 1

    tiers = []
    for tier in sorted(tier_seconds):
        secs = tier_seconds[tier]
        visits = len(secs)
        tiers.append(
            TierStats(
                tier=tier,
                visits=visits,
                median_hours=_hours(percentile(secs, 50)),
                p90_hours=_hours(percentile(secs, 90)),
                breaches=tier_breaches[tier],
                breach_rate=round(tier_breaches[tier] / visits, 3) if visits else None,
            )
        )
    decided = decisions["approved"] + decisions["rejected"]
    approvals = ApprovalStats(
        requested=sum(decisions.values()),
        approved=decisions["approved"],
        rejected=decisions["rejected"],
        expired=decisions["expired"],
        withdrawn=decisions["withdrawn"],
        approval_rate=round(decisions["approved"] / decided, 3) if decided else None,
        median_hours_to_decision=_round(percentile(decision_hours, 50)),
        p90_hours_to_decision=_round(percentile(decision_hours, 90)),
    )
    closed = sum(1 for *_x, c in cases if c is not None)
    csat = [_csat(d, t, resolutions[(d, t)], scores[(d, t)]) for d, t in sorted(resolutions)]
    every = [x for xs in scores.values() for x in xs]
    return DeskReport(
        since=since,
        cases=len(cases),
        open=len(cases) - closed,
        closed=closed,
        volume=dict(sorted(volume.items())),
        tiers=tiers,
        approvals=approvals,
        resolution_hours={
            "p50": _hours(percentile(resolution, 50)),
            "p90": _hours(percentile(resolution, 90)),
            "p99": _hours(percentile(resolution, 99)),
        },
        resolved=len(resolution),
        resolved_at_first_tier=round(first_tier / len(resolution), 3) if resolution else None,
        sla_breached_cases=breached,
        hard_cap_cases=hard_cap,
        csat=csat,
        csat_overall=_csat("all", 0, sum(resolutions.values()), every) if resolutions else None,
        reopened_cases=reopened,
        reopen_rate=round(reopened / len(resolution), 3) if resolution else None,
        root_causes={d: dict(c.most_common()) for d, c in sorted(causes.items())},
    )


def _to_resolution(body: dict[str, Any]) -> float:
    """Seconds from opening to the last resolution (a closed case also spent its reopen
    window after it, which is not the desk's time)."""
    resolved = [e["at"] for e in body.get("timeline", []) if e["what"] == "resolved"]
    if not resolved:
        return float(body["duration_seconds"])
    opened = datetime.fromisoformat(body["opened_at"])
    return (datetime.fromisoformat(resolved[-1]) - opened).total_seconds()


def _csat(department: str, tier: int, resolutions: int, scores: list[int]) -> CsatStats:
    return CsatStats(
        department=department,
        tier=tier,
        resolutions=resolutions,
        responses=len(scores),
        response_rate=round(len(scores) / resolutions, 3) if resolutions else None,
        average=round(sum(scores) / len(scores), 2) if scores else None,
        distribution={n: scores.count(n) for n in range(1, 6)},
    )


def time_unit(hours: list[float]) -> tuple[str, float]:
    """Minutes for a chart whose longest bar is under two hours, else hours."""
    return ("minutes", 60.0) if max(hours, default=0) < 2 else ("hours", 1.0)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def case_history(records: Records, case_id: str) -> list[TimelineRow]:
    async with records.sessions() as s:
        rows = await s.scalars(
            select(TimelineRow).where(TimelineRow.case_id == case_id).order_by(TimelineRow.seq)
        )
        return list(rows.all())


async def case_messages(records: Records, case_id: str) -> list[MessageRow]:
    """A case's outbox, oldest first: every notification and customer update it queued."""
    async with records.sessions() as s:
        rows = await s.scalars(
            select(MessageRow).where(MessageRow.case_id == case_id).order_by(MessageRow.id)
        )
        return list(rows.all())


def write_chart(report: DeskReport, path: Path) -> Path:
    """Six panels a manager can drop into a slide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 8), constrained_layout=True)
    fig.suptitle(
        f"Escalation desk: {report.cases} cases ({report.open} open), "
        f"{report.sla_breached_cases} breached at the top tier",
        fontsize=14,
    )
    colours = {"low": "#9ecae1", "medium": "#4292c6", "high": "#fd8d3c", "critical": "#d7301f"}

    ax = axes[0][0]
    depts = list(report.volume)
    bottom = [0] * len(depts)
    for sev in SEVERITIES:
        counts = [report.volume[d][sev] for d in depts]
        ax.bar(depts, counts, bottom=bottom, label=sev, color=colours[sev])
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_title("Cases by department and severity")
    ax.set_ylabel("cases")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    labels = [f"Tier {t.tier}" for t in report.tiers]
    xs = range(len(labels))
    medians = [t.median_hours or 0 for t in report.tiers]
    p90s = [t.p90_hours or 0 for t in report.tiers]
    unit, scale = time_unit(medians + p90s)
    ax.bar([x - 0.2 for x in xs], [v * scale for v in medians], 0.4, label="median")
    ax.bar([x + 0.2 for x in xs], [v * scale for v in p90s], 0.4, label="p90")
    ax.set_xticks(list(xs), labels)
    ax.set_ylim(bottom=0)  # times are never negative, even when every bar is zero
    ax.set_title(f"Time spent in each tier ({unit})")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    rates = [100 * (t.breach_rate or 0) for t in report.tiers]
    ax.bar(labels, rates, color="#d7301f")
    ax.set_ylim(0, max([100.0, *rates]))
    ax.set_title("SLA breach rate per tier (%)")
    for x, r in zip(xs, rates, strict=True):
        ax.annotate(f"{r:.0f}%", (x, r), ha="center", va="bottom", fontsize=9)

    ax = axes[1][1]
    res = report.resolution_hours
    values = [res["p50"] or 0, res["p90"] or 0, res["p99"] or 0]
    res_unit, res_scale = time_unit(values)
    ax.bar(["p50", "p90", "p99"], [v * res_scale for v in values], color="#41ab5d")
    ax.set_ylim(bottom=0)
    first = report.resolved_at_first_tier
    share = f"{100 * first:.0f}%" if first is not None else "—"
    a = report.approvals
    rate = f"{100 * a.approval_rate:.0f}%" if a.approval_rate is not None else "—"
    ax.set_title(
        f"Resolution time ({res_unit}), {report.resolved} resolved\n"
        f"{share} at the first tier · approvals {a.requested}, {rate} approved",
        fontsize=10,
    )

    ax = axes[0][2]
    overall = report.csat_overall
    dist = overall.distribution if overall else dict.fromkeys(range(1, 6), 0)
    ax.bar([str(n) for n in dist], list(dist.values()), color="#807dba")
    avg = f"{overall.average:.2f}" if overall and overall.average is not None else "—"
    responded = overall.response_rate if overall else None
    answered = f"{100 * responded:.0f}%" if responded is not None else "—"
    reopen = f"{100 * report.reopen_rate:.0f}%" if report.reopen_rate is not None else "—"
    ax.set_title(
        f"Customer ratings: average {avg}, {answered} answered\nreopened {reopen}", fontsize=10
    )
    ax.set_xlabel("score")
    ax.set_ylabel("ratings")

    ax = axes[1][2]
    all_causes = sorted({c for d in report.root_causes.values() for c in d})
    depts_rc = list(report.root_causes)
    left = [0] * len(depts_rc)
    for i, cause in enumerate(all_causes):
        counts = [report.root_causes[d].get(cause, 0) for d in depts_rc]
        ax.barh(depts_rc, counts, left=left, label=cause, color=f"C{i}")
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_title("Root causes by department")
    ax.set_xlabel("cases")
    if all_causes:
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
