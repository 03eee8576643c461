"""
The agent's side of a restore drill: restore a backup into a sandbox, validate, clean up.

The sandbox is a fresh directory ``<root>/drill-<drill id>`` under the sandbox
root (the policy's ``Sandbox.Directory``, else ``$SAFEHOLD_DRILL_SANDBOX``, else
``<tmp>/safehold-drills``). It never touches the partition's live data. A marker
file in it names the process that owns it; every drill first removes the
sandboxes whose owner is gone (a drill killed midway), and always removes its
own when it ends.

A ``postgres:`` partition's base backup is restored into a scratch PostgreSQL
instance in the sandbox (``agent.sandbox_pg``): SQL validators query it, command
validators reach it through ``PGHOST``/``PGPORT``, file validators see its data
directory; it is stopped before the sandbox is removed, and a leftover sandbox's
instance is stopped before that sandbox goes. SQL validators are skipped (and
say so) on other sources. A ``mariadb:`` partition's physical backup is
restored, prepared and started the same way (``agent.sandbox_mariadb``: a private
``mariadbd`` on a free ``127.0.0.1`` port, its socket in the sandbox; command
validators reach it through ``MYSQL_UNIX_PORT``/``SAFEHOLD_MARIADB_SOCKET``).
``state:`` partitions are drilled by their store's own
agent (``state.drill``).

Measured RTO is the agent's monotonic time from the start of the restore until
the last validator passed. Achieved RPO is the restored backup's age when the
drill started; for a database, the result also names the end of the recoverable
window (``RecoverableEndLsn``; MariaDB: ``RecoverableEndTime``, the last archived
binlog event). Each validator's output is kept bounded (its last
``core.drill.MAX_OUTPUT`` bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from safehold.agent import sandbox_mariadb
from safehold.agent.sandbox_mariadb import ScratchMariaDb
from safehold.agent.sandbox_pg import (
    ScratchPostgres,
    restore_scratch,
    run_sql,
    stop_leftover,
    stop_scratch,
)
from safehold.core.drill import (
    MAX_OUTPUT,
    CommandValidator,
    FilesValidator,
    SqlValidator,
    Validator,
    parse_validators,
)
from safehold.core.errors import SafeholdError
from safehold.core.progress import ProgressSink
from safehold.core.snapshot import parse_time
from safehold.core.work import ErrorInfo, Outcome, WorkItem
from safehold.repo.locks import pid_alive
from safehold.service.engine import BackupEngine

__all__ = ["MARKER", "SANDBOX_ENV", "clean_leftovers", "open_sandbox", "run_drill", "sandbox_root"]

log = logging.getLogger("safehold.agent.drill")

SANDBOX_ENV = "SAFEHOLD_DRILL_SANDBOX"
MARKER = ".safehold-drill.json"
_PREFIX = "drill-"
_CREATING = ".creating-"
_STALE_CREATING = 3600.0  # a half-made sandbox this old belongs to no live drill

# Drills running in this process (two slots of one agent share a root).
_running: set[str] = set()
_running_lock = threading.Lock()

_Scratch = ScratchPostgres | ScratchMariaDb


class DrillError(SafeholdError):
    """A drill could not restore or validate the backup."""

    code = "SAFEHOLD_E_DRILL"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


def sandbox_root(configured: str | None) -> Path:
    """The sandbox root: the policy's directory, else the environment's, else a temp dir."""
    chosen = configured or os.environ.get(SANDBOX_ENV)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / "safehold-drills"


def _remove(path: Path) -> None:
    """Remove a tree, read-only restored directories included."""

    def fix(func: Callable[..., Any], name: str, exc: Any) -> None:
        del exc
        parent = os.path.dirname(name)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            os.chmod(name, stat.S_IRWXU)
        func(name)

    if path.exists():
        shutil.rmtree(path, onerror=fix)


def clean_leftovers(root: Path) -> list[str]:
    """
    Remove the sandboxes under *root* that no live drill owns; return their paths.

    A sandbox is owned by the process its marker names, on this host; one
    without a readable marker is half-made and removed once it is an hour old.
    """
    if not root.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for d in root.iterdir():
        if not d.is_dir() or not d.name.startswith((_PREFIX, _CREATING)):
            continue
        try:
            owner = json.loads((d / MARKER).read_text())
            mine = owner.get("host") == host
            pid, drill = int(owner["pid"]), str(owner["drill"])
        except (OSError, ValueError, KeyError, TypeError):
            if time.time() - d.stat().st_mtime < _STALE_CREATING:
                continue
            mine, pid, drill = True, -1, ""
        if not mine:
            continue  # another host's (a shared root): only it can tell
        if pid == os.getpid():
            with _running_lock:
                if drill in _running:
                    continue
        elif pid > 0 and pid_alive(pid):
            continue
        try:
            stop_leftover(d)  # a scratch database the killed drill left running
            sandbox_mariadb.stop_leftover(d)
            _remove(d)
            removed.append(str(d))
            log.warning("removed the sandbox %s left by a drill that did not finish", d)
        except OSError as exc:
            log.error("cannot remove the leftover sandbox %s: %s", d, exc)
    return removed


def open_sandbox(root: Path, drill_id: str) -> Path:
    """Create the drill's sandbox, with its owner marker, atomically (mkdtemp + rename)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_CREATING, dir=root))
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "drill": drill_id}
    (tmp / MARKER).write_text(json.dumps(marker))
    final = root / f"{_PREFIX}{drill_id}"
    if final.exists():
        stop_leftover(final)
        sandbox_mariadb.stop_leftover(final)
        _remove(final)  # an earlier attempt of this same drill (a re-claim)
    tmp.rename(final)
    return final


