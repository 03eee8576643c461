"""
A store's drills of its own partition: the ``drill`` jobs that ``StoreAgent`` claims.

Two kinds, as the drill policy says (``core.drill``):

- **Restore** (the default): the backup the controller chose is restored from
  the store's backup target into a *temporary* store in a sandbox directory
  (``<root>/drill-<drill id>``, root as the agents' drills: the policy's
  ``Sandbox.Directory``, else ``$SAFEHOLD_DRILL_SANDBOX``, else
  ``<tmp>/safehold-drills``). The live store is never touched. The validator is
  the store's own consistency check, the one it runs when it opens a directory:
  the restored database is read whole (``PRAGMA quick_check``), ``CURRENT`` and
  the database agree, the database holds this partition, and its LSN is the
  restored one. The sandbox is removed whatever happens; a sandbox whose owner
  process is gone (a drill killed midway) is removed by the next drill.
- **DataLoss**: SF's StartDataLoss on the live store (``induce_data_loss``),
  then the partition's own ``on_data_loss`` restore (the hook, or the store's
  automatic restore); when neither restores anything, the latest backup is
  restored (``RestorePolicy.SAFE``) so a drill never leaves the partition empty.
  The consistency check then runs on the live store.

Both report, in the outcome's ``Result``, what an agent's drill reports: measured
RTO (``RtoSeconds``: from the start of the restore, or of the induced loss, until
the check passed), achieved RPO (``RpoSeconds``: the restored backup's age at the
drill's start), the validators' results, the sandbox and the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from safehold.core.errors import SafeholdError
from safehold.core.snapshot import parse_time
from safehold.repo.locks import pid_alive
from safehold.state._files import read_current
from safehold.state._recovery import inspect
from safehold.state.backup import check_database
from safehold.state.dataloss import DataLossMode
from safehold.state.errors import InvalidBackup
from safehold.state.restore import RestorePolicy
from safehold.state.store import StateStore

__all__ = ["run_store_drill"]

SANDBOX_ENV = "SAFEHOLD_DRILL_SANDBOX"
MARKER = ".safehold-drill.json"  # the agents' marker: either side cleans a dead drill's sandbox
_MODES = {"FullDataLoss": DataLossMode.FULL, "PartialDataLoss": DataLossMode.PARTIAL}


def _root(configured: object) -> Path:
    chosen = configured if isinstance(configured, str) and configured else None
    chosen = chosen or os.environ.get(SANDBOX_ENV)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / "safehold-drills"


def _clean_leftovers(root: Path) -> list[str]:
    """Remove the sandboxes under *root* whose owner (on this host) is gone."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for d in root.glob("drill-*"):
        try:
            owner = json.loads((d / MARKER).read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-made, or another kind: the agents' clean-up ages those out
        if host != socket.gethostname() or pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


def _open_sandbox(root: Path, drill_id: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sandbox = root / f"drill-{drill_id}"
    shutil.rmtree(sandbox, ignore_errors=True)  # an earlier attempt of this drill
    sandbox.mkdir()
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "drill": drill_id}
    (sandbox / MARKER).write_text(json.dumps(marker))
    return sandbox


def consistency_check(path: Path, partition: str, lsn: int | None) -> dict[str, Any]:
    """
    The store's own consistency check of the (closed) store at *path*, as a validator result.

    Passes when the directory is intact as ``StateStore.open`` checks it (the
    database read whole), holds *partition*, and its last LSN is *lsn* (if given).
    """
    problems: list[str] = []
    detail = ""
    try:
        found = inspect(path, partition, verify=True)
        if found.state != "ok":
            problems.append(f"the store is {found.state}: {found.reason}")
        else:
            cur = read_current(path)
            assert cur is not None  # inspect said ok
            meta = check_database(path / cur.db_name)
            if lsn is not None and meta.lsn != lsn:
                problems.append(f"the restored LSN is {meta.lsn}, expected {lsn}")
            detail = f"intact: partition {meta.partition}, epoch {meta.epoch}, LSN {meta.lsn}"
    except (SafeholdError, InvalidBackup) as exc:
        problems.append(exc.message)
    return _state_check(problems, detail)


def _state_check(problems: list[str], detail: str) -> dict[str, Any]:
    """The result of the store's consistency check, in a validator result's shape."""
    return {
        "Kind": "StateCheck",
        "Name": "the store's consistency check",
        "Passed": not problems,
        "Detail": "; ".join(problems) if problems else detail,
        "Output": "",
    }


async def _restore_drill(
    store: StateStore, params: dict[str, Any], sandbox: Path, result: dict[str, Any]
) -> None:
    path = sandbox / "store"
    t0 = time.monotonic()
    async with StateStore.open(path, partition=store.partition, durability="normal") as temp:
        restored = await temp.restore(
            backup_id=str(params["snapshot_id"]),
            policy=RestorePolicy.FORCE,
            source=store.target,
        )
    result["RestoreSeconds"] = round(time.monotonic() - t0, 3)
    check = await asyncio.to_thread(consistency_check, path, store.partition, restored.lsn)
    result["Validators"] = [check]
    result["RestoredBackupId"] = restored.backup_id
    result["RestoredLsn"] = restored.lsn
    if check["Passed"]:
        result["RtoSeconds"] = round(time.monotonic() - t0, 3)


async def _data_loss_drill(
    store: StateStore, params: dict[str, Any], started_at: datetime, result: dict[str, Any]
) -> None:
    mode = _MODES.get(str(params.get("mode", "PartialDataLoss")))
    if mode is None:
        raise SafeholdError(f"unknown data-loss mode {params.get('mode')!r}")
    lsn_before = store.lsn
    t0 = time.monotonic()
    report = await store.induce_data_loss(mode)
    restored = report.restore
    if restored is None:  # no hook restored anything: never leave the partition empty
        restored = await store.restore(policy=RestorePolicy.SAFE)
    result["RestoreSeconds"] = round(time.monotonic() - t0, 3)
    result.update(
        HookRan=report.hook_ran,
        Reason=report.reason,
        RestoredBackupId=restored.backup_id,
        RestoredLsn=restored.lsn,
        LostTransactions=max(0, lsn_before - restored.lsn),
    )
    # The backup restored is the one whose age is the RPO achieved.
    backups = {s.id: s for s in await store.backups()}
    snap = backups.get(restored.backup_id)
    if snap is not None:
        result["RpoSeconds"] = round((started_at - snap.time).total_seconds(), 3)
    check = await _live_check(store)
    result["Validators"] = [check]
    if check["Passed"]:
        result["RtoSeconds"] = round(time.monotonic() - t0, 3)


async def _live_check(store: StateStore) -> dict[str, Any]:
    """The consistency check of the live store's database (it stays open)."""
    problems: list[str] = []
    detail = ""
    try:
        cur = await asyncio.to_thread(read_current, store.path)
        if cur is None:
            raise InvalidBackup("CURRENT is missing")
        meta = await asyncio.to_thread(check_database, store.path / cur.db_name)
        if meta.partition != store.partition:
            problems.append(f"the database holds partition {meta.partition}")
        if meta.lsn != store.lsn:
            problems.append(f"the database's LSN is {meta.lsn}, the store's {store.lsn}")
        detail = f"intact: partition {meta.partition}, epoch {meta.epoch}, LSN {meta.lsn}"
    except (SafeholdError, InvalidBackup) as exc:
        problems.append(exc.message)
    return _state_check(problems, detail)


async def run_store_drill(
    store: StateStore, params: dict[str, Any], *, started_at: datetime
) -> dict[str, Any]:
    """
    Run one drill work item's ``Params`` on *store*; return the outcome (as a dict).

    A failure of the drill (the restore or the check) is a ``Failure`` outcome
    that still carries what was measured; the caller adds the store's position.
    """
    kind = str(params.get("drill_kind") or "Restore")
    root = _root(params.get("sandbox_dir"))
    result: dict[str, Any] = {
        "Kind": kind,
        "Host": socket.gethostname(),
        "Validators": [],
        "CleanedLeftovers": await asyncio.to_thread(_clean_leftovers, root),
    }
    if params.get("backup_time"):
        result["RpoSeconds"] = round(
            (started_at - parse_time(str(params["backup_time"]))).total_seconds(), 3
        )
    error: dict[str, str] | None = None
    sandbox: Path | None = None
    try:
        if kind == "DataLoss":
            await _data_loss_drill(store, params, started_at, result)
        else:
            sandbox = await asyncio.to_thread(_open_sandbox, root, str(params["drill_id"]))
            result["Sandbox"] = str(sandbox)
            await _restore_drill(store, params, sandbox, result)
    except SafeholdError as exc:
        error = {"Code": exc.code, "Message": f"the restore failed: {exc.message}"}
    finally:
        if sandbox is not None:
            await asyncio.to_thread(shutil.rmtree, sandbox, True)
            result["SandboxRemoved"] = not sandbox.exists()
    failed = [r for r in result["Validators"] if not r["Passed"]]
    if error is None and failed:
        error = {
            "Code": "SAFEHOLD_E_DRILL_VALIDATION",
            "Message": f"validator 1 ({failed[0]['Kind']}) failed: {failed[0]['Detail']}",
        }
    if error is not None:
        with contextlib.suppress(KeyError):
            del result["RtoSeconds"]
        return {"State": "Failure", "Error": error, "Result": result}
    return {"State": "Success", "Result": result}
