"""Small helpers shared by the database tests."""

from __future__ import annotations

import time
from typing import Any

from safehold.db import LocalServer, WalArchive, stanza_for
from safehold.repo import Repository


def sql(server: LocalServer, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement; return its rows (empty for statements without any)."""
    with server.connect() as conn:
        cur = conn.execute(query, args or None)
        return list(cur.fetchall()) if cur.description else []


def sysid(server: LocalServer) -> int:
    return int(sql(server, "SELECT system_identifier FROM pg_control_system()")[0][0])


def switch(server: LocalServer) -> str:
    """Close the current WAL segment (writing a record first, so it is never a no-op)."""
    sql(server, "SELECT pg_logical_emit_message(false, 'safehold-test', 'x')")
    return str(sql(server, "SELECT pg_walfile_name(pg_switch_wal())")[0][0])


def wait_archived(server: LocalServer, repo: Repository, name: str, timeout: float = 60.0) -> None:
    """Wait until the WAL file *name* of *server* is in the archive."""
    archive = WalArchive(repo, stanza_for(sysid(server)))
    deadline = time.monotonic() + timeout
    while name not in archive.list():
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not reach the archive in {timeout} s")
        time.sleep(0.05)


def switch_and_wait(server: LocalServer, repo: Repository, timeout: float = 60.0) -> str:
    """Close the current WAL segment and wait until it is in the archive; return its name."""
    name = switch(server)
    wait_archived(server, repo, name, timeout)
    return name
