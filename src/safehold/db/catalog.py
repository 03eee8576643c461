"""
Which base backups a repository holds, read from their snapshots' tags.

A base backup is a directory snapshot tagged ``pg-base``; the other tags record
what restore, ``check`` and retention need (``key=value``)::

    pg-stanza=<archive name>   pg-sysid=<system identifier>   pg-tli=<timeline>
    pg-start=<LSN>             pg-stop=<LSN>                  pg-stop-time=<ISO 8601>
    pg-start-wal=<segment>     pg-stop-wal=<segment>          pg-segsize=<WAL segment size>
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from safehold.core.snapshot import Snapshot, format_time, parse_time
from safehold.db.pgwal import Segment, format_lsn, parse_lsn, segment_of

__all__ = ["BASE_TAG", "BackupPosition", "PgBackup", "pg_backups"]

BASE_TAG = "pg-base"


@dataclass(frozen=True)
class BackupPosition:
    """Where a base backup sits in its cluster's WAL."""

    stanza: str
    sysid: int
    timeline: int
    start_lsn: int
    stop_lsn: int
    stop_time: datetime
    segment_size: int

    @property
    def start_segment(self) -> Segment:
        """The first WAL segment the backup needs."""
        return segment_of(self.timeline, self.start_lsn, self.segment_size)

    @property
    def stop_segment(self) -> Segment:
        """The last WAL segment the backup needs to be consistent."""
        return segment_of(self.timeline, max(self.stop_lsn - 1, self.start_lsn), self.segment_size)

    def needed_segments(self) -> list[Segment]:
        """Every segment from start to stop: without them the backup cannot be restored."""
        seg, last, out = self.start_segment, self.stop_segment, []
        while seg.number <= last.number:
            out.append(seg)
            seg = seg.next()
        return out

    def tags(self) -> tuple[str, ...]:
        """The tags that record this backup in its snapshot."""
        return (
            BASE_TAG,
            f"pg-stanza={self.stanza}",
            f"pg-sysid={self.sysid}",
            f"pg-tli={self.timeline}",
            f"pg-start={format_lsn(self.start_lsn)}",
            f"pg-stop={format_lsn(self.stop_lsn)}",
            f"pg-stop-time={format_time(self.stop_time)}",
            f"pg-start-wal={self.start_segment.name}",
            f"pg-stop-wal={self.stop_segment.name}",
            f"pg-segsize={self.segment_size}",
        )


@dataclass(frozen=True)
class PgBackup(BackupPosition):
    """A stored PostgreSQL base backup: its position and its snapshot."""

    snapshot: Snapshot

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> PgBackup | None:
        """Read a base backup's tags; None for any other snapshot (or malformed tags)."""
        if BASE_TAG not in snap.tags:
            return None
        kv = dict(t.split("=", 1) for t in snap.tags if "=" in t)
        try:
            return cls(
                snapshot=snap,
                stanza=kv["pg-stanza"],
                sysid=int(kv["pg-sysid"]),
                timeline=int(kv["pg-tli"]),
                start_lsn=parse_lsn(kv["pg-start"]),
                stop_lsn=parse_lsn(kv["pg-stop"]),
                stop_time=parse_time(kv["pg-stop-time"]),
                segment_size=int(kv.get("pg-segsize", 16 * 1024 * 1024)),
            )
        except (KeyError, ValueError):
            return None


def pg_backups(snapshots: Iterable[Snapshot], stanza: str | None = None) -> list[PgBackup]:
    """The base backups among *snapshots* (of *stanza* if given), oldest stop first."""
    out = [b for s in snapshots if (b := PgBackup.from_snapshot(s)) is not None]
    if stanza is not None:
        out = [b for b in out if b.stanza == stanza]
    return sorted(out, key=lambda b: (b.stop_time, b.stop_lsn))
