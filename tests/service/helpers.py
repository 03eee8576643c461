"""Small builders shared by the service and API tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safehold.agent.runner import Agent
from safehold.service.context import ServiceContext
from safehold.service.local_link import LocalLink
from safehold.service.partitions import PartitionCreate, register_partition

P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"
P3 = "33333333-3333-3333-3333-333333333333"


def policy_doc(name: str, store: Path, **overrides: Any) -> dict[str, Any]:
    """A valid BackupPolicyDescription with a FileShare storage at *store*."""
    doc: dict[str, Any] = {
        "Name": name,
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 3,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT10M"},
        "Storage": {
            "StorageKind": "FileShare",
            "Path": str(store),
            "PrimaryUserName": "backup",
            "PrimaryPassword": "pw-very-secret",
        },
        "RetentionPolicy": {
            "RetentionPolicyType": "Basic",
            "RetentionDuration": "P1D",
            "MinimumNumberOfBackups": 2,
        },
    }
    doc.update(overrides)
    return doc


def add_partition(
    ctx: ServiceContext, pid: str, src: Path, *, app: str = "fabric:/Shop", svc: str = "Orders"
) -> None:
    """Register partition *pid* with a dir source at *src* (created with a file)."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "data.txt").write_text(f"data of {pid}")
    register_partition(ctx, PartitionCreate(app, f"{app}/{svc}", pid, f"dir:{src}"))


def run_agent_once(ctx: ServiceContext, agent_id: str = "embedded") -> bool:
    """Let an in-process agent claim and run one job; return whether there was one."""
    agent = Agent(
        LocalLink(ctx, agent_id), engine=ctx.engine, open_storage=ctx.open_storage, clock=ctx.clock
    )
    return agent.run_once()
