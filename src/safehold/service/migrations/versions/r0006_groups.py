"""
Consistency groups (service.groups): new tables only.

- ``consistency_groups``: a group's name and its document (member order,
  cross-reference validators);
- ``consistency_group_members``: one row per member partition; the partition id
  is the key, so a partition belongs to one group at most;
- ``consistency_group_points``: each point a group backup stored, with every
  member's snapshot and the storage (secrets sealed) that holds them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

_T = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the group tables."""
    op.create_table(
        "consistency_groups",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_table(
        "consistency_group_members",
        sa.Column("partition_id", sa.String(36), primary_key=True),
        sa.Column(
            "group_name", sa.String(128), sa.ForeignKey("consistency_groups.name"), nullable=False
        ),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_consistency_group_members_group", "consistency_group_members", ["group_name"]
    )
    op.create_table(
        "consistency_group_points",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("time", _T, nullable=False),
        sa.Column("restore_point", sa.String(256), nullable=False),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("members", sa.Text, nullable=False),
        sa.Column("storage", sa.Text, nullable=False),
        sa.Column("job_id", sa.String(36)),
    )
    op.create_index(
        "ix_consistency_group_points_group_time", "consistency_group_points", ["group_name", "time"]
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_consistency_group_points_group_time", "consistency_group_points")
    op.drop_table("consistency_group_points")
    op.drop_index("ix_consistency_group_members_group", "consistency_group_members")
    op.drop_table("consistency_group_members")
    op.drop_table("consistency_groups")
