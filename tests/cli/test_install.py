"""
Installing safehold as a user would: a wheel in a fresh venv, a new shell,
the README's quick start, ``--version`` and shell completion.

The fresh venv gets the wheel with ``--no-deps``; the dependencies come from
the development venv's site-packages through a path file, so the test needs
no package index and stays fast. Only the ``safehold`` package itself comes
from the wheel, and the test checks that it does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import safehold

ROOT = Path(__file__).resolve().parents[2]


def _quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert m, "README.md has no quick start block between <!-- quickstart --> markers"
    return m.group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("install")
    # Build from a copy, so that the build never writes into the working tree.
    src = tmp / "src"
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("safehold-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies: the development venv's packages, after the wheel's own.
    (Path(site) / "zz-dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _shell_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """A new login-like shell: PATH with the install, nothing of the test's environment."""
    home.mkdir(exist_ok=True)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def test_wheel_installs_the_package_and_its_command(installed: Path, tmp_path: Path) -> None:
    """The command is the wheel's, not the working tree's, and says its version."""
    env = _shell_env(installed, tmp_path / "home")
    where = subprocess.run(
        ["bash", "-c", "python -c 'import safehold; print(safehold.__file__)'"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed.parent) in where
    assert str(ROOT / "src") not in where
    proc = subprocess.run(
        ["bash", "-c", "safehold --version"], env=env, capture_output=True, text=True, check=True
    )
    assert f"safehold {safehold.__version__}" == proc.stdout.strip()


def test_readme_quick_start_runs_in_a_new_shell(installed: Path, tmp_path: Path) -> None:
    """The README's quick start, as written, works after the install step."""
    demo = tmp_path / "demo"
    script = _quickstart().replace("/tmp/safehold-demo", str(demo))
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=False,
        env=_shell_env(installed, tmp_path / "home"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == proc.returncode, proc.stderr
    assert proc.stdout.rstrip().endswith("hello")
    assert f"{demo}/data/hello.txt" in proc.stdout  # ls shows the path as backed up
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(installed: Path, tmp_path: Path, shell: str) -> None:
    """Each shell gets its completion script, and completing a command works."""
    env = _shell_env(installed, tmp_path / "home")
    script = subprocess.run(
        [str(installed / "safehold")],
        env={**env, "_SAFEHOLD_COMPLETE": f"source_{shell}"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {"bash": "complete -o", "zsh": "#compdef safehold", "fish": "complete --command"}[
        shell
    ] in script
    extra = {"_TYPER_COMPLETE_ARGS": "safehold dif"}
    if shell == "fish":
        extra["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    if shell == "bash":
        extra = {"COMP_WORDS": "safehold dif", "COMP_CWORD": "1"}
    out = subprocess.run(
        [str(installed / "safehold")],
        env={**env, "_SAFEHOLD_COMPLETE": f"complete_{shell}", **extra},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "diff" in out


def test_bash_completion_completes_options(installed: Path, tmp_path: Path) -> None:
    """Sourced into a real bash, the script completes a backup option."""
    script = (
        'eval "$(_SAFEHOLD_COMPLETE=source_bash safehold)"\n'
        "COMP_WORDS=(safehold backup --exclude-if); COMP_CWORD=2\n"
        "_safehold_completion safehold\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        env=_shell_env(installed, tmp_path / "home"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert ["--exclude-if-present"] == proc.stdout.split()
