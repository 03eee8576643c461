"""
The service catalog: SQLAlchemy tables, the database engine and schema migrations.

The catalog is a SQLite file by default or a PostgreSQL database (psycopg 3).
Its schema is owned by the Alembic revisions in ``service/migrations/versions``;
``open_catalog`` upgrades an older schema at start-up and refuses a database it
does not recognise, so a catalog is never silently reset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from safehold.core.errors import SafeholdError, UsageError

__all__ = [
    "CatalogError",
    "CatalogUnavailable",
    "metadata",
    "open_catalog",
    "schema_revision",
    "upgrade_catalog",
]

MIGRATIONS = Path(__file__).parent / "migrations"


class CatalogError(SafeholdError):
    """The catalog database cannot be used as it is."""

    code = "SAFEHOLD_E_CATALOG"


class CatalogUnavailable(SafeholdError):
    """The catalog database did not answer (busy, restarting, unreachable): retry."""

    http_status = 503
    code = "FABRIC_E_NOT_READY"


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database, SQLite included."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        """Store UTC."""
        del dialect
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored in the catalog")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        """Read back a UTC-aware datetime."""
        del dialect
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
partitions = sa.Table(
    "partitions",
    metadata,
    sa.Column("partition_id", sa.String(36), primary_key=True),
    sa.Column("application", sa.String(512), nullable=False),
    sa.Column("service", sa.String(512), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("restore_to", sa.Text),
    sa.Column("agent", sa.String(128)),
    sa.Column("data_loss_number", sa.BigInteger, nullable=False),
    sa.Column("configuration_number", sa.BigInteger, nullable=False),
    sa.Column("lsn", sa.BigInteger, nullable=False),
    sa.Column("last_scheduled_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_due_at", UTCDateTime, index=True),
    sa.Column("schedule_key", sa.String(256)),
    sa.Column("reschedule", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("last_backup_at", UTCDateTime),
    sa.Column("last_backup_state", sa.String(32)),
    sa.Column("last_failure", sa.Text),
    sa.Column("partition_kind", sa.String(16), nullable=False, server_default="Singleton"),
    sa.Column("low_key", sa.BigInteger),
    sa.Column("high_key", sa.BigInteger),
    sa.Column("partition_name", sa.String(256)),
    sa.Column("hooks", sa.Text),
    sa.Column("strict_restore", sa.Boolean, nullable=False, server_default=sa.false()),
)
mappings = sa.Table(
    "mappings",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("policy_name", sa.String(128), sa.ForeignKey("policies.name"), nullable=False),
    sa.Column("enabled_at", UTCDateTime, nullable=False),
)
suspensions = sa.Table(
    "suspensions",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
)
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("partition_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("scheduled", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("deadline", UTCDateTime, nullable=False),
    sa.Column("agent_id", sa.String(128)),
    sa.Column("heartbeat_at", UTCDateTime),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("failure_code", sa.String(64)),
    sa.Column("failure_message", sa.Text),
    sa.Column("progress", sa.Text),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("incarnation", sa.String(64)),
)
backups = sa.Table(
    "backups",
    metadata,
    sa.Column("backup_id", sa.String(36), primary_key=True),
    sa.Column("snapshot_id", sa.String(64), nullable=False),
    sa.Column("partition_id", sa.String(36), nullable=False),
    sa.Column("application", sa.String(512), nullable=False),
    sa.Column("service", sa.String(512), nullable=False),
    sa.Column("backup_type", sa.String(16), nullable=False),
    sa.Column("chain_id", sa.String(36), nullable=False),
    sa.Column("parent_id", sa.String(36)),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("data_loss_number", sa.BigInteger, nullable=False),
    sa.Column("configuration_number", sa.BigInteger, nullable=False),
    sa.Column("lsn", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("storage", sa.Text, nullable=False),
    sa.Column("partition_info", sa.Text),
)
agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("incarnation", sa.String(64)),
)
operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("message", sa.Text),
    sa.Column("heartbeat_at", UTCDateTime),  # revision 0005
)


# Restore drills (service.drills; revision 0004).
drill_policies = sa.Table(
    "drill_policies",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
drill_mappings = sa.Table(
    "drill_mappings",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("policy_name", sa.String(128), sa.ForeignKey("drill_policies.name"), nullable=False),
    sa.Column("enabled_at", UTCDateTime, nullable=False),
)
drill_runs = sa.Table(
    "drill_runs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("partition_id", sa.String(36), nullable=False),
    sa.Column("policy_name", sa.String(128)),
    sa.Column("job_id", sa.String(36)),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("backup_id", sa.String(36), nullable=False),
    sa.Column("backup_time", UTCDateTime, nullable=False),
    sa.Column("rto_seconds", sa.Float),
    sa.Column("rpo_seconds", sa.Float),
    sa.Column("rto_objective", sa.Float),
    sa.Column("rpo_objective", sa.Float),
    sa.Column("agent_id", sa.String(128)),
    sa.Column("failure", sa.Text),
    sa.Column("result", sa.Text),
    sa.Index("ix_drill_runs_partition_created", "partition_id", "created_at"),
)
drill_state = sa.Table(
    "drill_state",
    metadata,
    sa.Column("partition_id", sa.String(36), primary_key=True),
    sa.Column("last_run_id", sa.String(36)),
    sa.Column("last_started_at", UTCDateTime),
    sa.Column("last_finished_at", UTCDateTime),
    sa.Column("last_state", sa.String(32)),
    sa.Column("last_failure", sa.Text),
    sa.Column("last_success_at", UTCDateTime),
    sa.Column("rto_seconds", sa.Float),
    sa.Column("rpo_seconds", sa.Float),
    sa.Column("objectives_met", sa.Boolean),
)
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("key", sa.String(600), primary_key=True),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    sa.Column("notified", sa.String(16)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
)


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def schema_revision(engine: sa.Engine) -> str | None:
    """Return the catalog's current schema revision (``None`` for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_catalog(engine: sa.Engine, revision: str = "head") -> None:
    """
    Bring the catalog's schema to *revision*.

    Raises:
        CatalogError: the database holds tables but no revision this program knows.
    """
    script = ScriptDirectory(str(MIGRATIONS))
    known = {r.revision for r in script.walk_revisions()}
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None:
            existing = set(sa.inspect(conn).get_table_names()) & set(metadata.tables)
            if existing:
                raise CatalogError(
                    "the catalog database has safehold tables but no schema revision; "
                    "refusing to touch it (restore it from a configuration backup instead)"
                )
        elif current not in known:
            raise CatalogError(
                f"the catalog schema revision {current!r} is newer than this program knows; "
                "upgrade safehold"
            )
        command.upgrade(_alembic_config(conn), revision)


def open_catalog(url: str) -> sa.Engine:
    """
    Open (and create or upgrade) the catalog at *url*.

    *url* is a SQLAlchemy URL, a ``postgresql://`` URL (driven by psycopg 3) or a
    plain file path for SQLite.
    """
    if "://" not in url:
        path = Path(url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    elif url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "begin", _sqlite_begin_immediate)
        else:
            # No pre-ping: it is a round trip on every unit of work (two a job). A
            # connection the server dropped fails the one unit of work that meets
            # it (CatalogUnavailable: 503, which agents and clients retry), and
            # SQLAlchemy then discards every pooled connection older than that.
            engine = sa.create_engine(url, pool_recycle=1800)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise UsageError(f"cannot use catalog URL: {exc}") from exc
    try:
        upgrade_catalog(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise CatalogError(f"cannot open the catalog: {exc.orig}") from exc
    return engine


#: The execution option of a connection whose transactions only read.
READ_ONLY = "safehold_read_only"


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    # Take the write lock when a transaction starts: a transaction that read and
    # then writes could otherwise fail at once with SQLITE_BUSY when another
    # connection committed in between (WAL snapshots cannot be upgraded). A
    # read-only one (a fleet-wide read) takes no lock, so writers never wait on it.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    del record
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
