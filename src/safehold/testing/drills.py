"""In-memory drill and alert stores for ``FakeUnitOfWork`` (contracts: ``service.uow``)."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.core.policy import EntityRef
from safehold.service.drill_records import AlertRecord, DrillRun, DrillState
from safehold.service.sql_drills import ACTIVE_DRILL_STATES

__all__ = ["FakeAlerts", "FakeDrillTables", "FakeDrills"]


@dataclass
class FakeDrillTables:
    """The drill and alert tables, as dictionaries."""

    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    mappings: dict[EntityRef, tuple[str, datetime]] = field(default_factory=dict)
    runs: dict[str, DrillRun] = field(default_factory=dict)
    states: dict[str, DrillState] = field(default_factory=dict)
    alerts: dict[str, AlertRecord] = field(default_factory=dict)


class FakeDrills:
    """``DrillStore`` in memory."""

    def __init__(self, t: FakeDrillTables) -> None:
        self.t = t

    def get_policy(self, name: str) -> dict[str, Any] | None:
        doc = self.t.policies.get(name)
        return copy.deepcopy(doc) if doc is not None else None

    def list_policies(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.t.policies[n]) for n in sorted(self.t.policies)]

    def add_policy(self, name: str, doc: dict[str, Any], now: datetime) -> None:
        del now
        self.t.policies[name] = copy.deepcopy(doc)

    def update_policy(self, name: str, doc: dict[str, Any]) -> None:
        if name in self.t.policies:
            self.t.policies[name] = copy.deepcopy(doc)

    def delete_policy(self, name: str) -> None:
        self.t.policies.pop(name, None)

    def mappings(self) -> dict[EntityRef, tuple[str, datetime]]:
        return dict(self.t.mappings)

    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None:
        self.t.mappings[entity] = (policy, now)

    def unassign(self, entity: EntityRef) -> bool:
        return self.t.mappings.pop(entity, None) is not None

    def of_policy(self, policy: str) -> list[EntityRef]:
        return [e for e, (name, _) in self.t.mappings.items() if name == policy]

    def add_run(self, run: DrillRun) -> None:
        self.t.runs[run.id] = copy.deepcopy(run)

    def save_run(self, run: DrillRun) -> None:
        if run.id in self.t.runs:
            self.t.runs[run.id] = copy.deepcopy(run)

    def get_run(self, drill_id: str) -> DrillRun | None:
        run = self.t.runs.get(drill_id)
        return copy.deepcopy(run) if run is not None else None

    def runs(self, partition_id: str | None = None, limit: int = 100) -> builtins.list[DrillRun]:
        mine = [r for r in self.t.runs.values() if partition_id in (None, r.partition_id)]
        mine.sort(key=lambda r: (-r.created_at.timestamp(), r.id))
        return copy.deepcopy(mine[:limit])

    def active_runs(self) -> builtins.list[DrillRun]:
        return [copy.deepcopy(r) for r in self.t.runs.values() if r.state in ACTIVE_DRILL_STATES]

    def states(self) -> dict[str, DrillState]:
        return copy.deepcopy(self.t.states)

    def state(self, partition_id: str) -> DrillState | None:
        st = self.t.states.get(partition_id)
        return copy.deepcopy(st) if st is not None else None

    def save_state(self, st: DrillState) -> None:
        self.t.states[st.partition_id] = copy.deepcopy(st)

    def forget_partitions(self, partition_ids: Sequence[str]) -> None:
        for pid in partition_ids:
            self.t.states.pop(pid, None)


class FakeAlerts:
    """``AlertStore`` in memory."""

    def __init__(self, t: FakeDrillTables) -> None:
        self.t = t

    def all(self) -> list[AlertRecord]:
        return [copy.deepcopy(self.t.alerts[k]) for k in sorted(self.t.alerts)]

    def get(self, key: str) -> AlertRecord | None:
        a = self.t.alerts.get(key)
        return copy.deepcopy(a) if a is not None else None

    def save(self, alert: AlertRecord) -> None:
        self.t.alerts[alert.key] = copy.deepcopy(alert)
