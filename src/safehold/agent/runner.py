"""
The agent loop: claim a job, run it with heartbeats, report the outcome, repeat.

An agent runs *slots* worker threads, each doing one job at a time. Each run of
an agent has its own *incarnation* id, sent with every claim: when an agent
restarts, the controller fails at once the jobs its earlier run held. While a
job runs, a heartbeat with its progress counters goes to the controller every
*heartbeat_interval* seconds; if the agent dies, the heartbeats stop and the
controller fails the job with the reason. The outcome is reported with retries
(exponential backoff, tenacity) until a controller takes it or *report_for*
seconds pass, so a controller failover loses no result.

Importing this module loads neither FastAPI nor SQLAlchemy.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

import tenacity

from safehold.agent.worker import KINDS, execute
from safehold.core import logctx
from safehold.core.errors import SafeholdError
from safehold.core.progress import CountingProgress
from safehold.core.work import ClaimRequest, ControllerLink, Heartbeat, Outcome, WorkItem
from safehold.service.engine import BackupEngine, StorageOpener

__all__ = ["Agent"]

log = logging.getLogger("safehold.agent")


def _worth_retrying(exc: BaseException) -> bool:
    # 4xx answers are final (the job is not ours any more, or the report is
    # malformed); no answer, 5xx and a busy catalog are worth another try.
    status = getattr(exc, "http_status", 500)
    return isinstance(exc, SafeholdError) and (status >= 500 or status == 0)


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
        report_for: float = 600.0,
        report_backoff: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._link = link
        self._engine = engine
        self._open_storage = open_storage
        self._slots = slots
        self._poll = poll_interval
        self._beat = heartbeat_interval
        self._report_for = report_for
        self._report_backoff = report_backoff
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._complete_and_claim = True  # False once a controller lacks the route
        self.incarnation = uuid.uuid4().hex

    @property
    def agent_id(self) -> str:
        """The agent's id, as the controller knows it."""
        return self._link.agent_id

    def start(self) -> None:
        """Start the worker threads."""
        self._stop.clear()
        for i in range(self._slots):
            t = threading.Thread(target=self._loop, name=f"safehold-agent-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the workers to stop after their current job, and wait for them."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def run_forever(self) -> None:
        """Run until ``stop`` is called (from a signal handler, say)."""
        self.start()
        self._stop.wait()
        self.stop()

    def run_once(self) -> bool:
        """Claim and run at most one job in this thread; return whether there was one."""
        item = self._link.claim(self._claim_request())
        if item is None:
            return False
        self._report(item.JobId, self._run_logged(item))
        return True

    def run_while_busy(self) -> bool:
        """
        Claim and run jobs in this thread while each report hands on another.

        Each outcome is reported together with the claim of the next job (one
        request a job while there is work), unless the agent is stopping.
        Returns whether there was a job at all.
        """
        item = self._link.claim(self._claim_request())
        if item is None:
            return False
        while item is not None:
            outcome = self._run_logged(item)
            item = self._report(item.JobId, outcome, claim_next=not self._stop.is_set())
        return True

    def _claim_request(self) -> ClaimRequest:
        return ClaimRequest(Incarnation=self.incarnation, Kinds=list(KINDS))

    def _run_logged(self, item: WorkItem) -> Outcome:
        # Every log line of the job carries its ids; its storage secrets are redacted.
        part = item.Partition.PartitionId
        with logctx.job_context(item.JobId, part, self.agent_id, item.Kind, item.Storage):
            return self._run(item)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.run_while_busy():
                    self._stop.wait(self._poll)
            except SafeholdError as exc:
                log.warning("agent: %s", exc.message)
                self._stop.wait(self._poll)
            except Exception:
                # A slot never dies of one bad round: log it, and pull again.
                log.exception("agent round failed")
                self._stop.wait(self._poll)

    def _run(self, item: WorkItem) -> Outcome:
        job_id = item.JobId
        progress = CountingProgress()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._beat):
                counters = asdict(progress.snapshot())
                counters.pop("warnings", None)
                try:
                    self._link.heartbeat(job_id, Heartbeat(Attempt=item.Attempt, Progress=counters))
                except SafeholdError as exc:
                    log.warning("heartbeat for job %s failed: %s", job_id, exc.message)

        beater = threading.Thread(
            target=contextvars.copy_context().run,  # the job's log ids, in this thread too
            args=(beat,),
            name=f"heartbeat-{job_id[:8]}",
            daemon=True,
        )
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
        log.info("job %s (%s) ended: %s", job_id, item.Kind, outcome.State)
        return outcome

    def _report(
        self, job_id: str, outcome: Outcome, *, claim_next: bool = False
    ) -> WorkItem | None:
        """
        Send the outcome until a controller takes it (or refuses it for good).

        With *claim_next*, the first try also claims the next job, which is
        returned; that request is sent once, and the retries only report.
        """
        if claim_next and self._complete_and_claim:
            try:
                return self._link.complete_and_claim(job_id, outcome, self._claim_request())
            except SafeholdError as exc:
                if getattr(exc, "http_status", 0) in (404, 405):
                    # An older controller without the route: report as it knows how,
                    # and claim with $/Claim from now on.
                    log.info("the controller has no CompleteAndClaim; reporting with Complete")
                    self._complete_and_claim = False
                elif not _worth_retrying(exc):
                    log.error("the outcome of job %s was refused: %s", job_id, exc.message)
                    return None
                else:
                    log.warning("reporting job %s failed (%s); retrying", job_id, exc.message)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_worth_retrying),
            wait=tenacity.wait_random_exponential(multiplier=self._report_backoff, max=15),
            stop=tenacity.stop_after_delay(self._report_for),
            before_sleep=lambda rs: log.warning(
                "reporting job %s failed (%s); retrying",
                job_id,
                rs.outcome and rs.outcome.exception(),
            ),
            reraise=True,
        )
        try:
            retrying(self._link.complete, job_id, outcome)
        except SafeholdError as exc:
            log.error("the outcome of job %s could not be reported: %s", job_id, exc.message)
        return None
