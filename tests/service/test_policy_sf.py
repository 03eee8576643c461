"""
SF's validation where safehold used to be stricter, so policies exported from a real
cluster import as they are. Each test names the BRS code it follows
(microsoft/service-fabric, FabricBRS/BackupRestoreTypes and BackupRestoreCommon/Model).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from safehold.core.policy import (
    ManagedIdentityAzureBlobStorage,
    PolicyError,
    check_job_timeout,
    check_policy_name,
    parse_duration,
    parse_policy,
    parse_storage,
)


def doc(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "Name": "daily",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 5,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Storage": {"StorageKind": "FileShare", "Path": "/srv/backups"},
    }
    base.update(overrides)
    return base


def retention(duration: str) -> timedelta:
    policy = parse_policy(
        doc(RetentionPolicy={"RetentionPolicyType": "Basic", "RetentionDuration": duration})
    )
    assert policy.retention is not None
    return policy.retention.duration


def test_sf_truncates_retention_duration_to_whole_hours() -> None:
    """BasicRetentionPolicy.FromBasicRetentionPolicyView: FromHours((int)TotalHours)."""
    assert retention("PT90M") == timedelta(hours=1)
    assert retention("P1DT2H59M59S") == timedelta(days=1, hours=2)
    assert retention("PT1H") == timedelta(hours=1)
    out = parse_policy(
        doc(RetentionPolicy={"RetentionPolicyType": "Basic", "RetentionDuration": "PT150M"})
    ).to_json()
    assert out["RetentionPolicy"]["RetentionDuration"] == "PT2H"


def test_sf_refuses_retention_that_truncates_to_zero_hours() -> None:
    """(int)TotalHours == 0 -> ArgumentException (400)."""
    for short in ("PT59M", "PT59M59S", "PT0S"):
        with pytest.raises(PolicyError, match="less than 1 hour"):
            retention(short)


def test_sf_reads_years_and_months_as_xmlconvert_does() -> None:
    """TimeSpanConverter uses XmlConvert.ToTimeSpan: a year is 365 days, a month 30."""
    assert parse_duration("P1M", "x") == timedelta(days=30)
    assert parse_duration("P1Y", "x") == timedelta(days=365)
    assert parse_duration("P1Y2M3DT4H", "x") == timedelta(days=365 + 60 + 3, hours=4)
    assert retention("P1M") == timedelta(days=30)
    assert retention("P1Y") == timedelta(days=365)
    # A month of minutes is still minutes: 'M' after 'T'.
    assert parse_duration("PT1M", "x") == timedelta(minutes=1)
    # The frequency limit still applies to months: P1M is 30 days > 15 days.
    with pytest.raises(PolicyError, match="15 days"):
        parse_policy(doc(Schedule={"ScheduleKind": "FrequencyBased", "Interval": "P1M"}))


def test_sf_accepts_any_policy_name_that_is_not_blank() -> None:
    """BackupPolicy.Name is only [Required]: spaces, '~', '$', '@', unicode all pass."""
    for name in (
        "Daily Backups",
        "prod~orders",
        "$weekly",
        "nightly@eu",
        "Sicherung-täglich",
        "_x",
    ):
        assert parse_policy(doc(Name=name)).name == name
    for blank in ("", "   ", None, 7):
        with pytest.raises(PolicyError, match="Name is required"):
            check_policy_name(blank)


def test_policy_names_safehold_cannot_address_are_refused() -> None:
    """Beyond SF: '/' and control characters cannot come back in a path; 128 is the catalog's."""
    for bad in ("a/b", "tab\there", "x" * 129):
        with pytest.raises(PolicyError):
            check_policy_name(bad)
    assert check_policy_name("x" * 128) == "x" * 128


def test_sf_job_timeouts_are_not_capped_at_seven_days() -> None:
    """BackupTimeout/RestoreTimeout are Int32 minutes with no upper bound in BRS."""
    assert check_job_timeout(10, "BackupTimeout") == timedelta(minutes=10)
    assert check_job_timeout(30 * 24 * 60, "BackupTimeout") == timedelta(days=30)
    assert check_job_timeout(2**31 - 1, "RestoreTimeout") == timedelta(minutes=2**31 - 1)
    for bad in (0, -5, 2**31, True, "10"):
        with pytest.raises(PolicyError):
            check_job_timeout(bad, "BackupTimeout")


def test_managed_identity_azure_blob_store_parses() -> None:
    """SF's ManagedIdentityAzureBlobStore (ManagedIdentityType, BlobServiceUri, ContainerName)."""
    spec = parse_storage(
        {
            "StorageKind": "ManagedIdentityAzureBlobStore",
            "FriendlyName": "mi",
            "ManagedIdentityType": "Cluster",
            "BlobServiceUri": "https://acct.blob.core.windows.net/",
            "ContainerName": "backups",
        }
    )
    assert isinstance(spec, ManagedIdentityAzureBlobStorage)
    assert spec.blob_service_uri == "https://acct.blob.core.windows.net"
    assert spec.to_json() == {
        "StorageKind": "ManagedIdentityAzureBlobStore",
        "FriendlyName": "mi",
        "ManagedIdentityType": "Cluster",
        "BlobServiceUri": "https://acct.blob.core.windows.net",
        "ContainerName": "backups",
    }
    policy = parse_policy(doc(Storage=spec.to_json()))
    assert policy.to_json()["Storage"] == spec.to_json()  # nothing to redact


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ManagedIdentityType", "Invalid", "VMSS"),
        ("ManagedIdentityType", None, "VMSS"),
        ("BlobServiceUri", "acct.blob.core.windows.net", "URL"),
        ("BlobServiceUri", "", "BlobServiceUri"),
        ("ContainerName", "", "ContainerName"),
    ],
)
def test_managed_identity_fields_are_checked(field: str, value: object, message: str) -> None:
    """Every field SF requires is required; ManagedIdentityType 'Invalid' is refused."""
    storage: dict[str, object] = {
        "StorageKind": "ManagedIdentityAzureBlobStore",
        "ManagedIdentityType": "VMSS",
        "BlobServiceUri": "https://acct.blob.core.windows.net",
        "ContainerName": "c",
    }
    storage[field] = value
    with pytest.raises(PolicyError, match=message):
        parse_storage(storage)
