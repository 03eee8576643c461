"""A real controller (real engine, file storage, SQLite catalog) for the API tests."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safehold.bootstrap import Controller, Settings, build_controller
from safehold.testing import serve_in_thread

ADMIN = "admin-token-for-tests"
OPERATOR = "operator-token-for-tests"
READER = "reader-token-for-tests"
AGENT = "agent-token-for-tests"
TOKENS = {ADMIN: "admin", OPERATOR: "operator", READER: "reader", AGENT: "agent"}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a controller in a temporary directory, with fixed tokens and secrets."""
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "repository password for tests")
    monkeypatch.setenv("SAFEHOLD_SECRET_KEY", base64.urlsafe_b64encode(b"s" * 32).decode())
    monkeypatch.delenv("SAFEHOLD_TOKENS", raising=False)
    return Settings(
        data_dir=tmp_path / "data",
        tokens=dict(TOKENS),
        tick_seconds=3600,  # the scheduler ticks once at start; tests call tick() themselves
        fast_kdf=True,
    )


@pytest.fixture
def controller(settings: Settings) -> Iterator[Controller]:
    """A controller; its background loops run only inside a live server."""
    c = build_controller(settings)
    yield c
    c.close()


@pytest.fixture
def client(controller: Controller) -> Iterator[httpx.Client]:
    """An HTTP client of a live server without lifespan: no scheduler, no embedded agent."""
    with serve_in_thread(controller.app, lifespan="off") as url, httpx.Client(base_url=url) as c:
        yield c


def auth(token: str = ADMIN) -> dict[str, str]:
    """The Authorization header for *token*."""
    return {"Authorization": f"Bearer {token}"}
