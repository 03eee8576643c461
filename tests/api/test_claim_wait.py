"""
The claim route long-polls: held open without a thread until work arrives; a
busy agent reports and claims in one request.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from safehold.bootstrap import Controller
from safehold.core.policy import EntityRef
from safehold.service import jobs, policies, protection
from safehold.service.context import ServiceContext
from safehold.service.work_signal import RECHECK
from tests.api.conftest import AGENT, auth
from tests.service.helpers import P1, add_partition, policy_doc

WAIT = 3.0
assert WAIT < RECHECK  # a job handed over within the wait came from a wake-up


P2 = "44444444-4444-4444-4444-444444444444"


def _protect(ctx: ServiceContext, tmp_path: Path, *pids: str) -> None:
    """Register *pids* (services A, B, …) under fabric:/Shop and protect the application."""
    for k, pid in enumerate(pids):
        add_partition(ctx, pid, tmp_path / chr(ord("a") + k), svc=chr(ord("A") + k))
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store"))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")


def _until_waiting(controller: Controller, n: int) -> None:
    for _ in range(1000):
        if controller.ctx.work.waiting >= n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{n} claims never started waiting")


def test_waiting_claims_get_the_jobs_accepted_while_they_wait(
    controller: Controller, client: httpx.Client, tmp_path: Path
) -> None:
    """Three agents' claims wait over HTTP; two backups are requested; two claims get them."""
    ctx = controller.ctx
    _protect(ctx, tmp_path, P1, P2)

    answers: dict[str, httpx.Response] = {}

    def claim(agent: str) -> None:
        answers[agent] = client.post(
            f"/safehold/agents/{agent}/$/Claim",
            headers=auth(AGENT),
            json={"WaitSeconds": WAIT},
            timeout=30,
        )

    threads = [threading.Thread(target=claim, args=(f"agent-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    _until_waiting(controller, 3)
    wanted = {jobs.request_backup(ctx, P1).id, jobs.request_backup(ctx, P2).id}
    for t in threads:
        t.join(30)
    got = {r.json()["JobId"] for r in answers.values() if r.status_code == 200}
    assert got == wanted
    assert sorted(r.status_code for r in answers.values()) == [200, 200, 204]


def test_a_claim_without_a_wait_answers_at_once(client: httpx.Client) -> None:
    r = client.post("/safehold/agents/a/$/Claim", headers=auth(AGENT), json={}, timeout=30)
    assert r.status_code == 204


def test_a_negative_wait_is_refused(client: httpx.Client) -> None:
    r = client.post(
        "/safehold/agents/a/$/Claim", headers=auth(AGENT), json={"WaitSeconds": -1}, timeout=30
    )
    assert r.status_code == 400
    assert "WaitSeconds" in r.json()["Error"]["Message"]


def _success(item: dict[str, object], snapshot: str) -> dict[str, object]:
    return {
        "State": "Success",
        "Attempt": item["Attempt"],
        "Snapshot": {"Id": snapshot, "Time": "2026-12-02T00:00:00Z", "Size": 5},
    }


def test_a_report_with_a_claim_records_the_outcome_and_hands_the_next_job(
    controller: Controller, client: httpx.Client, tmp_path: Path
) -> None:
    """Two queued backups: one claim, then each report hands on the next; both recorded."""
    ctx = controller.ctx
    _protect(ctx, tmp_path, P1, P2)

    wanted = {jobs.request_backup(ctx, P1).id, jobs.request_backup(ctx, P2).id}
    first = client.post("/safehold/agents/a1/$/Claim", headers=auth(AGENT), json={}).json()
    r = client.post(
        f"/safehold/agents/a1/jobs/{first['JobId']}/$/CompleteAndClaim",
        headers=auth(AGENT),
        json={"Outcome": _success(first, "a" * 64), "Claim": {"WaitSeconds": 20}},
    )
    assert r.status_code == 200
    second = r.json()
    assert {first["JobId"], second["JobId"]} == wanted
    # The last report: recorded, and nothing more to do (no wait, even if asked).
    r = client.post(
        f"/safehold/agents/a1/jobs/{second['JobId']}/$/CompleteAndClaim",
        headers=auth(AGENT),
        json={"Outcome": _success(second, "b" * 64), "Claim": {"WaitSeconds": 20}},
    )
    assert r.status_code == 204
    with ctx.uow() as uow:
        assert {uow.jobs.get(j).state for j in wanted} == {"Success"}  # type: ignore[union-attr]
        recorded = {b.snapshot_id for b in uow.backups.list()}
    assert recorded == {"a" * 64, "b" * 64}


def test_a_stale_report_with_a_claim_is_refused_and_claims_nothing(
    controller: Controller, client: httpx.Client, tmp_path: Path
) -> None:
    """A report on a job that is not the agent's: 409, and the queued job stays queued."""
    ctx = controller.ctx
    _protect(ctx, tmp_path, P1)
    queued = jobs.request_backup(ctx, P1)
    r = client.post(
        f"/safehold/agents/a1/jobs/{queued.id}/$/CompleteAndClaim",
        headers=auth(AGENT),
        json={"Outcome": {"State": "Success", "Attempt": 1}},
    )
    assert r.status_code == 409
    assert r.json()["Error"]["Code"] == "SAFEHOLD_E_JOB_NOT_RUNNING"
    with ctx.uow() as uow:
        job = uow.jobs.get(queued.id)
    assert job is not None
    assert job.state == "Accepted"
