"""The engine adapter and the agent's data work against the real engine and file storage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.worker import execute as execute_item
from safehold.bootstrap import open_policy_storage
from safehold.core.progress import CountingProgress
from safehold.core.snapshot import PartitionRef
from safehold.core.work import WorkItem
from safehold.repo.keys import KdfParams
from safehold.service.engine import RepoEngine
from safehold.testing import tree_bytes

PID = "eeeeeeee-0000-4000-8000-000000000001"


def execute(work: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Run a work item given as its wire JSON; return the outcome as its wire JSON."""
    return execute_item(WorkItem.model_validate(work), **kwargs).model_dump(exclude_none=True)


@pytest.fixture
def engine() -> RepoEngine:
    """The real engine with cheap scrypt."""
    return RepoEngine("adapter test password", kdf=KdfParams(n=1024))


def item(
    kind: str, source: str, store: Path, *, restore_to: str | None = None, **params: Any
) -> dict[str, Any]:
    base = {
        "backup_type": "Full",
        "parent_snapshot": None,
        "chain_snapshot": None,
        "epoch": [0, 0],
        "lsn": 1,
        "retention": None,
    }
    base.update(params)
    return {
        "JobId": "job",
        "Kind": kind,
        "Deadline": "2100-01-01T00:00:00Z",
        "Partition": {
            "PartitionId": PID,
            "ApplicationName": "fabric:/Shop",
            "ServiceName": "fabric:/Shop/Orders",
            "Source": source,
            "RestoreTo": restore_to,
        },
        "Storage": {"StorageKind": "FileShare", "Path": str(store)},
        "Params": base,
    }


def run(engine: RepoEngine, work: dict[str, Any]) -> dict[str, Any]:
    return execute(
        work, engine=engine, open_storage=open_policy_storage, progress=CountingProgress()
    )


def test_dir_backup_and_restore_replace_the_directory(engine: RepoEngine, tmp_path: Path) -> None:
    """A dir source is backed up and restored whole: changed files back, new files gone."""
    src = tmp_path / "orders"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("one")
    (src / "sub" / "b").write_bytes(b"\x00" * 100_000)
    before = tree_bytes(src)
    store = tmp_path / "store"
    out = run(engine, item("backup", f"dir:{src}", store))
    assert out["State"] == "Success", out
    (src / "a").write_text("two")
    (src / "new").write_text("x")
    restored = run(engine, item("restore", f"dir:{src}", store, snapshot_id=out["Snapshot"]["Id"]))
    assert restored["State"] == "Success", restored
    assert before == tree_bytes(src)
    assert not list(tmp_path.glob(".orders*"))  # no leftovers beside it
    with open_policy_storage_at(store) as storage:
        [snap] = engine.snapshots(storage)
    assert PartitionRef("fabric:/Shop", "fabric:/Shop/Orders", PID) == snap.partition


class open_policy_storage_at:
    def __init__(self, store: Path) -> None:
        from safehold.core.policy import FileShareStorage

        self.storage = open_policy_storage(FileShareStorage(str(store)))

    def __enter__(self) -> Any:
        return self.storage

    def __exit__(self, *exc: object) -> None:
        self.storage.close()


def test_command_source_dump_and_restore_to_file_and_command(
    engine: RepoEngine, tmp_path: Path
) -> None:
    """A dump command's stdout is stored; restore writes a file or feeds a command's stdin."""
    store = tmp_path / "store"
    dump_cmd = f"{sys.executable} -c \"import sys; sys.stdout.write('row1\\nrow2\\n')\""
    out = run(engine, item("backup", f"command:{dump_cmd}", store))
    assert out["State"] == "Success", out
    sid = out["Snapshot"]["Id"]
    target = tmp_path / "restored.sql"
    res = run(
        engine,
        item("restore", f"command:{dump_cmd}", store, restore_to=f"file:{target}", snapshot_id=sid),
    )
    assert res["State"] == "Success", res
    assert target.read_text() == "row1\nrow2\n"
    sink = tmp_path / "sink.txt"
    cmd = f"{sys.executable} -c \"import sys; open('{sink}', 'w').write(sys.stdin.read().upper())\""
    res = run(
        engine,
        item("restore", f"command:{dump_cmd}", store, restore_to=f"command:{cmd}", snapshot_id=sid),
    )
    assert res["State"] == "Success", res
    assert sink.read_text() == "ROW1\nROW2\n"


def test_failures_are_outcomes_not_exceptions(engine: RepoEngine, tmp_path: Path) -> None:
    """A failing dump command, a missing directory and a missing restore target are reported."""
    store = tmp_path / "store"
    bad = run(
        engine, item("backup", f"command:{sys.executable} -c 'import sys; sys.exit(3)'", store)
    )
    assert bad["State"] == "Failure"
    assert "status 3" in bad["Error"]["Message"]
    with open_policy_storage_at(store) as storage:
        assert engine.snapshots(storage) == []  # the partial dump was forgotten
    missing = run(engine, item("backup", f"dir:{tmp_path / 'nope'}", store))
    assert "does not exist" in missing["Error"]["Message"]
    ok = run(engine, item("backup", "command:echo hi", store))
    no_target = run(
        engine, item("restore", "command:echo hi", store, snapshot_id=ok["Snapshot"]["Id"])
    )
    assert "restore target" in no_target["Error"]["Message"]


