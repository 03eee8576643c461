"""
The shipped Prometheus rules and Grafana dashboard: valid, and about metrics safehold exports.

``promtool`` comes from Debian's ``prometheus`` package (scripts/test-deps.sh).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from safehold.api.metrics import CatalogCollector
from safehold.bootstrap import open_policy_storage
from safehold.service.context import ServiceContext
from safehold.service.drill_records import DrillState
from safehold.service.health import FleetView
from safehold.service.secrets import SecretBox
from safehold.testing import FakeCatalog, FakeEngine, FakeUnitOfWork
from tests.service.helpers import P1, add_partition

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "safehold-rules.yml"
RULE_TESTS = Path(__file__).with_name("safehold-rules.test.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "safehold.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: install Debian's prometheus (scripts/test-deps.sh)"
)


@needs_promtool
def test_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


def exported_names(tmp_path: Path) -> set[str]:
    """The metric names safehold's collector writes, with a backup and a drill recorded."""
    catalog = FakeCatalog()
    ctx = ServiceContext(
        uow=lambda: FakeUnitOfWork(catalog),
        secrets=SecretBox(base64.urlsafe_b64encode(b"k" * 32)),
        open_storage=open_policy_storage,
        engine=FakeEngine(),
    )
    add_partition(ctx, P1, tmp_path / "p1")
    now = datetime.now(UTC)
    catalog.partitions[P1].last_backup_at = now
    catalog.drill_tables.states[P1] = DrillState(
        P1, "d", now, now, "Success", None, now, rto_seconds=1.0, rpo_seconds=2.0
    )
    registry = CollectorRegistry()
    registry.register(CatalogCollector(ctx, FleetView()))
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\bsafehold_[a-z_]+", expr))


def test_dashboard_and_rules_use_exported_metrics(tmp_path: Path) -> None:
    names = exported_names(tmp_path)
    assert "safehold_drill_rto_seconds" in names
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    rules = RULES.read_text()
    used = set().union(*(referenced(e) for e in exprs)) | referenced(rules)
    assert used - names == set()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
