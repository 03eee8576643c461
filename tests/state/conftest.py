"""
Fixtures for the state store's tests.

Tests here may be ``async def``: this conftest runs them with ``asyncio.run``, one
event loop per test, so no asyncio plugin is needed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from safehold.state import StateStore
from tests.state.fakes import FakeTarget


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine test functions in a fresh event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True


@pytest.fixture
def target() -> FakeTarget:
    """An in-memory backup target."""
    return FakeTarget()


OpenStore = Callable[..., Any]


@pytest.fixture
def open_store(tmp_path: Path, target: FakeTarget) -> OpenStore:
    """``async with open_store(**options) as store``: a store in tmp_path/store, fake target."""

    @asynccontextmanager
    async def opener(name: str = "store", **options: Any) -> AsyncIterator[StateStore]:
        options.setdefault("partition", "p1")
        options.setdefault("target", target)
        options.setdefault("durability", "normal")  # the tests do not pull the power cord
        async with StateStore.open(tmp_path / name, **options) as store:
            yield store

    return opener


async def dump_state(
    store: StateStore, dicts: tuple[str, ...] = ("d0", "d1"), queues: tuple[str, ...] = ("q0",)
) -> dict[str, Any]:
    """Everything in the named collections, as plain data, for comparisons."""
    out: dict[str, Any] = {}
    async with store.transaction() as tx:
        for name in dicts:
            out[f"d:{name}"] = [kv async for kv in store.dictionary(name).items(tx)]
        for name in queues:
            out[f"q:{name}"] = [v async for v in store.queue(name).values(tx)]
    return out
