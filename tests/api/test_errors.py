"""Bad input of every kind gives a 4xx with SF's error body, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN, AGENT, OPERATOR, READER, auth

V = {"api-version": "6.4"}
PID = "cccccccc-0000-4000-8000-000000000001"
PID2 = "cccccccc-0000-4000-8000-000000000002"


def policy(store: Path, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Name": "p",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 1,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT5M"},
        "Storage": {"StorageKind": "FileShare", "Path": str(store)},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def ready(client: httpx.Client, tmp_path: Path) -> Path:
    """A registered partition (PID) with a policy enabled on it."""
    (tmp_path / "src").mkdir()
    for pid in (PID, PID2):
        r = client.post(
            "/safehold/partitions",
            json={
                "ApplicationName": "fabric:/Shop",
                "ServiceName": "fabric:/Shop/Orders",
                "PartitionId": pid,
                "Source": f"dir:{tmp_path / 'src'}",
            },
            headers=auth(),
        )
        assert r.status_code == 201, r.text
    r = client.post(
        "/BackupRestore/BackupPolicies/$/Create",
        params=V,
        json=policy(tmp_path / "s"),
        headers=auth(),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/Partitions/{PID}/$/EnableBackup",
        params=V,
        json={"BackupPolicyName": "p"},
        headers=auth(),
    )
    assert r.status_code == 202, r.text
    return tmp_path


def check(resp: httpx.Response, status: int, code: str | None = None) -> str:
    """The response has *status* and SF's error body; return the message."""
    assert status == resp.status_code, resp.text
    body = resp.json()
    assert set(body) == {"Error"}
    assert body["Error"]["Message"]
    if code is not None:
        assert code == body["Error"]["Code"]
    return str(body["Error"]["Message"])


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"MaxIncrementalBackups": 300}, "between 0 and 255"),
        ({"MaxIncrementalBackups": "three"}, "integer"),
        ({"Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT10S"}}, "1 minute"),
        ({"Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P20D"}}, "15 days"),
        ({"Schedule": {"ScheduleKind": "FrequencyBased", "Interval": 5}}, "ISO 8601"),
        ({"Schedule": None}, "ScheduleKind"),
        ({"Storage": {"StorageKind": "FileShare"}}, "Path"),
        (
            {"RetentionPolicy": {"RetentionPolicyType": "Basic", "RetentionDuration": "PT1M"}},
            "1 hour",
        ),
        ({"Name": "a/b"}, "Name"),  # SF allows any non-blank name; '/' cannot be addressed
    ],
)
def test_malformed_policies_are_400(
    client: httpx.Client, tmp_path: Path, overrides: dict[str, Any], fragment: str
) -> None:
    """Each malformed or out-of-range policy gets 400 E_INVALIDARG naming the field."""
    r = client.post(
        "/BackupRestore/BackupPolicies/$/Create",
        params=V,
        json=policy(tmp_path, **overrides),
        headers=auth(),
    )
    assert fragment in check(r, 400, "E_INVALIDARG")


def test_malformed_requests_are_400(client: httpx.Client, ready: Path) -> None:
    """Broken JSON, wrong body shapes, bad query values and bad ids are 400, not 500."""
    h = auth()
    check(
        client.post(
            "/BackupRestore/BackupPolicies/$/Create", params=V, content=b"{nope", headers=h
        ),
        400,
    )
    check(
        client.post("/BackupRestore/BackupPolicies/$/Create", params=V, json=[1, 2], headers=h), 400
    )
    check(client.post(f"/Partitions/{PID}/$/EnableBackup", params=V, json={}, headers=h), 400)
    check(
        client.post(
            f"/Partitions/{PID}/$/DisableBackup", params=V, json={"CleanBackup": "yes"}, headers=h
        ),
        400,
    )
    check(
        client.post(f"/Partitions/{PID}/$/Backup", params={**V, "BackupTimeout": "ten"}, headers=h),
        400,
    )
    check(
        client.post(f"/Partitions/{PID}/$/Backup", params={**V, "BackupTimeout": 0}, headers=h), 400
    )
    check(
        client.post(
            f"/Partitions/{PID}/$/Backup",
            params=V,
            json={"BackupStorage": {"StorageKind": "X"}},
            headers=h,
        ),
        400,
    )
    check(
        client.post(
            f"/Partitions/{PID}/$/Restore",
            params=V,
            json={"BackupId": "zzz", "BackupLocation": "x"},
            headers=h,
        ),
        400,
    )
    check(client.post(f"/Partitions/{PID}/$/Restore", params=V, json={}, headers=h), 400)
    check(
        client.post(
            f"/Partitions/{PID}/$/Restore", params={**V, "RestorePointTime": "yesterday"}, headers=h
        ),
        400,
    )
    check(
        client.get(
            f"/Partitions/{PID}/$/GetBackups",
            params={**V, "StartDateTimeFilter": "soon"},
            headers=h,
        ),
        400,
    )
    check(
        client.get(
            "/BackupRestore/BackupPolicies", params={**V, "ContinuationToken": "abc"}, headers=h
        ),
        400,
    )
    check(
        client.get("/BackupRestore/BackupPolicies", params={**V, "MaxResults": -1}, headers=h), 400
    )
    check(
        client.post("/BackupRestore/$/GetBackups", params=V, json={"Storage": {}}, headers=h), 400
    )
    check(client.post("/safehold/partitions", json={"ApplicationName": "x"}, headers=h), 400)
    check(
        client.post(
            "/safehold/partitions",
            json={
                "ApplicationName": "fabric:/A",
                "ServiceName": "fabric:/A/B",
                "PartitionId": "not-a-guid",
                "Source": "dir:/x",
            },
            headers=h,
        ),
        400,
    )
    check(
        client.post("/safehold/agents/a/jobs/x/$/Complete", json={"State": "Maybe"}, headers=h), 400
    )
    check(
        client.post(
            "/safehold/agents/a/jobs/x/$/CompleteAndClaim",
            json={"Outcome": {"State": "Maybe"}},
            headers=h,
        ),
        400,
    )


