"""
Redis as a backup source: an RDB snapshot taken over the replication protocol.

    src = RedisSource("redis://127.0.0.1:6379")
    src.backup(repo, meta=SnapshotMeta(...))           # one file, dump.rdb
    restore_redis(repo, snapshot, Path("/var/lib/redis-new"))   # dump.rdb, checked
    RedisServer(Path("/var/lib/redis-new"), port).start()      # serves it

**Backup** runs ``redis-cli --rdb -``: the server forks, writes a point-in-time
RDB image of the whole dataset (every database number) and sends it as a replica
would receive it; the stream is stored as one file, ``dump.rdb``, cut by the
repository's content-defined chunker, with nothing staged. The server's
replication id and offset before the transfer, and the end time, become tags
(``redis-rdb``, ``redis-replid``, ``redis-offset``, ``redis-stop-time``). The
agent needs only network access (and, with ACLs, a user that may ``SYNC``).
A password goes to redis-cli through ``REDISCLI_AUTH``, never its command line.

**Restore** writes ``dump.rdb`` into the target directory beside any existing
file, checks it with ``redis-check-rdb``, and renames it into place; a Redis
server started with ``--dir`` there loads it. A running server would overwrite
the file at its next save, so the restore refuses a directory whose
``redis.pid`` names a live process. RDB has no log to replay: the recovery
point is the last backup (AOF archiving would be the PITR path; not built).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote, urlsplit

from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, format_time
from safehold.db.errors import DbError, DbToolError
from safehold.db.mysqld import run_tool
from safehold.repo import BackupResult, backup_stream
from safehold.repo import dump as dump_snapshot
from safehold.repo.repository import Repository

__all__ = ["RDB_NAME", "RedisServer", "RedisSource", "is_redis_backup", "restore_redis"]

RDB_NAME = "dump.rdb"
BASE_TAG = "redis-rdb"


@dataclass
class RedisSource:
    """A Redis server reached through ``redis://[user:password@]host:port``."""

    url: str

    def _cli(self) -> tuple[list[str], dict[str, str]]:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", ""):
            raise DbError("a Redis URL starts with redis://")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise DbError("the Redis URL's port is not a number") from exc
        argv = ["redis-cli", "-h", parts.hostname or "127.0.0.1", "-p", str(port)]
        if parts.username and parts.password:
            argv += ["--user", unquote(parts.username)]
        env = {"REDISCLI_AUTH": unquote(parts.password or parts.username or "")}
        return argv, env if env["REDISCLI_AUTH"] else {}

    @property
    def where(self) -> str:
        """The server, for messages (no password)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"

    def info(self, section: str = "replication") -> dict[str, str]:
        """The server's ``INFO`` *section* as a dict."""
        argv, env = self._cli()
        out = run_tool([*argv, "INFO", section], what="redis-cli", env=env).decode()
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)

    def backup(
        self,
        repo: Repository,
        *,
        meta: SnapshotMeta | None = None,
        tags: Sequence[str] = (),
        progress: ProgressSink | None = None,
    ) -> BackupResult:
        """
        Store an RDB image of the server in *repo*; return the snapshot.

        Raises:
            DbToolError: redis-cli failed (the server refused SYNC, say).
        """
        meta = meta or SnapshotMeta()
        argv, env = self._cli()
        repl = self.info()
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [*argv, "--rdb", "-"],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **env},
            )
            assert proc.stdout is not None

            def finish() -> SnapshotMeta:
                code = proc.wait()
                err.seek(0)
                text = err.read().decode(errors="replace")
                if code != 0 or "Transfer finished with success" not in text:
                    raise DbToolError(
                        f"redis-cli --rdb from {self.where} failed (status {code}): "
                        f"{text[-600:].strip()}"
                    )
                now = datetime.now(UTC)
                more = [BASE_TAG, f"redis-stop-time={format_time(now)}"]
                if repl.get("master_replid"):
                    more.append(f"redis-replid={repl['master_replid'].strip()}")
                    more.append(f"redis-offset={repl.get('master_repl_offset', '0').strip()}")
                return replace(meta, tags=(*meta.tags, *tags, *more), time=meta.time or now)

            try:
                return backup_stream(
                    repo,
                    cast(BinaryIO, proc.stdout),
                    name=RDB_NAME,
                    finish=finish,
                    progress=progress,
                )
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.stdout.close()
                proc.wait()


def is_redis_backup(snap: Snapshot) -> bool:
    """Whether *snap* is an RDB backup."""
    return BASE_TAG in snap.tags


def restore_redis(repo: Repository, snapshot: Snapshot, target_dir: Path) -> Path:
    """
    Write the backup's RDB file as ``target_dir/dump.rdb``, checked; return its path.

    Raises:
        DbError: not an RDB backup, or a Redis server runs in *target_dir*.
        DbToolError: redis-check-rdb rejects the file (the old file is kept).
    """
    if not is_redis_backup(snapshot):
        raise DbError(f"backup {snapshot.short_id} is not a Redis RDB backup")
    target_dir = Path(target_dir)
    if RedisServer(target_dir, 0).running():
        raise DbError(f"a Redis server is running in {target_dir}: stop it before restoring")
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".dump.rdb.", dir=target_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            dump_snapshot(repo, snapshot, out, RDB_NAME)
            out.flush()
            os.fsync(out.fileno())
        run_tool(["redis-check-rdb", str(tmp)], what="redis-check-rdb")
        final = target_dir / RDB_NAME
        tmp.replace(final)
        return final
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class RedisServer:
    """A Redis server serving the ``dump.rdb`` of a directory (restores, tests)."""

    dir: Path
    port: int

    @property
    def pidfile(self) -> Path:
        """The server's pid file, in its directory."""
        return self.dir / "redis.pid"

    def start(self, *options: str, timeout: float = 60.0) -> None:
        """Start ``redis-server`` (daemonized) on the directory; wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        run_tool(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--dbfilename", RDB_NAME, "--daemonize", "yes",
             "--pidfile", str(self.pidfile), "--logfile", str(self.dir / "redis.log"),
             "--save", "", "--appendonly", "no", *options],
            what="redis-server",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        probe = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "PING"]
        while time.monotonic() < deadline:
            out = subprocess.run(probe, capture_output=True, check=False)
            if out.returncode == 0 and out.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise DbToolError(f"redis-server on port {self.port} did not answer within {timeout} s")

    def running(self) -> bool:
        """Whether the pid file names a live process."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except PermissionError:
            return True  # alive, someone else's
        except (OSError, ValueError):
            return False
        return True

    def stop(self) -> None:
        """Stop a server that ``start`` started (no save: it was started without save points)."""
        if not self.running():
            return
        pid = int(self.pidfile.read_text().strip())
        os.kill(pid, 15)  # started with --save "": SIGTERM saves nothing
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
