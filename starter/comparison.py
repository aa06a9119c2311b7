"""Two runs of the desk side by side: what a candidate policy would change, overall, per
department and per tier, who would carry the load, and the cases that change most."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starter.reporting import percentile
from starter.simulate import CaseRun, DeskRun

Figure = float | int | None


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)  # a table's hours


def figures(cases: list[CaseRun], tier: int | None = None) -> dict[str, Figure]:
    """The comparison's figures for a group of cases (`tier`: time in that tier only)."""
    in_tier = [sec for c in cases for t, sec in c.tier_seconds.items() if tier is None or t == tier]
    to_resolve = [
        (c.resolved_at - c.opened_at).total_seconds() for c in cases if c.resolved_at is not None
    ]
    return {
        "cases": len(cases),
        "automatic escalations": sum(c.escalations for c in cases),
        "escalations by hand": sum(c.manual_escalations for c in cases),
        "ack breaches": sum(c.breaches["ack"] for c in cases),
        "resolve breaches": sum(c.breaches["resolve"] for c in cases),
        "warnings": sum(c.warnings for c in cases),
        "time in tier p50 (h)": _hours(percentile(in_tier, 50)),
        "time in tier p90 (h)": _hours(percentile(in_tier, 90)),
        "time to resolve p50 (h)": _hours(percentile(to_resolve, 50)),
        "time to resolve p90 (h)": _hours(percentile(to_resolve, 90)),
        "approvals": sum(len(c.approvals) for c in cases),
        "customer updates": sum(c.customer_updates for c in cases),
        "messages": sum(c.messages for c in cases),
        "hard-cap closes": sum(1 for c in cases if c.outcome == "hard_cap"),
        "acts refused": sum(c.refused_acts for c in cases),
    }


def _in_department(department: str) -> Callable[[CaseRun], bool]:
    return lambda c: c.department == department


def _through_tier(tier: int) -> Callable[[CaseRun], bool]:
    return lambda c: tier in c.tiers


@dataclass
class Comparison:
    current: DeskRun  # each case under the policy it ran with (or the desk's, synthetic)
    candidate: DeskRun
    recorded: DeskRun | None = None  # what the records say happened

    def groups(self) -> list[tuple[str, Callable[[CaseRun], bool], int | None]]:
        runs = self.current.cases + self.candidate.cases + (self.recorded or self.current).cases
        departments = sorted({c.department for c in runs})
        tiers = sorted({t for c in runs for t in c.tiers})
        out: list[tuple[str, Callable[[CaseRun], bool], int | None]] = [
            ("overall", lambda c: True, None)
        ]
        out += [(f"department {d}", _in_department(d), None) for d in departments]
        out += [(f"tier {t}", _through_tier(t), t) for t in tiers]
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per group and figure: (recorded,) current, candidate, change."""
        rows = []
        for name, member, tier in self.groups():
            now = figures([c for c in self.current.cases if member(c)], tier)
            then = figures([c for c in self.candidate.cases if member(c)], tier)
            was = (
                figures([c for c in self.recorded.cases if member(c)], tier)
                if self.recorded
                else {}
            )
            for key, value in now.items():
                other = then[key]
                change = (
                    round(other - value, 2)
                    if isinstance(value, int | float) and isinstance(other, int | float)
                    else None
                )
                row = {"group": name, "figure": key, "current": value, "candidate": other}
                if self.recorded is not None:
                    row = {"group": name, "figure": key, "recorded": was.get(key), **row}
                rows.append({**row, "change": change})
        return rows

    def columns(self) -> list[str]:
        recorded = ["recorded"] if self.recorded is not None else []
        return ["group", "figure", *recorded, "current", "candidate", "change"]

    def approvers(self) -> dict[str, dict[str, int]]:
        """Who decided approvals, in each run."""
        out: dict[str, dict[str, int]] = {}
        for label, run in (("current", self.current), ("candidate", self.candidate)):
            seen: dict[str, int] = {}
            for c in run.cases:
                for _decision, by in c.approvals:
                    seen[by] = seen.get(by, 0) + 1
            out[label] = dict(sorted(seen.items()))
        return out

    def load(self) -> list[dict[str, Any]]:
        """Peak and mean open cases per person, the most loaded first."""
        people = set(self.current.load_peak) | set(self.candidate.load_peak)
        rows: list[dict[str, Any]] = [
            {
                "person": p,
                "peak current": self.current.load_peak.get(p, 0),
                "peak candidate": self.candidate.load_peak.get(p, 0),
                "mean current": round(self.current.load_mean.get(p, 0.0), 2),
                "mean candidate": round(self.candidate.load_mean.get(p, 0.0), 2),
            }
            for p in people
        ]
        rows.sort(key=lambda r: (-max(r["peak current"], r["peak candidate"]), r["person"]))
        return rows

    def changed(self, limit: int = 10) -> list[dict[str, Any]]:
        """The cases whose course changes most: tier, outcome, escalations, breaches."""
        by_id = {c.case_id: c for c in self.candidate.cases}
        scored = []
        for a in self.current.cases:
            b = by_id.get(a.case_id)
            if b is None:
                continue
            score = (
                3 * abs(b.final_tier - a.final_tier)
                + 3 * (a.outcome != b.outcome)
                + 2 * abs(b.escalations - a.escalations)
                + abs(sum(b.breaches.values()) - sum(a.breaches.values()))
            )
            if score:
                scored.append((score, a.case_id, a, b))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [
            {"case_id": cid, "current": course(a), "candidate": course(b)}
            for _s, cid, a, b in scored[:limit]
        ]


def course(c: CaseRun) -> str:
    """'escalated to tier 3 at 2026-11-03 10:40, resolved at tier 3' (UTC)."""
    parts = [f"escalated to tier {tier} at {at:%Y-%m-%d %H:%M}" for tier, at in c.escalated_to]
    if sum(c.breaches.values()):
        parts.append(f"{sum(c.breaches.values())} breach(es)")
    end = f"{c.outcome or 'open'} at tier {c.final_tier}"
    if c.resolved_at is not None:
        end = f"resolved at tier {c.final_tier} at {c.resolved_at:%Y-%m-%d %H:%M}"
    return ", ".join([*parts, end])


def text_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of `rows`."""

    def cell(v: Any) -> str:
        return "—" if v is None else f"{v:+g}" if isinstance(v, float) and v < 0 else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def report_json(c: Comparison, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "current_policy": c.current.policy_version,
        "candidate_policy": c.candidate.policy_version,
        "events": {"current": c.current.events, "candidate": c.candidate.events},
        "figures": c.table(),
        "approvers": c.approvers(),
        "load": c.load(),
        "changed_cases": c.changed(),
    }


