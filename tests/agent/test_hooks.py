"""Hooks around a backup, with real shell commands, the real engine and file storage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.hooks import OUTPUT_LIMIT, run_hook
from safehold.agent.worker import execute
from safehold.bootstrap import open_policy_storage
from safehold.core.progress import CountingProgress
from safehold.core.work import WorkItem
from safehold.repo.keys import KdfParams
from safehold.service.engine import RepoEngine

PID = "dddddddd-0000-4000-8000-000000000001"


@pytest.fixture
def engine() -> RepoEngine:
    """The real engine with cheap scrypt."""
    return RepoEngine("hooks test password", kdf=KdfParams(n=1024))


def backup(
    engine: RepoEngine, src: Path, store: Path, hooks: dict[str, Any] | None
) -> dict[str, Any]:
    """Run one backup job of *src* with *hooks*; return the outcome's wire JSON."""
    item = WorkItem.model_validate(
        {
            "JobId": "job-hooks",
            "Kind": "backup",
            "Deadline": "2100-01-01T00:00:00Z",
            "Partition": {
                "PartitionId": PID,
                "ApplicationName": "fabric:/Hk",
                "ServiceName": "fabric:/Hk/Svc",
                "Source": f"dir:{src}",
                "Hooks": hooks,
            },
            "Storage": {"StorageKind": "FileShare", "Path": str(store)},
            "Params": {"backup_type": "Full", "epoch": [0, 0], "lsn": 1},
        }
    )
    outcome = execute(
        item, engine=engine, open_storage=open_policy_storage, progress=CountingProgress()
    )
    return outcome.model_dump(exclude_none=True)


def snapshot_count(engine: RepoEngine, store: Path) -> int:
    if not store.exists():
        return 0
    storage = open_policy_storage(_spec(store))
    try:
        return len(engine.snapshots(storage))
    finally:
        storage.close()


def _spec(store: Path) -> Any:
    from safehold.core.policy import parse_storage

    return parse_storage({"StorageKind": "FileShare", "Path": str(store)})


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "f.txt").write_text("data")
    return d


def test_before_and_after_run_in_order_around_the_backup(
    engine: RepoEngine, src: Path, tmp_path: Path
) -> None:
    """before runs before the snapshot (what it writes is backed up), after runs after it."""
    trace = tmp_path / "trace"
    hooks = {
        "Before": f'echo "before $SAFEHOLD_HOOK $SAFEHOLD_PARTITION_ID" >> {trace};'
        f" echo flushed > {src}/flushed.txt",
        "After": f'echo "after $SAFEHOLD_BACKUP_STATE" >> {trace}',
        "TimeoutSeconds": 30,
    }
    out = backup(engine, src, tmp_path / "store", hooks)
    assert out["State"] == "Success", out
    assert "Result" not in out
    assert trace.read_text().splitlines() == [f"before before {PID}", "after Success"]
    restored = tmp_path / "restored"
    storage = open_policy_storage(_spec(tmp_path / "store"))
    try:
        engine.restore_dir(storage, out["Snapshot"]["Id"], restored, progress=CountingProgress())
    finally:
        storage.close()
    assert (restored / "data" / "flushed.txt").read_text() == "flushed\n"


def test_a_failing_before_hook_fails_the_job_with_its_output_and_takes_no_backup(
    engine: RepoEngine, src: Path, tmp_path: Path
) -> None:
    """Exit status and output are in the job's error; after still runs (it thaws)."""
    trace = tmp_path / "trace"
    hooks = {
        "Before": "echo 'cannot freeze: db busy' >&2; exit 3",
        "After": f"echo thawed $SAFEHOLD_BACKUP_STATE >> {trace}",
    }
    store = tmp_path / "store"
    out = backup(engine, src, store, hooks)
    assert out["State"] == "Failure"
    assert out["Error"]["Code"] == "SAFEHOLD_E_HOOK_FAILED"
    assert "exited with status 3" in out["Error"]["Message"]
    assert "cannot freeze: db busy" in out["Error"]["Message"]
    assert snapshot_count(engine, store) == 0
    assert trace.read_text() == "thawed Failure\n"


def test_a_before_hook_past_its_timeout_is_killed_with_its_children(
    engine: RepoEngine, src: Path, tmp_path: Path
) -> None:
    """A hung hook (and what it started) is killed; the job fails saying so."""
    pidfile = tmp_path / "child.pid"
    hooks = {"Before": f"sleep 300 & echo $! > {pidfile}; echo waiting; wait", "TimeoutSeconds": 1}
    out = backup(engine, src, tmp_path / "store", hooks)
    assert out["State"] == "Failure"
    assert "timed out after 1s" in out["Error"]["Message"]
    assert "waiting" in out["Error"]["Message"]
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 30  # SIGKILL is delivered at once, reaped a little later
    while not _gone(child):
        assert time.monotonic() < deadline, f"the hook's child {child} still runs"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """Whether *pid* has ended (gone, or a zombie waiting for its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_failing_after_hook_is_reported_and_keeps_the_backup(
    engine: RepoEngine, src: Path, tmp_path: Path
) -> None:
    """The backup is stored and reported as a success, with the after hook's failure."""
    store = tmp_path / "store"
    out = backup(engine, src, store, {"After": "echo 'thaw failed'; exit 1"})
    assert out["State"] == "Success", out
    assert out["Result"]["HookWarnings"] == ["the after hook exited with status 1: thaw failed"]
    assert snapshot_count(engine, store) == 1


def test_hook_output_is_bounded_and_the_agents_secrets_are_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chatty hook keeps only its tail; SAFEHOLD_PASSWORD never reaches it."""
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "agent-secret-password")
    result = run_hook(
        "before",
        'echo "pw=${SAFEHOLD_PASSWORD:-unset}"; head -c 100000 /dev/zero | tr "\\0" x; echo END',
        30,
        {},
    )
    assert result.ok
    assert len(result.output.encode()) <= OUTPUT_LIMIT + len("…".encode())
    assert result.output.endswith("END")
    loud = run_hook("before", 'echo "pw=${SAFEHOLD_PASSWORD:-unset}"', 30, {})
    assert loud.output == "pw=unset"
