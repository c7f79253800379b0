"""The PostgreSQL backend, on psycopg 3 (install ``coaching-credits[postgres]``).

Tables live in one schema of their own (``coaching_credits`` unless configured), created or
migrated on first use under an advisory lock, with the version recorded in the
``schema_version`` table.

Concurrency: a write transaction runs at READ COMMITTED and starts with ``SELECT ... FOR
UPDATE`` on the workspace row, which stores the pool balance. Every writer of one workspace
takes that lock first, so they run one after another and each reads the balances the previous
one committed. Member rows are then locked in ascending id order, so writers that touch the
same members in a different order never deadlock. Serialization failures, deadlocks and lock
time-outs become :class:`RetryableConflict`, which the ledger retries. A read-only step runs at
REPEATABLE READ, so all its queries see one snapshot.

Host transactions: :meth:`PostgresRepository.from_connection` wraps a connection the host
application owns. Each ledger step then runs inside a savepoint of the host's transaction and
commits or rolls back with it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ..errors import (
    MemberAlreadyExists,
    StorageError,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
)
from ..models import Member, Pool, Role, Transfer, TransferKind, Workspace
from ._protocol import IdempotencyRecord, RetryableConflict

__all__ = ["SCHEMA_VERSION", "PostgresRepository", "StorageError", "migrate"]


logger = logging.getLogger(__name__)

#: The schema version this code writes and reads.
SCHEMA_VERSION = 1

#: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
_MAX_IDENTIFIER_BYTES = 63

# One tuple of statements per schema version; migrating from version n runs the tuples after
# index n - 1 in order. ``{s}`` is the quoted schema name. Ids use the "C" collation so that
# "ascending id order" means code point order, as in Python's sorted() and in SQLite.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE {s}.schema_version (
            version integer PRIMARY KEY,
            migrated_at timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE {s}.workspaces (
            id text COLLATE "C" PRIMARY KEY,
            coaching_enabled boolean NOT NULL,
            low_pool_threshold bigint NOT NULL DEFAULT 0 CHECK (low_pool_threshold >= 0),
            pool_balance bigint NOT NULL CHECK (pool_balance >= 0)
        )""",
        """CREATE TABLE {s}.members (
            workspace_id text COLLATE "C" NOT NULL REFERENCES {s}.workspaces (id),
            id text COLLATE "C" NOT NULL,
            role text NOT NULL CHECK (role IN ('admin', 'member')),
            balance bigint NOT NULL CHECK (balance >= 0),
            PRIMARY KEY (workspace_id, id)
        )""",
        """CREATE TABLE {s}.transfers (
            sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            workspace_id text COLLATE "C" NOT NULL REFERENCES {s}.workspaces (id),
            member_id text COLLATE "C",
            kind text NOT NULL CHECK (kind IN (
                'purchase', 'transfer_to', 'transfer_from', 'spend', 'member_removed', 'refund'
            )),
            amount bigint NOT NULL CHECK (amount >= 0),
            actor_id text,
            pool_balance bigint CHECK (pool_balance >= 0),
            member_balance bigint CHECK (member_balance >= 0),
            created_at timestamptz NOT NULL,
            reason text,
            metadata jsonb,
            reverses text UNIQUE
        )""",
        "CREATE INDEX transfers_by_workspace ON {s}.transfers (workspace_id, sequence)",
        "CREATE INDEX transfers_by_member ON {s}.transfers (workspace_id, member_id, sequence)",
        """CREATE TABLE {s}.idempotency_keys (
            workspace_id text COLLATE "C" NOT NULL REFERENCES {s}.workspaces (id),
            key text NOT NULL,
            request text NOT NULL,
            response text NOT NULL,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (workspace_id, key)
        )""",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_TRANSFER_COLUMNS = (
    "sequence, id, member_id, kind, amount, actor_id, pool_balance, member_balance,"
    " created_at, reason, metadata, reverses"
)

