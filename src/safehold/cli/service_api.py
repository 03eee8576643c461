"""
What every service client command shares: the connection options and the API wrapper.

The commands talk to the controller through ``safehold.client.ControllerClient``,
the one HTTP client of the controller: ``--url`` may list several controllers
(comma-separated, tried in turn), GETs are retried across a controller restart,
and error answers arrive as ``ControllerError`` carrying the CLI's exit code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # Typer 0.2x vendors its own click; older Typer uses the click package.
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import get_current_context  # type: ignore[no-redef]

from safehold.client import ControllerClient, ControllerError
from safehold.core.errors import ExitCode, SafeholdError, UsageError
from safehold.core.policy import id_from_name

__all__ = [
    "DEFAULT_URL",
    "EXIT_CODES",
    "Api",
    "CaOpt",
    "JsonOpt",
    "OperationFailed",
    "TokenFileOpt",
    "TokenOpt",
    "UrlOpt",
    "connect",
    "entity_path",
]

DEFAULT_URL = "http://127.0.0.1:19080"
#: SF's api-version, sent with every Service Fabric route.
API_VERSION = {"api-version": "6.4"}
#: Seconds a GET keeps retrying an unreachable controller: short for a one-off
#: command, long while ``--wait`` follows a job (a controller restart is survived).
QUICK_RETRY = 5.0
WAIT_RETRY = 120.0

EXIT_CODES = (
    "Exit codes: 0 ok; 1 failure (the job failed); 2 bad input (HTTP 400); "
    "11 conflict (HTTP 409); 16 not found (HTTP 404)."
)

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="SAFEHOLD_URL",
        help="The controller's URL; several replicas comma-separated (tried in turn).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="SAFEHOLD_TOKEN", help="API token.", show_default=False),
]
TokenFileOpt = Annotated[
    Path | None, typer.Option("--token-file", help="Read the API token from a file.")
]
CaOpt = Annotated[
    Path | None, typer.Option("--ca-cert", help="CA bundle to verify the controller's TLS.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the controller's JSON document.")]


class OperationFailed(SafeholdError):
    """A backup, restore or configuration operation ended without success (exit 1)."""

    exit_code = ExitCode.FAILURE


class Api:
    """The controller's API as the CLI uses it: JSON in, JSON out, SF's api-version added."""

    def __init__(self, client: ControllerClient) -> None:
        self._client = client

    def call(
        self, method: str, path: str, *, sf: bool = True, retry_for: float | None = None, **kw: Any
    ) -> Any:
        """
        Send one request; return its JSON (None for an empty answer).

        Raises ``ControllerError`` (with the exit code of its HTTP status) or
        ``ControllerUnreachable``.
        """
        if sf:
            kw["params"] = {**API_VERSION, **kw.get("params", {})}
        try:
            resp = self._client.request(method, path, retry_for=retry_for, **kw)
        except ControllerError as exc:
            if exc.http_status in (401, 403):
                # The CLI's documented codes: a refused token is a failure (1), as before.
                exc.exit_code = ExitCode.FAILURE
            raise
        return resp.json() if resp.content else None

    def all_pages(
        self, path: str, *, sf: bool = True, params: dict[str, str] | None = None
    ) -> list[Any]:
        """Every item of a paged list (``ContinuationToken``): a long list is never cut short."""
        query = dict(params or {})
        items: list[Any] = []
        while True:
            page = self.call("GET", path, sf=sf, params=query)
            items += page["Items"]
            if not page.get("ContinuationToken"):
                return items
            query["ContinuationToken"] = page["ContinuationToken"]

    def poll(self, path: str, *, sf: bool = True, every: float = 0.5) -> Any:
        """One GET of a ``--wait`` loop (retried for minutes), after a pause of *every* seconds."""
        time.sleep(every)
        return self.call("GET", path, sf=sf, retry_for=WAIT_RETRY)

    def close(self) -> None:
        """Close the connections."""
        self._client.close()


def connect(
    url: str, token: str | None, token_file: Path | None, ca_cert: Path | None = None
) -> Api:
    """Build the API client from the common options."""
    if token is None and token_file is not None:
        token = token_file.read_text().strip()
    if not token:
        raise UsageError("an API token is needed: --token, SAFEHOLD_TOKEN or --token-file")
    verify: bool | str = str(ca_cert) if ca_cert else True
    api = Api(ControllerClient(url, token, verify=verify, timeout=60, retry_for=QUICK_RETRY))
    ctx = get_current_context(silent=True)
    if ctx is not None:  # the connections close when the command ends
        ctx.call_on_close(api.close)
    return api


def entity_path(application: str | None, service: str | None, partition_id: str | None) -> str:
    """Return ``/Applications/X``, ``/Services/X~Y`` or ``/Partitions/P`` for exactly one given."""
    given = [x for x in (application, service, partition_id) if x]
    if len(given) != 1:
        raise UsageError("give exactly one of --application, --service, --partition-id")
    if application:
        return f"/Applications/{id_from_name(application)}"
    if service:
        return f"/Services/{id_from_name(service)}"
    return f"/Partitions/{partition_id}"
