"""The escalation matrix: who works which tier, how long each tier has, who may approve what.

A policy is plain data validated by pydantic. The worker loads it from TOML
(activities/policy_file.py); a case takes a copy at identify (through an activity, so it is in
the case's history) and keeps that version for its whole life: a new policy applies to new
cases only.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from workflows.models import SEVERITIES, Severity

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> int:
    """'90s', '15m', '4h', '2d', '1d 4h' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '4h'")
    if isinstance(value, int | float):
        seconds = int(value)
    elif isinstance(value, str):
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", value.strip().lower())
        rebuilt = "".join(n + u for n, u in parts)
        if not parts or rebuilt != re.sub(r"\s+", "", value.strip().lower()):
            raise ValueError(f"{value!r} is not a duration (use e.g. '30m', '4h', '2d')")
        seconds = int(sum(float(n) * _UNITS[u] for n, u in parts))
    else:
        raise ValueError("expected a duration like '4h'")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[int, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Shift(_Model):
    """Working hours in the policy's timezone; a person without a shift is always on."""

    days: list[Annotated[int, Field(ge=0, le=6)]] = [0, 1, 2, 3, 4]
    start: time
    end: time


class BusinessHours(_Model):
    """When business-hours SLA clocks run, in the policy's timezone."""

    days: list[Annotated[int, Field(ge=0, le=6)]] = [0, 1, 2, 3, 4]
    start: time = time(9)
    end: time = time(17)
    holidays: list[date] = []

    @model_validator(mode="after")
    def _window(self) -> BusinessHours:
        if not self.days:
            raise ValueError("days: at least one working day is needed")
        if self.end <= self.start:
            raise ValueError(f"end: {self.end} is not after start {self.start}")
        return self


SlaClock = Literal["calendar", "business"]


class PersonChannel(_Model):
    """An Apprise URL (Slack, Teams, Discord, ntfy, SMS, json:// ...) and the severities of
    the cases whose notices go there too (all, when not given)."""

    url: Annotated[str, Field(pattern=r"^[a-z][a-z0-9+.-]*://")]
    severities: list[Severity] = list(SEVERITIES)


class Person(_Model):
    id: Annotated[str, Field(min_length=1)]
    name: str
    email: str
    tier: int
    skills: list[str] = []
    approval_limit: Annotated[float, Field(ge=0)] = 0.0
    shift: Shift | None = None
    # Chat URLs carry their tokens: the delivery reads them from the worker's policy and they
    # are left out of the copy a case keeps in its history.
    channels: Annotated[list[PersonChannel], Field(exclude=True)] = []


class Department(_Model):
    name: str
    people: list[Person]


class Route(_Model):
    department: str
    skill: str | None = None


class TierPolicy(_Model):
    """One tier's deadlines; `level` is the int a case calls its tier."""

    level: int
    name: str
    ack: dict[Severity, Duration]
    resolve: dict[Severity, Duration]

    @model_validator(mode="after")
    def _all_severities(self) -> TierPolicy:
        for clock in ("ack", "resolve"):
            missing = [s for s in SEVERITIES if s not in getattr(self, clock)]
            if missing:
                raise ValueError(f"{clock}: missing severities {', '.join(missing)}")
        for sev in SEVERITIES:
            if self.ack[sev] >= self.resolve[sev]:
                raise ValueError(f"ack.{sev}: must be shorter than resolve.{sev}")
        return self


class SeverityRaise(_Model):
    vip: bool = True
    repeat_cases: Annotated[int, Field(ge=1)] = 2
    repeat_window: Duration = 30 * 86400


class Policy(_Model):
    version: Annotated[str, Field(min_length=1)]
    timezone: str = "UTC"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    currency_rates: dict[str, Annotated[float, Field(gt=0)]] = {}
    warning_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.75
    # Which severities' SLA windows count business hours only; the rest run around the clock.
    # Absent (as in policies pinned by older cases) means every clock is a calendar clock.
    sla_clock: dict[Severity, SlaClock] = {}
    business_hours: BusinessHours = BusinessHours()
    hard_cap: Duration = 30 * 86400
    start_tier: dict[Severity, int]
    approval_timeout: dict[Severity, Duration]
    customer_update_every: dict[Severity, Duration]
    # How often an assignee who has not acknowledged is paged again; none: never.
    renotify_every: dict[Severity, Duration] = {}
    # After the resolution the case stays open this long for the customer's verdict and a
    # reopen, then closes. Absent (policies pinned by older cases): it closes at once.
    reopen_window: dict[Severity, Duration] = {}
    root_causes: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = [
        "billing_error",
        "product_defect",
        "process_gap",
        "customer_education",
        "third_party",
    ]
    root_cause_required: list[Severity] = []  # a resolve without one is refused
    # Messages that must carry the desk's signed proof (workflows/proofs.py). Absent (as in
    # policies pinned by older cases): none.
    proof_required: list[str] = []
    severity_raise: SeverityRaise = SeverityRaise()
    tiers: list[TierPolicy]
    default_route: Route
    routing: dict[str, Route] = {}
    departments: dict[str, Department]
    executives: list[Person]

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        for key in ("start_tier", "approval_timeout", "customer_update_every"):
            missing = [s for s in SEVERITIES if s not in getattr(self, key)]
            if missing:
                raise ValueError(f"{key}: missing severities {', '.join(missing)}")
        levels = [t.level for t in self.tiers]
        if not 3 <= len(levels) <= 4:
            raise ValueError("tiers: a policy has 3 or 4 tiers")
        if levels != sorted(levels) or len(set(levels)) != len(levels):
            raise ValueError("tiers: levels must be distinct and in ascending order")
        top = levels[-1]
        for sev, tier in self.start_tier.items():
            if tier not in levels:
                raise ValueError(f"start_tier.{sev}: {tier} is not a tier level")
        if self.currency not in self.currency_rates:
            object.__setattr__(self, "currency_rates", {**self.currency_rates, self.currency: 1.0})
        if not self.executives:
            raise ValueError("executives: at least one executive is needed for the top tier")
        for i, exe in enumerate(self.executives):
            if exe.tier != top:
                raise ValueError(f"executives[{i}].tier: executives work the top tier ({top})")
        seen: set[str] = {e.id for e in self.executives}
        for dkey, dept in self.departments.items():
            for i, person in enumerate(dept.people):
                if person.tier not in levels or person.tier == top:
                    raise ValueError(
                        f"departments.{dkey}.people[{i}].tier: {person.tier} is not a "
                        f"department tier ({', '.join(map(str, levels[:-1]))})"
                    )
                if person.id in seen:
                    raise ValueError(f"departments.{dkey}.people[{i}].id: {person.id} repeats")
                seen.add(person.id)
            for level in levels[:-1]:
                if not any(p.tier == level for p in dept.people):
                    raise ValueError(f"departments.{dkey}.people: nobody at tier {level}")
        from workflows.messages import MESSAGES

        for i, name in enumerate(self.proof_required):
            if name not in MESSAGES or "by" not in MESSAGES[name].model.model_fields:
                raise ValueError(f"proof_required[{i}]: {name!r} is not a person's message")
        for cat, route in [("default_route", self.default_route), *self.routing.items()]:
            where = cat if cat == "default_route" else f"routing.{cat}"
            if route.department not in self.departments:
                raise ValueError(f"{where}.department: unknown department {route.department!r}")
        return self


_SHARED: dict[tuple[str, int], Policy] = {}


def shared(policy: Policy) -> Policy:
    """One instance per distinct policy for all cases on a worker (policies are frozen).

    Every case receives its policy in an activity result; without this each cached case
    held its own copy of the whole matrix. Keyed by version and content, so a case never
    gets a policy that differs from the one in its history.
    """
    key = (policy.version, hash(policy.model_dump_json()))
    kept = _SHARED.get(key)
    if kept is None:
        if len(_SHARED) > 64:
            _SHARED.clear()
        kept = _SHARED[key] = policy
    return kept


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the key."""


def policy_from_dict(data: dict[str, Any], source: str = "policy") -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        problems = []
        for p in err.errors():
            key = ".".join(str(x) for x in p["loc"]) or "policy"
            msg = p["msg"].removeprefix("Value error, ")
            problems.append(f"{key}: {msg}")
        raise PolicyError(f"{source}: " + "; ".join(problems)) from None