def test_api_version_is_required_and_checked(client: httpx.Client) -> None:
    """SF routes need api-version 6.4 or later."""
    check(client.get("/BackupRestore/BackupPolicies", headers=auth()), 400)
    check(
        client.get("/BackupRestore/BackupPolicies", params={"api-version": "6.0"}, headers=auth()),
        400,
    )
    check(
        client.get("/BackupRestore/BackupPolicies", params={"api-version": "x"}, headers=auth()),
        400,
    )
    assert (
        client.get(
            "/BackupRestore/BackupPolicies", params={"api-version": "8.2"}, headers=auth()
        ).status_code
        == 200
    )


def test_unknown_ids_are_404(client: httpx.Client, ready: Path) -> None:
    """Unknown policies, partitions, services, applications and routes are 404 with SF's header."""
    h = auth()
    r = client.get("/BackupRestore/BackupPolicies/nope", params=V, headers=h)
    check(r, 404, "FABRIC_E_BACKUP_POLICY_NOT_EXISTING")
    assert r.headers["X-ServiceFabric"] == "ResourceNotFound"
    other = "dddddddd-0000-4000-8000-000000000000"
    check(
        client.post(f"/Partitions/{other}/$/Backup", params=V, headers=h),
        404,
        "FABRIC_E_PARTITION_NOT_FOUND",
    )
    # SF's gateway refuses a partition id that is not a GUID before any lookup: 400.
    check(
        client.get("/Partitions/not-a-guid/$/GetBackupProgress", params=V, headers=h),
        400,
        "E_INVALIDARG",
    )
    check(
        client.post("/Services/Shop~Nope/$/SuspendBackup", params=V, headers=h),
        404,
        "FABRIC_E_SERVICE_DOES_NOT_EXIST",
    )
    check(
        client.post(
            "/Applications/Nope/$/EnableBackup", params=V, json={"BackupPolicyName": "p"}, headers=h
        ),
        404,
        "FABRIC_E_APPLICATION_NOT_FOUND",
    )
    check(
        client.post(
            f"/Partitions/{PID}/$/EnableBackup", params=V, json={"BackupPolicyName": "x"}, headers=h
        ),
        404,
        "FABRIC_E_BACKUP_POLICY_NOT_EXISTING",
    )
    check(
        client.post(f"/Partitions/{PID2}/$/DisableBackup", params=V, headers=h),
        404,
        "FABRIC_E_BACKUP_NOT_ENABLED",
    )
    # Before any backup SF answers 200 with an empty body (its SDK returns None).
    r = client.get(f"/Partitions/{PID}/$/GetBackupProgress", params=V, headers=h)
    assert (r.status_code, r.json()) == (200, {})
    check(client.get("/no/such/route", headers=h), 404)
    check(client.get("/safehold/partitions/" + other, headers=h), 404)


def test_tokens_and_roles(client: httpx.Client, ready: Path) -> None:
    """No or a wrong token is 401; readers cannot write, operators cannot create policies."""
    path = "/BackupRestore/BackupPolicies"
    check(client.get(path, params=V), 401)
    check(client.get(path, params=V, headers={"Authorization": "Bearer wrong"}), 401)
    check(client.get(path, params=V, headers={"Authorization": "Basic abc"}), 401)
    assert client.get(path, params=V, headers=auth(READER)).status_code == 200
    check(client.post(f"/Partitions/{PID}/$/Backup", params=V, headers=auth(READER)), 403)
    check(
        client.post(
            f"{path}/$/Create", params=V, json=policy(ready, Name="q"), headers=auth(OPERATOR)
        ),
        403,
    )
    check(client.get("/metrics"), 401)
    assert client.get("/healthz").status_code == 200


