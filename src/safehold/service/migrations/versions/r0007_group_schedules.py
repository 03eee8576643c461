"""
Scheduled consistency groups (service.group_schedule): two indexed columns and two notes.

- ``consistency_groups.next_backup_at``: the group's next backup slot (None: no
  backup schedule), indexed so that a tick reads only the groups that are due;
- ``consistency_groups.next_drill_at``: the same for its drills;
- ``backup_note`` / ``drill_note``: why the scheduler last let a slot pass
  without a job (the group was busy, its storage could not be reached), or None.

The schedules themselves are in the group's document (``doc``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

_T = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the columns and their indexes."""
    with op.batch_alter_table("consistency_groups") as batch:
        batch.add_column(sa.Column("next_backup_at", _T))
        batch.add_column(sa.Column("next_drill_at", _T))
        batch.add_column(sa.Column("backup_note", sa.Text))
        batch.add_column(sa.Column("drill_note", sa.Text))
    op.create_index("ix_consistency_groups_next_backup", "consistency_groups", ["next_backup_at"])
    op.create_index("ix_consistency_groups_next_drill", "consistency_groups", ["next_drill_at"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_consistency_groups_next_drill", "consistency_groups")
    op.drop_index("ix_consistency_groups_next_backup", "consistency_groups")
    with op.batch_alter_table("consistency_groups") as batch:
        batch.drop_column("drill_note")
        batch.drop_column("backup_note")
        batch.drop_column("next_drill_at")
        batch.drop_column("next_backup_at")
