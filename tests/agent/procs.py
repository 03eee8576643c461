"""Starting and stopping ``safehold serve`` and ``safehold agent`` processes for tests."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from safehold.testing import free_port

SAFEHOLD = str(Path(sys.executable).with_name("safehold"))
ADMIN = "proc-admin-token"
OPERATOR = "proc-operator-token"
AGENT = "proc-agent-token"
PASSWORD = "process tests password"


@dataclass
class Proc:
    """A process started in its own session, so the test can end its whole group."""

    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the process group (a crash)."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["SAFEHOLD_PASSWORD"] = PASSWORD
    e.pop("SAFEHOLD_TOKENS", None)
    return e


def start(args: list[str], log: Path) -> Proc:
    with log.open("ab") as out:
        p = subprocess.Popen(
            [SAFEHOLD, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(),
            start_new_session=True,
        )
    return Proc(p, log)


def start_controller(
    data: Path,
    *,
    port: int | None = None,
    extra: list[str] | None = None,
    scheme: str = "http",
    verify: bool | str = True,
) -> tuple[Proc, str]:
    """Start ``safehold serve``; return it and its URL once it answers."""
    port = port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    tokens = data / "tokens"
    tokens.write_text(f"admin {ADMIN}\noperator {OPERATOR}\nagent {AGENT}\n")
    proc = start(
        [
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--tokens-file",
            str(tokens),
            "--tick-seconds",
            "0.5",
            "--schedule-spread",  # first periodic backups at once, as SF takes them
            "0",
            *(extra or []),
        ],
        data / "serve.log",
    )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"serve exited: {proc.log.read_text()[-2000:]}")
        try:
            ctx = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
            if httpx.get(f"{url}/healthz", timeout=1, verify=ctx).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise AssertionError("serve did not start")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a safehold client command with the admin token."""
    r = subprocess.run(
        [SAFEHOLD, *args],
        capture_output=True,
        text=True,
        env={**env(), "SAFEHOLD_TOKEN": ADMIN},
        timeout=120,
        check=False,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"safehold {' '.join(args)} failed ({r.returncode}): {r.stdout}\n{r.stderr}"
        )
    return r


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    """Call the SF API with the admin token; return the JSON (or None)."""
    r = httpx.request(
        method,
        url + path,
        params={"api-version": "6.4", **kwargs.pop("params", {})},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
        **kwargs,
    )
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


def wait_backups(url: str, pid: str, count: int = 1, limit: float = 120) -> list[dict[str, Any]]:
    """Poll a partition's GetBackups until it lists *count* backups (periodic ones too)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        items: list[dict[str, Any]] = api(url, "GET", f"/Partitions/{pid}/$/GetBackups")["Items"]
        if len(items) >= count:
            return items
        time.sleep(0.2)
    raise AssertionError(f"partition {pid} did not get {count} backup(s)")


def wait_health(url: str, pid: str, text: str, limit: float = 60) -> dict[str, Any]:
    """Poll a partition's health until its description holds *text*."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        h: dict[str, Any] = api(url, "GET", f"/safehold/partitions/{pid}/health")
        if text in h["Description"]:
            return h
        time.sleep(0.2)
    raise AssertionError(f"the health of {pid} never said {text!r}")


def wait_state(url: str, pid: str, kind: str, limit: float = 60) -> dict[str, Any]:
    """Poll a partition's Backup/Restore progress until it ends."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{url}/Partitions/{pid}/$/Get{kind}Progress",
            params={"api-version": "6.4"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        info: dict[str, Any] = r.json()  # empty before the first job, as in SF
        if info.get(f"{kind}State") in ("Success", "Failure", "Timeout"):
            return info
        time.sleep(0.1)
    raise AssertionError(f"the {kind.lower()} of {pid} did not end")


def start_agent(
    urls: list[str], name: str, log: Path, *, slots: int = 1, extra: list[str] | None = None
) -> Proc:
    """Start ``safehold agent`` against the controllers at *urls* (comma-separated on the line)."""
    return start(
        [
            "agent",
            "--controller",
            ",".join(urls),
            "--token",
            AGENT,
            "--id",
            name,
            "--slots",
            str(slots),
            "--poll",
            "0.2",
            "--heartbeat",
            "1",
            *(extra or []),
        ],
        log,
    )


def start_replica(
    data: Path,
    catalog: str,
    secret_key: Path,
    *,
    port: int | None = None,
    extra: list[str] | None = None,
) -> tuple[Proc, str]:
    """
    Start one controller replica on a shared PostgreSQL *catalog*.

    Replicas share the catalog and the key that seals policy secrets (*secret_key*,
    created by the first one if missing); each has its own data directory and log.
    """
    return start_controller(
        data,
        port=port,
        extra=["--catalog", catalog, "--secret-key-file", str(secret_key), *(extra or [])],
    )


def is_leader(url: str) -> bool | None:
    """What ``/healthz`` says of *url*'s leadership (None if it does not answer)."""
    try:
        r = httpx.get(f"{url}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    leading: bool | None = r.json().get("Leader") if r.status_code == 200 else None
    return leading


def wait_leader(urls: list[str], limit: float = 30) -> str:
    """Return the URL of the replica that leads, waiting up to *limit* seconds for one."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for url in urls:
            if is_leader(url):
                return url
        time.sleep(0.1)
    raise AssertionError(f"no replica of {urls} became the leader within {limit} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process *pid* (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" that ends the command name: utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_PRELOADED = """
import pathlib, sys, time
go = pathlib.Path(sys.argv[1])
import safehold.bootstrap, safehold.cli  # the imports a cold start spends its seconds on
go.with_suffix(".ready").touch()
while not go.exists():
    time.sleep(0.02)
sys.argv = ["safehold", *sys.argv[2:]]
safehold.cli.main()
"""


def preloaded_agent(
    urls: list[str], name: str, log: Path, go: Path, *, slots: int = 1, wait: bool = True
) -> Proc:
    """
    ``safehold agent`` in a process that has imported everything and waits for *go* to exist.

    A restart test can then start the new run of an agent the moment the old one
    dies, whatever a loaded machine's cold start costs (seconds, with 2 cores busy).
    Returns once the imports are done (with *wait*; else see ``wait_preloaded``).
    """
    args = ["agent", "--controller", ",".join(urls), "--token", AGENT, "--id", name]
    args += ["--slots", str(slots), "--poll", "0.2", "--heartbeat", "1"]
    with log.open("ab") as out:
        p = subprocess.Popen(
            [sys.executable, "-c", _PRELOADED, str(go), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(),
            start_new_session=True,
        )
    proc = Proc(p, log)
    if wait:
        wait_preloaded(proc, go)
    return proc


def wait_preloaded(proc: Proc, go: Path, limit: float = 60) -> None:
    """Wait until the ``preloaded_agent`` *proc* has done its imports."""
    ready = go.with_suffix(".ready")
    deadline = time.monotonic() + limit
    while not ready.exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"the preloaded agent is not ready: {proc.log.read_text()[-2000:]}"
            )
        time.sleep(0.05)
