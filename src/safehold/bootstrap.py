"""
The composition root: the one place that picks concrete parts and wires them.

It opens the catalog, loads the server's secret key and the repository
password, maps policy storages to storage backends, and builds the service
context, the FastAPI app, the background loops (scheduler and sweeper) and the
embedded agent. Only this module imports ``safehold.storage.registry``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from safehold.agent.link import LocalLink
from safehold.agent.runner import Agent
from safehold.api.app import create_app
from safehold.api.deps import TokenStore
from safehold.core.errors import SafeholdError, UsageError
from safehold.core.policy import AzureBlobStorage, FileShareStorage, S3Storage, StorageSpec
from safehold.repo.keys import KdfParams
from safehold.service import config_backup, jobs, scheduler
from safehold.service.catalog import open_catalog
from safehold.service.context import Clock, ServiceContext, system_clock
from safehold.service.engine import BackupEngine, RepoEngine
from safehold.service.secrets import SecretBox, load_or_create_key
from safehold.service.uow import SqlUnitOfWork
from safehold.storage import registry
from safehold.storage.base import Storage
from safehold.storage.retry import RetryingStorage

__all__ = ["Controller", "Settings", "build_controller", "load_password", "open_policy_storage"]

log = logging.getLogger("safehold")


@dataclass
class Settings:
    """How a controller runs. Paths default to files under *data_dir*."""

    data_dir: Path = Path("./safehold-data")
    catalog: str | None = None
    password_file: Path | None = None
    secret_key_file: Path | None = None
    tokens_file: Path | None = None
    tokens: dict[str, str] = field(default_factory=dict, repr=False)  # secrets: never shown
    embedded_agent: bool = True
    agent_slots: int = 2
    max_running_jobs: int = 4
    tick_seconds: float = 5.0
    agent_timeout_seconds: float = 60.0
    fast_kdf: bool = False  # tests only: cheap scrypt for new repositories


def open_policy_storage(spec: StorageSpec) -> Storage:
    """
    Open the storage a policy or request describes.

    FileShare maps to the file backend (a local or mounted path), or to the SMB
    backend for a UNC path; AzureBlobStore and S3 map to their backends. Remote
    backends get the policy's credentials (never the environment's) and the
    retry wrapper.
    """
    if isinstance(spec, FileShareStorage):
        path = spec.path
        if path.startswith(("\\\\", "//")):
            return _smb_share(spec)
        if not path.startswith("/"):
            raise UsageError(f"FileShare path {path!r} must be absolute")
        return registry.open_storage(path)
    if isinstance(spec, AzureBlobStorage):
        from safehold.storage.azure import AzureStorage

        return RetryingStorage(
            AzureStorage(spec.container_name, connection_string=spec.connection_string)
        )
    if isinstance(spec, S3Storage):
        from safehold.storage.s3 import S3Storage as S3Backend

        return RetryingStorage(
            S3Backend(
                spec.bucket,
                (spec.prefix or "").strip("/"),
                access_key_id=spec.access_key_id,
                secret_access_key=spec.secret_access_key,
                region=spec.region,
                endpoint_url=spec.endpoint_url,
            )
        )
    raise UsageError(f"unsupported storage kind {spec!r}")  # pragma: no cover


def _smb_share(spec: FileShareStorage) -> Storage:
    """
    Open a UNC FileShare path (``\\\\HOST\\SHARE\\dir``) with the SMB backend.

    ``HOST:PORT`` is accepted for a server on another port than 445. The primary
    credentials are used (the secondary ones are not tried).
    """
    from safehold.storage.smb import SMBStorage

    parts = [x for x in re.split(r"[\\/]+", spec.path) if x]
    if len(parts) < 2:
        raise UsageError(
            f"FileShare path {spec.path!r} needs a server and a share: \\\\HOST\\SHARE"
        )
    host, _, port = parts[0].partition(":")
    if port and not port.isdigit():
        raise UsageError(f"FileShare path {spec.path!r}: the port is not a number")
    return RetryingStorage(
        SMBStorage(
            host,
            parts[1],
            "/".join(parts[2:]),
            port=int(port or 445),
            username=spec.primary_user_name,
            password=spec.primary_password,
        )
    )


def load_password(password_file: Path | None, *, create: bool) -> str:
    """
    Return the repository password: ``SAFEHOLD_PASSWORD``, else the password file.

    With *create*, a missing file is created (mode 0600) holding a random password.
    """
    env = os.environ.get("SAFEHOLD_PASSWORD")
    if env:
        return env
    if password_file is None:
        raise UsageError("no repository password: set SAFEHOLD_PASSWORD or give --password-file")
    if password_file.exists():
        return password_file.read_text().strip()
    if not create:
        raise UsageError(f"the password file {password_file} does not exist")
    password_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    log.warning("created a new repository password in %s: keep a copy of it safe", password_file)
    return password_file.read_text().strip()


def load_tokens(settings: Settings) -> dict[str, str]:
    """Return token → role from ``SAFEHOLD_TOKENS`` (``role:token,…``), a tokens file, settings."""
    tokens = dict(settings.tokens)
    lines: list[str] = []
    env = os.environ.get("SAFEHOLD_TOKENS", "")
    lines += [x.replace(":", " ", 1) for x in env.split(",") if x.strip()]
    if settings.tokens_file is not None:
        lines += settings.tokens_file.read_text().splitlines()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        role, _, token = line.partition(" ")
        if not token.strip():
            raise UsageError("a tokens line is '<role> <token>'")
        tokens[token.strip()] = role.strip()
    if not tokens:
        raise UsageError("no API tokens: give --tokens-file or set SAFEHOLD_TOKENS=admin:<token>")
    return tokens


class Controller:
    """A running controller: the app, its background loops and its embedded agent."""

    def __init__(
        self, settings: Settings, ctx: ServiceContext, tokens: TokenStore, engine: BackupEngine
    ):
        self.settings = settings
        self.ctx = ctx
        self.engine = engine
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.agent: Agent | None = None
        self.on_close: list[Callable[[], None]] = []
        self.app = create_app(ctx, tokens)
        self.app.router.lifespan_context = self._lifespan

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> Any:
        del app
        self.start()
        try:
            yield
        finally:
            self.stop()

    def recover(self) -> None:
        """End the jobs a previous controller left running (call before serving)."""
        for job in jobs.recover_after_restart(self.ctx):
            log.warning("job %s (%s) ended as Failure: %s", job.id, job.kind, job.failure_message)
        config_backup.recover_operations(self.ctx)

    def tick(self) -> None:
        """One round of the background work: schedule due backups, end stuck jobs."""
        scheduler.tick(self.ctx)
        jobs.sweep(self.ctx)

    def start(self) -> None:
        """Start the scheduler loop and the embedded agent."""
        self._stop.clear()
        t = threading.Thread(target=self._loop, name="safehold-scheduler", daemon=True)
        t.start()
        self._threads.append(t)
        if self.settings.embedded_agent:
            self.agent = Agent(
                LocalLink(self.ctx, "embedded"),
                engine=self.engine,
                open_storage=self.ctx.open_storage,
                slots=self.settings.agent_slots,
                poll_interval=min(1.0, self.settings.tick_seconds),
                heartbeat_interval=1.0,  # local and cheap: smoother progress for --wait
                clock=self.ctx.clock,
            )
            self.agent.start()

    def stop(self) -> None:
        """Stop the loops and the embedded agent."""
        self._stop.set()
        if self.agent is not None:
            self.agent.stop()
        for t in self._threads:
            t.join(10)
        self._threads.clear()

    def close(self) -> None:
        """Stop, then release the catalog's connections."""
        self.stop()
        for release in self.on_close:
            release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except SafeholdError as exc:
                log.error("scheduler: %s", exc.message)
            except Exception:
                log.exception("scheduler round failed")
            self._stop.wait(self.settings.tick_seconds)


