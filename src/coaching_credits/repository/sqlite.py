"""The SQLite backend, on the standard library's :mod:`sqlite3`.

Each thread and each process gets its own connection. Every ledger write starts with
``BEGIN IMMEDIATE``, which takes SQLite's single write lock up front, so writers run one at a
time and no read-rule-commit step can work from a stale balance. Waiting for the lock is bounded
by the busy timeout; when it runs out the backend raises :class:`RetryableConflict` and the
ledger retries the step. Reads start with ``BEGIN DEFERRED``, and the database runs in WAL mode,
so readers neither wait for nor block the writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import attrs

from ..errors import (
    MemberAlreadyExists,
    StorageError,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
)
from ..models import Member, Pool, Role, Transfer, TransferKind, Workspace
from ._protocol import IdempotencyRecord, RetryableConflict

__all__ = ["SCHEMA_VERSION", "SQLiteRepository"]

logger = logging.getLogger(__name__)

#: The schema version this code writes and reads.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS coaching_credits_schema (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    coaching_enabled INTEGER NOT NULL CHECK (coaching_enabled IN (0, 1)),
    low_pool_threshold INTEGER NOT NULL DEFAULT 0 CHECK (low_pool_threshold >= 0),
    pool_balance INTEGER NOT NULL CHECK (pool_balance >= 0)
);
CREATE TABLE IF NOT EXISTS members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    balance INTEGER NOT NULL CHECK (balance >= 0),
    PRIMARY KEY (workspace_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfers (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    member_id TEXT,
    kind TEXT NOT NULL CHECK (
        kind IN ('purchase', 'transfer_to', 'transfer_from', 'spend', 'member_removed', 'refund')
    ),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    actor_id TEXT,
    pool_balance INTEGER CHECK (pool_balance >= 0),
    member_balance INTEGER CHECK (member_balance >= 0),
    created_at TEXT NOT NULL,
    reason TEXT,
    metadata TEXT,
    reverses TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS transfers_by_workspace ON transfers (workspace_id, sequence);
CREATE INDEX IF NOT EXISTS transfers_by_member ON transfers (workspace_id, member_id, sequence);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
) WITHOUT ROWID;
"""


_TRANSFER_COLUMNS = (
    "sequence, id, member_id, kind, amount, actor_id, pool_balance, member_balance,"
    " created_at, reason, metadata, reverses"
)


def _transfer_from_row(workspace_id: str, row: Sequence[Any]) -> Transfer:
    return Transfer(
        sequence=row[0],
        id=row[1],
        workspace_id=workspace_id,
        member_id=row[2],
        kind=_kind(row[3], f"transfer {row[1]!r}"),
        amount=row[4],
        actor_id=row[5],
        pool_balance=row[6],
        member_balance=row[7],
        created_at=datetime.fromisoformat(row[8]),
        reason=row[9],
        metadata=json.loads(row[10]) if row[10] else {},
        reverses=row[11],
    )


def _kind(value: str, where: str) -> TransferKind:
    """Return the kind stored in a journal row; an unknown one means the row was altered."""
    try:
        return TransferKind(value)
    except ValueError:
        raise StorageError(
            f"{where} has unknown transfer kind {value!r}; the journal was changed outside "
            f"the library or by a newer release"
        ) from None


