"""Configuration backup and restore (placeholder until the operations land)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/safehold/config", tags=["Configuration"])
