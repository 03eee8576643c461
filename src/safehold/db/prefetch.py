"""
Serving ``restore_command`` from a local spool that is filled ahead of time.

During a restore, safehold itself stays up while PostgreSQL recovers, with the
repository open. It writes a small shell script as the ``restore_command``: the
script names the file PostgreSQL wants (``want``) and waits for it to appear in
``in/`` (or for ``in/<name>.none``: not archived). A ``WalPrefetcher`` thread
answers: it fetches the wanted file and the next *ahead* segments of the same
timeline in parallel, so by the time PostgreSQL asks for a segment it is usually
on local disk, and the script answers in milliseconds, without starting Python,
deriving keys or reading an index per file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from safehold.db.pgwal import DEFAULT_SEGMENT_SIZE, Segment, is_segment_name
from safehold.db.walstore import WalArchive, WalObject

__all__ = ["SCRIPT_NAME", "WalPrefetcher", "write_restore_script"]

SCRIPT_NAME = "restore-wal.sh"

_SCRIPT = """#!/bin/sh
# restore_command written by safehold: serves the WAL files that safehold
# fetches ahead into {spool}/in while this restore runs.
d='{spool}'
printf '%s\\n' "$1" > "$d/want.$$" && mv -f "$d/want.$$" "$d/want"
i=0
while [ "$i" -lt {tries} ]; do
    if [ -f "$d/in/$1" ]; then
        mv -f "$d/in/$1" "$2" && exit 0
        exit 1
    fi
    [ -f "$d/in/$1.none" ] && exit 1
    [ -f "$d/stopped" ] && exit 1
    sleep 0.01
    i=$((i + 1))
done
exit 1
"""


def write_restore_script(spool: Path, *, timeout: float = 600.0) -> Path:
    """Write the ``restore_command`` script into *spool*; return its path."""
    (spool / "in").mkdir(parents=True, exist_ok=True)
    script = spool / SCRIPT_NAME
    script.write_text(_SCRIPT.format(spool=spool, tries=int(timeout * 100)))
    script.chmod(0o755)
    return script


class WalPrefetcher:
    """Fetches what the restore script asks for, and the segments after it."""

    def __init__(
        self,
        archive: WalArchive,
        spool: Path,
        *,
        ahead: int = 8,
        workers: int = 4,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        self.archive = archive
        self.spool = spool
        self.ahead = ahead
        self.segment_size = segment_size
        self.inn = spool / "in"
        self.inn.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="safehold-walget")
        self._jobs: dict[str, Future[None]] = {}
        self._listing: dict[str, WalObject] = archive.list()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safehold-prefetch", daemon=True)
        self.fetched = 0
        self.errors: list[str] = []
        self._owner: tuple[int, int] | None = None

    def give_to(self, uid: int, gid: int) -> None:
        """Hand fetched files to this owner (the server's OS user) when running as root."""
        self._owner = (uid, gid)

    def start(self) -> WalPrefetcher:
        """Start answering in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering; the script then fails fast for anything not fetched."""
        self._stop.set()
        (self.spool / "stopped").touch()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _fetch(self, obj: WalObject, name: str) -> None:
        try:
            data = self.archive.read(obj)
            tmp = self.inn / f".{name}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            if self._owner is not None:
                os.chown(tmp, *self._owner)
            tmp.replace(self.inn / name)
            self.fetched += 1
        except Exception as exc:
            self.errors.append(f"{obj.name}: {exc}")
            (self.inn / f"{name}.none").touch()

    def _submit(self, name: str) -> bool:
        # A segment never archived whole may have been streamed in part
        # (pg_receivewal's <name>.partial, pushed when the primary was lost):
        # it is served for <name>, and recovery replays what it holds.
        obj = self._listing.get(name) or self._listing.get(f"{name}.partial")
        if obj is None:
            return False
        job = self._jobs.get(name)
        if job is None or (job.done() and not (self.inn / name).exists()):
            self._jobs[name] = self._pool.submit(self._fetch, obj, name)
        return True

    def _answer(self, name: str) -> None:
        if name not in self._listing and f"{name}.partial" not in self._listing:
            self._listing = self.archive.list()  # it may have grown since
        if not self._submit(name):
            (self.inn / f"{name}.none").touch()
            return
        if is_segment_name(name):
            seg = Segment.parse(name, self.segment_size)
            for _ in range(self.ahead):
                seg = seg.next()
                if not self._submit(seg.name):
                    break
        # Files PostgreSQL took are gone; forget their jobs so memory stays flat.
        for done in [n for n, j in self._jobs.items() if j.done() and n < name]:
            del self._jobs[done]

    def _run(self) -> None:
        want = self.spool / "want"
        last = None
        while not self._stop.is_set():
            try:
                name = want.read_text().strip()
                stamp = want.stat().st_mtime_ns
            except OSError:
                time.sleep(0.005)
                continue
            if (name, stamp) != last:
                last = (name, stamp)
                with contextlib.suppress(Exception):
                    self._answer(name)
            time.sleep(0.002)
