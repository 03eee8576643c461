"""
The one HTTP client of the controller, used by agents, the state store's agent and the CLI.

``ControllerClient`` knows a list of controller URLs (every replica serves the
API): a request that cannot reach one, or gets 502/503/504 from it, goes to the
next, and transient failures are retried with exponential backoff and jitter
(tenacity) for at most ``retry_for`` seconds. Requests that are safe to repeat
say so (``idempotent=True``); others are sent once, so a lost answer never runs
an action twice. An error answer becomes ``ControllerError`` with the
controller's SF error code, message and status.

``AgentLink`` is the agent side of the protocol in ``core.work`` over that client.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import httpx
import tenacity

from safehold.core.errors import ExitCode, SafeholdError
from safehold.core.work import ClaimRequest, CompleteAndClaim, Heartbeat, Outcome, WorkItem

__all__ = ["AgentLink", "ControllerClient", "ControllerError", "ControllerUnreachable", "JobLost"]

log = logging.getLogger("safehold.client")

_TRANSIENT_STATUS = (502, 503, 504)


class ControllerUnreachable(SafeholdError):
    """No controller answered (every URL tried, retries spent)."""

    code = "SAFEHOLD_E_CONTROLLER_UNREACHABLE"
    exit_code = ExitCode.FAILURE


class ControllerError(SafeholdError):
    """The controller answered a request with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.code = code
        self.http_status = status
        self.exit_code = {
            400: ExitCode.USAGE,
            401: ExitCode.USAGE,
            403: ExitCode.USAGE,
            404: ExitCode.NOT_FOUND,
            409: ExitCode.LOCKED,
        }.get(status, ExitCode.FAILURE)


class JobLost(ControllerError):
    """The controller no longer counts this job as running on this agent (409)."""


class _Transient(Exception):
    """A failure worth another try (on another controller URL)."""


class ControllerClient:
    """
    A client of one or several controller replicas.

    Args:
        urls: the controllers' base URLs, tried in order (a comma-separated string works).
        token: the bearer token, or None for a client-certificate login.
        verify: True, False, or a CA bundle path for the controllers' TLS.
        cert: a client certificate (``(cert, key)`` paths) for X.509 login.
        retry_for: seconds an idempotent request keeps retrying transient failures.
        transport: an httpx transport in place of the network (tests).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str | None = None,
        *,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        timeout: float = 30.0,
        retry_for: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u.strip()]
        self._urls = [u.strip().rstrip("/") for u in urls]
        if not self._urls:
            raise SafeholdError("no controller URL given")
        self._preferred = 0
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        context: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        if cert is not None:
            if context is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif context is True:
                context = ssl.create_default_context()
            assert isinstance(context, ssl.SSLContext)
            context.load_cert_chain(*cert)
        self._http = httpx.Client(
            headers=headers, verify=context, timeout=timeout, transport=transport
        )
        self.timeout = timeout
        self.retry_for = retry_for

    def __repr__(self) -> str:
        return f"ControllerClient({', '.join(self._urls)})"

    @property
    def urls(self) -> list[str]:
        """The controller URLs, in the order they are tried."""
        return list(self._urls)

    def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Try each URL once, starting with the one that answered last."""
        with self._lock:
            start = self._preferred
        last: Exception | None = None
        for i in range(len(self._urls)):
            k = (start + i) % len(self._urls)
            try:
                resp = self._http.request(method, self._urls[k] + path, **kwargs)
            except httpx.TransportError as exc:
                last = exc
                continue
            if resp.status_code in _TRANSIENT_STATUS:
                last = _Transient(f"{self._urls[k]} answered {resp.status_code}")
                continue
            with self._lock:
                self._preferred = k
            return resp
        raise _Transient(str(last))

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        retry_for: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """
        Send one request and return its (non-error) response.

        *idempotent* defaults to True for GET; idempotent requests are retried for
        *retry_for* seconds (the client's default if None). Raises
        ``ControllerError`` for an error answer and ``ControllerUnreachable``
        when no controller answered.
        """
        if idempotent is None:
            idempotent = method.upper() == "GET"
        try:
            if idempotent:
                retrying = tenacity.Retrying(
                    retry=tenacity.retry_if_exception_type(_Transient),
                    wait=tenacity.wait_random_exponential(multiplier=0.2, max=10),
                    stop=tenacity.stop_after_delay(
                        self.retry_for if retry_for is None else retry_for
                    ),
                    before_sleep=lambda rs: log.info(
                        "controller unreachable (%s); retrying",
                        rs.outcome and rs.outcome.exception(),
                    ),
                    reraise=True,
                )
                resp = retrying(self._send_once, method, path, **kwargs)
            else:
                resp = self._send_once(method, path, **kwargs)
        except _Transient as exc:
            raise ControllerUnreachable(f"cannot reach the controller: {exc}") from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _error(resp: httpx.Response) -> ControllerError:
    try:
        err = resp.json()["Error"]
        code, message = str(err["Code"]), str(err["Message"])
    except (ValueError, KeyError, TypeError):
        code, message = "E_FAIL", resp.text[:200]
    if resp.status_code == 409 and code == "SAFEHOLD_E_JOB_NOT_RUNNING":
        return JobLost(resp.status_code, code, message)
    return ControllerError(resp.status_code, code, message)


