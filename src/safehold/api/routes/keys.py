"""
Repository keys of a policy's storage (Azure Stack's "rotate the repository key").

``GET /safehold/policies/{name}/keys`` lists the key generations of the
repository in the policy's storage; ``POST /safehold/policies/{name}/keys/$/Rotate``
adds a generation that new data is written under (``safehold key rotate``):
older snapshots stay readable, nothing is uploaded again. Readers may list
(generation numbers are no secret); only admins rotate. No key material ever
leaves the controller: the answers hold generation numbers only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from safehold.api.deps import AdminDep, CtxDep, ReaderDep
from safehold.service import repo_keys

router = APIRouter(prefix="/safehold/policies", tags=["Keys"])


class KeyGenerations(BaseModel):
    """The repository's key generations; new data is written under ``KeyGeneration``."""

    PolicyName: str
    KeyGeneration: int
    KeyGenerations: list[int]


class ErrorBody(BaseModel):
    """Service Fabric's error shape: ``{"Error": {"Code", "Message"}}``."""

    Error: dict[str, str]


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "the storage holds a repository of another password",
    },
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
    404: {"model": ErrorBody, "description": "no backup policy has this name"},
    409: {
        "model": ErrorBody,
        "description": "the storage holds no repository yet (the first backup creates it), "
        "or another rotation of it is running",
    },
    503: {
        "model": ErrorBody,
        "description": "the storage cannot be reached; nothing was changed",
    },
}


@router.get("/{name}/keys", response_model=KeyGenerations, responses=_ERRORS)
def list_key_generations(ctx: CtxDep, _p: ReaderDep, name: str) -> dict[str, object]:
    """The key generations of the repository in the policy's storage."""
    return repo_keys.key_generations(ctx, name).to_json()


@router.post("/{name}/keys/$/Rotate", response_model=KeyGenerations, responses=_ERRORS)
def rotate_key(ctx: CtxDep, _p: AdminDep, name: str) -> dict[str, object]:
    """Rotate the repository key: a new generation for new data; old data stays readable."""
    return repo_keys.rotate_key(ctx, name).to_json()
