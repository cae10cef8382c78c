"""Engines, sessions and schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite files get WAL, foreign keys and a busy timeout.

    WAL lets many reader processes (the API workers) run beside one writer;
    the busy timeout makes a writer wait for another instead of failing at once.
    """
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; take control of it so
            # that write transactions can start with BEGIN IMMEDIATE (see `write_session`).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction takes the write lock up front on SQLite.

    SQLite upgrades a deferred read transaction to a write one only if nothing was
    written since it began; otherwise it fails with "database is locked". Starting
    with ``BEGIN IMMEDIATE`` serialises writers instead, which is what the
    read-check-write transactions (budgets, frequency caps, idempotency) need.
    PostgreSQL takes row locks (``SELECT … FOR UPDATE``) in those transactions.
    """
    with _writers_queue(factory), factory() as session:
        session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        yield session


@contextmanager
def _writers_queue(factory: sessionmaker[Session]) -> Iterator[None]:
    """On a SQLite file, wait for the writer's turn on an OS lock beside the database.

    A writer that finds SQLite's lock taken sleeps in SQLite's busy handler for 1,
    2, 5 … up to 100 ms between tries, so under steady concurrent writes (every
    served match records an engagement) some wait far longer than the writes
    take. Queued on ``flock`` instead, the next writer wakes as soon as the lock
    is released, in any process or thread.
    """
    engine = factory.kw.get("bind")
    database = engine.url.database if isinstance(engine, Engine) else None
    if engine is None or engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}-writer.lock", "ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent)."""
    command.upgrade(alembic_config(url), "head")
