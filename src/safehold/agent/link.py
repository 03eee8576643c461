"""
How an agent talks to its controller.

``ControllerLink`` is the contract; ``LocalLink`` calls the service in-process
(the agent embedded in ``safehold serve``), ``HttpLink`` calls the controller's
agent routes over HTTP(S) with an agent token (``safehold agent``).
"""

from __future__ import annotations

import ssl
from typing import Any, Protocol

import httpx

from safehold.core.errors import SafeholdError
from safehold.service import jobs
from safehold.service.context import ServiceContext

__all__ = ["ControllerLink", "HttpLink", "LinkError", "LocalLink"]


class LinkError(SafeholdError):
    """The controller could not be reached or refused a report."""

    code = "SAFEHOLD_E_CONTROLLER"


class ControllerLink(Protocol):
    """**Protocol**: the three calls an agent makes."""

    def claim(self) -> dict[str, Any] | None:
        """Return the next work item, or ``None`` when there is nothing to do."""
        ...

    def heartbeat(self, job_id: str, progress: dict[str, Any]) -> None:
        """Say the agent is alive and how far its job got."""
        ...

    def complete(self, job_id: str, outcome: dict[str, Any]) -> None:
        """Report a job's outcome."""
        ...


class LocalLink:
    """A link to the service in the same process."""

    def __init__(self, ctx: ServiceContext, agent_id: str) -> None:
        self._ctx = ctx
        self.agent_id = agent_id

    def claim(self) -> dict[str, Any] | None:
        """Claim through the service."""
        return jobs.claim(self._ctx, self.agent_id)

    def heartbeat(self, job_id: str, progress: dict[str, Any]) -> None:
        """Heartbeat through the service."""
        jobs.heartbeat(self._ctx, self.agent_id, job_id, progress)

    def complete(self, job_id: str, outcome: dict[str, Any]) -> None:
        """Complete through the service."""
        jobs.complete(self._ctx, self.agent_id, job_id, outcome)


class HttpLink:
    """A link to a controller over HTTP(S)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        agent_id: str,
        *,
        verify: bool | str = True,
        timeout: float = 30.0,
    ) -> None:
        self.agent_id = agent_id
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"HttpLink({self._client.base_url!s}, agent={self.agent_id})"

    def _post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            resp = self._client.post(f"/safehold/agents/{self.agent_id}{path}", json=body)
        except httpx.HTTPError as exc:
            raise LinkError(f"cannot reach the controller: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = resp.json()["Error"]["Message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:200]
            raise LinkError(f"the controller answered {resp.status_code}: {message}")
        return resp

    def claim(self) -> dict[str, Any] | None:
        """POST .../$/Claim."""
        resp = self._post("/$/Claim")
        if resp.status_code == 204:
            return None
        item: dict[str, Any] = resp.json()
        return item

    def heartbeat(self, job_id: str, progress: dict[str, Any]) -> None:
        """POST .../jobs/{id}/$/Heartbeat."""
        self._post(f"/jobs/{job_id}/$/Heartbeat", progress)

    def complete(self, job_id: str, outcome: dict[str, Any]) -> None:
        """POST .../jobs/{id}/$/Complete."""
        self._post(f"/jobs/{job_id}/$/Complete", outcome)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
