"""The public surface of ``safehold.state``."""

from __future__ import annotations

import safehold.state


def test_exported_names_are_exactly_the_public_api() -> None:
    """Adding or removing a public name is a decision, so it shows up here."""
    assert [
        "BackupCallback",
        "BackupInProgress",
        "BackupInfo",
        "BackupOption",
        "BackupSink",
        "BackupSource",
        "BackupTarget",
        "BackupVetoed",
        "BytesValues",
        "ChangeAction",
        "CollectionInfo",
        "ConditionalValue",
        "DataLossHook",
        "DataLossMode",
        "DataLossReport",
        "DataclassValues",
        "Dictionary",
        "DictionaryChange",
        "Durability",
        "InvalidBackup",
        "InvalidBackupChain",
        "JsonValues",
        "KeyExists",
        "KeySerializer",
        "LazyRepositoryTarget",
        "MissingFullBackup",
        "NoBackupFound",
        "OperationTimedOut",
        "PydanticValues",
        "Queue",
        "QueueEmpty",
        "RepositoryTarget",
        "RestoreContext",
        "RestorePolicy",
        "RestoreResult",
        "RestoreSafetyCheckFailed",
        "Serializer",
        "SnapshotTransaction",
        "StateError",
        "StateManager",
        "StateStore",
        "StoreClosed",
        "StoreLocked",
        "StrValues",
        "Transaction",
        "TransactionError",
    ] == sorted(safehold.state.__all__)
    for name in safehold.state.__all__:
        assert getattr(safehold.state, name) is not None


def test_errors_carry_service_fabric_codes() -> None:
    """Errors a Service Fabric client knows keep its codes and HTTP statuses."""
    from safehold.state import BackupInProgress, MissingFullBackup, RestoreSafetyCheckFailed

    assert ("FABRIC_E_MISSING_FULL_BACKUP", 409) == (
        MissingFullBackup.code,
        MissingFullBackup.http_status,
    )
    assert "FABRIC_E_BACKUP_IN_PROGRESS" == BackupInProgress.code
    assert "FABRIC_E_RESTORE_SAFE_CHECK_FAILED" == RestoreSafetyCheckFailed.code
