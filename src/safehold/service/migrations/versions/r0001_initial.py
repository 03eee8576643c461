"""The first catalog schema: policies, partitions, mappings, suspensions, jobs, backups."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "partitions",
        sa.Column("partition_id", sa.String(36), primary_key=True),
        sa.Column("application", sa.String(512), nullable=False, index=True),
        sa.Column("service", sa.String(512), nullable=False, index=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("restore_to", sa.Text),
        sa.Column("agent", sa.String(128)),
        sa.Column("data_loss_number", sa.BigInteger, nullable=False),
        sa.Column("configuration_number", sa.BigInteger, nullable=False),
        sa.Column("lsn", sa.BigInteger, nullable=False),
        sa.Column("last_scheduled_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mappings",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("policy_name", sa.String(128), sa.ForeignKey("policies.name"), nullable=False),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "suspensions",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("partition_id", sa.String(36), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("scheduled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("failure_code", sa.String(64)),
        sa.Column("failure_message", sa.Text),
        sa.Column("progress", sa.Text),
    )
    op.create_table(
        "backups",
        sa.Column("backup_id", sa.String(36), primary_key=True),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("partition_id", sa.String(36), nullable=False, index=True),
        sa.Column("application", sa.String(512), nullable=False),
        sa.Column("service", sa.String(512), nullable=False),
        sa.Column("backup_type", sa.String(16), nullable=False),
        sa.Column("chain_id", sa.String(36), nullable=False),
        sa.Column("parent_id", sa.String(36)),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("data_loss_number", sa.BigInteger, nullable=False),
        sa.Column("configuration_number", sa.BigInteger, nullable=False),
        sa.Column("lsn", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("storage", sa.Text, nullable=False),
    )
