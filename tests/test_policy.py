"""Loading the policy file: the bundled one is valid, a broken one names the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from activities.policy_file import BUNDLED_POLICY, load_policy
from workflows.policy import PolicyError, parse_duration


def bundled() -> str:
    return BUNDLED_POLICY.read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_bundled_policy_is_complete() -> None:
    policy = load_policy(BUNDLED_POLICY)
    assert [t.level for t in policy.tiers] == [2, 3, 4]
    assert policy.hard_cap == 30 * 86400
    assert set(policy.departments) == {"billing", "technical", "accounts", "logistics"}
    assert policy.currency_rates["USD"] == 1.0


def test_environment_picks_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, bundled().replace('version = "2026.11-2"', 'version = "custom-7"'))
    monkeypatch.setenv("ESCALATION_POLICY", str(path))
    assert load_policy().version == "custom-7"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            (
                'ack = { low = "8h", medium = "4h", high = "1h", critical = "15m" }',
                'ack = { low = "8h", medium = "4h", high = "soon", critical = "15m" }',
            ),
            "tiers.0.ack.high",
        ),
        (
            (
                "start_tier = { low = 2, medium = 2, high = 2, critical = 3 }",
                "start_tier = { low = 2, medium = 2, high = 2, critical = 9 }",
            ),
            "start_tier.critical",
        ),
        (
            (
                'billing = { department = "billing", skill = "invoices" }',
                'billing = { department = "finance", skill = "invoices" }',
            ),
            "routing.billing.department",
        ),
        (("warning_ratio = 0.75", "warning_ratio = 1.5"), "warning_ratio"),
        (
            (
                'approval_timeout = { low = "1d", medium = "8h", high = "4h", critical = "1h" }',
                'approval_timeout = { low = "1d", medium = "8h", high = "4h" }',
            ),
            "approval_timeout",
        ),
        (('medium = "business", high', 'medium = "weekly", high'), "sla_clock.medium"),
        (("end = 17:00:00", "end = 08:00:00"), "business_hours"),
        (
            ("days = [0, 1, 2, 3, 4]\nstart = 09", "days = [0, 7]\nstart = 09"),
            "business_hours.days",
        ),
    ],
)
def test_broken_policy_names_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    old, new = change
    assert old in bundled()
    path = write(tmp_path, bundled().replace(old, new))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert key in str(err.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(write(tmp_path, "version = "))
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "nope.toml")


def test_department_without_a_tier_is_refused(tmp_path: Path) -> None:
    data = tomllib.loads(bundled())
    people = data["departments"]["logistics"]["people"]
    data["departments"]["logistics"]["people"] = [p for p in people if p["tier"] != 3]
    from workflows.policy import policy_from_dict

    with pytest.raises(PolicyError, match="departments.logistics.people: nobody at tier 3"):
        policy_from_dict(data)


def test_durations() -> None:
    assert parse_duration("15m") == 900
    assert parse_duration("1d 12h") == 129600
    assert parse_duration(60) == 60
    for bad in ("", "4x", "-1h", "h", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
