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
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from safehold.agent.runner import Agent
from safehold.api.app import create_app
from safehold.api.deps import TokenStore
from safehold.client import AgentLink, ControllerClient
from safehold.core.errors import SafeholdError, UsageError
from safehold.core.policy import AzureBlobStorage, FileShareStorage, S3Storage, StorageSpec
from safehold.repo.keys import KdfParams
from safehold.repo.password import create_password_file, find_password
from safehold.service import (
    alerts,
    config_backup,
    drills,
    group_schedule,
    jobs,
    notify,
    retention_sweep,
    scheduler,
)
from safehold.service.catalog import open_catalog
from safehold.service.context import Clock, ServiceContext, system_clock
from safehold.service.engine import BackupEngine, RepoEngine
from safehold.service.leader import Leadership, key_locks_for, leadership_for
from safehold.service.local_link import LocalLink
from safehold.service.secrets import SecretBox, load_or_create_key
from safehold.service.uow import SqlUnitOfWork
from safehold.service.work_signal import PgWorkListener, WorkSignal, listener_for
from safehold.storage import registry
from safehold.storage.base import Storage
from safehold.storage.retry import DEFAULT_BUDGET, RetryingStorage

__all__ = ["Controller", "Settings", "build_controller", "load_password", "open_policy_storage"]

log = logging.getLogger("safehold")

#: Retry budget (seconds) of the controller's own storage checks: short, so a
#: storage that cannot be reached fails its request instead of holding it.
CHECK_BUDGET = 10.0
#: How often the leader purges finished jobs (seconds).
PURGE_EVERY = 60.0
#: The most of a core the alert loop spends (it reads the whole fleet each round).
ALERT_CPU_SHARE = 0.02
#: The embedded agent's claims wait this long for work (woken in-process).
EMBEDDED_WAIT = 10.0


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
    embedded_agent_name: str | None = None  # default: embedded@<host>:<port>
    port: int = 19080
    agent_slots: int = 2
    max_running_jobs: int = 0  # 0: as many as the agents' slots take
    tick_seconds: float = 5.0
    schedule_spread: float = 1.0
    agent_timeout_seconds: float = 60.0
    job_retention_hours: float = 7 * 24
    alerts_file: Path | None = None  # webhook and e-mail channels (docs/drills.md)
    fast_kdf: bool = False  # tests only: cheap scrypt for new repositories

    @property
    def embedded_agent_id(self) -> str:
        """
        The embedded agent's id: stable across restarts of this controller (so a
        restart fails its old jobs at once), distinct between replicas.
        """
        return self.embedded_agent_name or f"embedded@{socket.gethostname()}:{self.port}"


def open_policy_storage(spec: StorageSpec, *, retry_budget: float | None = None) -> Storage:
    """
    Open the storage a policy or request describes.

    FileShare maps to the file backend (a local or mounted path), or to the SMB
    backend for a UNC path; AzureBlobStore and S3 map to their backends, and
    ManagedIdentityAzureBlobStore to the Azure backend with azure-identity's
    ``DefaultAzureCredential`` (``ManagedIdentityClientId`` picks a user-assigned
    identity; ``ManagedIdentityType`` does not matter here). Remote
    backends get the policy's credentials (never the environment's) and the
    retry wrapper, with *retry_budget* seconds (the wrapper's default if None).
    """
    from safehold.core.policy import ManagedIdentityAzureBlobStorage  # (kept in this function)

    budget = DEFAULT_BUDGET if retry_budget is None else retry_budget
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
            AzureStorage(spec.container_name, connection_string=spec.connection_string),
            budget=budget,
        )
    if isinstance(spec, ManagedIdentityAzureBlobStorage):
        # SF's ManagedIdentityAzureBlobStore: the host's identity through azure-identity's
        # chain (managed identity, workload identity, environment...), never a stored key.
        from azure.identity import DefaultAzureCredential

        from safehold.storage.azure import AzureStorage

        credential = DefaultAzureCredential(
            managed_identity_client_id=spec.managed_identity_client_id
        )
        return RetryingStorage(
            AzureStorage(
                spec.container_name, endpoint=spec.blob_service_uri, credential=credential
            ),
            budget=budget,
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
            ),
            budget=budget,
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


def load_password(
    password_file: Path | None, *, create: bool, default_file: Path | None = None
) -> str:
    """
    Return the repository password, as ``repo.password.find_password`` finds it.

    With *create*, a missing *default_file* is created (mode 0600) holding a
    random password.

    Raises:
        UsageError: no password anywhere (and nothing to create).
    """
    found = find_password(password_file, default_file=default_file)
    if found is not None:
        return found
    if create and default_file is not None:
        password = create_password_file(default_file)
        log.warning("created a new repository password in %s: keep a copy of it safe", default_file)
        return password
    raise UsageError("no repository password: set SAFEHOLD_PASSWORD or give --password-file")


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


