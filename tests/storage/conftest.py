"""
Storage backends under test.

Every backend in ``BACKENDS`` runs the whole conformance suite
(``test_conformance.py``). A backend that needs a server starts it here, on a
free loopback port, for the test session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold.storage import Storage
from safehold.storage.file import FileStorage
from safehold.storage.memory import MemoryStorage

BackendFactory = Callable[[pytest.FixtureRequest, Path], Storage]


def _file(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    del request
    return FileStorage(tmp_path / "store")


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    del request, tmp_path
    return MemoryStorage()


BACKENDS: dict[str, BackendFactory] = {"file": _file, "memory": _memory}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh, created, empty storage of each kind."""
    store = BACKENDS[request.param](request, tmp_path)
    store.create()
    yield store
    store.close()