_SAVEPOINT = "coaching_credits_step"
_OPEN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def migrate(conninfo: str, *, schema: str = "coaching_credits") -> int:
    """Create or upgrade the tables in ``schema`` ahead of time; return the schema version.

    Hosts that forbid DDL at run time call this from their deployment step and open the
    repository with ``create_schema=False``. Running it again, or from several processes at
    once, is safe: an advisory lock lets one of them migrate and the others find it done.
    """
    statements = _Statements(schema)
    with _translated(schema), psycopg.connect(conninfo, autocommit=True) as connection:
        return _migrate(connection, statements)


class PostgresRepository:
    """Store the ledger in PostgreSQL, in tables of their own schema.

    ``conninfo_or_pool`` is a libpq connection string or URL, or a
    :class:`psycopg_pool.ConnectionPool` the host application owns (``close()`` then leaves
    it open). From a connection string the repository opens its own pool of at most
    ``max_connections`` connections.

    ``create_schema=False`` forbids DDL: the schema must have been created by :func:`migrate`
    at this library's version, or the constructor raises :class:`StorageError`.
    ``lock_timeout`` is how long, in seconds, a writer waits for another writer's row lock
    before the ledger retries the step. ``None`` keeps the server's ``lock_timeout`` setting.
    """

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any],
        *,
        schema: str = "coaching_credits",
        create_schema: bool = True,
        lock_timeout: float | None = 30.0,
        max_connections: int = 10,
    ) -> None:
        self.schema = schema
        self.lock_timeout = lock_timeout
        self._statements = _Statements(schema)
        self._host_connection: psycopg.Connection[Any] | None = None
        self._owned_pool = not isinstance(conninfo_or_pool, ConnectionPool)
        self._pool_lock = threading.Lock()
        self._max_connections = max_connections
        if isinstance(conninfo_or_pool, ConnectionPool):
            self._conninfo = ""
            self._pool: ConnectionPool[Any] | None = conninfo_or_pool
            self._pool_pid = os.getpid()
            with _translated(schema), conninfo_or_pool.connection() as connection:
                self._prepare_schema(connection, create_schema)
        else:
            self._conninfo = conninfo_or_pool
            self._pool = None
            self._pool_pid = 0
            # A direct connection reports a wrong conninfo at once, where a pool would keep
            # retrying in the background until its time-out.
            with _translated(schema), psycopg.connect(self._conninfo, autocommit=True) as conn:
                self._prepare_schema(conn, create_schema)

    @classmethod
    def from_connection(
        cls,
        connection: psycopg.Connection[Any],
        *,
        schema: str = "coaching_credits",
        create_schema: bool = True,
    ) -> PostgresRepository:
        """Wrap a connection the host application owns, to run ledger calls in its transaction.

        Each :meth:`transaction` becomes a savepoint inside the host's current transaction and
        never commits: the credit change commits or rolls back with the host's own writes.
        The connection must be in a transaction when a ledger call starts (``with
        connection.transaction():``, or any connection with ``autocommit=False``). Share the
        repository only with the thread that uses the connection.
        """
        repository = cls.__new__(cls)
        repository.schema = schema
        repository.lock_timeout = None
        repository._statements = _Statements(schema)
        repository._host_connection = connection
        repository._owned_pool = False
        repository._pool_lock = threading.Lock()
        repository._max_connections = 0
        repository._conninfo = ""
        repository._pool = None
        repository._pool_pid = 0
        with _translated(schema):
            if connection.info.transaction_status == TransactionStatus.IDLE:
                # Nothing of the host's is pending, so the migration may commit on its own.
                with connection.transaction():
                    repository._prepare_schema(connection, create_schema)
            else:
                with repository._savepoint(connection):
                    repository._prepare_schema(connection, create_schema)
        return repository

    def _prepare_schema(self, connection: psycopg.Connection[Any], create_schema: bool) -> None:
        if create_schema:
            _migrate(connection, self._statements)
            return
        version = _schema_version(connection, self.schema)
        if version != SCHEMA_VERSION:
            found = "no coaching-credits tables" if version is None else f"version {version}"
            raise StorageError(
                f"schema {self.schema!r} has {found}, but this release needs version "
                f"{SCHEMA_VERSION} and create_schema=False forbids creating it; run "
                f"coaching_credits.repository.postgres.migrate(conninfo, schema={self.schema!r})"
                f" first"
            )

    def _connection_pool(self) -> ConnectionPool[Any]:
        with self._pool_lock:
            # A pool's connections and worker threads do not survive fork(): a child opens
            # its own and leaves the parent's alone, since closing them would end the
            # parent's sessions on the server.
            if self._pool is None or (self._owned_pool and self._pool_pid != os.getpid()):
                self._pool = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._max_connections,
                    open=True,
                    name=f"coaching-credits {self.schema}",
                )
                self._pool_pid = os.getpid()
            return self._pool

    @contextmanager
    def transaction(self) -> Iterator[_PostgresTransaction]:
        """Open a unit of work: a database transaction, or a savepoint in the host's one."""
        if self._host_connection is not None:
            with _translated(self.schema), self._savepoint(self._host_connection):
                yield _PostgresTransaction(self._host_connection, self._statements, setup=False)
            return

        with (
            _translated(self.schema),
            self._connection_pool().connection() as connection,
            connection.transaction(),
        ):
            yield _PostgresTransaction(
                connection, self._statements, setup=True, lock_timeout=self.lock_timeout
            )

    @contextmanager
    def _savepoint(self, connection: psycopg.Connection[Any]) -> Iterator[None]:
        status = connection.info.transaction_status
        if status == TransactionStatus.INERROR:
            raise StorageError(
                "the host transaction has already failed; roll it back before calling the ledger"
            )
        if status == TransactionStatus.IDLE and connection.autocommit:
            raise StorageError(
                "the host connection is in autocommit mode outside a transaction, so the "
                "ledger call cannot join one; wrap the call in `with connection.transaction():`"
            )
        if status == TransactionStatus.ACTIVE:
            raise StorageError("the host connection is busy running another query")

        # Outside a transaction with autocommit off, psycopg sends BEGIN first: the host's
        # commit() then ends that transaction.
        connection.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield
        except BaseException:
            if connection.info.transaction_status in _OPEN_TRANSACTION:
                try:
                    connection.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                    connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
                except psycopg.Error as error:
                    # Re-raise the original error, which explains the failure better than this one.
                    logger.warning("rolling back to savepoint %s failed: %s", _SAVEPOINT, error)
            raise
        connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")

    def close(self) -> None:
        """Close the connection pool this repository opened; a host's pool stays open.

        A later transaction opens a new pool, as the SQLite backend opens new connections.
        """
        if not self._owned_pool:
            return
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()