def _tail(f: Any) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - MAX_OUTPUT))
    text: str = f.read().decode(errors="replace")
    return ("…" if size > MAX_OUTPUT else "") + text


def _command(v: CommandValidator, cwd: Path, env: dict[str, str], cap: float) -> dict[str, Any]:
    timeout = min(v.timeout_seconds, cap)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(  # noqa: S602 - the policy's own command, by design
            v.command,
            shell=True,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        output = _tail(out)
    passed = code == v.expected_exit
    detail = (
        f"timed out after {timeout:g} s"
        if code is None
        else f"exited with status {code}" + ("" if passed else f", expected {v.expected_exit}")
    )
    return {"Kind": "Command", "Name": v.command, "Passed": passed, "ExitCode": code,
            "Detail": detail, "Output": output}  # fmt: skip


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _shape(v: FilesValidator, root: Path, files: list[Path], total: int) -> list[str]:
    """Existence, counts and sizes."""
    problems = [f"{rel}: missing" for rel in v.exist if not (root / rel).exists()]
    if v.min_files is not None and len(files) < v.min_files:
        problems.append(f"{len(files)} files, fewer than {v.min_files}")
    if v.max_files is not None and len(files) > v.max_files:
        problems.append(f"{len(files)} files, more than {v.max_files}")
    if v.min_bytes is not None and total < v.min_bytes:
        problems.append(f"{total} bytes in all, fewer than {v.min_bytes}")
    for rel, size in v.sizes:
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != size:
            problems.append(f"{rel}: {p.stat().st_size} bytes, expected {size}")
    return problems


def _wanted_checksums(v: FilesValidator, root: Path, problems: list[str]) -> list[tuple[str, str]]:
    """The checksums to verify: the policy's, and the manifest's (``sha256sum`` lines)."""
    wanted = list(v.checksums)
    if v.checksum_manifest is None:
        return wanted
    manifest = root / v.checksum_manifest
    if not manifest.is_file():
        problems.append(f"{v.checksum_manifest}: the checksum manifest is missing")
        return wanted
    base = Path(v.checksum_manifest).parent
    for line in manifest.read_text(errors="replace").splitlines():
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if digest and name:
            wanted.append((str(base / name), digest.lower()))
    return wanted


def _files(v: FilesValidator, root: Path) -> dict[str, Any]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    problems = _shape(v, root, files, total)
    wanted = _wanted_checksums(v, root, problems)
    for rel, digest in wanted:
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif (got := _sha256(p)) != digest:
            problems.append(f"{rel}: SHA-256 {got[:16]}…, expected {digest[:16]}…")
    detail = f"{len(files)} files, {total} bytes, {len(wanted)} checksums verified"
    if problems:
        detail = "; ".join(problems[:20])
        detail += f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return {"Kind": "Files", "Name": "files", "Passed": not problems, "Detail": detail,
            "Output": ""}  # fmt: skip


def _skipped_sql(v: SqlValidator) -> dict[str, Any]:
    detail = "not run: SQL validators run on database sources only"
    return {"Kind": "Sql", "Name": v.query, "Passed": True, "Skipped": True,
            "Detail": detail, "Output": ""}  # fmt: skip


def _sql(scratch: _Scratch, v: SqlValidator, cap: float) -> dict[str, Any]:
    if isinstance(scratch, ScratchMariaDb):
        return sandbox_mariadb.run_sql(scratch, v, cap)
    return run_sql(scratch, v, cap)


def _validate(
    validators: tuple[Validator, ...],
    root: Path,
    restored: Path,
    sandbox: Path,
    deadline: float,
    scratch: _Scratch | None = None,
) -> list[dict[str, Any]]:
    env = {**os.environ, "SAFEHOLD_RESTORED": str(restored), "SAFEHOLD_SANDBOX": str(sandbox)}
    env.pop("SAFEHOLD_PASSWORD", None)  # validators never see the repository password
    if scratch is not None:
        env.update(scratch.env())
    results = []
    for v in validators:
        started = time.monotonic()
        cap = max(1.0, deadline - started)
        if isinstance(v, CommandValidator):
            r = _command(v, root, env, cap)
        elif isinstance(v, FilesValidator):
            r = _files(v, root)
        else:
            r = _sql(scratch, v, cap) if scratch is not None else _skipped_sql(v)
        r["Seconds"] = round(time.monotonic() - started, 3)
        results.append(r)
    return results


def _open_repo(engine: BackupEngine, storage: Any) -> Any:
    """The storage's repository, for a source that its own layer restores (``safehold.db``)."""
    opener = getattr(engine, "open_repository", None)
    if opener is None:
        raise DrillError("this agent's engine cannot open repositories for database drills")
    return opener(storage)


def _recoverable_end(repo: Any, stanza: str) -> dict[str, Any]:
    """The end of the cluster's recoverable window, as far as the archived WAL reaches."""
    from safehold.db.pgwal import format_lsn
    from safehold.db.postgres import recoverable_window

    try:
        window = recoverable_window(repo, stanza)
    except SafeholdError as exc:
        log.warning("the recoverable window is unknown: %s", exc.message)
        return {}
    if window is None:
        return {}
    return {"RecoverableEndLsn": format_lsn(window.end_lsn),
            "RecoverableEndSegment": window.end_segment}  # fmt: skip


def _db_end(repo: Any, scratch: _Scratch) -> dict[str, Any]:
    if isinstance(scratch, ScratchMariaDb):
        return sandbox_mariadb.recoverable_end(repo, scratch)
    return _recoverable_end(repo, scratch.backup.stanza)


def _stop(scratch: _Scratch) -> None:
    if isinstance(scratch, ScratchMariaDb):
        sandbox_mariadb.stop_scratch(scratch)
    else:
        stop_scratch(scratch)


def _restore(
    item: WorkItem, engine: BackupEngine, storage: Any, data: Path, progress: ProgressSink
) -> tuple[Path, Path]:
    """Restore the drill's backup under *data*; return (validation root, restored path)."""
    snapshot_id = item.drill().snapshot_id
    source = item.Partition.Source
    if source.startswith("dir:"):
        snap = engine.restore_dir(storage, snapshot_id, data, progress=progress)
        if snap.source_kind != "dir" or not snap.paths:
            raise DrillError(f"backup {snap.short_id} holds a stream, not a directory")
        restored = data / Path(snap.paths[0]).name
        return restored, restored
    if source.startswith("command:"):
        dump = data / "dump"
        with dump.open("wb") as out:
            engine.dump(storage, snapshot_id, out)
        return data, dump
    raise DrillError(f"drills of {source.split(':', 1)[0]}: partitions are not supported here")


def _restore_into(
    item: WorkItem,
    validators: tuple[Validator, ...],
    engine: BackupEngine,
    storage: Any,
    sandbox: Path,
    deadline: float,
    progress: ProgressSink,
    stack: contextlib.ExitStack,
) -> tuple[Path, Path, _Scratch | None, Any]:
    """Restore into *sandbox*: (validation root, restored path, scratch database, repository)."""
    if item.Partition.Source.startswith("mariadb:"):
        repo = stack.enter_context(_open_repo(engine, storage))
        url = item.Partition.Source.split(":", 1)[1].partition("#")[0]
        from safehold.db.mysqld import ClientOptions

        mdb = sandbox_mariadb.restore_scratch(
            repo, item.drill().snapshot_id, sandbox, deadline=deadline, progress=progress,
            user=ClientOptions.from_url(url).user,
        )  # fmt: skip
        return mdb.server.datadir, mdb.server.datadir, mdb, repo
    if not item.Partition.Source.startswith("postgres:"):
        data = sandbox / "data"
        data.mkdir()
        return (*_restore(item, engine, storage, data, progress), None, None)
    repo = stack.enter_context(_open_repo(engine, storage))
    users = [v.user for v in validators if isinstance(v, SqlValidator) and v.user]
    options = dict(parse_qsl(item.Partition.Source.partition("#")[2]))  # postgres:URL#bindir=…
    scratch = restore_scratch(
        repo,
        item.drill().snapshot_id,
        sandbox,
        deadline=deadline,
        progress=progress,
        ready_user=users[0] if users else None,
        bindir=options.get("bindir") or None,
    )
    return scratch.server.datadir, scratch.server.datadir, scratch, repo


def _first_failure(checks: list[dict[str, Any]]) -> ErrorInfo | None:
    """The drill's error: its first failed validator's, or None."""
    failed = [(i, r) for i, r in enumerate(checks) if not r["Passed"]]
    if not failed:
        return None
    i, r = failed[0]
    return ErrorInfo(
        Code="SAFEHOLD_E_DRILL_VALIDATION",
        Message=f"validator {i + 1} ({r['Kind']}: {r['Name'][:80]}) failed: {r['Detail']}",
    )


def _discard(sandbox: Path) -> bool:
    """Remove the drill's own sandbox; return whether it is gone."""
    try:
        _remove(sandbox)
        return True
    except OSError as exc:
        log.error("cannot remove the sandbox %s: %s", sandbox, exc)
        return False


def run_drill(
    item: WorkItem,
    engine: BackupEngine,
    storage: Any,
    progress: ProgressSink,
    clock: Callable[[], datetime],
) -> Outcome:
    """Run one drill work item; return its outcome, with what it measured in ``Result``."""
    params = item.drill()
    validators = parse_validators(params.validators)
    root = sandbox_root(params.sandbox_dir)
    cleaned = clean_leftovers(root)
    started_at = clock()
    rpo = (started_at - parse_time(params.backup_time)).total_seconds()
    deadline = time.monotonic() + max(1.0, (parse_time(item.Deadline) - started_at).total_seconds())
    with _running_lock:
        _running.add(params.drill_id)
    result: dict[str, Any] = {
        "RpoSeconds": round(rpo, 3),
        "Host": socket.gethostname(),
        "CleanedLeftovers": cleaned,
        "Validators": [],
    }
    error: ErrorInfo | None = None
    sandbox: Path | None = None
    scratch: _Scratch | None = None
    stack = contextlib.ExitStack()  # the repository of a database drill
    try:
        sandbox = open_sandbox(root, params.drill_id)
        result["Sandbox"] = str(sandbox)
        t0 = time.monotonic()
        try:
            vroot, restored, scratch, repo = _restore_into(
                item, validators, engine, storage, sandbox, deadline, progress, stack
            )
        except SafeholdError as exc:
            raise DrillError(f"the restore failed: {exc.message}", code=exc.code) from exc
        if scratch is not None:
            result["Port"] = scratch.port
        result["RestoreSeconds"] = round(time.monotonic() - t0, 3)
        checks = _validate(validators, vroot, restored, sandbox, deadline, scratch)
        elapsed = time.monotonic() - t0
        if scratch is not None:
            result.update(_db_end(repo, scratch))
        result["Validators"] = checks
        error = _first_failure(checks)
        if error is None:
            result["RtoSeconds"] = round(elapsed, 3)
    except DrillError as exc:
        error = ErrorInfo(Code=exc.code, Message=exc.message)
    except OSError as exc:
        error = ErrorInfo(Code="SAFEHOLD_E_DRILL", Message=f"{exc.strerror}: {exc.filename}")
    finally:
        if scratch is not None:
            _stop(scratch)
        stack.close()
        if sandbox is not None:
            result["SandboxRemoved"] = _discard(sandbox)
        with _running_lock:
            _running.discard(params.drill_id)
    if error is not None:
        return Outcome(State="Failure", Error=error, Result=result)
    return Outcome(State="Success", Result=result)
