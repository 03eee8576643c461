"""
Routes the agents call: claim work, heartbeat with progress, complete.

Agents only ever connect out to the controller, so no inbound port is needed
on their hosts. The bodies are the typed messages of ``core.work``, which the
agents import too. A claim answers 204 when there is nothing to do; heartbeats
and completions may be sent again safely (a repeat of a recorded outcome is
acknowledged unchanged; a stale attempt gets 409 SAFEHOLD_E_JOB_NOT_RUNNING).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import ValidationError

from safehold.api.deps import AgentDep, CtxDep, JsonBody, ReaderDep
from safehold.core.policy import PolicyError
from safehold.core.work import ClaimRequest, Heartbeat, Outcome, WorkItem
from safehold.service import jobs

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


@router.post("/{agent_id}/$/Claim", response_model=None)
def claim_work(ctx: CtxDep, _p: AgentDep, agent_id: str, body: JsonBody) -> WorkItem | Response:
    """Hand the agent its next job (200 with a work item) or nothing (204)."""
    request = _parse(ClaimRequest, body, "the claim")
    item = jobs.claim(ctx, _check_agent_id(agent_id), request)
    return Response(status_code=204) if item is None else item


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