#: The upper bounds of the tick-duration histogram's buckets (seconds).
TICK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


class TickStats(Collector):
    """The scheduler's rounds on this replica, for ``/metrics``."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.last = 0.0
        self.created = 0
        self.buckets = [0] * len(TICK_BUCKETS)

    def record(self, seconds: float, report: scheduler.TickReport) -> None:
        """Count one round that took *seconds*."""
        self.count += 1
        self.total += seconds
        self.last = seconds
        self.created += report.created
        for i, le in enumerate(TICK_BUCKETS):
            if seconds <= le:
                self.buckets[i] += 1

    def collect(self) -> Iterator[Metric]:
        """Yield the tick metrics."""
        yield HistogramMetricFamily(
            "safehold_scheduler_tick_seconds",
            "How long this replica's scheduler rounds took (scheduler and sweeps).",
            buckets=[
                *((str(le), n) for le, n in zip(TICK_BUCKETS, self.buckets, strict=True)),
                ("+Inf", self.count),
            ],
            sum_value=self.total,
        )
        yield GaugeMetricFamily(
            "safehold_scheduler_last_tick_seconds", "The last round's duration.", value=self.last
        )
        yield CounterMetricFamily(
            "safehold_scheduled_backups",
            "Periodic backups this replica accepted.",
            value=self.created,
        )


class Controller:
    """
    A running controller: the app, its background loop and its embedded agent.

    Every replica serves the API. The background loop ticks only while this
    replica leads (``service.leader``): the scheduler, the sweeps and, once a
    minute, the purge of finished jobs. A restart fails nothing: queued jobs
    stay queued and running ones report to whichever replica answers.
    """

    def __init__(
        self,
        settings: Settings,
        ctx: ServiceContext,
        tokens: TokenStore,
        engine: BackupEngine,
        leadership: Leadership,
        work_listener: PgWorkListener | None = None,
    ):
        self.settings = settings
        self.ctx = ctx
        self.engine = engine
        self.leadership = leadership
        self.work_listener = work_listener
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_purge = 0.0
        self._more = False  # the last tick left work for the next one
        self.agent: Agent | None = None
        self.on_close: list[Callable[[], None]] = []
        self.app = create_app(ctx, tokens)
        self.app.router.lifespan_context = self._lifespan
        self.ticks = TickStats()
        self.app.state.registry.register(self.ticks)
        self.retention_times = retention_sweep.RetentionTimes()
        self.alert_channels = (
            notify.load_channels(settings.alerts_file) if settings.alerts_file else None
        )

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> Any:
        del app
        self.start()
        try:
            yield
        finally:
            self.stop()

    def tick(self) -> bool:
        """One round of the background work if this replica leads; return whether it did."""
        self._more = False
        leading = self.leadership.acquire()
        self.app.state.leading = leading
        if not leading:
            return False
        started = time.perf_counter()
        report = scheduler.TickReport()
        scheduler.tick(self.ctx, report, budget=scheduler.BUDGET)
        drills.tick(self.ctx)
        group_schedule.tick(self.ctx)
        jobs.sweep(self.ctx)
        config_backup.sweep(self.ctx)
        self.ticks.record(time.perf_counter() - started, report)
        self._more = report.more
        if time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            purged = jobs.purge_finished(self.ctx)
            if purged:
                log.info("purged %d finished jobs older than %s", purged, self.ctx.job_retention)
        return True

    def start(self) -> None:
        """Start the background loop, the work listener and the embedded agent."""
        self._stop.clear()
        self.ctx.work.open()
        if self.work_listener is not None:
            self.work_listener.start()
        loops = (
            (self._loop, "safehold-scheduler"),
            (self._alert_loop, "alerts"),
            (self._retention_loop, "retention"),
        )
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.settings.embedded_agent:
            self.agent = Agent(
                LocalLink(self.ctx, self.settings.embedded_agent_id, claim_wait=EMBEDDED_WAIT),
                engine=self.engine,
                open_storage=self.ctx.open_storage,
                slots=self.settings.agent_slots,
                poll_interval=min(1.0, self.settings.tick_seconds),
                heartbeat_interval=1.0,  # local and cheap: smoother progress for --wait
                clock=self.ctx.clock,
            )
            self.agent.start()

    def drain(self) -> None:
        """Answer waiting claims now (nothing to do): the server is shutting down."""
        self.ctx.work.close()

    def stop(self) -> None:
        """Stop the loop and the embedded agent, and hand leadership over."""
        self.drain()
        self._stop.set()
        if self.work_listener is not None:
            self.work_listener.stop()
        if self.agent is not None:
            self.agent.stop()
        for t in self._threads:
            t.join(10)
        self._threads.clear()
        self.leadership.release()

    def close(self) -> None:
        """Stop, then release the catalog's connections."""
        self.stop()
        for release in self.on_close:
            release()

    def _retention_loop(self) -> None:
        # SF's retention timer, for every policy (suspended partitions included):
        # storage work, so in a loop of its own, and only on the leader.
        while not self._stop.wait(self.settings.tick_seconds):
            if not self.app.state.leading:
                continue
            try:
                retention_sweep.sweep(self.ctx, self.retention_times)
            except SafeholdError as exc:
                log.error("retention: %s", exc.message)
            except Exception:
                log.exception("retention round failed")

    def _alert_loop(self) -> None:
        # Alerts are sent from a loop of their own: a slow webhook or mail server
        # must not delay the scheduler. Only the leader evaluates and sends them.
        # An evaluation reads the whole fleet, so a large fleet is evaluated less
        # often: the loop spends at most ALERT_CPU_SHARE of a core.
        pause = self.settings.tick_seconds
        while not self._stop.wait(pause):
            if not self.app.state.leading:
                continue
            cpu = time.thread_time()
            try:
                alerts.tick(self.ctx, self.alert_channels, self.app.state.fleet)
            except SafeholdError as exc:
                log.error("alerts: %s", exc.message)
            except Exception:
                log.exception("alerts round failed")
            cost = time.thread_time() - cpu
            pause = max(self.settings.tick_seconds, cost / ALERT_CPU_SHARE - cost)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except SafeholdError as exc:
                log.error("scheduler: %s", exc.message)
            except Exception:
                log.exception("scheduler round failed")
            # A bounded tick that left work ticks again at once.
            self._stop.wait(0 if self._more else self.settings.tick_seconds)


