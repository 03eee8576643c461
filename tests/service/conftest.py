"""Fixtures of the service tests: a context over a real catalog, a fake engine and clock."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.bootstrap import open_policy_storage
from safehold.service.catalog import open_catalog
from safehold.service.context import ServiceContext
from safehold.service.secrets import SecretBox
from safehold.service.uow import SqlUnitOfWork
from safehold.testing import FakeCatalog, FakeClock, FakeEngine, FakeUnitOfWork
from tests.service.catalogs import catalog_url, pg_database, reset_pg

__all__ = ["catalog_url", "pg_database"]

KEY = base64.urlsafe_b64encode(b"k" * 32)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test says so."""
    return FakeClock()


@pytest.fixture
def engine() -> FakeEngine:
    """The in-memory engine."""
    return FakeEngine()


@pytest.fixture(params=["sqlite", "postgresql", "fake"])
def ctx(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, engine: FakeEngine
) -> Iterator[ServiceContext]:
    """A service context over a fresh catalog: SQLite, PostgreSQL, or the in-memory fake."""
    common = {
        "secrets": SecretBox(KEY),
        "open_storage": open_policy_storage,
        "engine": engine,
        "clock": clock,
    }
    if request.param == "fake":
        catalog = FakeCatalog()
        yield ServiceContext(uow=lambda: FakeUnitOfWork(catalog), **common)  # type: ignore[arg-type]
        return
    if request.param == "sqlite":
        url = str(tmp_path / "catalog.sqlite")
    else:
        url = request.getfixturevalue("pg_database")
        reset_pg(url)
    db = open_catalog(url)
    yield ServiceContext(uow=lambda: SqlUnitOfWork(db), **common)  # type: ignore[arg-type]
    db.dispose()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A FileShare storage directory."""
    return tmp_path / "store"
