"""The record store: cases, their timeline, every message sent, assignments and reports.

SQLAlchemy 2 with asyncio drivers: aiosqlite for the embedded default, asyncpg for
PostgreSQL. Every row an activity writes carries a unique key derived from the workflow id,
run id and step, so a retried activity finds its earlier write instead of repeating it.

The busiest writers (the case's activities, the relay, the data keys) hand a whole
transaction to `Records.run`: on SQLite it runs on one database thread of the process with
the standard sqlite3 driver, one thread hop per transaction where aiosqlite takes about four
per statement (0.5 ms of CPU a statement against 0.1 ms, README: Benchmark).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workflows.models import TimelineEntry

DEFAULT_SQLITE = "sqlite:///data/escalations.db"
T = TypeVar("T")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns timezone-aware UTC on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def table_of(entity: type[Base]) -> Table:
    """An entity's table, for Core statements: no unit of work, no identity map, and a batch
    of rows is one statement whatever columns some of them leave empty."""
    return cast(Table, entity.__table__)


class CaseRow(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_department_tier", "department", "tier"),
        Index("ix_cases_assignee_closed", "assignee", "closed_at"),  # a person's open load
    )

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer, default=0)
    customer_id: Mapped[str] = mapped_column(String(100), index=True)
    customer_name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300))
    category: Mapped[str] = mapped_column(String(50))
    channel: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(10))
    reported_severity: Mapped[str] = mapped_column(String(10))
    stage: Mapped[str] = mapped_column(String(12), index=True)
    tier: Mapped[int | None] = mapped_column(Integer)
    department: Mapped[str | None] = mapped_column(String(50))
    assignee: Mapped[str | None] = mapped_column(String(100))
    sla_breached: Mapped[bool] = mapped_column(Boolean, default=False)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(20))
    ack_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolve_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    policy_version: Mapped[str] = mapped_column(String(50))
    # what the desk console lists by (migration 0003)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)  # at the tier it is in
    breaches: Mapped[int] = mapped_column(Integer, default=0)
    approvers: Mapped[str | None] = mapped_column(Text)  # ",sup-lee,sup-mara," while pending
    approval_due_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reopen_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    customer_vip: Mapped[bool] = mapped_column(Boolean, default=False)  # migration 0006


class TimelineRow(Base):
    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    what: Mapped[str] = mapped_column(String(60))
    by: Mapped[str | None] = mapped_column(String(100))
    tier: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text, default="")
    via: Mapped[str | None] = mapped_column(String(10))  # which way a person's message came
    # a person's act as the policy simulator replays it (workflows/acts.py; migration 0006)
    act: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # delivery: one row per message and medium; the relay (activities/relay.py) moves it on
    medium: Mapped[str] = mapped_column(String(10), default="log")  # mail|chat|webhook|log
    recipient_name: Mapped[str | None] = mapped_column(String(200))  # as a mail addresses them
    target: Mapped[str | None] = mapped_column(Text)  # an Apprise or webhook URL
    html: Mapped[str | None] = mapped_column(Text)
    short: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True)
    )  # a webhook's event
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    traceparent: Mapped[str | None] = mapped_column(String(64))  # the trace that queued it


def timeline_row(workflow_id: str, run_id: str, case_id: str, e: TimelineEntry) -> dict[str, Any]:
    """A timeline line as its row, keyed by the run that wrote it."""
    return {
        "key": f"{workflow_id}:{run_id}:t{e.seq}",
        "case_id": case_id,
        "seq": e.seq,
        "at": e.at,
        "what": e.what,
        "by": e.by,
        "tier": e.tier,
        "details": e.details,
        "via": e.via,
        "act": e.act,
    }


def insert_for(dialect: str) -> Any:
    """The dialect's INSERT with ON CONFLICT (PostgreSQL or SQLite)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def approver_list(ids: list[str]) -> str | None:
    """Pending approvers as one column a `LIKE '%,id,%'` finds ("" when none)."""
    return f",{','.join(ids)}," if ids else None


