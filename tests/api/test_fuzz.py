"""Random bodies and query values never make the API answer 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import auth

PID = "fafafafa-0000-4000-8000-000000000001"
ROUTES = [
    "/BackupRestore/BackupPolicies/$/Create",
    "/BackupRestore/BackupPolicies/p/$/Update",
    f"/Partitions/{PID}/$/EnableBackup",
    f"/Partitions/{PID}/$/DisableBackup",
    "/Services/Fz~Svc/$/EnableBackup",
    f"/Partitions/{PID}/$/Backup",
    f"/Partitions/{PID}/$/Restore",
    "/BackupRestore/$/GetBackups",
    "/safehold/partitions",
    "/safehold/config/$/Backup",
    "/safehold/agents/fz/jobs/x/$/Complete",
    "/safehold/agents/fz/jobs/x/$/CompleteAndClaim",
]
QUERY = [
    "BackupTimeout",
    "RestoreTimeout",
    "Latest",
    "RestorePointTime",
    "ContinuationToken",
    "MaxResults",
    "AllowRestoreToOtherPartition",
    "ValidateConnection",
    "StartDateTimeFilter",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=15),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Name",
                    "Storage",
                    "StorageKind",
                    "Path",
                    "BackupId",
                    "BackupLocation",
                    "BackupStorage",
                    "BackupPolicyName",
                    "CleanBackup",
                    "Schedule",
                    "Interval",
                    "BackupEntity",
                    "EntityKind",
                    "PartitionId",
                    "ApplicationName",
                    "ServiceName",
                    "Source",
                    "BackupName",
                    "State",
                    "Snapshot",
                ]
            )
            | st.text(max_size=8),
            kids,
            max_size=5,
        )
    ),
    max_leaves=15,
)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES),
    body=json_values,
    query=st.dictionaries(st.sampled_from(QUERY), st.text(max_size=12), max_size=3),
)
def test_no_500s(
    client: httpx.Client, tmp_path: Path, route: str, body: object, query: dict[str, str]
) -> None:
    """Every answer to random input is below 500 and carries SF's error body when it is an error."""
    if not getattr(client, "fuzz_ready", False):
        _prepare(client, tmp_path)
        client.fuzz_ready = True  # type: ignore[attr-defined]
    r = client.post(
        route, params={"api-version": "6.4", **query}, content=json.dumps(body), headers=auth()
    )
    assert r.status_code < 500, (route, body, query, r.text)
    if r.status_code >= 400:
        assert set(r.json()) == {"Error"}


def _prepare(client: httpx.Client, tmp_path: Path) -> None:
    """A registered partition with a policy, so that requests get past the 404s."""
    (tmp_path / "src").mkdir()
    r = client.post(
        "/safehold/partitions",
        json={
            "ApplicationName": "fabric:/Fz",
            "ServiceName": "fabric:/Fz/Svc",
            "PartitionId": PID,
            "Source": f"dir:{tmp_path / 'src'}",
        },
        headers=auth(),
    )
    assert r.status_code == 201, r.text
    policy = {
        "Name": "p",
        "AutoRestoreOnDataLoss": True,
        "MaxIncrementalBackups": 2,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Storage": {"StorageKind": "FileShare", "Path": str(tmp_path / "store")},
    }
    v = {"api-version": "6.4"}
    assert (
        client.post(
            "/BackupRestore/BackupPolicies/$/Create", params=v, json=policy, headers=auth()
        ).status_code
        == 201
    )
    r = client.post(
        f"/Partitions/{PID}/$/EnableBackup",
        params=v,
        json={"BackupPolicyName": "p"},
        headers=auth(),
    )
    assert r.status_code == 202