class _Statements:
    """SQL texts with the schema name quoted in, rendered once per repository.

    The rendered text is cached rather than the ``sql.Composed`` object, because psycopg
    renders a ``Composed`` again on every execute.
    """

    def __init__(self, schema: str) -> None:
        if (
            type(schema) is not str
            or not schema
            or len(schema.encode()) > _MAX_IDENTIFIER_BYTES
            or "\x00" in schema
        ):
            raise StorageError(
                f"invalid schema name {schema!r}: expected a non-empty str of at most "
                f"{_MAX_IDENTIFIER_BYTES} bytes without NUL characters"
            )
        self.schema = schema
        self._quoted = sql.Identifier(schema)
        self._cache: dict[str, sql.SQL] = {}

    def __call__(self, template: str) -> sql.SQL:
        rendered = self._cache.get(template)
        if rendered is None:
            text = sql.SQL(template).format(s=self._quoted).as_string(None)
            # The text was built from a constant template and a quoted identifier.
            rendered = sql.SQL(text)
            self._cache[template] = rendered
        return rendered

    def lock_key(self) -> int:
        """Return the advisory lock key that serialises migrations of this schema."""
        digest = hashlib.blake2b(f"coaching_credits:{self.schema}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)


def _schema_version(connection: psycopg.Connection[Any], schema: str) -> int | None:
    exists = connection.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
        (schema, "schema_version"),
    ).fetchone()
    if exists is None:
        return None
    row = connection.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(schema))
    ).fetchone()
    return None if row is None else row[0]


