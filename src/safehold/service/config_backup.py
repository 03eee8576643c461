"""
Backing up and restoring the service's own configuration, API Management style.

The configuration is the policies (with their secrets), the partition
registrations, the mappings and the suspensions; job history and the backup
catalog are not part of it (the catalog can be rebuilt from storage with
``GetBackups``). It is stored as one named stream snapshot in a storage, so
it is encrypted with the repository password like every backup.

Both operations are long-running: ``start_*`` records an operation and returns
its id at once; the work runs on a thread; ``operation_status`` reports
``InProgress``, ``Succeeded`` or ``Failed``. The running controller writes the
operation's heartbeat every few seconds; if it dies, the leader's ``sweep``
fails the operation a minute later. A restart of any replica fails nothing.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import uuid
from datetime import timedelta
from typing import Any

from safehold.core.errors import SafeholdError
from safehold.core.policy import EntityRef, PolicyError, parse_policy, parse_storage
from safehold.core.progress import NullProgress
from safehold.core.snapshot import Epoch, SnapshotMeta, format_time
from safehold.service.context import ServiceContext
from safehold.service.errors import BackupNotFound, EntityNotFound
from safehold.service.model import Hooks, PartitionRecord
from safehold.service.policies import load_policy

log = logging.getLogger("safehold.config")

#: A running configuration operation writes its heartbeat this often (seconds).
OP_BEAT = 5.0
#: An operation not heard of for this long lost its controller and is failed.
OP_TIMEOUT = timedelta(seconds=60)

__all__ = ["operation_status", "start_config_backup", "start_config_restore", "sweep"]

CONFIG_TAG = "safehold-config"
FORMAT = "safehold-config"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _parse_request(body: object) -> tuple[Any, str]:
    if not isinstance(body, dict):
        raise PolicyError("the body must be an object with Storage and BackupName")
    name = body.get("BackupName")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PolicyError("BackupName is required: 1 to 100 letters, digits, '.', '_' or '-'")
    return parse_storage(body.get("Storage"), "Storage"), name


def export_config(ctx: ServiceContext) -> dict[str, Any]:
    """Return the configuration as a JSON document (secrets in clear: store it encrypted)."""
    with ctx.uow() as uow:
        names = [d["Name"] for d in uow.policies.list()]
        policies = [load_policy(ctx, uow, n).to_json(redact=False) for n in names]
        partitions = [
            {
                "PartitionId": p.partition_id,
                "ApplicationName": p.application,
                "ServiceName": p.service,
                "Source": p.source,
                "RestoreTo": p.restore_to,
                "Agent": p.agent,
                "Epoch": [p.epoch.data_loss_number, p.epoch.configuration_number],
                "Lsn": p.lsn,
                "Hooks": p.hooks.to_json() if p.hooks else None,
            }
            for p in uow.partitions.list()
        ]
        mappings = [
            {"Kind": e.kind, "Key": e.key, "Policy": n} for e, n in uow.mappings.all().items()
        ]
        suspended = [{"Kind": e.kind, "Key": e.key} for e in uow.mappings.suspensions()]
    return {
        "Format": FORMAT,
        "Version": 1,
        "Created": format_time(ctx.clock()),
        "Policies": policies,
        "Partitions": partitions,
        "Mappings": mappings,
        "Suspensions": suspended,
    }


def _hooks(doc: dict[str, Any] | None) -> Hooks | None:
    """A registration's hooks from a configuration backup (none in older backups)."""
    if not doc:
        return None
    return Hooks(doc.get("Before"), doc.get("After"), float(doc.get("TimeoutSeconds", 300)))


def import_config(ctx: ServiceContext, doc: dict[str, Any]) -> None:
    """Replace policies, registrations, mappings and suspensions with those of *doc*."""
    if doc.get("Format") != FORMAT or doc.get("Version") != 1:
        raise PolicyError("the blob is not a safehold configuration backup of version 1")
    policies = [parse_policy(p) for p in doc["Policies"]]
    with ctx.uow() as uow:
        now = ctx.clock()
        for entity in list(uow.mappings.all()):
            uow.mappings.remove(entity)
        for entity in uow.mappings.suspensions():
            uow.mappings.resume(entity)
        for old in uow.policies.list():
            uow.policies.delete(old["Name"])
        for policy in policies:
            sealed = policy.to_json(redact=False)
            sealed["Storage"] = ctx.secrets.seal_storage(sealed["Storage"])
            uow.policies.add(policy.name, sealed, now)
        for p in doc["Partitions"]:
            old_p = uow.partitions.get(p["PartitionId"])
            uow.partitions.save(
                PartitionRecord(
                    partition_id=p["PartitionId"],
                    application=p["ApplicationName"],
                    service=p["ServiceName"],
                    source=p["Source"],
                    restore_to=p.get("RestoreTo"),
                    agent=p.get("Agent"),
                    epoch=Epoch(*p["Epoch"]),
                    lsn=int(p["Lsn"]),
                    last_scheduled_at=old_p.last_scheduled_at if old_p else None,
                    created_at=old_p.created_at if old_p else now,
                    hooks=_hooks(p.get("Hooks")),
                )
            )
        for m in doc["Mappings"]:
            uow.mappings.assign(EntityRef(m["Kind"], m["Key"]), m["Policy"], now)
        for s in doc["Suspensions"]:
            uow.mappings.suspend(EntityRef(s["Kind"], s["Key"]))
        uow.commit()


