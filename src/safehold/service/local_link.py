"""
The controller link of the agent embedded in ``safehold serve``: the service, in-process.

It speaks the same typed protocol (``core.work``) as the HTTP link, so the
embedded agent runs exactly the code a remote agent runs.
"""

from __future__ import annotations

from safehold.core.work import ClaimRequest, Heartbeat, Outcome, WorkItem
from safehold.service import jobs
from safehold.service.context import ServiceContext

__all__ = ["LocalLink"]


class LocalLink:
    """A ``ControllerLink`` that calls the service's use cases directly."""

    def __init__(self, ctx: ServiceContext, agent_id: str, *, claim_wait: float = 0.0) -> None:
        self._ctx = ctx
        self.agent_id = agent_id
        self._claim_wait = claim_wait

    def __repr__(self) -> str:
        return f"LocalLink(agent={self.agent_id})"

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        """Claim through the service, waiting up to *claim_wait* for work."""
        if request.WaitSeconds is None and self._claim_wait > 0:
            request = request.model_copy(update={"WaitSeconds": self._claim_wait})
        return jobs.claim_waiting(self._ctx, self.agent_id, request)

    def heartbeat(self, job_id: str, beat: Heartbeat) -> None:
        """Heartbeat through the service."""
        jobs.heartbeat(self._ctx, self.agent_id, job_id, beat)

    def complete(self, job_id: str, outcome: Outcome) -> None:
        """Complete through the service."""
        jobs.complete(self._ctx, self.agent_id, job_id, outcome)

    def complete_and_claim(
        self, job_id: str, outcome: Outcome, request: ClaimRequest
    ) -> WorkItem | None:
        """Complete, then claim without waiting, through the service."""
        return jobs.complete_and_claim(self._ctx, self.agent_id, job_id, outcome, request)