def build_controller(
    settings: Settings, *, clock: Clock = system_clock, engine: BackupEngine | None = None
) -> Controller:
    """Open everything *settings* names and return a controller, with its jobs recovered."""
    data = settings.data_dir
    catalog_url = settings.catalog or str(data / "catalog.sqlite")
    db = open_catalog(catalog_url)
    box = SecretBox(load_or_create_key(settings.secret_key_file or data / "secret.key"))
    if engine is None:
        password = load_password(
            settings.password_file or data / "repository.password", create=True
        )
        engine = RepoEngine(password, kdf=KdfParams(n=2**10) if settings.fast_kdf else None)
    ctx = ServiceContext(
        uow=lambda: SqlUnitOfWork(db),
        secrets=box,
        open_storage=open_policy_storage,
        engine=engine,
        clock=clock,
        max_running_jobs=settings.max_running_jobs,
        agent_timeout=timedelta(seconds=settings.agent_timeout_seconds),
    )
    controller = Controller(settings, ctx, TokenStore(load_tokens(settings)), engine)
    controller.on_close.append(db.dispose)
    controller.recover()
    return controller


def build_agent(
    controller_url: str,
    token: str,
    agent_id: str,
    *,
    password_file: Path | None,
    slots: int = 1,
    verify: bool | str = True,
    poll_interval: float = 1.0,
    heartbeat_interval: float = 5.0,
) -> Agent:
    """Build a remote agent that pulls work from *controller_url*."""
    from safehold.agent.link import HttpLink

    engine = RepoEngine(load_password(password_file, create=False))
    return Agent(
        HttpLink(controller_url, token, agent_id, verify=verify),
        engine=engine,
        open_storage=open_policy_storage,
        slots=slots,
        poll_interval=poll_interval,
        heartbeat_interval=heartbeat_interval,
    )
