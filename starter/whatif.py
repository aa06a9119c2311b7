"""`escalate simulate`: a candidate policy against the current one, on the recorded cases
of a period (with the fidelity check) or on a synthetic month (which it may save)."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from activities.policy_file import load_policy
from activities.records import Records
from starter.api import CaseError, parse_since
from starter.comparison import Comparison, print_comparison, report_json, write_chart
from starter.recorded import AlreadyRecorded, fidelity_lines
from starter.recorded import load as load_recorded
from starter.recorded import save as save_recorded
from starter.simulate import DeskRun, Scripted, simulate
from starter.synthetic import generate
from workflows.policy import Policy, PolicyError, parse_duration


async def simulate_command(args: argparse.Namespace) -> int:
    try:
        candidate = load_policy(args.policy)
        current = load_policy(args.current)
    except PolicyError as err:
        raise CaseError(f"simulate refused: {err}") from None
    fidelity: list[str] | None = None
    recorded: DeskRun | None = None
    started = time.perf_counter()
    if args.synthetic is not None:
        first = parse_since(args.start) if args.start else None
        try:
            cases = generate(current, args.synthetic, args.days, args.seed, first)
        except ValueError as err:
            raise CaseError(f"simulate: {err}") from None
        source = f"{len(cases)} synthetic cases over {args.days} days (seed {args.seed})"
        end = datetime.now(UTC) if args.save else None  # saved as the records would be now
        now = simulate(cases, current, end=end, keep=args.save)
        then = simulate(cases, candidate, end=end)
        if args.save:
            await save_synthetic(now, current, cases)
    else:
        start, end = simulation_period(args)
        records = Records.from_url()
        try:
            found = await load_recorded(records, start, end)
        finally:
            await records.close()
        cases, recorded = found.scripted, found.desk()
        source = f"{len(cases)} recorded cases opened {start:%F %H:%M} to {end:%F %H:%M} UTC"
        if found.skipped:
            source += f" ({len(found.skipped)} left out: {summary_of(found.skipped)})"
        now = simulate(cases, current, end=datetime.now(UTC), own=True)
        then = simulate(cases, candidate, end=datetime.now(UTC))
        fidelity = fidelity_lines(found.runs, now)
    comparison = Comparison(now, then, recorded)
    seconds = time.perf_counter() - started
    if args.json:
        answer = report_json(comparison, source)
        if fidelity is not None:
            answer["fidelity"] = {"cases": len(cases), "not_reproduced": fidelity}
        print(json.dumps(answer, indent=2, default=str))
    else:
        if fidelity is not None:
            reproduced = len(cases) - len(fidelity)
            print(f"fidelity: {reproduced} of {len(cases)} cases reproduced under their own policy")
            for line in fidelity:
                print(f"  not reproduced: {line}")
            print()
        print_comparison(comparison, source, seconds)
    if args.chart:
        print(f"chart written to {write_chart(comparison, Path(args.chart))}")
    return 0


async def save_synthetic(run: DeskRun, policy: Policy, cases: list[Scripted]) -> None:
    records = Records.from_url()
    try:
        saved = await save_recorded(records, run, policy, datetime.now(UTC))
    except AlreadyRecorded as err:
        raise CaseError(f"simulate --save refused: {err}; pick another --seed") from None
    finally:
        await records.close()
    first = min(c.opened_at for c in cases)
    last = max(c.opened_at for c in cases) + timedelta(seconds=1)
    print(
        f"saved {saved} synthetic case(s) to the records; replay them with "
        f"--from {first:%Y-%m-%dT%H:%M:%S} --to {last:%Y-%m-%dT%H:%M:%S}"
    )


def simulation_period(args: argparse.Namespace) -> tuple[datetime, datetime]:
    end = parse_since(args.to) if args.to else datetime.now(UTC)
    if args.start:
        return parse_since(args.start), end
    try:
        span = parse_duration(args.since or "30d")
    except ValueError:
        raise CaseError(f"since: {args.since!r} is not a duration such as 30d or 12h") from None
    return end - timedelta(seconds=span), end


def summary_of(skipped: dict[str, str]) -> str:
    reasons = Counter(skipped.values())
    return "; ".join(f"{n} because {why}" for why, n in reasons.most_common())
