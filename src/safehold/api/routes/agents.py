"""
Routes the agents call: claim work, heartbeat with progress, complete.

Agents only ever connect out to the controller, so no inbound port is needed
on their hosts. The bodies are the typed messages of ``core.work``, which the
agents import too. A claim answers 204 when there is nothing to do; heartbeats
and completions may be sent again safely (a repeat of a recorded outcome is
acknowledged unchanged; a stale attempt gets 409 SAFEHOLD_E_JOB_NOT_RUNNING).
A busy slot reports and claims in one request (``$/CompleteAndClaim``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from safehold.api.deps import AgentDep, CtxDep, JsonBody, ReaderDep
from safehold.core.policy import PolicyError
from safehold.core.work import ClaimRequest, CompleteAndClaim, Heartbeat, Outcome, WorkItem
from safehold.service import jobs
from safehold.service.context import ServiceContext
from safehold.service.work_signal import RECHECK

router = APIRouter(prefix="/safehold/agents", tags=["Agents"])


@router.get("")
def list_agents(ctx: CtxDep, _p: ReaderDep) -> list[dict[str, Any]]:
    """The agents the controller has heard from, whether they are alive, and their jobs."""
    return jobs.list_agents(ctx)


def _check_agent_id(agent_id: str) -> str:
    if not agent_id or len(agent_id) > 128:
        raise PolicyError("an agent id is 1 to 128 characters")
    return agent_id


def _parse(model: type[Any], body: object, what: str) -> Any:
    # Validation errors are the service's own 400, in SF's error shape.
    try:
        return model.model_validate(body if body is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise PolicyError(f"{what}: {where}: {first['msg']}") from None


@router.post(
    "/{agent_id}/$/Claim",
    response_model=None,
    responses={200: {"model": WorkItem}, 204: {"description": "No work (within WaitSeconds)."}},
)
async def claim_work(
    http: Request, ctx: CtxDep, _p: AgentDep, agent_id: str, body: JsonBody
) -> Response:
    """
    Hand the agent its next job (200 with a work item) or nothing (204).

    With ``WaitSeconds`` the claim is long-polled: held open, without a thread,
    until a job may be claimable (``ctx.work`` wakes it) or the time is up.
    """
    request = _parse(ClaimRequest, body, "the claim")
    item = await _claim_waiting(http, ctx, _check_agent_id(agent_id), request)
    if item is None:
        return Response(status_code=204)
    # Serialised by pydantic in one step (the hot path: one claim per job).
    return Response(item.model_dump_json(), media_type="application/json")


async def _claim_waiting(
    http: Request, ctx: ServiceContext, agent_id: str, request: ClaimRequest
) -> WorkItem | None:
    # As jobs.claim_waiting, with await: a waiting claim holds no worker thread.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + jobs.wait_for(request)
    while True:
        ticket = ctx.work.ticket(loop)
        item = None
        try:
            item = await run_in_threadpool(jobs.claim, ctx, agent_id, request)
            left = deadline - loop.time()
            if item is not None or left <= 0 or ctx.work.closed:
                return item
            await ticket.wait(min(left, RECHECK))
            if await http.is_disconnected():  # nobody to hand a job to
                if ticket.woken:
                    ctx.work.notify(1)  # the wake-up goes to a claim that can use it
                return None
        finally:
            ticket.release(item is not None)


@router.post("/{agent_id}/jobs/{job_id}/$/Heartbeat", status_code=204)
def heartbeat(ctx: CtxDep, _p: AgentDep, agent_id: str, job_id: str, body: JsonBody) -> Response:
    """The agent is alive; *body* is a ``Heartbeat`` with its job's attempt and progress."""
    beat = _parse(Heartbeat, body, "the heartbeat")
    jobs.heartbeat(ctx, _check_agent_id(agent_id), job_id, beat)
    return Response(status_code=204)


@router.post("/{agent_id}/jobs/{job_id}/$/Complete", status_code=204)
def complete(ctx: CtxDep, _p: AgentDep, agent_id: str, job_id: str, body: JsonBody) -> Response:
    """The agent finished the job; *body* is its ``Outcome``."""
    outcome = _parse(Outcome, body, "the outcome")
    jobs.complete(ctx, _check_agent_id(agent_id), job_id, outcome)
    return Response(status_code=204)


@router.post(
    "/{agent_id}/jobs/{job_id}/$/CompleteAndClaim",
    response_model=None,
    responses={200: {"model": WorkItem}, 204: {"description": "Recorded; no work now."}},
)
def complete_and_claim(
    ctx: CtxDep, _p: AgentDep, agent_id: str, job_id: str, body: JsonBody
) -> Response:
    """
    Record the job's outcome, then hand the agent its next job (200) or nothing (204).

    *body* is a ``CompleteAndClaim``. The claim does not wait; an agent that gets
    204 long-polls with ``$/Claim``. Errors are those of ``$/Complete``, and then
    nothing is claimed.
    """
    report = _parse(CompleteAndClaim, body, "the report")
    item = jobs.complete_and_claim(
        ctx, _check_agent_id(agent_id), job_id, report.Outcome, report.Claim
    )
    if item is None:
        return Response(status_code=204)
    return Response(item.model_dump_json(), media_type="application/json")
