"""
Real storage servers for the tests: Azurite (Azure Blob), moto (S3) and Samba.

Each runs as a child process in its own process group, on a free port of
127.0.0.1 only, with its state under a temporary directory. The fault tests
stop, pause and restart them; the conformance suite shares one of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
HOST = "127.0.0.1"

# Azurite's well-known development account (public, documented by Microsoft):
# no secret of anyone's.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def missing(what: str, how: str) -> None:
    """Skip when a server cannot run here; in CI, where test-deps.sh installs it, fail."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """
    A server process that tests can stop, pause and start again on the same port.

    Args:
        name: for messages.
        argv: the command line; ``{port}`` in any argument is replaced by the port.
        workdir: where the log goes.
        env: extra environment variables.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self._argv = [a.replace("{port}", str(self.port)) for a in argv]
        self._env = {**os.environ, **(env or {})}
        self.log = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        assert self._proc is None, f"{self.name} is already running"
        with self.log.open("ab") as log:
            # A new session: its own process group, so stop() reaches every child
            # (smbd forks one per connection) and nothing else.
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.log.parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"{self.name} exited at start:\n{self.tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {HOST}:{self.port}:\n{self.tail()}")

    @property
    def running(self) -> bool:
        """Whether start() was called more recently than stop()."""
        return self._proc is not None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def stop(self) -> None:
        """Kill the server and its children at once, as a crash would."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGCONT)  # a paused process must not outlive us
        self._signal_group(signal.SIGKILL)
        self._proc.wait(timeout=30)
        self._proc = None
        # Children that were reparented are in the same group; wait for the port.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    time.sleep(0.05)
            except OSError:
                return

    def pause(self) -> None:
        """Freeze the server: connections stay open but nothing answers."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again."""
        self._signal_group(signal.SIGCONT)

    def tail(self, lines: int = 30) -> str:
        """Return the end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def azurite(workdir: Path) -> Server:
    """Return (not started) an Azurite blob server keeping its data in *workdir*."""
    if not AZURITE.exists():
        missing("Azurite", "run scripts/test-deps.sh: npm ci")
    data = workdir / "azurite"
    data.mkdir(exist_ok=True)
    return Server(
        "azurite",
        [
            str(AZURITE),
            "--blobHost",
            HOST,
            "--blobPort",
            "{port}",
            "--location",
            str(data),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",
        ],
        workdir,
    )


def azurite_connection_string(server: Server, key: str = AZURITE_KEY) -> str:
    """Return the connection string for *server*'s development account."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://{HOST}:{server.port}/{AZURITE_ACCOUNT};"
    )


def azurite_endpoint(server: Server) -> str:
    """Return *server*'s blob endpoint URL."""
    return f"http://{HOST}:{server.port}/{AZURITE_ACCOUNT}"


def moto(workdir: Path, *, auth: bool = False) -> Server:
    """
    Return (not started) a moto S3 server.

    With *auth*, moto checks signatures against its IAM users after the first
    three requests, which ``moto_credentials`` spends creating a user and key.
    """
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if auth else {}
    return Server(
        "moto-auth" if auth else "moto",
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", "{port}"],
        workdir,
        env=env,
    )


def moto_credentials(server: Server) -> tuple[str, str]:
    """Create an IAM user allowed all of S3 on an ``auth`` moto server; return its key pair."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=f"http://{HOST}:{server.port}",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",  # unchecked for the first requests
        region_name="us-east-1",
    )
    iam.create_user(UserName="safehold")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="safehold", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="safehold")["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def smbd_binary() -> str:
    """Return the path of smbd, or skip (fail in CI) when it is missing."""
    path = shutil.which("smbd") or ("/usr/sbin/smbd" if Path("/usr/sbin/smbd").exists() else None)
    if path is None:
        missing("Samba's smbd", "run scripts/test-deps.sh: apt-get install samba")
    if os.geteuid() != 0:
        pytest.skip("smbd must run as root to serve files as a logged-on user; not root here")
    return str(path)


class Samba:
    """
    An smbd with its own configuration, state and user, all under *workdir*.

    Shares: ``backup`` (a directory in *workdir*) and ``small`` (a directory a
    test may mount a tiny tmpfs on). The user is the current (root) user with
    a random password in a private passdb, so the machine's accounts are untouched.
    """

    def __init__(self, workdir: Path) -> None:
        smbd = smbd_binary()
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.password = secrets.token_urlsafe(16)
        dirs = {d: workdir / d for d in ("private", "lock", "state", "cache", "pid", "ncalrpc")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.share_dir = workdir / "share"
        self.small_dir = workdir / "small"
        self.share_dir.mkdir(exist_ok=True)
        self.small_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.conf = workdir / "smb.conf"
        self.conf.write_text(
            "[global]\n"
            "  server role = standalone server\n"
            "  netbios name = SAFEHOLDTEST\n"
            f"  smb ports = {self.port}\n"
            f"  interfaces = {HOST}\n"
            "  bind interfaces only = yes\n"
            "  disable netbios = yes\n"
            f"  private dir = {dirs['private']}\n"
            f"  lock directory = {dirs['lock']}\n"
            f"  state directory = {dirs['state']}\n"
            f"  cache directory = {dirs['cache']}\n"
            f"  pid directory = {dirs['pid']}\n"
            f"  ncalrpc dir = {dirs['ncalrpc']}\n"
            f"  passdb backend = tdbsam:{dirs['private'] / 'passdb.tdb'}\n"
            "  log file = /dev/null\n"
            "  load printers = no\n"
            "  printcap name = /dev/null\n"
            "  disable spoolss = yes\n"
            "  map to guest = never\n"
            "  server min protocol = SMB2_10\n"
            f"[backup]\n  path = {self.share_dir}\n  read only = no\n  valid users = {self.user}\n"
            f"[small]\n  path = {self.small_dir}\n  read only = no\n  valid users = {self.user}\n"
        )
        subprocess.run(
            ["pdbedit", "-s", str(self.conf), "-a", "-t", "-u", self.user],
            input=f"{self.password}\n{self.password}\n".encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.server = Server(
            "smbd",
            [
                smbd,
                "-s",
                str(self.conf),
                "--foreground",
                "--no-process-group",
                "--debug-stdout",
                "-d",
                "1",
            ],
            workdir,
            port=self.port,
        )


def unique(prefix: str = "t") -> str:
    """Return a fresh lower-case name, valid as a container, bucket or directory."""
    return f"{prefix}{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class S3Server:
    """A running moto server that checks signatures, and a key pair it accepts."""

    server: Server
    access_key_id: str
    secret_access_key: str

    @property
    def endpoint(self) -> str:
        """The server's URL."""
        return f"http://{HOST}:{self.server.port}"
