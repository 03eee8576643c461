"""Parsing and validating policies, durations, schedules, and inheritance (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.core.policy import (
    BackupPolicy,
    EntityRef,
    FrequencySchedule,
    PolicyError,
    TimeSchedule,
    effective_config,
    format_duration,
    name_from_id,
    next_due,
    parse_duration,
    parse_policy,
)


def doc(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "Name": "daily",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 5,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Storage": {
            "StorageKind": "FileShare",
            "Path": "/srv/backups",
            "PrimaryPassword": "s3cret",
        },
    }
    base.update(overrides)
    return base


def test_valid_policy_round_trips_with_secrets_redacted() -> None:
    """A parsed policy shows its secrets as **** and everything else as given."""
    policy = parse_policy(doc())
    out = policy.to_json()
    assert out["Storage"]["PrimaryPassword"] == "****"
    assert out["Schedule"]["Interval"] == "PT1H"
    assert policy.to_json(redact=False)["Storage"]["PrimaryPassword"] == "s3cret"
    assert policy == parse_policy(policy.to_json(redact=False))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"MaxIncrementalBackups": 256}, "between 0 and 255"),
        ({"MaxIncrementalBackups": -1}, "between 0 and 255"),
        ({"MaxIncrementalBackups": True}, "integer"),
        ({"Name": ""}, "Name is required"),
        ({"AutoRestoreOnDataLoss": "yes"}, "AutoRestoreOnDataLoss"),
        (
            {"Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT30S"}},
            "Minimum time interval",
        ),
        ({"Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P16D"}}, "15 days"),
        ({"Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "1 hour"}}, "ISO 8601"),
        ({"Schedule": {"ScheduleKind": "Hourly"}}, "ScheduleKind"),
        (
            {
                "Schedule": {
                    "ScheduleKind": "TimeBased",
                    "ScheduleFrequencyType": "Weekly",
                    "RunTimes": ["0001-01-01T09:00:00Z"],
                }
            },
            "RunDays field is required",
        ),
        (
            {
                "Schedule": {
                    "ScheduleKind": "TimeBased",
                    "ScheduleFrequencyType": "Daily",
                    "RunTimes": [],
                }
            },
            "RunTimes",
        ),
        (
            {
                "Schedule": {
                    "ScheduleKind": "TimeBased",
                    "ScheduleFrequencyType": "Weekly",
                    "RunDays": ["Funday"],
                    "RunTimes": ["0001-01-01T09:00:00Z"],
                }
            },
            "Funday",
        ),
        ({"Storage": {"StorageKind": "Tape"}}, "StorageKind"),
        ({"Storage": {"StorageKind": "AzureBlobStore", "ContainerName": "c"}}, "ConnectionString"),
        (
            {"RetentionPolicy": {"RetentionPolicyType": "Basic", "RetentionDuration": "PT30M"}},
            "1 hour",
        ),
        (
            {
                "RetentionPolicy": {
                    "RetentionPolicyType": "Basic",
                    "RetentionDuration": "P1D",
                    "MinimumNumberOfBackups": -2,
                }
            },
            "MinimumNumberOfBackups",
        ),
        ({"RetentionPolicy": {"RetentionPolicyType": "Advanced"}}, "Basic"),
    ],
)
def test_invalid_policies_are_refused_with_a_clear_message(
    overrides: dict[str, object], fragment: str
) -> None:
    """Every out-of-range or malformed field gives a PolicyError naming the problem."""
    with pytest.raises(PolicyError) as info:
        parse_policy(doc(**overrides))
    assert fragment in str(info.value)
    assert "s3cret" not in str(info.value)


def test_interval_seconds_are_ignored_and_limits_inclusive() -> None:
    """SF has minute resolution: PT1M30S is one minute; P15D is allowed."""
    assert (
        timedelta(minutes=1)
        == parse_policy(
            doc(Schedule={"ScheduleKind": "FrequencyBased", "Interval": "PT1M30S"})
        ).schedule.interval
    )  # type: ignore[union-attr]
    parse_policy(doc(Schedule={"ScheduleKind": "FrequencyBased", "Interval": "P15D"}))


def test_durations_parse_and_format() -> None:
    """ISO 8601 durations round-trip; malformed ones are refused (P1Y/P1M: test_policy_sf)."""
    assert timedelta(days=1, hours=2, minutes=3) == parse_duration("P1DT2H3M", "x")
    assert format_duration(timedelta(days=1, hours=2, minutes=3)) == "P1DT2H3M"
    assert format_duration(timedelta(0)) == "PT0S"
    for bad in ("PT", "P", "", "PTXH", "P999999999999D", "PT99999999999999999999H"):
        with pytest.raises(PolicyError):
            parse_duration(bad, "x")


def test_time_schedule_next_due_weekly() -> None:
    """A weekly schedule's next slot is on the next listed day at the listed time (UTC)."""
    policy = parse_policy(
        doc(
            Schedule={
                "ScheduleKind": "TimeBased",
                "ScheduleFrequencyType": "Weekly",
                "RunDays": ["Monday", "Thursday", "Monday"],
                "RunTimes": ["0001-01-01T09:00:00Z", "2020-05-05T21:30:00Z"],
            }
        )
    )
    sched = policy.schedule
    assert isinstance(sched, TimeSchedule)
    assert sched.run_days == ("Monday", "Thursday")
    assert (time(9, 0), time(21, 30)) == sched.run_times
    monday_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday
    assert datetime(2026, 1, 5, 21, 30, tzinfo=UTC) == next_due(sched, monday_10)
    assert datetime(2026, 1, 8, 9, 0, tzinfo=UTC) == next_due(
        sched, datetime(2026, 1, 5, 21, 30, tzinfo=UTC)
    )