def _migrate(connection: psycopg.Connection[Any], statements: _Statements) -> int:
    schema = statements.schema
    if _schema_version(connection, schema) == SCHEMA_VERSION:
        return SCHEMA_VERSION

    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (statements.lock_key(),))
        # Another process may have migrated while this one waited for the lock.
        version = _schema_version(connection, schema) or 0
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"schema {schema!r} has version {version}, newer than the {SCHEMA_VERSION} "
                f"this coaching-credits release supports; upgrade the library"
            )
        if version == SCHEMA_VERSION:
            return version

        connection.execute(statements("CREATE SCHEMA IF NOT EXISTS {s}"))
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target - 1]:
                try:
                    connection.execute(statements(statement))
                except pg_errors.DuplicateTable as error:
                    raise StorageError(
                        f"schema {schema!r} already has a table or index that coaching-credits "
                        f"did not create ({error.diag.message_primary}); choose another schema",
                        sqlstate=error.sqlstate,
                    ) from error
            connection.execute(
                statements("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (target,)
            )
        logger.info(
            "migrated coaching-credits schema %r from version %d to %d",
            schema, version, SCHEMA_VERSION,
        )  # fmt: skip
        return SCHEMA_VERSION


@contextmanager
def _translated(schema: str) -> Iterator[None]:
    """Turn psycopg errors raised inside the block into the library's errors."""
    try:
        yield
    except (
        pg_errors.SerializationFailure,
        pg_errors.DeadlockDetected,
        pg_errors.LockNotAvailable,
    ) as error:
        logger.debug("schema %r: concurrent writers conflicted: %s", schema, error)
        raise RetryableConflict(f"{type(error).__name__} ({error.sqlstate}): {error}") from error
    except psycopg.Error as error:
        raise StorageError(
            f"PostgreSQL operation on schema {schema!r} failed: {type(error).__name__}"
            f"{f' ({error.sqlstate})' if error.sqlstate else ''}: {error}",
            sqlstate=error.sqlstate,
        ) from error


def _utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC; a naive time counts as UTC, as in the SQLite backend."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _kind(value: str, where: str) -> TransferKind:
    """Return the kind stored in a journal row; an unknown one means the row was altered."""
    try:
        return TransferKind(value)
    except ValueError:
        raise StorageError(
            f"{where} has unknown transfer kind {value!r}; the journal was changed outside "
            f"the library or by a newer release"
        ) from None


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
        created_at=_utc(row[8]),
        reason=row[9],
        metadata=row[10] or {},
        reverses=row[11],
    )


