"""The policy's decisions, as pure functions: no Temporal, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows import rules
from workflows.models import Action
from workflows.policy import Policy
from workflows.wording import fmt_duration

MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SATURDAY_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_severity_is_raised_for_vip_and_repeat_escalations(policy: Policy) -> None:
    assert rules.raised_severity(policy, "low", False, 0) == ("low", [])
    sev, why = rules.raised_severity(policy, "low", True, 0)
    assert sev == "medium" and why == ["VIP customer"]
    sev, why = rules.raised_severity(policy, "medium", True, 2)
    assert sev == "critical" and len(why) == 2
    assert rules.raised_severity(policy, "critical", True, 5)[0] == "critical"
    assert (
        rules.raised_severity(policy, "high", False, 1)[0] == "high"
    )  # one earlier case is not a pattern


def test_routing_and_start_tier(policy: Policy) -> None:
    assert rules.route(policy, "refund") == ("billing", "refunds")
    assert rules.route(policy, "Outage") == ("technical", "infrastructure")
    assert rules.route(policy, "something-new") == ("accounts", None)
    assert rules.start_tier(policy, "high") == 2
    assert rules.start_tier(policy, "critical") == 3
    assert rules.escalation_type_at_start(policy, 2) == "functional"
    assert rules.escalation_type_at_start(policy, 3) == "hierarchical"


def test_next_tier_stops_at_the_top(policy: Policy) -> None:
    assert rules.next_tier(policy, 2) == 3
    assert rules.next_tier(policy, 3) == 4
    assert rules.next_tier(policy, 4) is None
    assert rules.top_tier(policy) == 4


def test_clocks_follow_tier_and_severity(policy: Policy) -> None:
    c = rules.clocks(policy, 2, "high", MONDAY_NOON)
    assert c.ack_by - MONDAY_NOON == timedelta(hours=1)
    assert c.resolve_by - MONDAY_NOON == timedelta(days=1)
    assert c.ack_warn_at - MONDAY_NOON == timedelta(minutes=45)
    crit = rules.clocks(policy, 3, "critical", MONDAY_NOON)
    assert crit.ack_by - MONDAY_NOON == timedelta(minutes=15)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_business_clocks_count_working_hours_only(policy: Policy) -> None:
    # low and medium run on business hours, Monday-Friday 09:00-17:00 UTC
    low = rules.clocks(policy, 2, "low", MONDAY_NOON)  # ack 8h, resolve 40h, warn at 75 %
    assert low.ack_by == at(24, 12)  # Mon 12-17 (5h) + Tue 09-12 (3h)
    assert low.ack_warn_at == at(24, 10)
    assert low.resolve_by == at(30, 12)  # a working week later: next Monday noon
    # opened Friday 16:00: one hour on Friday, the rest on Monday morning
    assert rules.clocks(policy, 2, "medium", at(27, 16)).ack_by == at(30, 12)
    # opened on Saturday: the clock starts Monday 09:00; a window can end at closing time
    assert rules.clocks(policy, 2, "low", SATURDAY_NOON).ack_by == at(30, 17)
    # holidays do not count: Christmas (Friday) is skipped
    assert rules.clocks(policy, 2, "medium", at(24, 16, month=12)).ack_by == at(28, 12, month=12)
    # high and critical stay on the calendar clock, weekends included
    assert rules.clocks(policy, 2, "high", SATURDAY_NOON).ack_by == at(28, 13)


def test_business_hours_follow_the_policy_timezone(policy: Policy) -> None:
    ny = policy.model_copy(update={"timezone": "America/New_York"})
    # Monday 12:00 UTC is 07:00 in New York: work starts at 14:00 UTC
    assert rules.clocks(ny, 2, "medium", MONDAY_NOON).ack_by == at(23, 18)


def test_a_paused_business_clock_keeps_its_remaining_working_time(policy: Policy) -> None:
    c = rules.clocks(policy, 2, "low", MONDAY_NOON)
    paused_at = at(24, 10)  # Tuesday 10:00, 2 working hours before ack_by
    assert rules.sla_left(policy, "low", paused_at, c.ack_by) == 2 * 3600
    assert rules.sla_left(policy, "low", paused_at, c.resolve_by) == 34 * 3600
    later = rules.resumed(policy, "low", c, paused_at, SATURDAY_NOON)
    assert later.ack_by == at(30, 11)  # the clock restarts Monday 09:00 with 2h left
    assert rules.sla_left(policy, "low", at(30, 9), later.resolve_by) == 34 * 3600
    # a calendar clock moves by the paused time exactly
    h = rules.clocks(policy, 2, "high", MONDAY_NOON)
    moved = rules.resumed(policy, "high", h, at(23, 12, 30), at(23, 15, 30))
    assert moved.ack_by - h.ack_by == timedelta(hours=3)
    assert rules.sla_left(policy, "high", at(23, 12, 30), h.ack_by) == 1800


def test_candidates_prefer_skill_and_shift(policy: Policy) -> None:
    billing2 = rules.people_at(policy, "billing", 2)
    ids = lambda people: [p.id for p in people]  # noqa: E731
    # kim works weekdays 07-19: on shift Monday noon, so refunds go to ana or kim
    assert ids(rules.candidates(billing2, "refunds", "UTC", MONDAY_NOON)) == [
        "bill-ana",
        "bill-kim",
    ]
    assert ids(rules.candidates(billing2, "refunds", "UTC", SATURDAY_NOON)) == ["bill-ana"]
    # nobody with the skill: everyone on shift
    assert ids(rules.candidates(billing2, "crypto", "UTC", SATURDAY_NOON)) == [
        "bill-ana",
        "bill-omar",
    ]
    # everyone excluded still leaves someone rather than nobody
    assert ids(
        rules.candidates(billing2, None, "UTC", MONDAY_NOON, ["bill-ana", "bill-omar", "bill-kim"])
    )
    assert ids(rules.people_at(policy, "technical", 4)) == ["exec-vance", "exec-holt"]


def test_pick_assignee_least_loaded_then_round_robin() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert rules.pick_assignee(["a", "b", "c"], {"a": 2, "b": 1, "c": 1}, {}) == "b"
    last = {"b": t0 + timedelta(hours=1), "c": t0}
    assert rules.pick_assignee(["a", "b", "c"], {"a": 2, "b": 1, "c": 1}, last) == "c"
    assert rules.pick_assignee(["a", "b"], {}, {"a": t0}) == "b"  # never assigned goes first
    with pytest.raises(ValueError):
        rules.pick_assignee([], {}, {})


def test_approvers_nearest_first_by_authority(policy: Policy) -> None:
    refund = Action(kind="refund", amount=250, currency="USD")
    assert rules.approvers(policy, "billing", refund, "bill-ana") == [
        "sup-lee",
        "sup-mara",
        "exec-holt",
        "exec-vance",
    ]
    big = Action(kind="credit", amount=6000, currency="USD")
    assert rules.approvers(policy, "billing", big, "bill-ana") == ["exec-holt", "exec-vance"]
    euros = Action(kind="refund", amount=4700, currency="EUR")  # 5076 USD: above supervisors
    assert rules.approvers(policy, "billing", euros, "bill-ana") == ["exec-holt", "exec-vance"]
    with pytest.raises(rules.ApprovalRuleError, match="action.currency"):
        rules.approvers(policy, "billing", Action(kind="refund", amount=1, currency="JPY"), "x")
    everyone = rules.approvers(policy, "billing", refund, "bill-ana")
    assert rules.approvers_to_notify(policy, everyone, 0) == ["sup-lee", "sup-mara"]
    assert rules.approvers_to_notify(policy, everyone, 1) == ["exec-holt", "exec-vance"]
    assert rules.approvers_to_notify(policy, everyone, 2) == []
    assert rules.authority(policy, "bill-ana") == 100
    assert rules.authority(policy, "sup-lee") == 5000


def test_who_may_escalate(policy: Policy) -> None:
    assert rules.may_escalate(policy, "billing", 2, "bill-ana", "bill-ana")
    assert rules.may_escalate(policy, "billing", 2, "sup-lee", "bill-ana")
    assert rules.may_escalate(policy, "billing", 2, "exec-holt", "bill-ana")
    assert not rules.may_escalate(policy, "billing", 2, "bill-omar", "bill-ana")
    assert not rules.may_escalate(policy, "billing", 2, "sup-ito", "bill-ana")


def test_report_goes_to_executives_when_breached_or_critical(policy: Policy) -> None:
    ids = lambda people: sorted(p.id for p in people)  # noqa: E731
    assert ids(rules.report_recipients(policy, "billing", 2, False, "high")) == [
        "sup-lee",
        "sup-mara",
    ]
    assert ids(rules.report_recipients(policy, "billing", 2, True, "high")) == [
        "exec-holt",
        "exec-vance",
        "sup-lee",
        "sup-mara",
    ]
    assert ids(rules.report_recipients(policy, "technical", 3, False, "critical")) == [
        "exec-holt",
        "exec-vance",
    ]


def test_fmt_duration() -> None:
    assert fmt_duration(3600) == "1h"
    assert fmt_duration(5400) == "1h 30m"
    assert fmt_duration(30 * 86400) == "30d"
    assert fmt_duration(0) == "0s"
