"""
Routes the agents call: claim work, heartbeat with progress, complete.

Agents only ever connect out to the controller, so no inbound port is needed
on their hosts. A claim answers 204 when there is nothing to do.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from safehold.api.deps import AgentDep, CtxDep, JsonBody, ReaderDep
from safehold.core.policy import PolicyError
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


@router.post("/{agent_id}/$/Claim", response_model=None)
def claim_work(ctx: CtxDep, _p: AgentDep, agent_id: str) -> dict[str, Any] | Response:
    """Hand the agent its next job (200 with a work item) or nothing (204)."""
    item = jobs.claim(ctx, _check_agent_id(agent_id))
    return Response(status_code=204) if item is None else item


@router.post("/{agent_id}/jobs/{job_id}/$/Heartbeat", status_code=204)
def heartbeat(ctx: CtxDep, _p: AgentDep, agent_id: str, job_id: str, body: JsonBody) -> Response:
    """The agent is alive; *body* holds its job's progress counters."""
    jobs.heartbeat(ctx, _check_agent_id(agent_id), job_id, body if isinstance(body, dict) else {})
    return Response(status_code=204)


@router.post("/{agent_id}/jobs/{job_id}/$/Complete", status_code=204)
def complete(ctx: CtxDep, _p: AgentDep, agent_id: str, job_id: str, body: JsonBody) -> Response:
    """The agent finished the job, with its outcome."""
    if not isinstance(body, dict) or body.get("State") not in ("Success", "Failure"):
        raise PolicyError("the outcome must be an object with State Success or Failure")
    if body["State"] == "Success" and body.get("Snapshot") is not None:
        snap = body["Snapshot"]
        if not isinstance(snap, dict) or not all(
            isinstance(snap.get(k), str) for k in ("Id", "Time")
        ):
            raise PolicyError("Snapshot needs Id and Time")
    jobs.complete(ctx, _check_agent_id(agent_id), job_id, body)
    return Response(status_code=204)