def build_controller(
    settings: Settings, *, clock: Clock = system_clock, engine: BackupEngine | None = None
) -> Controller:
    """Open everything *settings* names and return a controller (not started)."""
    data = settings.data_dir
    catalog_url = settings.catalog or str(data / "catalog.sqlite")
    db = open_catalog(catalog_url)
    box = SecretBox(load_or_create_key(settings.secret_key_file or data / "secret.key"))
    if engine is None:
        password = load_password(
            settings.password_file, create=True, default_file=data / "repository.password"
        )
        engine = RepoEngine(password, kdf=KdfParams(n=2**10) if settings.fast_kdf else None)
    work = WorkSignal(capped=settings.max_running_jobs > 0)
    ctx = ServiceContext(
        uow=lambda: SqlUnitOfWork(db, work),
        secrets=box,
        open_storage=open_policy_storage,
        check_storage_opener=partial(open_policy_storage, retry_budget=CHECK_BUDGET),
        engine=engine,
        clock=clock,
        max_running_jobs=settings.max_running_jobs,
        agent_timeout=timedelta(seconds=settings.agent_timeout_seconds),
        job_retention=timedelta(hours=settings.job_retention_hours),
        key_locks=key_locks_for(db),
        schedule_spread=settings.schedule_spread,
        work=work,
        read_uow=lambda: SqlUnitOfWork(db, read_only=True),
    )
    leadership = leadership_for(db)
    controller = Controller(
        settings,
        ctx,
        TokenStore(load_tokens(settings)),
        engine,
        leadership,
        listener_for(db, work),
    )
    controller.on_close.append(db.dispose)
    return controller


def build_agent(
    controller_urls: str | list[str],
    token: str | None,
    agent_id: str,
    *,
    password_file: Path | None,
    slots: int = 1,
    verify: bool | str = True,
    cert: tuple[str, str] | None = None,
    poll_interval: float = 1.0,
    claim_wait: float = 20.0,
    heartbeat_interval: float = 5.0,
) -> Agent:
    """Build a remote agent that pulls work from the controllers at *controller_urls*."""
    engine = RepoEngine(load_password(password_file, create=False))
    client = ControllerClient(controller_urls, token, verify=verify, cert=cert)
    return Agent(
        AgentLink(client, agent_id, claim_wait=claim_wait),
        engine=engine,
        open_storage=open_policy_storage,
        slots=slots,
        poll_interval=poll_interval,
        heartbeat_interval=heartbeat_interval,
    )
