"""
The stateful-service SDK: a durable state store with built-in backups and restores.

A partition's state lives in transactional dictionaries and queues, on SQLite in WAL
mode. Every committed transaction gets an LSN; the partition carries an epoch.
Full and incremental backups go through the engine into the partition's
repository; restores merge a chain up to a backup, an LSN or a point in time; a
data loss (found on open, or induced for a drill) runs the ``on_data_loss`` hook::

    from safehold.state import BackupOption, RestorePolicy, StateStore

    async with StateStore.open("/var/lib/orders", partition="p1", target=target) as store:
        orders = store.dictionary("orders")
        async with store.transaction() as tx:
            await orders.set(tx, "o-1001", {"sku": "A7", "qty": 2})
        info = await store.backup(BackupOption.INCREMENTAL)

``docs/state.md`` describes the files, the backup formats and the restore rules.
This is a top-level layer: it uses ``safehold.core`` and ``safehold.repo`` only.
"""

from safehold.state._db import Durability
from safehold.state.backup import BackupCallback, BackupInfo, BackupOption
from safehold.state.dataloss import DataLossHook, DataLossMode, DataLossReport, RestoreContext
from safehold.state.dictionary import Dictionary
from safehold.state.errors import (
    BackupInProgress,
    BackupVetoed,
    InvalidBackup,
    InvalidBackupChain,
    KeyExists,
    MissingFullBackup,
    NoBackupFound,
    OperationTimedOut,
    QueueEmpty,
    RestoreSafetyCheckFailed,
    StateError,
    StoreClosed,
    StoreLocked,
    TransactionError,
)
from safehold.state.events import ChangeAction, DictionaryChange
from safehold.state.manager import CollectionInfo, StateManager
from safehold.state.queues import Queue
from safehold.state.restore import RestorePolicy, RestoreResult
from safehold.state.serializers import (
    BytesValues,
    DataclassValues,
    JsonValues,
    KeySerializer,
    PydanticValues,
    Serializer,
    StrValues,
)
from safehold.state.store import StateStore
from safehold.state.target import (
    BackupSink,
    BackupSource,
    BackupTarget,
    LazyRepositoryTarget,
    RepositoryTarget,
)
from safehold.state.transaction import ConditionalValue, SnapshotTransaction, Transaction

__all__ = [
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
]
