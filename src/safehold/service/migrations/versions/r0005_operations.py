"""
Configuration operations report that they are alive.

- ``operations.heartbeat_at``: the controller running a configuration backup or
  restore writes it every few seconds. A replica that starts no longer fails
  the operations in progress (another replica may be running them); the
  leader fails those whose heartbeat stopped (``config_backup.sweep``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Add the heartbeat column."""
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("heartbeat_at")