def _utc_text(moment: datetime) -> str:
    """Return ``moment`` as UTC ISO 8601 text, which sorts in time order; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


class SQLiteRepository:
    """Store the ledger in one SQLite file, created with its schema on first use.

    ``busy_timeout`` is how long, in seconds, a writer waits for another writer's lock before
    the ledger retries. ``":memory:"`` gives a private database shared by the threads of this
    repository object.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=self.path != ":memory:",
        )
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        connection.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                logger.warning("SQLite database %s runs in %s mode, not WAL", self.path, mode)
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _connection(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            if self._shared is None:
                self._shared = self._connect()
            return self._shared
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        # A connection must not cross fork(): the child opens its own.
        if connection is None or self._local.pid != os.getpid():
            connection = self._connect()
            self._local.connection = connection
            self._local.pid = os.getpid()
        return connection

    def _migrate(self) -> None:
        with self.transaction() as tx:
            connection = tx.connection
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            row = connection.execute("SELECT max(version) FROM coaching_credits_schema").fetchone()
            version = row[0]
            if version is None:
                connection.execute(
                    "INSERT INTO coaching_credits_schema (version) VALUES (?)", (SCHEMA_VERSION,)
                )
                logger.info(
                    "created coaching-credits schema version %d in %s", SCHEMA_VERSION, self.path
                )
            elif version > SCHEMA_VERSION:
                raise StorageError(
                    f"database {self.path!r} has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this coaching-credits release supports; upgrade the library"
                )

    @contextmanager
    def transaction(self) -> Iterator[_SQLiteTransaction]:
        """Open a unit of work; commit when the block succeeds, roll back when it raises.

        A unit that starts by writing takes the write lock with ``BEGIN IMMEDIATE``; one that
        starts by reading uses ``BEGIN DEFERRED`` and does not wait for writers. A lock wait
        that timed out raises :class:`RetryableConflict`; any other ``sqlite3`` error raises
        :class:`StorageError`.
        """
        shared = self.path == ":memory:"
        if shared:
            self._shared_lock.acquire()
        connection: sqlite3.Connection | None = None
        try:
            try:
                connection = self._connection()
                yield _SQLiteTransaction(connection)
                if connection.in_transaction:
                    connection.execute("COMMIT")
            except BaseException as error:
                if connection is not None and connection.in_transaction:
                    connection.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise _translate(error, self.path) from error
                raise
        finally:
            if shared:
                self._shared_lock.release()

    def close(self) -> None:
        """Close every connection this repository opened."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            # A connection made in another thread may only be closed there; the
            # interpreter closes it when that thread's objects are collected.
            with contextlib.suppress(sqlite3.ProgrammingError):
                connection.close()
        self._local = threading.local()
        self._shared = None


def _translate(error: sqlite3.Error, path: str) -> Exception:
    """Return the library's error for a ``sqlite3`` error: busy is retryable, the rest is not."""
    if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
        return RetryableConflict(str(error))
    return StorageError(f"SQLite database {path!r} failed: {error}")


class _SQLiteTransaction:
    """One unit of work that begins on its first statement.

    A unit that starts by writing (or by locking the workspace) begins with ``BEGIN IMMEDIATE``,
    so it waits for SQLite's single write lock up front. A unit that starts by reading begins
    with ``BEGIN DEFERRED`` and, in WAL mode, reads a snapshot without waiting for writers.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _begin(self, *, write: bool) -> sqlite3.Connection:
        if not self._connection.in_transaction:
            self._connection.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        return self._connection

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, inside a write transaction, for statements the protocol lacks."""
        return self._begin(write=True)

    @property
    def _reader(self) -> sqlite3.Connection:
        return self._begin(write=False)

    def create_workspace(self, workspace: Workspace, pool: Pool) -> None:
        try:
            self.connection.execute(
                "INSERT INTO workspaces (id, coaching_enabled, low_pool_threshold, pool_balance)"
                " VALUES (?, ?, ?, ?)",
                (
                    workspace.id,
                    int(workspace.coaching_enabled),
                    workspace.low_pool_threshold,
                    pool.balance,
                ),
            )
        except sqlite3.IntegrityError:
            raise WorkspaceAlreadyExists(workspace.id) from None

    def lock_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        # Beginning with BEGIN IMMEDIATE takes the database's write lock before the read.
        self._begin(write=True)
        return self.get_workspace(workspace_id)

    def get_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        row = self._reader.execute(
            "SELECT coaching_enabled, low_pool_threshold, pool_balance FROM workspaces"
            " WHERE id = ?",
            (workspace_id,),
        ).fetchone()
        if row is None:
            raise WorkspaceNotFound(workspace_id)
        return (
            Workspace(id=workspace_id, coaching_enabled=bool(row[0]), low_pool_threshold=row[1]),
            Pool(workspace_id=workspace_id, balance=row[2]),
        )

    def get_members(self, workspace_id: str, member_ids: Collection[str]) -> dict[str, Member]:
        found: dict[str, Member] = {}
        ids = sorted(set(member_ids))
        # SQLite limits the number of parameters per statement, so look ids up in chunks.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._reader.execute(
                f"SELECT id, role, balance FROM members WHERE workspace_id = ? AND id IN ({marks})",
                (workspace_id, *chunk),
            )
            for member_id, role, balance in rows:
                found[member_id] = Member(
                    workspace_id=workspace_id, id=member_id, role=Role(role), balance=balance
                )
        return found

    def list_members(self, workspace_id: str) -> list[Member]:
        rows = self._reader.execute(
            "SELECT id, role, balance FROM members WHERE workspace_id = ? ORDER BY id",
            (workspace_id,),
        )
        return [
            Member(workspace_id=workspace_id, id=member_id, role=Role(role), balance=balance)
            for member_id, role, balance in rows
        ]

    def insert_member(self, member: Member) -> None:
        try:
            self.connection.execute(
                "INSERT INTO members (workspace_id, id, role, balance) VALUES (?, ?, ?, ?)",
                (member.workspace_id, member.id, member.role.value, member.balance),
            )
        except sqlite3.IntegrityError as error:
            if "FOREIGN KEY" in str(error).upper():
                raise WorkspaceNotFound(member.workspace_id) from None
            raise MemberAlreadyExists(
                workspace_id=member.workspace_id, member_id=member.id
            ) from None

    def delete_member(self, workspace_id: str, member_id: str) -> None:
        self.connection.execute(
            "DELETE FROM members WHERE workspace_id = ? AND id = ?", (workspace_id, member_id)
        )

    def update_workspace(self, workspace: Workspace) -> None:
        self.connection.execute(
            "UPDATE workspaces SET coaching_enabled = ?, low_pool_threshold = ? WHERE id = ?",
            (int(workspace.coaching_enabled), workspace.low_pool_threshold, workspace.id),
        )

    def update_pool(self, pool: Pool) -> None:
        self.connection.execute(
            "UPDATE workspaces SET pool_balance = ? WHERE id = ?", (pool.balance, pool.workspace_id)
        )

    def update_members(self, members: Iterable[Member]) -> None:
        self.connection.executemany(
            "UPDATE members SET role = ?, balance = ? WHERE workspace_id = ? AND id = ?",
            [(m.role.value, m.balance, m.workspace_id, m.id) for m in members],
        )

    def append_transfers(self, transfers: Sequence[Transfer]) -> list[Transfer]:
        stored = []
        for transfer in transfers:
            if transfer.id is None or transfer.created_at is None:
                raise ValueError("a transfer needs an id and a time before it is stored")
            cursor = self.connection.execute(
                "INSERT INTO transfers (id, workspace_id, member_id, kind, amount, actor_id,"
                " pool_balance, member_balance, created_at, reason, metadata, reverses)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    transfer.id,
                    transfer.workspace_id,
                    transfer.member_id,
                    transfer.kind.value,
                    transfer.amount,
                    transfer.actor_id,
                    transfer.pool_balance,
                    transfer.member_balance,
                    _utc_text(transfer.created_at),
                    transfer.reason,
                    json.dumps(dict(transfer.metadata)) if transfer.metadata else None,
                    transfer.reverses,
                ),
            )
            stored.append(attrs.evolve(transfer, sequence=cursor.lastrowid))
        return stored

    def list_transfers(
        self,
        workspace_id: str,
        *,
        member_id: str | None = None,
        kinds: Collection[TransferKind] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_sequence: int | None = None,
        limit: int | None = None,
    ) -> list[Transfer]:
        clauses = ["workspace_id = ?"]
        params: list[object] = [workspace_id]
        if member_id is not None:
            clauses.append("member_id = ?")
            params.append(member_id)
        if kinds is not None:
            values = sorted(TransferKind(k).value for k in kinds)
            clauses.append(f"kind IN ({','.join('?' * len(values))})")
            params.extend(values)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(_utc_text(since))
        if until is not None:
            clauses.append("created_at < ?")
            params.append(_utc_text(until))
        if before_sequence is not None:
            clauses.append("sequence < ?")
            params.append(before_sequence)
        sql = (
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE "
            + " AND ".join(clauses)
            + " ORDER BY sequence DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_transfer_from_row(workspace_id, row) for row in self._reader.execute(sql, params)]

    def get_transfer(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        row = self._reader.execute(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE workspace_id = ? AND id = ?",
            (workspace_id, transfer_id),
        ).fetchone()
        return None if row is None else _transfer_from_row(workspace_id, row)

    def find_reversal(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        row = self._reader.execute(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE workspace_id = ? AND reverses = ?",
            (workspace_id, transfer_id),
        ).fetchone()
        return None if row is None else _transfer_from_row(workspace_id, row)

    def journal_totals(self, workspace_id: str) -> list[tuple[str | None, TransferKind, int]]:
        # SQLite's sum() raises "integer overflow" past 2**63-1, which a long-lived workspace's
        # purchases can reach, so the high and low 32 bits are summed apart and joined here.
        rows = self._reader.execute(
            "SELECT member_id, kind, sum(amount >> 32), sum(amount & 4294967295) FROM transfers"
            " WHERE workspace_id = ? GROUP BY member_id, kind",
            (workspace_id,),
        )
        return [
            (member_id, _kind(kind, f"journal of workspace {workspace_id!r}"), (high << 32) + low)
            for member_id, kind, high, low in rows
        ]

    def get_idempotency(self, workspace_id: str, key: str) -> IdempotencyRecord | None:
        row = self._reader.execute(
            "SELECT request, response, created_at FROM idempotency_keys"
            " WHERE workspace_id = ? AND key = ?",
            (workspace_id, key),
        ).fetchone()
        if row is None:
            return None
        return IdempotencyRecord(
            workspace_id=workspace_id,
            key=key,
            request=row[0],
            response=row[1],
            created_at=datetime.fromisoformat(row[2]),
        )

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        self.connection.execute(
            "INSERT INTO idempotency_keys (workspace_id, key, request, response, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                record.workspace_id,
                record.key,
                record.request,
                record.response,
                _utc_text(record.created_at),
            ),
        )
