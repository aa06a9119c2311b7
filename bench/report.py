"""What a benchmark run found, the targets judged, and the markdown the README quotes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from starter.reporting import percentile as desk_percentile


def percentile(values: list[float], p: float) -> float:
    """reporting.percentile, with NaN for no samples so the tables still render."""
    value = desk_percentile(values, p)
    return float("nan") if value is None else value


# --- the run --------------------------------------------------------------------------------


@dataclass
class Report:
    config: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def target(
        self, name: str, measured: float | None, limit: float, holds: bool, unit: str = ""
    ) -> None:
        """`measured` None: the run could not measure it (e.g. RSS moved less than its noise)."""
        self.targets.append(
            {
                "target": name,
                "measured": None if measured is None else round(measured, 3),
                "limit": limit,
                "unit": unit,
                "holds": holds,
            }
        )


def judge(report: Report) -> None:
    r = report.results
    big = max((k for k in r if k.startswith("throughput_n")), key=lambda k: r[k]["n"])
    t = r[big]
    ca, ba = r["case_history"]["actions"], r["baseline_history"]["actions"]
    ratio = (t["cases_per_s"] * ca) / (t["baseline_per_s"] * ba)
    r["throughput_ratio_per_action"] = round(ratio, 3)
    report.target(
        f"case throughput per action vs baseline (N={t['n']})", ratio, 0.8, ratio >= 0.8, "x"
    )
    raw = t["cases_per_s"] / t["baseline_per_s"]
    r["throughput_ratio"] = round(raw, 3)
    report.target(f"case throughput vs baseline (N={t['n']})", raw, 0.8, raw >= 0.8, "x")
    wa = r.get("case_history_windowed", {}).get("actions")
    report.target(
        "billable actions per happy-path case, with the reopen window",
        wa,
        14,
        wa is not None and wa <= 14,
    )
    ev = r["case_history"]["events"]
    report.target("history events per happy-path case", ev, 150, ev <= 150)
    u = r["approval_update_ms"]
    p50, p99 = u["case_p50"] / u["baseline_p50"], u["case_p99"] / u["baseline_p99"]
    report.target("approval update p50 vs baseline", p50, 1.2, p50 <= 1.2, "x")
    report.target("approval update p99 vs baseline", p99, 2.0, p99 <= 2.0, "x")
    if "worker_cpu_ms_per_case" in r:  # steadier than throughput, which moves with the server
        w = r["worker_cpu_ms_per_case"]
        cost = w["observed"] / w["off"] - 1
        name = "metrics + tracing on: worker CPU per case"
        report.target(name, cost * 100, 5, cost <= 0.05, "%")
    if "approval_update_ms_observed" in r:
        on, off = r["approval_update_ms_observed"], r["approval_update_ms"]
        cost = on["case_p50"] / off["case_p50"] - 1
        report.target("metrics + tracing on: approval p50 cost", cost * 100, 5, cost <= 0.05, "%")
    late = r["escalation_lateness_s"]["p99"]
    report.target(
        f"escalation lateness p99 ({r['escalation_lateness_s']['open_cases']} open)",
        late,
        1.0,
        late <= 1.0,
        "s",
    )
    if "flood" in r:
        f = r["flood"]["lateness_s"]["p99"]
        name = f"flood: escalation lateness p99 ({r['flood']['opened']} cases being opened)"
        report.target(name, f, 1.0, f <= 1.0, "s")
    if "assignment_rate" in r:
        a = r["assignment_rate"]
        name = f"assignments per second, filling to {a['open']} open"
        report.target(name, a["assigned_per_s"], 21, a["assigned_per_s"] >= 21, "/s")
    if "herd" in r and "bare_herd" in r:
        desk, bare = (
            r["herd"]["escalation_lateness_s"]["max"],
            r["bare_herd"]["finished_late_s"]["max"],
        )
        ratio = desk / bare if desk is not None and bare else None
        name = f"herd: last escalation vs last bare workflow ({r['herd']['cases']} at once)"
        report.target(name, ratio, 1.5, ratio is not None and ratio <= 1.5, "x")
        lag = r["herd"]["delivery_after_its_transition_s"]["p99"]
        report.target("herd: delivery after its transition p99", lag, 2.0, lag <= 2.0, "s")
    p = r["parked"]
    cpu = p["case"]["idle_cpu_pct_of_core"]
    report.target(f"worker idle CPU, {p['parked']} parked", cpu, 0.1, cpu <= 0.1, "% core")
    case_kb, base_kb = p["case"]["kb_per_cached"], p["baseline"]["kb_per_cached"]
    if case_kb > 0 and base_kb > 0:
        mem = case_kb / base_kb
        report.target("memory per cached case vs baseline", mem, 1.5, mem <= 1.5, "x")
    else:  # RSS fell while parking: a few hundred cases are within the allocator's noise
        report.target("memory per cached case vs baseline", None, 1.5, False, "x")
    c = r["console_ms"]
    for page, limit in (("my_cases", 300), ("desk", 300), ("case_page", 150)):
        p95 = c[f"{page}_p95_ms"]
        name = f"console {page.replace('_', ' ')} p95, {c['open_cases']} open"
        report.target(name, p95, limit, p95 <= limit, "ms")
    if "simulation" in r:
        sim = r["simulation"]
        name = f"simulator: {sim['cases']} cases, both runs"
        report.target(name, sim["seconds_both_runs"], 60, sim["seconds_both_runs"] <= 60, "s")
        mb = sim["peak_rss_mb"]
        report.target("simulator: peak memory", mb, 1024, mb <= 1024, "MB")
    k = r["worker_killed"]
    report.target(
        "two workers, one killed: cases completed",
        k["completed"],
        k["cases"],
        k["completed"] == k["cases"],
    )


def markdown(report: Report) -> str:
    r = report.results
    small = " --small" if report.config["mode"] == "small" else ""
    rows: list[tuple[str, object, object]] = []
    for key in sorted((k for k in r if k.startswith("throughput_n")), key=lambda k: r[k]["n"]):
        t = r[key]
        rows.append(
            (f"workflows/s, N={t['n']} started together", t["cases_per_s"], t["baseline_per_s"])
        )
    for key in (k for k in r if k.startswith("throughput_plain_n")):
        t = r[key]
        rows.append(
            (
                f"workflows/s, N={t['n']}, cases **not encrypted**",
                t["cases_per_s"],
                t["baseline_per_s"],
            )
        )
    for key in (k for k in r if k.startswith("throughput_observed_n")):
        t = r[key]
        rows.append(
            (
                f"workflows/s, N={t['n']}, **metrics and tracing on**",
                t["cases_per_s"],
                t["baseline_per_s"],
            )
        )
    ch, bh = r["case_history"], r["baseline_history"]
    rows.append(("billable actions per happy path", ch["actions"], bh["actions"]))
    if wh := r.get("case_history_windowed"):
        rows.append(("billable actions per happy path, with the reopen window", wh["actions"], "—"))
    rows.append(("history events per happy path", ch["events"], bh["events"]))
    u = r["approval_update_ms"]
    rows.append(
        (
            "approval update p50 / p99 (ms)",
            f"{u['case_p50']} / {u['case_p99']}",
            f"{u['baseline_p50']} / {u['baseline_p99']}",
        )
    )
    if "approval_update_ms_plain" in r:
        up = r["approval_update_ms_plain"]
        rows.append(
            (
                "approval update p50 / p99 (ms), **not encrypted**",
                f"{up['case_p50']} / {up['case_p99']}",
                f"{up['baseline_p50']} / {up['baseline_p99']}",
            )
        )
    if "worker_cpu_ms_per_case" in r:
        w = r["worker_cpu_ms_per_case"]
        rows.append(
            (
                "worker CPU per case (ms), metrics and tracing off / on",
                f"{w['off']} / {w['observed']}",
                "—",
            )
        )
    if "approval_update_ms_observed" in r:
        uo = r["approval_update_ms_observed"]
        rows.append(
            (
                "approval update p50 / p99 (ms), **metrics and tracing on**",
                f"{uo['case_p50']} / {uo['case_p99']}",
                f"{uo['baseline_p50']} / {uo['baseline_p99']}",
            )
        )
    late = r["escalation_lateness_s"]
    rows.append(
        (
            f"escalation lateness p50 / p99 / max (s), {late['open_cases']} open",
            f"{late['p50']} / {late['p99']} / {late['max']}",
            "—",
        )
    )
    if "flood" in r:
        f = r["flood"]
        rows.append(
            (
                f"flood: {f['probes']} critical deadlines while {f['opened']} cases open "
                f"({f['opened_per_s']}/s, assigned {f['assigned_per_s']}/s): lateness "
                "p50 / p99 / max (s)",
                f"{f['lateness_s']['p50']} / {f['lateness_s']['p99']} / {f['lateness_s']['max']}",
                "—",
            )
        )
    if "assignment_rate" in r:
        a = r["assignment_rate"]
        rows.append(
            (f"assignments per second, filling to {a['open']} open", a["assigned_per_s"], "—")
        )
    if "herd" in r:
        h, hb = r["herd"], r.get("bare_herd", {}).get("finished_late_s", {})
        e, d = h["escalation_lateness_s"], h["delivery_after_the_deadline_s"]
        rows.append(
            (
                f"herd: {h['cases']} deadlines in one second, late p50 / p99 / last (s)",
                f"{e['p50']} / {e['p99']} / {e['max']}",
                f"{hb.get('p50')} / {hb.get('p99')} / {hb.get('max')}",
            )
        )
        lag = h["delivery_after_its_transition_s"]
        rows.append(
            (
                "herd: messages sent after their transition p50 / p99 (s); after the "
                "deadline p50 / last",
                f"{lag['p50']} / {lag['p99']}; {d['p50']} / {d['max']}",
                "—",
            )
        )
        if (dd := h.get("delivery_after_the_decision_s")) is not None:
            rows.append(
                (
                    "herd: messages sent after the escalation was decided p50 / p99 (s)",
                    f"{dd['p50']} / {dd['p99']}",
                    "—",
                )
            )
    p = r["parked"]
    c, b = p["case"], p["baseline"]
    rows.append(
        (
            f"worker RSS idle → {p['parked']} parked (MB)",
            f"{c['rss_idle_mb']} → {c['rss_parked_mb']}",
            f"{b['rss_idle_mb']} → {b['rss_parked_mb']}",
        )
    )
    rows.append(("memory per cached workflow (KB)", c["kb_per_cached"], b["kb_per_cached"]))
    if "case_plain" in p:
        rows.append(
            (
                "memory per cached workflow (KB), **not encrypted**",
                p["case_plain"]["kb_per_cached"],
                b["kb_per_cached"],
            )
        )
    rows.append(
        (
            f"worker idle CPU, {p['parked']} parked (% of a core)",
            c["idle_cpu_pct_of_core"],
            b["idle_cpu_pct_of_core"],
        )
    )
    cm = r["console_ms"]
    rows.append(
        (
            f"console p50 / p95 (ms), {cm['open_cases']} open: My cases "
            f"({cm['my_cases_rows']} rows), /desk, a case page",
            f"{cm['my_cases_p50_ms']} / {cm['my_cases_p95_ms']}, "
            f"{cm['desk_p50_ms']} / {cm['desk_p95_ms']}, "
            f"{cm['case_page_p50_ms']} / {cm['case_page_p95_ms']}",
            "—",
        )
    )
    k = r["worker_killed"]
    rows.append(
        (
            "2 workers, 1 SIGKILLed: completed",
            f"{k['completed']}/{k['cases']} in {k['seconds']} s",
            "—",
        )
    )
    lines = [
        f"Benchmark {report.config['started']}, {report.config['mode']} run on "
        f"{os.cpu_count()} cores: `python -m bench.run{small}`. Cases encrypt their payloads "
        "(a data key per case) unless a row says otherwise; the baseline is the bare workflow.",
        "",
        "| measure | case | baseline |",
        "|---|---|---|",
        *[f"| {name} | {case} | {base} |" for name, case, base in rows],
        "",
        f"Billable actions of a happy-path case: {ch['by_kind']}"
        + (f"; with the reopen window: {wh['by_kind']}" if wh else ""),
        "",
        *(
            [
                f"Policy simulator: {sim['cases']} synthetic cases, current and candidate, "
                f"{sim['seconds_both_runs']} s for both runs ({sim['events_per_s']} events/s), "
                f"peak memory {sim['peak_rss_mb']} MB.",
                "",
            ]
            if (sim := r.get("simulation"))
            else []
        ),
        *(
            [
                "The small run keeps the benchmark from rotting; its samples are too few to "
                "judge the targets, which the full run does.",
                "",
            ]
            if small
            else []
        ),
        "| target | measured | limit | holds |",
        "|---|---|---|---|",
    ]
    for t in report.targets:
        if t["measured"] is None:
            lines.append(f"| {t['target']} | not measurable here | {t['limit']} | — |")
            continue
        holds = "yes" if t["holds"] else "**no**"
        lines.append(f"| {t['target']} | {t['measured']} {t['unit']} | {t['limit']} | {holds} |")
    return "\n".join(lines) + "\n"