class AssignmentRow(Base):
    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_person_at", "person_id", "assigned_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    person_id: Mapped[str] = mapped_column(String(100))
    tier: Mapped[int] = mapped_column(Integer)
    department: Mapped[str] = mapped_column(String(50))
    open_load: Mapped[int] = mapped_column(Integer)
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReportRow(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(10))
    department: Mapped[str] = mapped_column(String(50))
    sla_breached: Mapped[bool] = mapped_column(Boolean)
    duration_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class PolicyRow(Base):
    """Every policy version a case ran with, as it was: what the simulator replays it under."""

    __tablename__ = "policies"

    version: Mapped[str] = mapped_column(String(50), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_used_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DataKeyRow(Base):
    """A case's data key, wrapped by a master key; `wrapped` None: destroyed (erased)."""

    __tablename__ = "data_keys"
    __table_args__ = (UniqueConstraint("namespace", "subject", name="uq_data_keys_subject"),)

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))  # the case's workflow id
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    master_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    destroyed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ErasureRow(Base):
    """That an erasure happened: who, when, how many cases (never whose)."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    by: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(10))  # customer | case
    cases: Mapped[int] = mapped_column(Integer)
    keys_destroyed: Mapped[int] = mapped_column(Integer)


def database_url(url: str | None = None) -> URL:
    """The URL a user typed (or $DATABASE_URL), with the asyncio driver filled in."""
    raw = url or os.environ.get("DATABASE_URL") or DEFAULT_SQLITE
    parsed = make_url(raw)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver != "aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    elif backend in ("postgresql", "postgres"):
        if driver != "asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(
            f"DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)"
        )
    return parsed


def make_engine(url: str | None = None, immediate: bool = True) -> AsyncEngine:
    """`immediate` (SQLite): every transaction takes the write lock at BEGIN; off for an
    engine that mostly reads (the data keys), whose reads then never queue for it."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        # SQLite has one writer: a single connection per process queues writes in asyncio
        # instead of many connections spinning on the file lock (which collapsed at 200
        # concurrent cases). Other processes on the same file wait on busy_timeout.
        engine = create_async_engine(
            parsed, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
        )
        _sqlite_session(engine.sync_engine, immediate)
        return engine
    return create_async_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_session(engine: Engine, immediate: bool, direct: bool = False) -> None:
    """The pragmas of every SQLite connection, and BEGIN IMMEDIATE when `immediate`;
    `direct`: BEGIN on the sqlite3 connection itself (no statement events, no result)."""

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself, and take the write lock at BEGIN so two
        # writers queue on busy_timeout instead of failing on a lock upgrade.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")  # erased rows do not linger in the file
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        if direct:
            conn.connection.dbapi_connection.execute(begin)
        else:
            conn.exec_driver_sql(begin)


class Records:
    """Sessions over one database; the activities, the relay, the console and the CLI read
    and write through it (`transaction` with an async session, `run` with a connection)."""

    def __init__(self, engine: AsyncEngine, immediate: bool = True) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # a SQLite file: the engine `run` uses, on its one thread (started on first use)
        self.sync_engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            url = engine.url.set(drivername="sqlite+pysqlite")
            self.sync_engine = create_engine(
                url,
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=1,
                max_overflow=0,
            )
            _sqlite_session(self.sync_engine, immediate, direct=True)

    @property
    def engines(self) -> list[Engine]:
        """Every engine this store's statements go through (events and tracing hook them)."""
        return [self.engine.sync_engine, *([self.sync_engine] if self.sync_engine else [])]

    @classmethod
    def from_url(cls, url: str | None = None, immediate: bool = True) -> Records:
        return cls(make_engine(url, immediate), immediate)

    def twin(self) -> Records:
        """Another engine on the same database: the data keys use their own connection, so a
        payload's key never waits behind an activity's transaction (SQLite keeps one
        connection per engine)."""
        return Records.from_url(self.engine.url.render_as_string(hide_password=False), False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` in one transaction, committed when it returns. On a SQLite file
        on the process's database thread (one thread hop for the whole transaction), in the
        caller's context (its trace); elsewhere through the async driver."""
        if self.sync_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="records")
        context = contextvars.copy_context()
        call = context.run
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, call, self._in_transaction, work
        )

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        assert self.sync_engine is not None
        with self.sync_engine.begin() as conn:
            return work(conn)

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        await self.engine.dispose()
