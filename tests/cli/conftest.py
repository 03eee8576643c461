"""Run the real ``safehold`` CLI as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment with a repository location and password set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env.update(SAFEHOLD_REPO=str(tmp_path / "repo"), SAFEHOLD_PASSWORD="s3cret-pass")
    return env


@pytest.fixture
def run(cli_env: dict[str, str]) -> Run:
    """Call ``safehold ARGS...``; returns the completed process (text mode)."""

    def _run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            check=False,
            env={**cli_env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"safehold {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
            )
        return proc

    return _run
