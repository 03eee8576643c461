"""The whole flow through Microsoft's own ``azure-servicefabric`` client, against a live server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.servicefabric import ServiceFabricClientAPIs
from azure.servicefabric import models as m
from msrest.authentication import Authentication
from requests import Session

from safehold.bootstrap import Controller
from safehold.testing import serve_in_thread
from tests.api.conftest import ADMIN, OPERATOR, READER, auth

PID = "aaaaaaaa-0000-4000-8000-000000000001"
PID2 = "aaaaaaaa-0000-4000-8000-000000000002"


class Bearer(Authentication):
    """msrest authentication that sends a safehold API token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def signed_session(self, session: Session | None = None) -> Session:
        session = super().signed_session(session)
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session


def wait_for(check: Callable[[], Any], what: str, limit: float = 60.0) -> Any:
    """Poll *check* until it returns something truthy (the server works in the background)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def fabric_code(exc: m.FabricErrorException) -> str:
    return str(exc.error.error.code)


@pytest.fixture
def live(controller: Controller, tmp_path: Path) -> Any:
    with serve_in_thread(controller.app) as url:
        data = tmp_path / "orders"
        data.mkdir()
        (data / "a.txt").write_text("first version")
        (data / "sub").mkdir()
        (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
        for pid, path in ((PID, data), (PID2, tmp_path / "other")):
            path.mkdir(exist_ok=True)
            resp = httpx.post(
                f"{url}/safehold/partitions",
                json={
                    "ApplicationName": "fabric:/Shop",
                    "ServiceName": "fabric:/Shop/Orders",
                    "PartitionId": pid,
                    "Source": f"dir:{path}",
                },
                headers=auth(ADMIN),
            )
            assert resp.status_code == 201, resp.text
        yield url, data, tmp_path


def test_full_flow_with_the_azure_servicefabric_client(live: Any) -> None:
    """Create a policy, enable, suspend/resume, back up, list, restore: all via the SF SDK."""
    url, data, tmp_path = live
    admin = ServiceFabricClientAPIs(Bearer(ADMIN), base_url=url)
    store = tmp_path / "store"
    policy = m.BackupPolicyDescription(
        name="hourly",
        auto_restore_on_data_loss=False,
        max_incremental_backups=4,
        schedule=m.FrequencyBasedBackupScheduleDescription(interval=timedelta(hours=1)),
        storage=m.FileShareBackupStorageDescription(
            path=str(store), primary_user_name="u", primary_password="hunter2-secret"
        ),
        retention_policy=m.BasicRetentionPolicyDescription(
            retention_duration=timedelta(days=2), minimum_number_of_backups=3
        ),
    )
    admin.create_backup_policy(policy)
    with pytest.raises(m.FabricErrorException) as info:
        admin.create_backup_policy(policy)
    assert fabric_code(info.value) == "FABRIC_E_BACKUP_POLICY_ALREADY_EXISTING"
    got = admin.get_backup_policy_by_name("hourly")
    assert got.storage.primary_password == "****"
    assert timedelta(hours=1) == got.schedule.interval
    assert [p.name for p in admin.get_backup_policy_list().items] == ["hourly"]

    op = ServiceFabricClientAPIs(Bearer(OPERATOR), base_url=url)
    op.enable_application_backup("Shop", "hourly")
    op.suspend_service_backup("Shop~Orders")
    info_p = op.get_partition_backup_configuration_info(PID)
    assert (info_p.policy_name, info_p.policy_inherited_from) == ("hourly", "Application")
    assert info_p.suspension_info.is_suspended
    assert info_p.suspension_info.suspension_inherited_from == "Service"
    op.resume_service_backup("Shop~Orders")
    assert not op.get_partition_backup_configuration_info(PID).suspension_info.is_suspended
    apps = op.get_application_backup_configuration_info("Shop")
    assert [i.policy_name for i in apps.items] == ["hourly"]

    op.backup_partition(PID, backup_timeout=5)
    with pytest.raises(m.FabricErrorException) as busy:
        op.backup_partition(PID)
    assert fabric_code(busy.value) == "FABRIC_E_BACKUP_IN_PROGRESS"
    done = wait_for(
        lambda: (
            (p := op.get_partition_backup_progress(PID)).backup_state in ("Success", "Failure")
            and p
        ),
        "the backup",
    )
    assert done.backup_state == "Success", done.failure_error
    assert done.backup_location.startswith(f"Shop\\Orders\\{PID}\\")
    assert done.backup_location.endswith(".zip")  # SF's layout
    assert done.lsn_of_last_backup_record == "1"

    metrics = httpx.get(f"{url}/metrics", headers=auth(READER)).text
    assert 'safehold_backups_total{outcome="Success"} 1.0' in metrics
    assert f'safehold_last_good_backup_age_seconds{{partition_id="{PID}"}}' in metrics
    health = httpx.get(f"{url}/safehold/partitions/{PID}/health", headers=auth(READER)).json()
    assert health["HealthState"] == "Ok"
    assert "successfully backed up" in health["Description"]

    backups = op.get_partition_backup_list(PID)
    [b] = backups.items
    assert (done.backup_id, "Full") == (b.backup_id, b.backup_type)
    assert b.service_name == "fabric:/Shop/Orders"
    assert [b.backup_id] == [x.backup_id for x in op.get_application_backup_list("Shop").items]

    from_storage = op.get_backups_from_backup_location(
        m.GetBackupByStorageQueryDescription(
            storage=m.FileShareBackupStorageDescription(path=str(store)),
            backup_entity=m.PartitionBackupEntity(
                service_name="fabric:/Shop/Orders", partition_id=PID
            ),
        )
    )
    assert [b.backup_id] == [x.backup_id for x in from_storage.items]

    (data / "a.txt").write_text("damaged")
    (data / "extra").write_text("should vanish")
    op.restore_partition(
        PID, m.RestorePartitionDescription(backup_id=b.backup_id, backup_location=b.backup_location)
    )
    restored = wait_for(
        lambda: (
            (p := op.get_partition_restore_progress(PID)).restore_state in ("Success", "Failure")
            and p
        ),
        "the restore",
    )
    assert restored.restore_state == "Success", restored.failure_error
    assert restored.restored_lsn == "1"
    assert (data / "a.txt").read_text() == "first version"
    assert not (data / "extra").exists()
    assert bytes(range(256)) * 100 == (data / "sub" / "b.bin").read_bytes()

    # SF restores another partition's backup when the partition kinds agree (ids
    # always differ between clusters); a ranged partition cannot take a Singleton's.
    ranged = {
        "ApplicationName": "fabric:/Shop",
        "ServiceName": "fabric:/Shop/Orders",
        "PartitionId": PID2,
        "Source": f"dir:{tmp_path / 'other'}",
        "PartitionKind": "Int64Range",
        "LowKey": 0,
        "HighKey": 99,
    }
    r = httpx.post(f"{url}/safehold/partitions", json=ranged, headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    assert r.json()["PartitionInformation"] == {
        "ServicePartitionKind": "Int64Range",
        "Id": PID2,
        "LowKey": "0",
        "HighKey": "99",
    }
    with pytest.raises(m.FabricErrorException) as mismatch:
        op.restore_partition(
            PID2,
            m.RestorePartitionDescription(backup_id=b.backup_id, backup_location=b.backup_location),
        )
    assert fabric_code(mismatch.value) == "FABRIC_E_RESTORE_SOURCE_TARGET_PARTITION_MISMATCH"

    with pytest.raises(m.FabricErrorException) as in_use:
        admin.delete_backup_policy("hourly")
    assert fabric_code(in_use.value) == "FABRIC_E_BACKUP_IS_ENABLED"
    op.disable_application_backup("Shop", clean_backup=False)
    admin.delete_backup_policy("hourly")

    reader = ServiceFabricClientAPIs(Bearer(READER), base_url=url)
    with pytest.raises(m.FabricErrorException) as forbidden:
        reader.backup_partition(PID)
    assert forbidden.value.response.status_code == 403
    with pytest.raises(m.FabricErrorException) as unknown:
        reader.get_partition_backup_progress("bbbbbbbb-0000-4000-8000-000000000009")
    assert fabric_code(unknown.value) == "FABRIC_E_PARTITION_NOT_FOUND"


def test_sdk_updates_pages_and_cleans(live: Any) -> None:
    """Time-based schedules, updates keeping secrets, enabled entities, paging and CleanBackup."""
    url, _data, tmp_path = live
    admin = ServiceFabricClientAPIs(Bearer(ADMIN), base_url=url)
    store = tmp_path / "store2"
    weekly = m.TimeBasedBackupScheduleDescription(
        schedule_frequency_type="Weekly",
        run_days=["Monday", "Friday"],
        run_times=[datetime(2001, 1, 1, 9, 30, tzinfo=UTC)],
    )
    policy = m.BackupPolicyDescription(
        name="weekly",
        auto_restore_on_data_loss=False,
        max_incremental_backups=0,
        schedule=weekly,
        storage=m.FileShareBackupStorageDescription(path=str(store), primary_password="pw"),
    )
    admin.create_backup_policy(policy)
    got = admin.get_backup_policy_by_name("weekly")
    assert got.schedule.run_days == ["Monday", "Friday"]
    assert (got.schedule.run_times[0].hour, got.schedule.run_times[0].minute) == (9, 30)
    got.max_incremental_backups = 9
    admin.update_backup_policy(got, "weekly")
    assert admin.get_backup_policy_by_name("weekly").max_incremental_backups == 9

    policy.name = "too-often"
    policy.schedule = m.FrequencyBasedBackupScheduleDescription(interval=timedelta(seconds=30))
    with pytest.raises(m.FabricErrorException) as bad:
        admin.create_backup_policy(policy)
    assert "1 minute" in bad.value.error.error.message
    assert fabric_code(bad.value) == "E_INVALIDARG"

    admin.enable_partition_backup(PID, "weekly")
    admin.enable_partition_backup(PID2, "weekly")
    raw = httpx.get(
        f"{url}/BackupRestore/BackupPolicies/weekly/$/GetBackupEnabledEntities",
        params={"api-version": "6.4"},
        headers=auth(ADMIN),
    ).json()
    assert sorted(e["PartitionId"] for e in raw["Items"]) == sorted([PID, PID2])
    for pid in (PID, PID2):
        admin.backup_partition(pid)
    for pid in (PID, PID2):
        wait_for(
            lambda pid=pid: admin.get_partition_backup_progress(pid).backup_state == "Success",
            "backups",
        )
    first = admin.get_service_backup_list("Shop~Orders", max_results=1)
    assert len(first.items) == 1
    assert first.continuation_token
    rest = admin.get_service_backup_list(
        "Shop~Orders", max_results=1, continuation_token=first.continuation_token
    )
    assert len(rest.items) == 1
    assert not rest.continuation_token
    assert {first.items[0].backup_id, rest.items[0].backup_id} == {
        b.backup_id for b in admin.get_service_backup_list("Shop~Orders").items
    }

    admin.disable_partition_backup(PID, clean_backup=True)
    wait_for(lambda: not admin.get_partition_backup_list(PID).items, "the clean job")
    assert len(admin.get_partition_backup_list(PID2).items) == 1


# --- SF compatibility, the last mile (issue 10): through the same SDK -------------------

STATE_PID = "aaaaaaaa-0000-4000-8000-0000000000a1"


def _state_partition(url: str) -> None:
    """Register a state: partition (a StateStore named 'orders'; no agent of it runs here)."""
    resp = httpx.post(
        f"{url}/safehold/partitions",
        json={
            "ApplicationName": "fabric:/Shop",
            "ServiceName": "fabric:/Shop/Cart",
            "PartitionId": STATE_PID,
            "Source": "state:orders",
        },
        headers=auth(ADMIN),
    )
    assert resp.status_code == 201, resp.text


def test_sdk_data_loss_list_and_cancel_at_api_version_6_0(live: Any) -> None:
    """The SDK sends the Faults calls at api-version 6.0: start, progress, list, cancel all work."""
    url, _data, _tmp = live
    _state_partition(url)
    op = ServiceFabricClientAPIs(Bearer(OPERATOR), base_url=url)
    reader = ServiceFabricClientAPIs(Bearer(READER), base_url=url)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    op.start_data_loss("Shop~Cart", STATE_PID, first, "FullDataLoss")
    progress = reader.get_data_loss_progress("Shop~Cart", STATE_PID, first)
    assert progress.state == "Running"
    listed = reader.get_fault_operation_list(type_filter=65535, state_filter=65535)
    assert [(o.operation_id, o.state, o.type) for o in listed] == [
        (first, "Running", "PartitionDataLoss")
    ]
    assert reader.get_fault_operation_list(type_filter=2, state_filter=65535) == []  # QuorumLoss
    # SF: Force=true is refused until a Force=false cancel was asked.
    with pytest.raises(m.FabricErrorException) as forced:
        op.cancel_operation(first, force=True)
    assert forced.value.response.status_code == 400
    op.cancel_operation(first, force=False)
    assert reader.get_data_loss_progress("Shop~Cart", STATE_PID, first).state == "Cancelled"
    assert [o.state for o in reader.get_fault_operation_list(65535, 32)] == ["Cancelled"]
    assert reader.get_fault_operation_list(65535, 1) == []
    op.cancel_operation(first, force=True)  # finished: nothing left to stop
    # The partition is free again once the operation is cancelled.
    op.start_data_loss("Shop~Cart", STATE_PID, second, "PartialDataLoss")
    with pytest.raises(m.FabricErrorException) as unknown:
        op.cancel_operation(str(uuid.uuid4()))
    assert unknown.value.response.status_code == 404


def test_sdk_data_loss_of_a_directory_partition_is_a_clear_400(live: Any) -> None:
    """A dir: partition has no replicas to lose: E_INVALIDARG that says so and names the drill."""
    url, _data, _tmp = live
    op = ServiceFabricClientAPIs(Bearer(OPERATOR), base_url=url)
    with pytest.raises(m.FabricErrorException) as info:
        op.start_data_loss("Shop~Orders", PID, str(uuid.uuid4()), "FullDataLoss")
    assert info.value.response.status_code == 400
    assert fabric_code(info.value) == "E_INVALIDARG"
    assert "no replicas to lose" in str(info.value.error.error.message)
    assert "$/Restore" in str(info.value.error.error.message)


def test_sdk_minor_codes_as_sf(live: Any, tmp_path: Path) -> None:
    """Unknown BackupId 400; a partition id that is not a GUID 400; api-version 6.10 refused."""
    url, _data, _tmp = live
    admin = ServiceFabricClientAPIs(Bearer(ADMIN), base_url=url)
    admin.create_backup_policy(
        m.BackupPolicyDescription(
            name="minor codes",  # SF allows spaces in a policy name
            auto_restore_on_data_loss=False,
            max_incremental_backups=0,
            schedule=m.FrequencyBasedBackupScheduleDescription(interval=timedelta(hours=1)),
            storage=m.FileShareBackupStorageDescription(path=str(tmp_path / "store")),
        )
    )
    admin.enable_partition_backup(PID, "minor codes")
    with pytest.raises(m.FabricErrorException) as unknown:
        admin.restore_partition(
            PID,
            m.RestorePartitionDescription(
                backup_id=str(uuid.uuid4()), backup_location="Shop/Orders/x/2026-01-01 00.00.00"
            ),
        )
    assert unknown.value.response.status_code == 400
    assert fabric_code(unknown.value) == "FABRIC_E_RESTORE_SOURCE_TARGET_PARTITION_MISMATCH"
    with pytest.raises(m.FabricErrorException) as not_guid:
        admin.get_partition_backup_progress("not-a-guid")
    assert not_guid.value.response.status_code == 400
    assert fabric_code(not_guid.value) == "E_INVALIDARG"
    # Double.TryParse("6.10") is 6.1 < 6.4 in SF's BaseOperation.ValidateApiVersion.
    resp = httpx.get(
        f"{url}/BackupRestore/BackupPolicies", params={"api-version": "6.10"}, headers=auth(ADMIN)
    )
    assert resp.status_code == 400
    assert resp.json()["Error"]["Code"] == "E_INVALIDARG"
    assert admin.get_cluster_version().version.startswith("9.")


def test_sdk_managed_identity_storage_round_trips(live: Any) -> None:
    """A policy with SF's ManagedIdentityAzureBlobStore is created and read back by the SDK."""
    url, _data, _tmp = live
    admin = ServiceFabricClientAPIs(Bearer(ADMIN), base_url=url)
    storage = m.ManagedIdentityAzureBlobBackupStorageDescription(
        managed_identity_type="Cluster",
        blob_service_uri="https://acct.blob.core.windows.net",
        container_name="backups",
        friendly_name="no key stored",
    )
    admin.create_backup_policy(
        m.BackupPolicyDescription(
            name="mi",
            auto_restore_on_data_loss=False,
            max_incremental_backups=0,
            schedule=m.FrequencyBasedBackupScheduleDescription(interval=timedelta(hours=1)),
            storage=storage,
            retention_policy=m.BasicRetentionPolicyDescription(
                retention_duration=timedelta(days=30, minutes=30)  # SF keeps whole hours
            ),
        )
    )
    got = admin.get_backup_policy_by_name("mi")
    assert isinstance(got.storage, m.ManagedIdentityAzureBlobBackupStorageDescription)
    assert (got.storage.managed_identity_type, got.storage.container_name) == ("Cluster", "backups")
    assert got.retention_policy.retention_duration == timedelta(days=30)
