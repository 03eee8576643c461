"""Catalog schema migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from safehold.service.catalog import (
    MIGRATIONS,
    CatalogError,
    open_catalog,
    schema_revision,
    upgrade_catalog,
)


def _engine(url: str) -> sa.Engine:
    if "://" not in url:
        return sa.create_engine(f"sqlite:///{url}")
    return sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])


def test_an_older_schema_is_upgraded_and_keeps_its_data(catalog_url: str) -> None:
    """A catalog at revision 0001 with data is brought to head; the data stays."""
    old = _engine(catalog_url)
    upgrade_catalog(old, "0001")
    assert schema_revision(old) == "0001"
    with old.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO policies (name, doc, created_at) VALUES ('kept', '{}', :t)"),
            {"t": datetime(2026, 1, 1, tzinfo=UTC)},
        )
        assert "agents" not in sa.inspect(conn).get_table_names()
    old.dispose()
    db = open_catalog(catalog_url)
    try:
        assert schema_revision(db) == ScriptDirectory(str(MIGRATIONS)).get_current_head()
        with db.connect() as conn:
            assert list(conn.execute(sa.text("SELECT name FROM policies")).scalars()) == ["kept"]
            assert "agents" in sa.inspect(conn).get_table_names()
    finally:
        db.dispose()


def test_open_twice_is_idempotent(catalog_url: str) -> None:
    """Opening a current catalog changes nothing."""
    open_catalog(catalog_url).dispose()
    db = open_catalog(catalog_url)
    assert schema_revision(db) == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    db.dispose()


def test_unknown_databases_are_refused_not_reset(catalog_url: str) -> None:
    """Tables without a revision, or a revision from the future, stop start-up."""
    raw = _engine(catalog_url)
    with raw.begin() as conn:
        conn.execute(sa.text("CREATE TABLE policies (name VARCHAR(10))"))
        conn.execute(sa.text("INSERT INTO policies VALUES ('x')"))
    with pytest.raises(CatalogError, match="no schema revision"):
        upgrade_catalog(raw)
    with raw.begin() as conn:
        conn.execute(sa.text("DROP TABLE policies"))
    upgrade_catalog(raw)
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(CatalogError, match="newer"):
        upgrade_catalog(raw)
    raw.dispose()


def test_connections_the_server_dropped_cost_one_unit_of_work_then_the_pool_recovers(
    pg_database: str,
) -> None:
    """
    PostgreSQL restarted (every backend terminated): the catalog pings no
    connection before use, so the first unit of work that meets a dead one fails
    with CatalogUnavailable (503, which callers retry); the next ones work.
    """
    import psycopg

    from safehold.service.catalog import CatalogUnavailable
    from safehold.service.uow import SqlUnitOfWork
    from tests.service.catalogs import PG_ADMIN, reset_pg

    reset_pg(pg_database)
    db = open_catalog(pg_database)
    try:
        # Several pooled connections, as a busy controller has.
        units = [SqlUnitOfWork(db).__enter__() for _ in range(3)]
        for u in units:
            assert u.policies.list() == []
        for u in units:
            u.__exit__(None, None, None)
        name = pg_database.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 1
        failures = 0
        for _ in range(4):
            try:
                with SqlUnitOfWork(db) as uow:
                    assert uow.policies.list() == []
            except CatalogUnavailable:
                failures += 1
        assert failures <= 1
        with SqlUnitOfWork(db) as uow:  # and it works from then on
            assert uow.policies.list() == []
    finally:
        db.dispose()


def test_newest_backups_of_partitions_are_a_bounded_window_oldest_first(catalog_url: str) -> None:
    """What a tick reads to continue a chain: each partition's newest few, not its history."""
    from datetime import timedelta

    from safehold.core.snapshot import Epoch
    from safehold.service.model import BackupRecord
    from safehold.service.uow import SqlUnitOfWork

    db = open_catalog(catalog_url)
    t0 = datetime(2026, 12, 2, tzinfo=UTC)

    def backup(pid: str, i: int) -> BackupRecord:
        return BackupRecord(
            backup_id=f"{pid}-{i:02d}",
            snapshot_id=f"{pid}{i:02d}" * 4,
            partition_id=pid,
            application="fabric:/A",
            service="fabric:/A/S",
            backup_type="Full",
            chain_id=f"{pid}-{i:02d}",
            parent_id=None,
            location="x",
            epoch=Epoch(0, 0),
            lsn=i,
            created_at=t0 + timedelta(minutes=i),
            size_bytes=1,
            storage={},
        )

    try:
        with SqlUnitOfWork(db) as uow:
            for i in range(7):
                uow.backups.add(backup("a", i))
            for i in range(2):
                uow.backups.add(backup("b", i))
            uow.commit()
        with SqlUnitOfWork(db) as uow:
            got = uow.backups.newest_of_partitions(["a", "b", "c"], 3)
        assert [b.backup_id for b in got["a"]] == ["a-04", "a-05", "a-06"]
        assert [b.backup_id for b in got["b"]] == ["b-00", "b-01"]
        assert got["c"] == []
    finally:
        db.dispose()