def test_conflicts_are_409(client: httpx.Client, ready: Path) -> None:
    """A second backup while one is accepted, and a duplicate policy, are 409."""
    h = auth(ADMIN)
    assert client.post(f"/Partitions/{PID}/$/Backup", params=V, headers=h).status_code == 202
    check(
        client.post(f"/Partitions/{PID}/$/Backup", params=V, headers=h),
        409,
        "FABRIC_E_BACKUP_IN_PROGRESS",
    )
    check(
        client.post(
            "/BackupRestore/BackupPolicies/$/Create", params=V, json=policy(ready), headers=h
        ),
        409,
        "FABRIC_E_BACKUP_POLICY_ALREADY_EXISTING",
    )
    check(
        client.post("/BackupRestore/BackupPolicies/p/$/Delete", params=V, headers=h),
        400,
        "FABRIC_E_BACKUP_IS_ENABLED",
    )


def test_openapi_and_secrets_never_returned(client: httpx.Client, ready: Path) -> None:
    """The OpenAPI document is served; no response carries a policy secret."""
    doc = client.get("/openapi.json").json()
    assert "/Partitions/{partition_id}/$/Backup" in doc["paths"]
    create = doc["paths"]["/BackupRestore/BackupPolicies/$/Create"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/BackupPolicyCreate"
    props = doc["components"]["schemas"]["BackupPolicyCreate"]["properties"]
    assert props["MaxIncrementalBackups"]["maximum"] == 255
    h = auth()
    body = policy(ready, Name="secretive")
    body["Storage"] = {
        "StorageKind": "AzureBlobStore",
        "ConnectionString": "AccountKey=TOPSECRET;x=y",
        "ContainerName": "c",
    }
    assert (
        client.post(
            "/BackupRestore/BackupPolicies/$/Create", params=V, json=body, headers=h
        ).status_code
        == 201
    )
    for r in (
        client.get("/BackupRestore/BackupPolicies/secretive", params=V, headers=h),
        client.get("/BackupRestore/BackupPolicies", params=V, headers=h),
    ):
        assert "TOPSECRET" not in r.text
        assert "****" in r.text


def test_concurrent_http_requests_for_one_partition(client: httpx.Client, ready: Path) -> None:
    """Many simultaneous backup requests for one partition: one 202, the rest 409."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(_: int) -> int:
        with httpx.Client(base_url=str(client.base_url)) as c:
            return c.post(f"/Partitions/{PID}/$/Backup", params=V, headers=auth()).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(ask, range(8)))
    assert sorted(codes) == [202] + [409] * 7


def test_validate_connection(client: httpx.Client, tmp_path: Path) -> None:
    """ValidateConnection=true tries the storage: a usable path passes, an unusable one is a 400."""
    h = auth()
    ok = policy(tmp_path / "fine", Name="ok")
    r = client.post(
        "/BackupRestore/BackupPolicies/$/Create",
        params={**V, "ValidateConnection": "true"},
        json=ok,
        headers=h,
    )
    assert r.status_code == 201, r.text
    (tmp_path / "a-file").write_text("not a directory")
    bad = policy(tmp_path / "a-file" / "below", Name="bad")
    r = client.post(
        "/BackupRestore/BackupPolicies/$/Create",
        params={**V, "ValidateConnection": "true"},
        json=bad,
        headers=h,
    )
    check(r, 400, "SAFEHOLD_E_STORAGE_UNREACHABLE")
    assert client.get("/BackupRestore/BackupPolicies/bad", params=V, headers=h).status_code == 404


def test_unregister_route(client: httpx.Client, ready: Path) -> None:
    """DELETE of a registration: readers are refused, unknown ids are 404, then it is gone."""
    check(client.delete(f"/safehold/partitions/{PID2}", headers=auth(READER)), 403)
    check(
        client.delete("/safehold/partitions/dddddddd-0000-4000-8000-000000000000", headers=auth()),
        404,
    )
    assert client.delete(f"/safehold/partitions/{PID2}", headers=auth()).status_code == 204
    check(client.get(f"/safehold/partitions/{PID2}", headers=auth()), 404)


def test_agent_role_is_apart(client: httpx.Client, ready: Path) -> None:
    """Only agent (and admin) tokens claim work, which carries storage credentials."""
    check(client.post("/safehold/agents/a/$/Claim", headers=auth(OPERATOR)), 403)
    check(client.post("/safehold/agents/a/$/Claim", headers=auth(READER)), 403)
    assert client.post("/safehold/agents/a/$/Claim", headers=auth(AGENT)).status_code == 204
    check(client.post(f"/Partitions/{PID}/$/Backup", params=V, headers=auth(AGENT)), 403)
    check(client.get("/BackupRestore/BackupPolicies", params=V, headers=auth(AGENT)), 403)
