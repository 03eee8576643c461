"""
Conformance with ``sfctl`` 11.2, Microsoft's Service Fabric CLI, run as a real process.

sfctl is installed in a venv of its own (its pins clash with ours), made once per
machine in the temp directory and reused; the test is skipped, with the reason,
if it cannot be installed. It connects the way operators connect to a secure SF
cluster: ``sfctl cluster select --pem CLIENT.pem --ca CA.pem`` over TLS, with
certificates made by the test. sfctl 11.2 has no backup commands (backups go
through the SDK, see test_sf_client.py); it reaches safehold through
``cluster select`` (``GET /``), its version check (``GET /$/GetClusterVersion``)
and the Faults commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN, auth
from tests.api.sf_tls import Pki, client_context, tls_controller

SFCTL_VERSION = "11.2.1"
STATE_PID = "aaaaaaaa-0000-4000-8000-0000000000b1"
DIR_PID = "aaaaaaaa-0000-4000-8000-0000000000b2"


@pytest.fixture(scope="session")
def sfctl() -> Path:
    """The sfctl executable of a cached venv (made on first use); skip if it cannot be."""
    home = Path(tempfile.gettempdir()) / f"safehold-sfctl-{SFCTL_VERSION}"
    exe = home / "bin" / "sfctl"
    stamp = home / ".installed"
    if stamp.exists() and exe.exists():
        return exe
    # A venv's scripts name its own path, so it is made where it will live.
    shutil.rmtree(home, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, capture_output=True)
        subprocess.run(
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q", f"sfctl=={SFCTL_VERSION}"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(home, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"sfctl {SFCTL_VERSION} could not be installed: {exc} {detail[-300:]!r}")
    stamp.write_text(SFCTL_VERSION)
    return exe


class Sfctl:
    """Runs sfctl with its own home (its config lives in ~/.sfctl) and no telemetry."""

    def __init__(self, exe: Path, home: Path, ca: Path) -> None:
        self.exe = exe
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "SFCTL_SERVICEFABRIC_USE_TELEMETRY": "false",
            # sfctl puts --ca on the requests session, but msrest passes verify=True with
            # each request, which wins; requests then reads this variable instead.
            "REQUESTS_CA_BUNDLE": str(ca),
        }
        (home / ".sfctl").mkdir(parents=True, exist_ok=True)
        (home / ".sfctl" / "config").write_text("[servicefabric]\nuse_telemetry = false\n")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.exe), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> Any:
        done = self.run(*args)
        assert done.returncode == 0, f"sfctl {' '.join(args)}: {done.stderr[-2000:]}"
        return json.loads(done.stdout) if done.stdout.strip() else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    """The controller over TLS with a state: partition and a dir: partition registered."""
    with tls_controller(tmp_path_factory.mktemp("sfctl")) as (url, pki, _ctx):
        with httpx.Client(base_url=url, verify=client_context(pki, None)) as c:
            for pid, service, source in (
                (STATE_PID, "fabric:/Shop/Cart", "state:cart"),
                (DIR_PID, "fabric:/Shop/Files", "dir:/srv/files"),
            ):
                resp = c.post(
                    "/safehold/partitions",
                    json={
                        "ApplicationName": "fabric:/Shop",
                        "ServiceName": service,
                        "PartitionId": pid,
                        "Source": source,
                    },
                    headers=auth(ADMIN),
                )
                assert resp.status_code == 201, resp.text
        yield url, pki


def _state(doc: dict[str, Any]) -> str:
    return str(next(v for k, v in doc.items() if k.lower() == "state"))


def test_sfctl_selects_the_cluster_and_drills_a_data_loss(
    sfctl: Path, cluster: tuple[str, Pki], tmp_path: Path
) -> None:
    """select, data-loss, data-loss-status, operation-list, operation-cancel: as on SF."""
    url, pki = cluster
    cli = Sfctl(sfctl, tmp_path, pki.ca)
    cli.ok("cluster", "select", "--endpoint", url, "--pem", str(pki.admin), "--ca", str(pki.ca))
    assert cli.ok("cluster", "show-connection") == url
    op = str(uuid.uuid4())
    ids = ("--service-id", "Shop~Cart", "--partition-id", STATE_PID, "--operation-id", op)
    cli.ok("partition", "data-loss", *ids, "--data-loss-mode", "FullDataLoss")
    assert _state(cli.ok("partition", "data-loss-status", *ids)) == "Running"
    listed = cli.ok("cluster", "operation-list")
    assert [(o["operationId"], o["state"], o["type"]) for o in listed] == [
        (op, "Running", "PartitionDataLoss")
    ]
    forced = cli.run("cluster", "operation-cancel", "--operation-id", op, "--force")
    assert forced.returncode != 0  # SF: Force=true only after a Force=false cancel
    cli.ok("cluster", "operation-cancel", "--operation-id", op)
    assert _state(cli.ok("partition", "data-loss-status", *ids)) == "Cancelled"
    # sfctl's version check after each command found a compatible cluster: no warning.
    done = cli.run("cluster", "operation-list")
    assert done.returncode == 0
    assert "does not match the cluster version" not in done.stderr


def test_sfctl_data_loss_of_a_directory_partition_fails_clearly(
    sfctl: Path, cluster: tuple[str, Pki], tmp_path: Path
) -> None:
    """A dir: partition cannot lose replicas: sfctl shows SF's E_INVALIDARG with the reason."""
    url, pki = cluster
    cli = Sfctl(sfctl, tmp_path, pki.ca)
    cli.ok("cluster", "select", "--endpoint", url, "--pem", str(pki.admin), "--ca", str(pki.ca))
    done = cli.run(
        "partition", "data-loss", "--service-id", "Shop~Files", "--partition-id", DIR_PID,
        "--operation-id", str(uuid.uuid4()), "--data-loss-mode", "PartialDataLoss",
    )  # fmt: skip
    assert done.returncode != 0
    assert "no replicas to lose" in done.stderr


def test_sfctl_reader_certificate_may_look_but_not_fault(
    sfctl: Path, cluster: tuple[str, Pki], tmp_path: Path
) -> None:
    """The reader's certificate (by common name) lists operations but may not start one."""
    url, pki = cluster
    cli = Sfctl(sfctl, tmp_path, pki.ca)
    cli.ok("cluster", "select", "--endpoint", url, "--pem", str(pki.reader), "--ca", str(pki.ca))
    assert isinstance(cli.ok("cluster", "operation-list"), list)
    done = cli.run(
        "partition", "data-loss", "--service-id", "Shop~Cart", "--partition-id", STATE_PID,
        "--operation-id", str(uuid.uuid4()), "--data-loss-mode", "FullDataLoss",
    )  # fmt: skip
    assert done.returncode != 0
    assert "403" in done.stderr or "Forbidden" in done.stderr or "needs the operator" in done.stderr
