"""
The agent loop: claim a job, run it with heartbeats, report the outcome, repeat.

An agent runs *slots* worker threads, each doing one job at a time. While a job
runs, a heartbeat with its progress counters goes to the controller every
*heartbeat_interval* seconds; if the agent dies, the heartbeats stop and the
controller fails the job with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from safehold.agent.link import ControllerLink
from safehold.core.errors import SafeholdError
from safehold.core.progress import CountingProgress
from safehold.service.engine import BackupEngine, StorageOpener
from safehold.service.worker import execute

__all__ = ["Agent"]

log = logging.getLogger("safehold.agent")


class Agent:
    """Pulls and runs work until stopped."""

    def __init__(
        self,
        link: ControllerLink,
        *,
        engine: BackupEngine,
        open_storage: StorageOpener,
        slots: int = 1,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._link = link
        self._engine = engine
        self._open_storage = open_storage
        self._slots = slots
        self._poll = poll_interval
        self._beat = heartbeat_interval
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the worker threads."""
        for i in range(self._slots):
            t = threading.Thread(target=self._loop, name=f"safehold-agent-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the workers to stop after their current job, and wait for them."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def run_forever(self) -> None:
        """Run until ``stop`` is called (from a signal handler, say)."""
        self.start()
        self._stop.wait()
        self.stop()

    def run_once(self) -> bool:
        """Claim and run at most one job in this thread; return whether there was one."""
        item = self._link.claim()
        if item is None:
            return False
        self._run(item)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.run_once():
                    self._stop.wait(self._poll)
            except SafeholdError as exc:
                log.warning("agent: %s", exc.message)
                self._stop.wait(self._poll)

    def _run(self, item: dict[str, Any]) -> None:
        job_id = item["JobId"]
        progress = CountingProgress()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._beat):
                try:
                    counters = asdict(progress.snapshot())
                    counters.pop("warnings", None)
                    self._link.heartbeat(job_id, counters)
                except SafeholdError as exc:
                    log.warning("heartbeat for job %s failed: %s", job_id, exc.message)

        beater = threading.Thread(target=beat, name=f"heartbeat-{job_id[:8]}", daemon=True)
        beater.start()
        try:
            outcome = execute(
                item,
                engine=self._engine,
                open_storage=self._open_storage,
                progress=progress,
                clock=self._clock,
            )
        finally:
            done.set()
            beater.join()
        log.info("job %s (%s) ended: %s", job_id, item["Kind"], outcome["State"])
        self._link.complete(job_id, outcome)