class _PostgresTransaction:
    """One transaction, or one savepoint of a host's transaction, on one connection.

    With ``setup`` the first statement sets the isolation level: READ COMMITTED when the
    step starts by writing (its row locks then serialise it with other writers), REPEATABLE
    READ when it starts by reading (all its queries then see one snapshot).
    """

    def __init__(
        self,
        connection: psycopg.Connection[Any],
        statements: _Statements,
        *,
        setup: bool,
        lock_timeout: float | None = None,
    ) -> None:
        self.connection = connection
        self._sql = statements
        self._setup_pending = setup
        self._lock_timeout = lock_timeout
        self._writing = False

    def _prepare(self, *, write: bool) -> None:
        if self._setup_pending:
            self._setup_pending = False
            level = "READ COMMITTED" if write else "REPEATABLE READ"
            setup = f"SET TRANSACTION ISOLATION LEVEL {level}"
            if self._lock_timeout is not None:
                setup += f"; SET LOCAL lock_timeout = {max(1, round(self._lock_timeout * 1000))}"
            self.connection.execute(setup)
        if write:
            self._writing = True

    def _execute(
        self, template: str, params: Sequence[Any] = (), *, write: bool = False
    ) -> psycopg.Cursor[Any]:
        self._prepare(write=write)
        return self.connection.execute(self._sql(template), params)

    def create_workspace(self, workspace: Workspace, pool: Pool) -> None:
        # ON CONFLICT keeps the transaction usable, where a unique violation would abort it.
        # An uncommitted insert of the same id by another writer is waited for first.
        cursor = self._execute(
            "INSERT INTO {s}.workspaces (id, coaching_enabled, low_pool_threshold, pool_balance)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (workspace.id, workspace.coaching_enabled, workspace.low_pool_threshold, pool.balance),
            write=True,
        )
        if cursor.rowcount == 0:
            raise WorkspaceAlreadyExists(workspace.id)

    def lock_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        row = self._execute(
            "SELECT coaching_enabled, low_pool_threshold, pool_balance FROM {s}.workspaces"
            " WHERE id = %s FOR UPDATE",
            (workspace_id,),
            write=True,
        ).fetchone()
        return _workspace_from_row(workspace_id, row)

    def get_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        row = self._execute(
            "SELECT coaching_enabled, low_pool_threshold, pool_balance FROM {s}.workspaces"
            " WHERE id = %s",
            (workspace_id,),
        ).fetchone()
        return _workspace_from_row(workspace_id, row)

    def get_members(self, workspace_id: str, member_ids: Collection[str]) -> dict[str, Member]:
        query = (
            "SELECT id, role, balance FROM {s}.members"
            " WHERE workspace_id = %s AND id = ANY(%s::text[]) ORDER BY id"
        )
        if self._writing:
            # The row locks are taken in the sorted order, so two writers touching the same
            # members wait for each other instead of deadlocking.
            query += " FOR UPDATE"
        rows = self._execute(query, (workspace_id, sorted(set(member_ids))))
        return {
            member_id: Member(
                workspace_id=workspace_id, id=member_id, role=Role(role), balance=balance
            )
            for member_id, role, balance in rows
        }

    def list_members(self, workspace_id: str) -> list[Member]:
        rows = self._execute(
            "SELECT id, role, balance FROM {s}.members WHERE workspace_id = %s ORDER BY id",
            (workspace_id,),
        )
        return [
            Member(workspace_id=workspace_id, id=member_id, role=Role(role), balance=balance)
            for member_id, role, balance in rows
        ]

    def insert_member(self, member: Member) -> None:
        cursor = self._execute(
            "INSERT INTO {s}.members (workspace_id, id, role, balance) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (workspace_id, id) DO NOTHING",
            (member.workspace_id, member.id, member.role.value, member.balance),
            write=True,
        )
        if cursor.rowcount == 0:
            raise MemberAlreadyExists(workspace_id=member.workspace_id, member_id=member.id)

    def delete_member(self, workspace_id: str, member_id: str) -> None:
        self._execute(
            "DELETE FROM {s}.members WHERE workspace_id = %s AND id = %s",
            (workspace_id, member_id),
            write=True,
        )

    def update_workspace(self, workspace: Workspace) -> None:
        self._execute(
            "UPDATE {s}.workspaces SET coaching_enabled = %s, low_pool_threshold = %s"
            " WHERE id = %s",
            (workspace.coaching_enabled, workspace.low_pool_threshold, workspace.id),
            write=True,
        )

    def update_pool(self, pool: Pool) -> None:
        self._execute(
            "UPDATE {s}.workspaces SET pool_balance = %s WHERE id = %s",
            (pool.balance, pool.workspace_id),
            write=True,
        )

    def update_members(self, members: Iterable[Member]) -> None:
        members = list(members)
        if not members:
            return
        # One statement for any number of members, instead of one round trip each.
        self._execute(
            "UPDATE {s}.members AS m SET role = u.role, balance = u.balance"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[])"
            " AS u (workspace_id, id, role, balance)"
            " WHERE m.workspace_id = u.workspace_id AND m.id = u.id",
            (
                [m.workspace_id for m in members],
                [m.id for m in members],
                [m.role.value for m in members],
                [m.balance for m in members],
            ),
            write=True,
        )

    def append_transfers(self, transfers: Sequence[Transfer]) -> list[Transfer]:
        if not transfers:
            return []
        rows = []
        for transfer in transfers:
            if transfer.id is None or transfer.created_at is None:
                raise ValueError("a transfer needs an id and a time before it is stored")
            rows.append(
                (
                    transfer.id,
                    transfer.workspace_id,
                    transfer.member_id,
                    transfer.kind.value,
                    transfer.amount,
                    transfer.actor_id,
                    transfer.pool_balance,
                    transfer.member_balance,
                    _utc(transfer.created_at),
                    transfer.reason,
                    Jsonb(dict(transfer.metadata)) if transfer.metadata else None,
                    transfer.reverses,
                )
            )
        self._prepare(write=True)
        insert = self._sql(
            "INSERT INTO {s}.transfers (id, workspace_id, member_id, kind, amount, actor_id,"
            " pool_balance, member_balance, created_at, reason, metadata, reverses)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING sequence"
        )
        if len(rows) == 1:
            # One row, the common case: a plain execute skips executemany's pipeline set-up.
            (sequence,) = self.connection.execute(insert, rows[0]).fetchone() or (None,)
            return [attrs.evolve(transfers[0], sequence=sequence)]
        cursor = self.connection.cursor()
        # executemany pipelines the inserts; each one returns its own result set, in order.
        cursor.executemany(insert, rows, returning=True)
        sequences = []
        while True:
            row = cursor.fetchone()
            assert row is not None
            sequences.append(row[0])
            if not cursor.nextset():
                break
        return [
            attrs.evolve(transfer, sequence=sequence)
            for transfer, sequence in zip(transfers, sequences, strict=True)
        ]

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
        clauses = ["workspace_id = %s"]
        params: list[object] = [workspace_id]
        if member_id is not None:
            clauses.append("member_id = %s")
            params.append(member_id)
        if kinds is not None:
            clauses.append("kind = ANY(%s::text[])")
            params.append(sorted(TransferKind(k).value for k in kinds))
        if since is not None:
            clauses.append("created_at >= %s")
            params.append(_utc(since))
        if until is not None:
            clauses.append("created_at < %s")
            params.append(_utc(until))
        if before_sequence is not None:
            clauses.append("sequence < %s")
            params.append(before_sequence)
        query = (
            f"SELECT {_TRANSFER_COLUMNS} FROM {{s}}.transfers WHERE "
            + " AND ".join(clauses)
            + " ORDER BY sequence DESC"
        )
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        return [_transfer_from_row(workspace_id, row) for row in self._execute(query, params)]

    def get_transfer(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        row = self._execute(
            f"SELECT {_TRANSFER_COLUMNS} FROM {{s}}.transfers WHERE workspace_id = %s AND id = %s",
            (workspace_id, transfer_id),
        ).fetchone()
        return None if row is None else _transfer_from_row(workspace_id, row)

    def find_reversal(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        row = self._execute(
            f"SELECT {_TRANSFER_COLUMNS} FROM {{s}}.transfers"
            " WHERE workspace_id = %s AND reverses = %s",
            (workspace_id, transfer_id),
        ).fetchone()
        return None if row is None else _transfer_from_row(workspace_id, row)

    def journal_totals(self, workspace_id: str) -> list[tuple[str | None, TransferKind, int]]:
        # sum(bigint) is numeric in PostgreSQL, so totals past 2**63 - 1 do not overflow.
        rows = self._execute(
            "SELECT member_id, kind, sum(amount) FROM {s}.transfers WHERE workspace_id = %s"
            " GROUP BY member_id, kind",
            (workspace_id,),
        )
        where = f"journal of workspace {workspace_id!r}"
        return [(member_id, _kind(kind, where), int(total)) for member_id, kind, total in rows]

    def get_idempotency(self, workspace_id: str, key: str) -> IdempotencyRecord | None:
        row = self._execute(
            "SELECT request, response, created_at FROM {s}.idempotency_keys"
            " WHERE workspace_id = %s AND key = %s",
            (workspace_id, key),
        ).fetchone()
        if row is None:
            return None
        return IdempotencyRecord(
            workspace_id=workspace_id,
            key=key,
            request=row[0],
            response=row[1],
            created_at=_utc(row[2]),
        )

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        self._execute(
            "INSERT INTO {s}.idempotency_keys (workspace_id, key, request, response, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (
                record.workspace_id,
                record.key,
                record.request,
                record.response,
                _utc(record.created_at),
            ),
            write=True,
        )


def _workspace_from_row(workspace_id: str, row: Sequence[Any] | None) -> tuple[Workspace, Pool]:
    if row is None:
        raise WorkspaceNotFound(workspace_id)
    return (
        Workspace(id=workspace_id, coaching_enabled=row[0], low_pool_threshold=row[1]),
        Pool(workspace_id=workspace_id, balance=row[2]),
    )