def print_comparison(c: Comparison, source: str, seconds: float) -> None:
    events = c.current.events + c.candidate.events
    print(
        f"{source}: policy {c.current.policy_version} (current) against "
        f"{c.candidate.policy_version} (candidate); {events} events in {seconds:.1f} s "
        f"({events / max(seconds, 1e-9):,.0f}/s)\n"
    )
    print(text_table(c.table(), c.columns()))
    print("\nWho would carry the load (open cases per person):\n")
    columns = ["person", "peak current", "peak candidate", "mean current", "mean candidate"]
    print(text_table(c.load()[:15], columns))
    approvers = c.approvers()
    if approvers["current"] or approvers["candidate"]:
        print(f"\nApprovals decided by: current {approvers['current']}")
        print(f"                      candidate {approvers['candidate']}")
    changed = c.changed()
    print(f"\nThe cases that change most ({len(changed)}):\n")
    for row in changed:
        print(f"- {row['case_id']}: {row['candidate']} instead of {row['current']}")


def write_chart(c: Comparison, path: Any) -> Any:
    """Side by side, per department: escalations, breaches, time to resolve; peak load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = c.table()
    groups = [g for g, _m, _t in c.groups() if g.startswith("department ")]
    names = [g.removeprefix("department ") for g in groups]

    def series(figure: str, which: str) -> list[float]:
        found = {r["group"]: r[which] for r in rows if r["figure"] == figure}
        return [float(found.get(g) or 0) for g in groups]

    fig, axes = plt.subplots(2, 2, figsize=(14, 8), constrained_layout=True)
    fig.suptitle(
        f"Policy {c.current.policy_version} (current) vs {c.candidate.policy_version} "
        f"(candidate): {len(c.current.cases)} cases",
        fontsize=14,
    )
    panels = [
        ("automatic escalations", "Automatic escalations"),
        ("resolve breaches", "Resolve breaches"),
        ("time to resolve p50 (h)", "Time to resolve, median (h)"),
    ]
    xs = range(len(names))
    for ax, (figure, title) in zip(axes.flat, panels, strict=False):
        now, then = series(figure, "current"), series(figure, "candidate")
        ax.bar([x - 0.2 for x in xs], now, 0.4, label="current")
        ax.bar([x + 0.2 for x in xs], then, 0.4, label="candidate")
        ax.set_xticks(list(xs), names, rotation=20)
        ax.set_ylim(0, 1.25 * max([*now, *then, 1.0]))  # room for the legend above the bars
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper right", ncols=2)
    ax = axes[1][1]
    load = c.load()[:12]
    ys = range(len(load))
    ax.barh([y - 0.2 for y in ys], [r["peak current"] for r in load], 0.4, label="current")
    ax.barh([y + 0.2 for y in ys], [r["peak candidate"] for r in load], 0.4, label="candidate")
    ax.set_yticks(list(ys), [r["person"] for r in load])
    ax.invert_yaxis()
    ax.set_title("Peak open cases per person")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
