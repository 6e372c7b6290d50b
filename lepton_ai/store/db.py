"""Engines for the metadata store: SQLite by default, PostgreSQL by URL; schema kept at
the newest migration; transactions retried when another writer holds the lock."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, LeptonError, one_line

T = TypeVar("T")

_MIGRATIONS = Path(__file__).parent / "migrations"
# advisory lock id: one migrator at a time on a shared server
_PG_MIGRATION_LOCK = 0x1E7704
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Return `url` with PostgreSQL mapped to the psycopg 3 driver we ship."""
    try:
        u = make_url(url)
    except ArgumentError as e:
        raise InvalidInputError(f"LEPTON_DB_URL is not a database URL: {url!r}") from e
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """Return `url` with any password masked, for printing."""
    return make_url(url).render_as_string(hide_password=True)


# the execution option that marks a read-only transaction
READ_ONLY = "lepton_read_only"


def _sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # we emit BEGIN ourselves, below
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        # readers never block the writer
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock up front: a deferred transaction that reads then writes
        # fails with SQLITE_BUSY instead of waiting when another process wrote meanwhile.
        # A read (see `read`) needs no lock in WAL mode, and takes none: a dashboard reading
        # never holds up a training run logging its metrics.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def engine_for(url: str) -> Engine:
    """Return the (cached) engine for `url`, its schema upgraded to the newest migration."""
    url = normalize_url(url)
    with _lock:
        if url not in _engines:
            is_sqlite = make_url(url).get_backend_name() == "sqlite"
            try:
                engine = _sqlite_engine(url) if is_sqlite else create_engine(url, pool_pre_ping=True)
                upgrade(engine)
            except (ImportError, OperationalError) as e:
                raise InvalidInputError(
                    f"cannot open the registry at {safe_url(url)}: {str(e).splitlines()[0]}"
                ) from e
            _engines[url] = engine
        return _engines[url]


def dispose_all() -> None:
    """Close every cached engine (tests and forked workers call this)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """Return the newest migration's revision id."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema to `revision`, one process at a time; a no-op when already there."""
    if revision == "head" and current_revision(engine) == head_revision():
        return

    def migrate(session: Session) -> None:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    transact(engine, migrate)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the schema back to `revision` ("base" drops everything)."""

    def migrate(session: Session) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = session.connection()
        command.downgrade(cfg, revision)

    transact(engine, migrate)


# what the server or driver says when the connection went, or cannot be made yet (a restart)
_CONNECTION_LOST = (
    "connection refused",
    "connection failed",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the connection is closed",
    "connection is lost",
    "consuming input failed",
)


def _connection_lost(exc: DBAPIError) -> bool:
    """Return whether `exc` says the connection to the server went, or cannot be made."""
    text = str(exc.orig).lower()
    return exc.connection_invalidated or any(s in text for s in _CONNECTION_LOST)


def _retryable(exc: DBAPIError) -> bool:
    # two writers created the same row: the retry sees it
    if isinstance(exc, IntegrityError):
        return True
    # a lost connection took its transaction with it (the server rolls back what was not committed)
    if _connection_lost(exc):
        return True
    text = str(exc.orig).lower()
    locked = ("locked", "busy", "deadlock", "could not serialize")
    return isinstance(exc, OperationalError) and any(s in text for s in locked)


def reader(engine: Engine) -> Engine:
    """Return `engine` for transactions that only read (on SQLite: deferred, taking no write lock)."""
    return engine.execution_options(**{READ_ONLY: True})


def transact(engine: Engine, fn: Callable[[Session], T], attempts: int = 10) -> T:
    """Run `fn(session)` in one transaction and return its result, retrying lock conflicts and lost
    connections, but never a commit whose outcome is unknown."""
    for attempt in range(attempts):
        committing = False
        try:
            with Session(engine, expire_on_commit=False) as session:
                with session.begin():
                    result = fn(session)
                    session.flush()
                    # past here the commit may have landed even if it raises: no retry may repeat it
                    committing = True
                return result
        except DBAPIError as exc:
            if committing and _connection_lost(exc) and not _read_only(engine):
                raise LeptonError(
                    f"lost the connection to the registry database at {safe_url(str(engine.url))} while "
                    "committing: the change may or may not have been saved"
                ) from exc
            if attempt == attempts - 1 or not _retryable(exc):
                if _connection_lost(exc):
                    raise LeptonError(
                        f"cannot reach the registry database at {safe_url(str(engine.url))}: "
                        f"{one_line(exc.orig or exc)}"
                    ) from exc
                raise
            time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _read_only(engine: Engine) -> bool:
    """Return whether `engine` runs read-only transactions (see `reader`)."""
    return bool(engine.get_execution_options().get(READ_ONLY))


class Database:
    """One registry database as the store's tables use it: its URL, its engine, and transactions that
    write (taking the lock up front) or only read (taking none)."""

    def __init__(self, db_url: str | None = None) -> None:
        self.db_url = db_url or config.db_url()
        self.engine = engine_for(self.db_url)

    def _tx(self, fn: Callable[[Session], T]) -> T:
        return transact(self.engine, fn)

    def _read(self, fn: Callable[[Session], T]) -> T:
        return transact(reader(self.engine), fn)
