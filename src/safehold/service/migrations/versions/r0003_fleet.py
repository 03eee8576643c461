"""
Fleet scale: schedules kept per partition, fenced job attempts, agent incarnations.

- ``partitions.next_due_at`` (indexed) is when the partition's next periodic backup
  is due, so a tick reads only what is due; ``schedule_key`` names the policy and
  schedule it was computed from, and ``reschedule`` marks a partition whose
  protection changed and must be looked at again.
- ``partitions.last_backup_at`` / ``last_backup_state`` / ``last_failure`` keep the
  outcome of the newest backup job, so health reads one row per partition.
- ``partitions.partition_kind`` / ``low_key`` / ``high_key`` / ``partition_name``
  are SF's partition information (Singleton, Int64Range, Named), and ``hooks``
  the commands run before and after a backup of the partition.
- ``jobs.attempt`` is the fencing token of a job: it grows at each claim, and every
  later change is conditional on it. ``jobs.incarnation`` is the agent run that
  holds the job; ``agents.incarnation`` is the agent's current run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

_ACTIVE = "state IN ('Accepted', 'BackupInProgress', 'RestoreInProgress', 'InProgress')"
_RUNNING = "state IN ('BackupInProgress', 'RestoreInProgress', 'InProgress')"


def upgrade() -> None:
    """Add the columns and the indexes the fleet paths read by."""
    with op.batch_alter_table("partitions") as b:
        b.add_column(sa.Column("next_due_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("schedule_key", sa.String(256)))
        b.add_column(sa.Column("reschedule", sa.Boolean, nullable=False, server_default=sa.true()))
        b.add_column(sa.Column("last_backup_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("last_backup_state", sa.String(32)))
        b.add_column(sa.Column("last_failure", sa.Text))
        b.add_column(
            sa.Column("partition_kind", sa.String(16), nullable=False, server_default="Singleton")
        )
        b.add_column(sa.Column("low_key", sa.BigInteger))
        b.add_column(sa.Column("high_key", sa.BigInteger))
        b.add_column(sa.Column("partition_name", sa.String(256)))
        b.add_column(sa.Column("hooks", sa.Text))
        b.add_column(
            sa.Column("strict_restore", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("backups") as b:
        b.add_column(sa.Column("partition_info", sa.Text))
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="0"))
        b.add_column(sa.Column("incarnation", sa.String(64)))
    with op.batch_alter_table("agents") as b:
        b.add_column(sa.Column("incarnation", sa.String(64)))
    op.create_index("ix_partitions_next_due_at", "partitions", ["next_due_at"])
    op.create_index(
        "ix_partitions_reschedule",
        "partitions",
        ["reschedule"],
        postgresql_where=sa.text("reschedule"),
        sqlite_where=sa.text("reschedule"),
    )
    op.create_index("ix_jobs_partition_created", "jobs", ["partition_id", "created_at"])
    op.create_index(
        "ix_jobs_active",
        "jobs",
        ["state", "created_at"],
        postgresql_where=sa.text(_ACTIVE),
        sqlite_where=sa.text(_ACTIVE),
    )
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    # Claims: the oldest accepted job first, through an index in that order, and
    # "is this partition busy" through an index on the running jobs alone.
    op.create_index(
        "ix_jobs_accepted",
        "jobs",
        ["created_at", "id"],
        postgresql_where=sa.text("state = 'Accepted'"),
        sqlite_where=sa.text("state = 'Accepted'"),
    )
    op.create_index(
        "ix_jobs_running_partition",
        "jobs",
        ["partition_id"],
        postgresql_where=sa.text(_RUNNING),
        sqlite_where=sa.text(_RUNNING),
    )
    op.create_index("ix_backups_partition_created", "backups", ["partition_id", "created_at"])
    # Fill the per-partition outcome columns from what the catalog already holds.
    op.execute(
        "UPDATE partitions SET last_backup_at = ("
        " SELECT max(created_at) FROM backups WHERE backups.partition_id = partitions.partition_id)"
    )
