"""The systemd units in deploy/systemd pass ``systemd-analyze verify`` and are hardened."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def _units() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer"))


def _parse(unit: Path) -> dict[str, dict[str, str]]:
    """Sections of key -> values joined by spaces (units repeat keys such as LoadCredential=)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in unit.read_text().replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current[key] = f"{current[key]} {value}" if key in current else value
    return sections


def test_the_units_are_there() -> None:
    names = {p.name for p in _units()}
    assert {
        "safehold-controller.service",
        "safehold-agent.service",
        "safehold-backup.service",
        "safehold-backup.timer",
    } <= names


@pytest.mark.parametrize("unit", [p.name for p in _units() if p.suffix == ".service"])
def test_services_are_hardened(unit: str) -> None:
    svc = _parse(UNITS / unit)["Service"]
    assert "yes" == svc.get("NoNewPrivileges")
    assert "strict" == svc.get("ProtectSystem")
    assert "yes" == svc.get("PrivateTmp")
    if unit != "safehold-backup.service":  # the engine-only backup reads as root, read-only
        assert "yes" == svc.get("DynamicUser") or svc.get("User") not in (None, "root")
    assert "@system-service" in (svc.get("SystemCallFilter") or "")
    assert "SAFEHOLD_PASSWORD=" not in (UNITS / unit).read_text()  # secrets come as credentials


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """
    Every unit verifies without a warning. ExecStart points at /usr/local/bin,
    where the docs install safehold; here it is pointed at this venv's command.
    """
    exe = Path(sys.executable).parent / "safehold"
    assert exe.exists()
    for unit in _units():
        text = unit.read_text().replace("/usr/local/bin/safehold", str(exe))
        (tmp_path / unit.name).write_text(text)
    proc = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", *(str(tmp_path / u.name) for u in _units())],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [ln for ln in proc.stderr.splitlines() if str(tmp_path) in ln or "safehold" in ln]
    assert 0 == proc.returncode, proc.stderr
    assert [] == ours
