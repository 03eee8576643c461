"""The agent side of the seam: what it loads and refuses, how it reports and fails over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Response

from safehold.agent.runner import Agent
from safehold.agent.worker import execute
from safehold.bootstrap import open_policy_storage
from safehold.client import AgentLink, ControllerClient, ControllerError, ControllerUnreachable
from safehold.core.progress import CountingProgress
from safehold.core.work import ClaimRequest, Heartbeat, Outcome, PartitionInfo, WorkItem
from safehold.repo.password import find_password, read_password_file
from safehold.testing import FakeEngine, free_port, serve_in_thread

PID = "12121212-0000-4000-8000-000000000001"


def work(kind: str, store: Path) -> WorkItem:
    """A work item of *kind* for a dir: partition, on a FileShare storage."""
    return WorkItem(
        JobId="job-1",
        Kind=kind,
        Attempt=3,
        Deadline="2100-01-01T00:00:00Z",
        Partition=PartitionInfo(
            PartitionId=PID, ApplicationName="fabric:/A", ServiceName="fabric:/A/S", Source="dir:/x"
        ),
        Storage={"StorageKind": "FileShare", "Path": str(store)},
        Params={},
    )


def test_importing_the_agent_loads_no_server_or_catalog() -> None:
    """An agent host needs neither FastAPI nor SQLAlchemy."""
    code = (
        "import sys, safehold.agent.runner, safehold.agent.worker, safehold.client\n"
        "bad = [m for m in ('fastapi', 'starlette', 'sqlalchemy', 'alembic', 'uvicorn')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_an_unknown_job_kind_is_refused_and_nothing_is_touched(tmp_path: Path) -> None:
    """A newer controller's job kind: the agent says so and never falls back to deleting."""
    engine = FakeEngine()
    seen: list[str] = []

    def opener(spec: Any) -> Any:
        seen.append("opened")
        return open_policy_storage(spec)

    out = execute(
        work("compact", tmp_path / "store"),
        engine=engine,
        open_storage=opener,
        progress=CountingProgress(),
    )
    assert out.State == "Failure"
    assert out.Error is not None
    assert out.Error.Code == "SAFEHOLD_E_UNKNOWN_JOB_KIND"
    assert out.Attempt == 3
    assert seen == []  # not even the storage was opened
    assert engine.repos == {}


class FlakyLink:
    """A controller link that loses the first reports."""

    agent_id = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reports: list[Outcome] = []

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        return None

    def heartbeat(self, job_id: str, beat: Heartbeat) -> None:
        return None

    def complete(self, job_id: str, outcome: Outcome) -> None:
        if self.failures:
            self.failures -= 1
            raise ControllerUnreachable("cannot reach the controller: connection refused")
        self.reports.append(outcome)


def test_an_outcome_is_reported_again_until_a_controller_takes_it() -> None:
    """Two lost reports, then a controller answers: the outcome arrives once."""
    link = FlakyLink(failures=2)
    agent = Agent(link, engine=FakeEngine(), open_storage=open_policy_storage, report_backoff=0.01)
    agent._report("job-1", Outcome(State="Success", Attempt=1))
    assert [o.Attempt for o in link.reports] == [1]


def test_a_refused_outcome_is_not_retried() -> None:
    """A 4xx answer is final: the agent stops sending."""

    class Refusing(FlakyLink):
        def complete(self, job_id: str, outcome: Outcome) -> None:
            self.reports.append(outcome)
            raise ControllerError(409, "SAFEHOLD_E_JOB_NOT_RUNNING", "not yours")

    link = Refusing(failures=0)
    agent = Agent(link, engine=FakeEngine(), open_storage=open_policy_storage, report_backoff=0.01)
    agent._report("job-1", Outcome(State="Success", Attempt=1))
    assert len(link.reports) == 1


def test_the_client_fails_over_to_the_next_controller() -> None:
    """The first URL refuses connections, the second answers 503 once: the request succeeds."""
    app = FastAPI()
    calls: list[int] = []

    @app.post("/safehold/agents/a1/$/Claim", response_model=None)
    def claim() -> Any:
        calls.append(1)
        if len(calls) == 1:
            return Response(status_code=503)
        return Response(status_code=204)

    @app.post("/safehold/agents/a1/jobs/j/$/Heartbeat", status_code=409)
    def beat() -> dict[str, Any]:
        return {"Error": {"Code": "SAFEHOLD_E_JOB_NOT_RUNNING", "Message": "gone"}}

    dead = f"http://127.0.0.1:{free_port()}"
    with serve_in_thread(app, lifespan="off") as live:
        client = ControllerClient([dead, live], "token", retry_for=20)
        link = AgentLink(client, "a1")
        # A claim is sent once per URL (never retried blindly); the next poll tries again.
        with pytest.raises(ControllerUnreachable):
            link.claim(ClaimRequest())
        assert link.claim(ClaimRequest()) is None
        assert client.urls == [dead, live]
        with pytest.raises(ControllerError) as lost:
            link.heartbeat("j", Heartbeat(Attempt=1))
        assert lost.value.http_status == 409
        client.close()


def test_one_way_to_read_the_password(tmp_path: Path) -> None:
    """An explicit file beats the environment, which beats the default file; spaces are kept."""
    explicit, default = tmp_path / "explicit", tmp_path / "default"
    explicit.write_text("  pass phrase with spaces \n")
    default.write_text("from-default\r\n")
    env = {"SAFEHOLD_PASSWORD": "from-env"}
    assert find_password(explicit, default_file=default, environ=env) == (
        "  pass phrase with spaces "
    )
    assert find_password(None, default_file=default, environ=env) == "from-env"
    assert find_password(None, default_file=default, environ={}) == "from-default"
    assert find_password(None, default_file=tmp_path / "none", environ={}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(Exception, match="empty"):
        read_password_file(tmp_path / "empty")


def test_an_agent_derives_a_repository_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs after the first reuse the unlocked keys: no key derivation per job."""
    from safehold.core.policy import FileShareStorage
    from safehold.repo.keys import KdfParams, KeyStore
    from safehold.service.engine import RepoEngine

    engine = RepoEngine("pw", kdf=KdfParams(n=1024))
    derived: list[int] = []
    real = KeyStore.open

    def counting(self: KeyStore, password: str) -> Any:
        derived.append(1)
        return real(self, password)

    monkeypatch.setattr(KeyStore, "open", counting)
    store = open_policy_storage(FileShareStorage(str(tmp_path / "store")))
    try:
        engine.ensure_repository(store)
        for _ in range(3):
            assert engine.snapshots(store) == []
    finally:
        store.close()
    assert len(derived) == 1


def test_an_older_controller_without_complete_and_claim_still_gets_the_outcome() -> None:
    """404 for $/CompleteAndClaim (a controller before it): reported with Complete, once."""

    class OldController(FlakyLink):
        def __init__(self) -> None:
            super().__init__(failures=0)
            self.tried = 0

        def complete_and_claim(
            self, job_id: str, outcome: Outcome, request: ClaimRequest
        ) -> WorkItem | None:
            self.tried += 1
            raise ControllerError(404, "FABRIC_E_NOT_FOUND", "no such route")

    link = OldController()
    agent = Agent(link, engine=FakeEngine(), open_storage=open_policy_storage, report_backoff=0.01)
    assert agent._report("job-1", Outcome(State="Success", Attempt=1), claim_next=True) is None
    assert agent._report("job-2", Outcome(State="Success", Attempt=1), claim_next=True) is None
    assert [o.Attempt for o in link.reports] == [1, 1]  # both outcomes arrived
    assert link.tried == 1  # the route is not tried again