def test_frequency_next_due() -> None:
    """A frequency schedule is due one interval after the reference."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert t + timedelta(minutes=5) == next_due(FrequencySchedule(timedelta(minutes=5)), t)


def test_inheritance_lowest_mapping_wins_and_suspension_covers_subtree() -> None:
    """Partition mapping overrides service and application; suspension is inherited."""
    app, svc, part = (
        EntityRef("Application", "fabric:/Shop"),
        EntityRef("Service", "fabric:/Shop/Orders"),
        EntityRef("Partition", "p1"),
    )
    chain = [app, svc, part]
    eff = effective_config(chain, {app: "a"}, set())
    assert (eff.policy_name, eff.policy_from, eff.suspended) == ("a", "Application", False)
    eff = effective_config(chain, {app: "a", part: "p"}, {svc})
    assert (
        eff.policy_name,
        eff.policy_from,
        eff.suspended,
        eff.suspended_from,
    ) == ("p", "Partition", True, "Service")
    eff = effective_config(chain, {}, {svc})
    assert (
        eff.policy_name,
        eff.policy_from,
        eff.suspended,
        eff.suspended_from,
    ) == (None, "Invalid", False, "Invalid")


def test_names_from_path_ids() -> None:
    """Path ids use ~ for /."""
    assert name_from_id("Shop~Orders") == "fabric:/Shop/Orders"
    with pytest.raises(PolicyError):
        name_from_id("~bad")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = [
    "Name",
    "AutoRestoreOnDataLoss",
    "MaxIncrementalBackups",
    "Schedule",
    "Storage",
    "RetentionPolicy",
]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.sampled_from(FIELDS),
    json_values,
)
def test_any_json_is_a_policy_or_a_policy_error(
    base: dict[str, object], key: str, value: object
) -> None:
    """Whatever JSON arrives, parsing either succeeds or raises PolicyError (never a crash)."""
    outcomes = [_parse_or_error(base), _parse_or_error({**doc(), key: value})]
    for outcome in outcomes:
        if not isinstance(outcome, PolicyError):
            assert outcome == parse_policy(outcome.to_json(redact=False))


def _parse_or_error(candidate: object) -> BackupPolicy | PolicyError:
    try:
        return parse_policy(candidate)
    except PolicyError as exc:
        return exc
