"""Policies, registrations, and enabling/suspending backup, over a real catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from safehold.core.policy import EntityRef, PolicyError
from safehold.service import partitions, policies, protection
from safehold.service.context import ServiceContext
from safehold.service.errors import (
    BackupIsEnabled,
    BackupNotEnabled,
    EntityNotFound,
    PolicyExists,
    PolicyNotFound,
)
from safehold.service.uow import SqlUnitOfWork
from tests.service.helpers import P1, P2, add_partition, policy_doc, run_agent_once

APP = EntityRef("Application", "fabric:/Shop")
SVC = EntityRef("Service", "fabric:/Shop/Orders")
PART = EntityRef("Partition", P1)


def test_policy_secrets_are_encrypted_at_rest_and_redacted(
    ctx: ServiceContext, store_dir: Path
) -> None:
    """The catalog never holds the password in clear, and GET shows ****."""
    policies.create_policy(ctx, policy_doc("p", store_dir))
    assert policies.get_policy(ctx, "p")["Storage"]["PrimaryPassword"] == "****"
    with ctx.uow() as uow:
        if isinstance(uow, SqlUnitOfWork):
            raw = uow._conn.execute(sa.text("SELECT doc FROM policies")).scalar_one()
        else:
            raw = json.dumps(uow.policies.get("p"))
    assert "pw-very-secret" not in raw
    assert "sealed:v1:" in raw
    with ctx.uow() as uow:
        assert policies.load_policy(ctx, uow, "p").storage.primary_password == "pw-very-secret"  # type: ignore[union-attr]


def test_duplicate_and_missing_policies(ctx: ServiceContext, store_dir: Path) -> None:
    """A second policy with the same name is a conflict; unknown names are 404."""
    policies.create_policy(ctx, policy_doc("p", store_dir))
    with pytest.raises(PolicyExists):
        policies.create_policy(ctx, policy_doc("p", store_dir))
    with pytest.raises(PolicyNotFound):
        policies.get_policy(ctx, "nope")
    with pytest.raises(PolicyNotFound):
        policies.delete_policy(ctx, "nope")


def test_update_keeps_a_redacted_secret(ctx: ServiceContext, store_dir: Path) -> None:
    """Sending back what GET showed keeps the stored secret; a rename is refused."""
    policies.create_policy(ctx, policy_doc("p", store_dir))
    shown = policies.get_policy(ctx, "p")
    shown["MaxIncrementalBackups"] = 7
    policies.update_policy(ctx, "p", shown)
    with ctx.uow() as uow:
        policy = policies.load_policy(ctx, uow, "p")
    assert policy.max_incremental_backups == 7
    assert policy.storage.primary_password == "pw-very-secret"  # type: ignore[union-attr]
    with pytest.raises(PolicyError):
        policies.update_policy(ctx, "p", {**shown, "Name": "other"})
    with pytest.raises(PolicyError, match=r"\*\*\*\*"):
        policies.create_policy(ctx, {**shown, "Name": "copy"})


def test_enable_inheritance_and_config_info(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path
) -> None:
    """App-level policy applies below; a partition override wins; info says where from."""
    add_partition(ctx, P1, tmp_path / "p1")
    add_partition(ctx, P2, tmp_path / "p2")
    policies.create_policy(ctx, policy_doc("app", store_dir))
    policies.create_policy(ctx, policy_doc("part", store_dir))
    protection.enable_backup(ctx, APP, "app")
    protection.enable_backup(ctx, PART, "part")
    info = protection.config_info(ctx, PART)[0]
    assert (info.policy_name, info.policy_from) == ("part", "Partition")
    info2 = protection.config_info(ctx, EntityRef("Partition", P2))[0]
    assert (info2.policy_name, info2.policy_from) == ("app", "Application")
    app_info = protection.config_info(ctx, APP)
    assert [(i.entity.kind, i.policy_name) for i in app_info] == [
        ("Application", "app"),
        ("Partition", "part"),
    ]
    # Disabling where it was not enabled directly is refused; at the partition it works.
    with pytest.raises(BackupNotEnabled):
        protection.disable_backup(ctx, SVC, clean=False)
    protection.disable_backup(ctx, PART, clean=False)
    assert protection.config_info(ctx, PART)[0].policy_name == "app"


def test_suspend_resume_at_the_same_level(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path
) -> None:
    """A service suspension covers its partitions; resume at the partition does not lift it."""
    add_partition(ctx, P1, tmp_path / "p1")
    with pytest.raises(BackupNotEnabled):
        protection.suspend_backup(ctx, SVC)
    policies.create_policy(ctx, policy_doc("app", store_dir))
    protection.enable_backup(ctx, APP, "app")
    protection.suspend_backup(ctx, SVC)
    info = protection.config_info(ctx, PART)[0]
    assert (info.suspended, info.suspended_from) == (True, "Service")
    protection.resume_backup(ctx, PART)  # idempotent, but not the level of the suspension
    assert protection.config_info(ctx, PART)[0].suspended
    protection.resume_backup(ctx, SVC)
    assert not protection.config_info(ctx, PART)[0].suspended


def test_delete_policy_in_use_is_refused(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path
) -> None:
    """A mapped policy cannot be deleted until backup is disabled."""
    add_partition(ctx, P1, tmp_path / "p1")
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, SVC, "p")
    with pytest.raises(BackupIsEnabled):
        policies.delete_policy(ctx, "p")
    protection.disable_backup(ctx, SVC, clean=False)
    policies.delete_policy(ctx, "p")
    assert policies.list_policies(ctx) == []


def test_unknown_entities_and_bad_registrations(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path
) -> None:
    """Unknown apps, services and partitions are 404; malformed registrations are 400."""
    policies.create_policy(ctx, policy_doc("p", store_dir))
    with pytest.raises(EntityNotFound):
        protection.enable_backup(ctx, APP, "p")
    with pytest.raises(EntityNotFound):
        protection.enable_backup(ctx, EntityRef("Partition", "not-a-guid"), "p")
    add_partition(ctx, P1, tmp_path / "p1")
    with pytest.raises(PolicyNotFound):
        protection.enable_backup(ctx, APP, "nope")
    bad = [
        partitions.PartitionCreate("Shop", "fabric:/Shop/Orders", P2, "dir:/x"),
        partitions.PartitionCreate("fabric:/Shop", "fabric:/Other/Orders", P2, "dir:/x"),
        partitions.PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", "xyz", "dir:/x"),
        partitions.PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P2, "ftp:/x"),
        partitions.PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P2, "dir:relative"),
        partitions.PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P2, "command:x", "tape:"),
    ]
    for req in bad:
        with pytest.raises(PolicyError):
            partitions.register_partition(ctx, req)


def test_partition_ids_are_normalised(ctx: ServiceContext, store_dir: Path, tmp_path: Path) -> None:
    """Upper case or braced GUIDs name the same partition everywhere."""
    add_partition(ctx, P1, tmp_path / "p1")
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, EntityRef("Partition", "{" + P1.upper() + "}"), "p")
    assert protection.config_info(ctx, PART)[0].policy_name == "p"
    protection.suspend_backup(ctx, EntityRef("Partition", P1.upper()))
    assert protection.config_info(ctx, PART)[0].suspended
    protection.resume_backup(ctx, EntityRef("Partition", "{" + P1 + "}"))
    assert not protection.config_info(ctx, PART)[0].suspended
    protection.disable_backup(ctx, EntityRef("Partition", P1.upper()), clean=False)


def test_unregister_partition(ctx: ServiceContext, store_dir: Path, tmp_path: Path) -> None:
    """A partition can be removed when idle; its mapping goes, the policy can then be deleted."""
    from safehold.core.errors import ConflictError
    from safehold.service import jobs

    add_partition(ctx, P1, tmp_path / "p1")
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, PART, "p")
    jobs.request_backup(ctx, P1)
    with pytest.raises(ConflictError):
        partitions.unregister_partition(ctx, P1)
    assert run_agent_once(ctx)  # the backup ends
    partitions.unregister_partition(ctx, P1)
    with pytest.raises(EntityNotFound):
        partitions.find_partition(ctx, P1)
    policies.delete_policy(ctx, "p")
    with pytest.raises(EntityNotFound):
        partitions.unregister_partition(ctx, P1)