def test_retention_forgets_in_the_real_repository(engine: RepoEngine, tmp_path: Path) -> None:
    """Retention runs after a backup and removes what the rule says, from the storage."""
    from datetime import UTC, datetime, timedelta

    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("x")
    store = tmp_path / "store"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for i in range(4):
        work = item("backup", f"dir:{src}", store, retention={"hours": 24, "minimum": 1})
        out = execute(
            work,
            engine=engine,
            open_storage=open_policy_storage,
            progress=CountingProgress(),
            clock=lambda i=i: t0 + timedelta(days=i),
        )
        assert out["State"] == "Success", out
        ids.append(out["Snapshot"]["Id"])
    # At day 3 the cut is day 2: the full at day 1 anchors what is newer; day 0 goes.
    with open_policy_storage_at(store) as storage:
        left = [s.id for s in engine.snapshots(storage)]
    assert ids[1:] == left


def test_retention_judges_the_catalogs_backups_and_leaves_the_rest(
    engine: RepoEngine, tmp_path: Path
) -> None:
    """
    With the catalog's list (``known``), retention reads no other snapshot: it
    removes what the rule says among those and the new backup, and leaves a
    backup the catalog does not know to the controller's retention timer.
    """
    from datetime import UTC, datetime, timedelta

    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("x")
    store = tmp_path / "store"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    stray = execute(  # an old backup the catalog does not know: the rule would remove it
        item("backup", f"dir:{src}", store),
        engine=engine,
        open_storage=open_policy_storage,
        progress=CountingProgress(),
        clock=lambda: t0 - timedelta(days=10),
    )["Snapshot"]
    known: list[dict[str, Any]] = []
    ids = []
    for i in range(4):
        rule = {"hours": 24, "minimum": 1}
        work = item("backup", f"dir:{src}", store, retention=rule, known=list(known))
        out = execute(
            work,
            engine=engine,
            open_storage=open_policy_storage,
            progress=CountingProgress(),
            clock=lambda i=i: t0 + timedelta(days=i),
        )
        assert out["State"] == "Success", out
        snap = out["Snapshot"]
        ids.append(snap["Id"])
        gone = set(out.get("Removed", []))
        known = [k for k in known if k["SnapshotId"] not in gone]
        known.append({"SnapshotId": snap["Id"], "Time": snap["Time"], "Full": True})
    with open_policy_storage_at(store) as storage:
        left = {s.id for s in engine.snapshots(storage)}
    assert left == {stray["Id"], *ids[1:]}


def test_a_foreign_repository_is_a_clear_400(tmp_path: Path) -> None:
    """Listing a storage whose repository has another password is bad input, not a crash."""
    import base64

    from safehold.core.policy import EntityRef
    from safehold.service import jobs
    from safehold.service.catalog import open_catalog
    from safehold.service.context import ServiceContext
    from safehold.service.errors import ForeignRepository
    from safehold.service.secrets import SecretBox
    from safehold.service.uow import SqlUnitOfWork

    store = tmp_path / "store"
    src = tmp_path / "d"
    src.mkdir()
    other = RepoEngine("somebody else's password", kdf=KdfParams(n=1024))
    assert run(other, item("backup", f"dir:{src}", store))["State"] == "Success"
    db = open_catalog(str(tmp_path / "c.sqlite"))
    ctx = ServiceContext(
        uow=lambda: SqlUnitOfWork(db),
        secrets=SecretBox(base64.urlsafe_b64encode(b"x" * 32)),
        open_storage=open_policy_storage,
        engine=RepoEngine("adapter test password", kdf=KdfParams(n=1024)),
    )
    storage = {"StorageKind": "FileShare", "Path": str(store)}
    with pytest.raises(ForeignRepository, match="password"):
        jobs.storage_backups(
            ctx, storage, EntityRef("Partition", PID), start=None, end=None, latest=False
        )
    db.dispose()


def test_a_service_backup_compares_with_the_named_parent_and_lists_no_snapshot(
    engine: RepoEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The controller names the partition's previous backup; the agent reads no
    other snapshot (a shared repository may hold a fleet's), and a previous
    backup that retention removed meanwhile only means every file is read.
    """
    from safehold.repo.repository import Repository

    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("x")
    store = tmp_path / "store"
    first = run(engine, item("backup", f"dir:{src}", store))["Snapshot"]["Id"]

    def no_listing(self: Repository) -> list[str]:
        raise AssertionError("a service backup listed the repository's snapshots")

    monkeypatch.setattr(Repository, "snapshot_names", no_listing)
    second = run(engine, item("backup", f"dir:{src}", store, previous_snapshot=first))
    assert second["State"] == "Success", second
    monkeypatch.undo()
    with open_policy_storage_at(store) as storage:
        engine.forget(storage, [first])
    monkeypatch.setattr(Repository, "snapshot_names", no_listing)
    third = run(engine, item("backup", f"dir:{src}", store, previous_snapshot=first))
    assert third["State"] == "Success", third
    monkeypatch.undo()
    with open_policy_storage_at(store) as storage:
        left = {s.id for s in engine.snapshots(storage)}
    assert left == {second["Snapshot"]["Id"], third["Snapshot"]["Id"]}
