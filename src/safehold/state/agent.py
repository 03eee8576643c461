"""
The store as its partition's agent: it pulls the controller's jobs and runs them in-process.

A partition registered with the source ``state:AGENT`` is served by the agent
named *AGENT*, and ``StoreAgent`` is that agent: an asyncio task in the
service's own process that claims work over the controller's agent routes
(``POST /safehold/agents/{id}/$/Claim``, ``…/jobs/{job}/$/Heartbeat``,
``…/$/Complete``, the same protocol ``safehold agent`` speaks) and runs it on the
store, so backups see a consistent state while writers go on:

- ``backup``: ``store.backup`` (full or incremental as the controller asks; an
  incremental the store cannot take, ``MissingFullBackup``, is taken full);
- ``restore``: ``store.restore`` of the chosen backup, with ``RestorePolicy.FORCE``
  (an operator's explicit restore overwrites, as in Service Fabric); a work item
  whose ``Params`` carry ``restore_time`` (``format_time``, UTC) restores the exact
  state at that instant instead, as ``store.restore(time=...)`` does;
- ``dataloss``: ``store.induce_data_loss``, whose hook (or the store's
  auto-restore) runs; with neither, and AutoRestoreOnDataLoss in the partition's
  policy, the latest backup is restored.

Every outcome carries the store's epoch and LSN, which the controller keeps for
the partition. The store writes into its own target, so that target must be the
repository of the partition's policy storage; the work item's storage is not
opened here. It talks to the controller with the one controller client
(``safehold.client``), in the typed messages of ``core.work``, like every agent:
several controller URLs, retried reports, and an incarnation per run.

``attach(...)`` is the one line that wires a service: it opens the store with a
backup target on the policy's FileShare path and runs its agent::

    async with attach("/var/lib/orders", partition=ref, controller=url, token=token,
                      agent_id="orders-1", backup_path="/backups/orders",
                      password=password) as agent:
        store = agent.store
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from safehold.client import AgentLink, ControllerClient
from safehold.core.errors import SafeholdError
from safehold.core.snapshot import Epoch, PartitionRef, format_time, parse_time
from safehold.core.work import ClaimRequest, Heartbeat, Outcome
from safehold.repo import Repository
from safehold.state.backup import BackupOption
from safehold.state.dataloss import DataLossMode
from safehold.state.drill import run_store_drill
from safehold.state.errors import MissingFullBackup
from safehold.state.restore import RestorePolicy
from safehold.state.store import StateStore
from safehold.state.target import LazyRepositoryTarget
from safehold.storage.file import FileStorage

__all__ = ["KINDS", "StoreAgent", "attach", "file_share_target"]

log = logging.getLogger("safehold.state.agent")

_MODES = {"FullDataLoss": DataLossMode.FULL, "PartialDataLoss": DataLossMode.PARTIAL}


#: The job kinds a store's agent runs (``drill``: ``state.drill``).
KINDS = ("backup", "restore", "dataloss", "drill")


def _epoch(e: Epoch) -> list[int]:
    return [e.data_loss_number, e.configuration_number]


class StoreAgent:
    """
    Pulls *store*'s partition's jobs from the controller at *controller_url* and runs them.

    Args:
        store: an open store.
        controller_url: the controller's base URL (several, comma-separated: replicas).
        token: a token with the ``agent`` (or ``admin``) role; never logged.
        agent_id: the name in the partition's source ``state:AGENT``.
        verify: TLS verification (True, False, or a CA bundle path).
        poll_interval: seconds between claims when there is nothing to do, or after an error.
        heartbeat_interval: seconds between heartbeats while a job runs.
        transport: an httpx transport in place of the network (tests).

    Use ``start()`` / ``await stop()``, or ``async with StoreAgent(...)``.
    """

    def __init__(
        self,
        store: StateStore,
        controller_url: str,
        token: str,
        *,
        agent_id: str,
        verify: bool | str = True,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self.agent_id = agent_id
        self._poll = poll_interval
        self._beat = heartbeat_interval
        self._client = ControllerClient(
            controller_url, token, verify=verify, timeout=timeout, transport=transport
        )
        self._link = AgentLink(self._client, agent_id)
        # This run of the agent: when it restarts, its earlier run's jobs fail at once.
        self._incarnation = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.jobs_done = 0

    def __repr__(self) -> str:
        return f"StoreAgent({', '.join(self._client.urls)}, agent={self.agent_id})"

    async def __aenter__(self) -> StoreAgent:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start pulling work in a task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"store-agent-{self.agent_id}")

    async def stop(self) -> None:
        """Stop pulling (a running job is cancelled; the controller times it out) and close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._client.close()

    async def _loop(self) -> None:
        while True:
            try:
                if await self.run_once():
                    continue
            except SafeholdError as exc:
                log.warning("store agent %s: %s", self.agent_id, exc.message)
            await asyncio.sleep(self._poll)

    async def run_once(self) -> bool:
        """Claim and run at most one job; return whether there was one."""
        # The controller client is synchronous (one client for every agent and
        # the CLI); its calls run in a worker thread, off the store's event loop.
        request = ClaimRequest(Incarnation=self._incarnation, Kinds=list(KINDS))
        claimed = await asyncio.to_thread(self._link.claim, request)
        if claimed is None:
            return False
        item = claimed.model_dump()
        job_id = claimed.JobId
        beater = asyncio.create_task(self._heartbeats(job_id, claimed.Attempt))
        try:
            outcome = await self._execute(item)
        finally:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
        log.info("job %s (%s) ended: %s", job_id, claimed.Kind, outcome["State"])
        report = Outcome.model_validate(outcome).with_attempt(claimed.Attempt)
        await asyncio.to_thread(self._link.complete, job_id, report)
        self.jobs_done += 1
        return True

    async def _heartbeats(self, job_id: str, attempt: int) -> None:
        while True:
            await asyncio.sleep(self._beat)
            try:
                beat = Heartbeat(Attempt=attempt, Progress={"lsn": self.store.lsn})
                await asyncio.to_thread(self._link.heartbeat, job_id, beat)
            except SafeholdError as exc:
                log.warning("heartbeat for job %s failed: %s", job_id, exc.message)

    async def _execute(self, item: dict[str, Any]) -> dict[str, Any]:
        """Run one work item; a job's own failure is an outcome, never an exception."""
        try:
            part = item["Partition"]["PartitionId"]
            if part != self.store.partition:
                raise SafeholdError(
                    f"this agent serves partition {self.store.partition}, not {part}"
                )
            kind = item["Kind"]
            params: dict[str, Any] = item["Params"]
            if kind == "backup":
                return await self._backup(params)
            if kind == "restore":
                return await self._restore(params)
            if kind == "dataloss":
                return await self._data_loss(params)
            if kind == "drill":  # restore drills and data-loss drills (state.drill)
                outcome = await run_store_drill(self.store, params, started_at=datetime.now(UTC))
                return {**outcome, **self._position()}
            raise SafeholdError(f"a StateStore agent does not run {kind} jobs")
        except SafeholdError as exc:
            return {"State": "Failure", "Error": {"Code": exc.code, "Message": exc.message}}
        except Exception:
            # Do not quote unexpected errors to the controller: they may hold anything.
            log.exception("job %s failed unexpectedly", item.get("JobId"))
            return {
                "State": "Failure",
                "Error": {
                    "Code": "FABRIC_E_BACKUPCOPIER_UNEXPECTED_ERROR",
                    "Message": "the store agent failed unexpectedly; see its log",
                },
            }

    def _position(self) -> dict[str, Any]:
        return {"Epoch": _epoch(self.store.epoch), "Lsn": self.store.lsn}

    async def _backup(self, params: dict[str, Any]) -> dict[str, Any]:
        option = (
            BackupOption.INCREMENTAL
            if params.get("backup_type") == "Incremental"
            else BackupOption.FULL
        )
        try:
            info = await self.store.backup(option)
        except MissingFullBackup as exc:
            log.info("partition %s: %s; taking a full backup", self.store.partition, exc.message)
            info = await self.store.backup(BackupOption.FULL)
        incremental = info.option is BackupOption.INCREMENTAL
        return {
            "State": "Success",
            "Snapshot": {
                "Id": info.snapshot.id,
                "Time": format_time(info.snapshot.time),
                "Size": info.size,
            },
            "Epoch": _epoch(info.epoch),
            "Lsn": info.lsn,
            "BackupType": "Incremental" if incremental else "Full",
            "ParentSnapshot": info.parent_id if incremental else None,
        }

    async def _restore(self, params: dict[str, Any]) -> dict[str, Any]:
        when = params.get("restore_time")
        if when:
            # RestorePointTime: the exact state at that instant, as the SDK restores it.
            result = await self.store.restore(
                time=parse_time(str(when)), policy=RestorePolicy.FORCE
            )
        else:
            result = await self.store.restore(
                backup_id=str(params["snapshot_id"]), policy=RestorePolicy.FORCE
            )
        return {
            "State": "Success",
            **self._position(),
            "RestoredLsn": result.lsn,
            "RestoredBackupId": result.backup_id,
        }

    async def _data_loss(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = _MODES.get(str(params.get("mode")))
        if mode is None:
            raise SafeholdError(f"unknown data-loss mode {params.get('mode')!r}")
        report = await self.store.induce_data_loss(mode)
        restored = report.restore
        if not report.hook_ran and params.get("auto_restore"):
            # The partition's policy has AutoRestoreOnDataLoss and the store has no hook.
            restored = await self.store.restore(policy=RestorePolicy.SAFE)
        result = {
            "Reason": report.reason,
            "HookRan": report.hook_ran,
            "StateChanged": report.state_changed or restored is not None,
            "RestoredBackupId": restored.backup_id if restored else None,
            "RestoredLsn": restored.lsn if restored else None,
        }
        return {"State": "Success", **self._position(), "Result": result}


def file_share_target(path: str | os.PathLike[str], password: str) -> LazyRepositoryTarget:
    """
    The backup target of a FileShare policy storage at *path*, opened at first use.

    The controller creates the repository before the first job that writes to it,
    which may come after the service starts; until then it lists no backups.
    """
    root = Path(path)
    return LazyRepositoryTarget(
        str(root),
        lambda: Repository.open(FileStorage(root), password),
        (root / "config").exists,
    )


@contextlib.asynccontextmanager
async def attach(
    path: str | os.PathLike[str],
    *,
    partition: str | PartitionRef,
    controller: str,
    token: str,
    agent_id: str,
    backup_path: str | os.PathLike[str],
    password: str,
    verify: bool | str = True,
    poll_interval: float = 1.0,
    heartbeat_interval: float = 5.0,
    **store_options: Any,
) -> AsyncIterator[StoreAgent]:
    """
    Open the store at *path* and serve it as its partition's agent; yield the agent.

    The store's backups go to *backup_path*, the FileShare path of the partition's
    backup policy (``file_share_target``); *store_options* go to ``StateStore.open``
    (``on_data_loss``, ``durability``, ...). On exit the agent stops, then the
    store closes, then the target's backup process stops. ``agent.store`` is the store.
    """
    target = file_share_target(backup_path, password)
    try:
        async with StateStore.open(
            path, partition=partition, target=target, **store_options
        ) as store:
            agent = StoreAgent(
                store,
                controller,
                token,
                agent_id=agent_id,
                verify=verify,
                poll_interval=poll_interval,
                heartbeat_interval=heartbeat_interval,
            )
            async with agent:
                yield agent
    finally:
        await asyncio.to_thread(target.close)  # its backup process, if one was started
