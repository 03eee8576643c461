"""
Hooks around a backup: a partition's ``before`` and ``after`` shell commands.

Contracts (as borgmatic's ``before_backup``/``after_backup``, for flushing or
freezing an application):

- ``before`` runs first; if it exits non-zero or outlives its timeout, the job
  fails with ``SAFEHOLD_E_HOOK_FAILED``, the last ``OUTPUT_LIMIT`` bytes of its
  output, and no backup is taken.
- ``after`` runs once ``before`` has been started, whether the backup succeeded
  or failed (so what ``before`` froze is always thawed). Its failure is logged
  and reported in the outcome's ``Result["HookWarnings"]``; it never undoes a
  stored backup.
- Each hook runs through ``/bin/sh`` in its own process group, with stdin from
  /dev/null and stdout and stderr captured together; at its timeout the whole
  group is killed. Hooks see ``SAFEHOLD_HOOK`` (``before``/``after``),
  ``SAFEHOLD_JOB_ID``, ``SAFEHOLD_PARTITION_ID``, ``SAFEHOLD_SOURCE`` and, for
  ``after``, ``SAFEHOLD_BACKUP_STATE`` (``Success``/``Failure``); the agent's own
  secrets (``SAFEHOLD_PASSWORD``, tokens, the secret key) are removed from their
  environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from safehold.core.errors import SafeholdError
from safehold.core.work import WorkItem

__all__ = ["HookFailed", "HookReport", "HookResult", "around_backup", "run_hook"]

log = logging.getLogger("safehold.agent.hooks")

#: Bytes of a hook's output kept for the job's error or warning.
OUTPUT_LIMIT = 2000
DEFAULT_TIMEOUT = 300.0
#: Environment variables a hook never inherits from the agent.
HIDDEN_ENV = ("SAFEHOLD_PASSWORD", "SAFEHOLD_TOKEN", "SAFEHOLD_TOKENS", "SAFEHOLD_SECRET_KEY")


class HookFailed(SafeholdError):
    """A ``before`` hook failed or timed out: the backup was not taken."""

    code = "SAFEHOLD_E_HOOK_FAILED"


@dataclass(frozen=True)
class HookResult:
    """How one hook ended: its exit status (None if killed at the timeout) and output tail."""

    name: str
    status: int | None
    output: str
    timeout: float

    @property
    def ok(self) -> bool:
        """Whether it exited with status 0 in time."""
        return self.status == 0

    def describe(self) -> str:
        """``the before hook exited with status 3: <output>`` (or ``timed out after 5s``)."""
        what = (
            f"timed out after {self.timeout:g}s"
            if self.status is None
            else f"exited with status {self.status}"
        )
        tail = f": {self.output}" if self.output else " (no output)"
        return f"the {self.name} hook {what}{tail}"


@dataclass
class HookReport:
    """What the hooks of one backup had to say (an ``after`` hook's failure)."""

    warnings: list[str] = field(default_factory=list)

    def result(self) -> dict[str, Any] | None:
        """The outcome's ``Result``: ``{"HookWarnings": […]}``, or None when all went well."""
        return {"HookWarnings": list(self.warnings)} if self.warnings else None


def run_hook(name: str, command: str, timeout: float, env: dict[str, str]) -> HookResult:
    """Run one hook command; never raises for the command's own failure."""
    full_env = {k: v for k, v in os.environ.items() if k not in HIDDEN_ENV} | env
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(  # noqa: S602 - a hook is a shell command by definition
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,  # its own group: a timeout kills its children too
        )
        status: int | None
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            status = None
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_LIMIT))
        tail = out.read().decode(errors="replace").strip()
    if size > OUTPUT_LIMIT:
        tail = "…" + tail
    return HookResult(name, status, tail, timeout)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended just now
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def around_backup(item: WorkItem) -> Iterator[HookReport]:
    """
    Run the partition's hooks around the block (the backup); yield the report.

    Raises ``HookFailed`` (before the block runs) when ``before`` fails.
    """
    report = HookReport()
    hooks = item.Partition.Hooks or {}
    before, after = hooks.get("Before"), hooks.get("After")
    if not before and not after:
        yield report
        return
    timeout = float(hooks.get("TimeoutSeconds") or DEFAULT_TIMEOUT)
    env = {
        "SAFEHOLD_JOB_ID": item.JobId,
        "SAFEHOLD_PARTITION_ID": item.Partition.PartitionId,
        "SAFEHOLD_SOURCE": item.Partition.Source,
    }
    state = "Failure"
    try:
        if before:
            result = run_hook("before", before, timeout, {**env, "SAFEHOLD_HOOK": "before"})
            if not result.ok:
                raise HookFailed(result.describe())
            log.info("before hook done")
        yield report
        state = "Success"
    finally:
        if after:
            result = run_hook(
                "after",
                after,
                timeout,
                {**env, "SAFEHOLD_HOOK": "after", "SAFEHOLD_BACKUP_STATE": state},
            )
            if result.ok:
                log.info("after hook done")
            else:
                log.warning("%s", result.describe())
                report.warnings.append(result.describe())
