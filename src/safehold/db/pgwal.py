"""
PostgreSQL WAL naming and positions, as pure functions.

A WAL segment's name is ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the
segment number split into a "log" (high) and "seg" (low) part; with the default
16 MiB segments, ``0x100`` segments make one log. An LSN ``X/Y`` is a 64-bit byte
position in the WAL stream. Other archived files: ``TTTTTTTT.history`` (a
timeline's ancestry), ``<segment>.<offset>.backup`` and ``<segment>.partial``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "Segment",
    "format_lsn",
    "is_segment_name",
    "parse_lsn",
    "segment_of",
    "wal_sysid",
]

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_XLP_LONG_HEADER = 0x0002


def parse_lsn(text: str) -> int:
    """``"0/3000028"`` → ``0x3000028``; ``ValueError`` if it is not an LSN."""
    m = _LSN_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not an LSN (like 0/3000028)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """``0x3000028`` → ``"0/3000028"``, as PostgreSQL writes it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def is_segment_name(name: str) -> bool:
    """Whether *name* is a plain WAL segment name (not history, backup or partial)."""
    return bool(_SEGMENT_RE.match(name))


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment: its timeline and its number in the WAL stream."""

    timeline: int
    number: int
    size: int = DEFAULT_SEGMENT_SIZE

    @property
    def per_log(self) -> int:
        """Segments per "log" (the middle 8 digits of a name)."""
        return 0x100000000 // self.size

    @property
    def name(self) -> str:
        """The segment's file name."""
        log, seg = divmod(self.number, self.per_log)
        return f"{self.timeline:08X}{log:08X}{seg:08X}"

    @property
    def start_lsn(self) -> int:
        """The LSN of the segment's first byte."""
        return self.number * self.size

    def next(self) -> Segment:
        """The following segment on the same timeline."""
        return Segment(self.timeline, self.number + 1, self.size)

    @classmethod
    def parse(cls, name: str, size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
        """Parse a segment name; ``ValueError`` if it is not one."""
        if not is_segment_name(name):
            raise ValueError(f"{name!r} is not a WAL segment name")
        per_log = 0x100000000 // size
        return cls(int(name[:8], 16), int(name[8:16], 16) * per_log + int(name[16:], 16), size)


def segment_of(timeline: int, lsn: int, size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment that holds the byte at *lsn* on *timeline*."""
    return Segment(timeline, lsn // size, size)


def wal_sysid(head: bytes) -> tuple[int, int] | None:
    """
    Read ``(system identifier, segment size)`` from a segment's first page.

    Every segment starts with a long page header (``XLogLongPageHeaderData``:
    magic u16, info u16, tli u32, pageaddr u64, rem_len u32, padding, then
    sysid u64 at byte 24 and seg_size u32 at byte 32). Returns None when the
    header is not a long one (not a segment, or a damaged one).
    """
    if len(head) < 40:
        return None
    _magic, info = struct.unpack_from("<HH", head, 0)
    if not info & _XLP_LONG_HEADER:
        return None
    sysid, seg_size = struct.unpack_from("<QI", head, 24)
    return sysid, seg_size
