"""
Restore drills and alerts: new tables only.

- ``drill_policies`` / ``drill_mappings``: drill policies and where they are
  attached (applications, services, partitions), inherited as backup policies are;
- ``drill_runs``: every drill, with the backup it restored, measured RTO, achieved
  RPO, the objectives, the agent, and each validator's result (``result``, JSON);
- ``drill_state``: one row per partition with its newest drill's outcome, so
  health and metrics read drills in one query;
- ``alerts``: one row per condition (deduplicated), firing or resolved, with
  what was last delivered and when delivery is tried again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

_T = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the drill and alert tables."""
    op.create_table(
        "drill_policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_table(
        "drill_mappings",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column(
            "policy_name", sa.String(128), sa.ForeignKey("drill_policies.name"), nullable=False
        ),
        sa.Column("enabled_at", _T, nullable=False),
    )
    op.create_table(
        "drill_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("partition_id", sa.String(36), nullable=False),
        sa.Column("policy_name", sa.String(128)),
        sa.Column("job_id", sa.String(36)),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("finished_at", _T),
        sa.Column("backup_id", sa.String(36), nullable=False),
        sa.Column("backup_time", _T, nullable=False),
        sa.Column("rto_seconds", sa.Float),
        sa.Column("rpo_seconds", sa.Float),
        sa.Column("rto_objective", sa.Float),
        sa.Column("rpo_objective", sa.Float),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("failure", sa.Text),
        sa.Column("result", sa.Text),
    )
    op.create_index("ix_drill_runs_partition_created", "drill_runs", ["partition_id", "created_at"])
    op.create_table(
        "drill_state",
        sa.Column("partition_id", sa.String(36), primary_key=True),
        sa.Column("last_run_id", sa.String(36)),
        sa.Column("last_started_at", _T),
        sa.Column("last_finished_at", _T),
        sa.Column("last_state", sa.String(32)),
        sa.Column("last_failure", sa.Text),
        sa.Column("last_success_at", _T),
        sa.Column("rto_seconds", sa.Float),
        sa.Column("rpo_seconds", sa.Float),
        sa.Column("objectives_met", sa.Boolean),
    )
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("started_at", _T, nullable=False),
        sa.Column("changed_at", _T, nullable=False),
        sa.Column("notified", sa.String(16)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_try_at", _T),
        sa.Column("last_error", sa.Text),
    )