class AgentLink:
    """
    ``ControllerLink`` over HTTP(S): what ``safehold agent`` and ``StoreAgent`` use.

    Claims are sent once (a lost answer leaves the job to the sweeper, never to
    two agents); heartbeats and outcomes are idempotent and retried, outcomes for
    *report_for* seconds, so a controller failover loses no result.
    """

    def __init__(
        self,
        client: ControllerClient,
        agent_id: str,
        *,
        report_for: float = 600.0,
        claim_wait: float = 0.0,
    ):
        self.agent_id = agent_id
        self._client = client
        self._report_for = report_for
        self._claim_wait = claim_wait

    def __repr__(self) -> str:
        return f"AgentLink({self._client!r}, agent={self.agent_id})"

    def _path(self, tail: str) -> str:
        return f"/safehold/agents/{self.agent_id}{tail}"

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        """
        POST …/$/Claim: the next work item, or None.

        Long-polled when the link has a *claim_wait* (and the request sets no
        ``WaitSeconds`` of its own): the controller answers when work arrives.
        """
        if request.WaitSeconds is None and self._claim_wait > 0:
            request = request.model_copy(update={"WaitSeconds": self._claim_wait})
        wait = request.WaitSeconds or 0.0
        resp = self._client.request(
            "POST",
            self._path("/$/Claim"),
            json=request.model_dump(exclude_none=True),
            idempotent=False,
            # The controller answers within the wait; the usual timeout starts after it.
            timeout=self._client.timeout + wait,
        )
        return None if resp.status_code == 204 else WorkItem.model_validate(resp.json())

    def heartbeat(self, job_id: str, beat: Heartbeat) -> None:
        """POST …/jobs/{id}/$/Heartbeat; raises ``JobLost`` if the job is no longer ours."""
        self._client.request(
            "POST",
            self._path(f"/jobs/{job_id}/$/Heartbeat"),
            json=beat.model_dump(exclude_none=True),
            idempotent=True,
        )

    def complete(self, job_id: str, outcome: Outcome) -> None:
        """POST …/jobs/{id}/$/Complete, retried until a controller takes it."""
        self._client.request(
            "POST",
            self._path(f"/jobs/{job_id}/$/Complete"),
            json=outcome.model_dump(exclude_none=True),
            idempotent=True,
            retry_for=self._report_for,
        )

    def complete_and_claim(
        self, job_id: str, outcome: Outcome, request: ClaimRequest
    ) -> WorkItem | None:
        """POST …/jobs/{id}/$/CompleteAndClaim, sent once (see ``ControllerLink``)."""
        body = CompleteAndClaim(
            Outcome=outcome, Claim=request.model_copy(update={"WaitSeconds": None})
        )
        resp = self._client.request(
            "POST",
            self._path(f"/jobs/{job_id}/$/CompleteAndClaim"),
            json=body.model_dump(exclude_none=True),
            idempotent=False,
        )
        return None if resp.status_code == 204 else WorkItem.model_validate(resp.json())

    def close(self) -> None:
        """Close the underlying client."""
        self._client.close()