def _run(ctx: ServiceContext, op_id: str, kind: str, storage: Any, name: str) -> None:
    try:
        store = ctx.open_storage(storage)
        try:
            if kind == "backup":
                data = json.dumps(export_config(ctx)).encode()
                ctx.engine.ensure_repository(store)
                ctx.engine.backup_stream(
                    store,
                    io.BytesIO(data),
                    name=name,
                    meta=SnapshotMeta(
                        host="safehold-controller", tags=(CONFIG_TAG,), time=ctx.clock()
                    ),
                    progress=NullProgress(),
                )
            else:
                found = [
                    s
                    for s in ctx.engine.snapshots(store)
                    if CONFIG_TAG in s.tags and s.source_name == name
                ]
                if not found:
                    raise BackupNotFound(f"no configuration backup named {name!r} in the storage")
                out = io.BytesIO()
                ctx.engine.dump(store, found[-1].id, out)
                import_config(ctx, json.loads(out.getvalue()))
        finally:
            store.close()
        _finish(ctx, op_id, "Succeeded", None)
    except (SafeholdError, ValueError, KeyError, TypeError) as exc:
        message = (
            exc.message if isinstance(exc, SafeholdError) else f"malformed configuration: {exc}"
        )
        _finish(ctx, op_id, "Failed", message)


def _finish(ctx: ServiceContext, op_id: str, state: str, message: str | None) -> None:
    with ctx.uow() as uow:
        uow.operations.save(op_id, state=state, finished_at=ctx.clock(), message=message)
        uow.commit()


def _start(ctx: ServiceContext, kind: str, body: object, *, wait: bool) -> str:
    storage, name = _parse_request(body)
    op_id = str(uuid.uuid4())
    with ctx.uow() as uow:
        now = ctx.clock()
        uow.operations.save(
            op_id, kind=kind, state="InProgress", created_at=now, heartbeat_at=now, message=None
        )
        uow.commit()
    worker = threading.Thread(
        target=_run_alive,
        args=(ctx, op_id, kind, storage, name),
        name=f"config-{kind}",
        daemon=True,
    )
    worker.start()
    if wait:
        worker.join()
    return op_id


def _run_alive(ctx: ServiceContext, op_id: str, kind: str, storage: Any, name: str) -> None:
    """``_run``, writing the operation's heartbeat every ``OP_BEAT`` seconds meanwhile."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(OP_BEAT):
            try:
                with ctx.uow() as uow:
                    uow.operations.save(op_id, heartbeat_at=ctx.clock())
                    uow.commit()
            except SafeholdError as exc:  # the catalog is away: the next beat may do
                log.warning("operation %s: heartbeat failed: %s", op_id, exc.message)

    beater = threading.Thread(target=beat, name=f"config-{kind}-beat", daemon=True)
    beater.start()
    try:
        _run(ctx, op_id, kind, storage, name)
    finally:
        done.set()
        beater.join()


def start_config_backup(ctx: ServiceContext, body: object, *, wait: bool = False) -> str:
    """Start backing up the configuration as ``BackupName``; return the operation id."""
    return _start(ctx, "backup", body, wait=wait)


def start_config_restore(ctx: ServiceContext, body: object, *, wait: bool = False) -> str:
    """Start restoring the newest configuration named ``BackupName``; return the operation id."""
    return _start(ctx, "restore", body, wait=wait)


def operation_status(ctx: ServiceContext, op_id: str) -> dict[str, Any]:
    """Return an operation's state: InProgress, Succeeded or Failed (with the error)."""
    with ctx.uow() as uow:
        op = uow.operations.get(op_id)
    if op is None:
        raise EntityNotFound(f"no operation {op_id}", "FABRIC_E_DOES_NOT_EXIST")
    doc: dict[str, Any] = {
        "Id": op_id,
        "Kind": op["kind"],
        "Status": op["state"],
        "StartTimeUtc": format_time(op["created_at"]),
        "EndTimeUtc": format_time(op["finished_at"]) if op["finished_at"] else None,
    }
    if op["state"] == "Failed":
        doc["Error"] = {"Code": "SAFEHOLD_E_CONFIG_OPERATION", "Message": op["message"]}
    return doc


def sweep(ctx: ServiceContext) -> int:
    """
    Fail the operations whose controller stopped (no heartbeat for ``OP_TIMEOUT``).

    Run by the leader. A replica that starts fails nothing: the operations in
    progress may be another replica's, still running.
    """
    with ctx.uow() as uow:
        now = ctx.clock()
        n = uow.operations.fail_stale(
            now, now - OP_TIMEOUT, "the controller running the operation stopped"
        )
        uow.commit()
    return n
