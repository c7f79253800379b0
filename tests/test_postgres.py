"""Behaviour specific to the PostgreSQL backend.

The shared contract suite covers what every backend does alike. These tests cover the schema
and its migration, the schema option, pool input, ``create_schema=False``, the translation of
driver errors, and ledger calls inside a host application's own transaction.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REQUIRE_POSTGRES

if not REQUIRE_POSTGRES:
    # Without the extra installed these tests skip, unless PostgreSQL is required.
    pytest.importorskip("psycopg")

import psycopg  # after the skip above, like every psycopg import
from psycopg import sql
from psycopg_pool import ConnectionPool

from coaching_credits import (
    MAX_AMOUNT,
    ConcurrencyConflict,
    Ledger,
    MemberAlreadyExists,
    Pool,
    Role,
    TransferKind,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
)
from coaching_credits.repository import RetryableConflict
from coaching_credits.repository.postgres import (
    SCHEMA_VERSION,
    PostgresRepository,
    StorageError,
    migrate,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def conninfo(postgres_database: str) -> str:
    """The conninfo of this session's throwaway database."""
    return postgres_database


@pytest.fixture
def schema() -> str:
    """A schema name no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(conninfo: str) -> Iterator[Any]:
    """An autocommit connection for setting up and inspecting tables directly."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        yield connection


@pytest.fixture
def repository(conninfo: str, schema: str) -> Iterator[PostgresRepository]:
    """A repository with one workspace: admin "admin", member "m" at 0, a pool of 100."""
    repository = PostgresRepository(conninfo, schema=schema)
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "admin", role=Role.ADMIN)
    ledger.add_member("ws", "m")
    ledger.purchase("ws", 100)
    yield repository
    repository.close()


def _versions(admin: Any, schema: str) -> list[int]:
    query = sql.SQL("SELECT version FROM {}.schema_version ORDER BY version")
    return [row[0] for row in admin.execute(query.format(sql.Identifier(schema)))]


def _tables(admin: Any, schema: str) -> set[str]:
    rows = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {row[0] for row in rows}


# Schema and migration ------------------------------------------------------------------------


def test_migrate_records_version(conninfo: str, schema: str, admin: Any) -> None:
    """migrate() creates the tables once and records the schema version."""
    assert migrate(conninfo, schema=schema) == SCHEMA_VERSION
    assert migrate(conninfo, schema=schema) == SCHEMA_VERSION

    assert _versions(admin, schema) == [SCHEMA_VERSION]
    assert _tables(admin, schema) == {
        "schema_version",
        "workspaces",
        "members",
        "transfers",
        "idempotency_keys",
    }


def test_first_use_creates_schema(conninfo: str, schema: str, admin: Any) -> None:
    """Opening a repository on an empty database creates its schema."""
    PostgresRepository(conninfo, schema=schema).close()

    assert _versions(admin, schema) == [SCHEMA_VERSION]


def test_concurrent_first_uses_migrate_once(conninfo: str, schema: str, admin: Any) -> None:
    """Six threads opening the same new schema at once all succeed; one migrates it."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        barrier.wait(30)
        try:
            PostgresRepository(conninfo, schema=schema).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert _versions(admin, schema) == [SCHEMA_VERSION]


def test_newer_schema_version_rejected(conninfo: str, schema: str, admin: Any) -> None:
    """A schema written by a newer release is not used, with or without create_schema."""
    migrate(conninfo, schema=schema)
    query = sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)")
    admin.execute(query.format(sql.Identifier(schema)), (SCHEMA_VERSION + 1,))

    with pytest.raises(StorageError, match="newer"):
        PostgresRepository(conninfo, schema=schema)
    with pytest.raises(StorageError, match=f"version {SCHEMA_VERSION + 1}"):
        PostgresRepository(conninfo, schema=schema, create_schema=False)


def test_indexes_cover_lookups(conninfo: str, schema: str, admin: Any) -> None:
    """History and idempotency look-ups have indexes that lead with the workspace."""
    migrate(conninfo, schema=schema)
    rows = admin.execute(
        "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
    )
    columns = {(table, definition.split(" USING btree ")[1]) for table, definition in rows}

    assert ("transfers", "(workspace_id, sequence)") in columns
    assert ("transfers", "(workspace_id, member_id, sequence)") in columns
    assert ("idempotency_keys", "(workspace_id, key)") in columns
    assert ("transfers", "(reverses)") in columns


def test_balances_are_checked_bigint(repository: PostgresRepository, admin: Any) -> None:
    """Balances are bigint columns that the database itself keeps at 0 or above."""
    rows = admin.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND column_name IN ('pool_balance', 'balance')",
        (repository.schema,),
    )
    types = {(table, column): data_type for table, column, data_type in rows}
    assert types == {
        ("workspaces", "pool_balance"): "bigint",
        ("members", "balance"): "bigint",
        ("transfers", "pool_balance"): "bigint",
    }

    members = sql.Identifier(repository.schema, "members")
    with pytest.raises(psycopg.errors.CheckViolation):
        admin.execute(sql.SQL("UPDATE {} SET balance = -1").format(members))


# The schema option -----------------------------------------------------------------------


def test_schemas_are_isolated(conninfo: str, schema: str, admin: Any) -> None:
    """Each schema contains its own ledger, and the host's tables elsewhere stay untouched."""
    host = sql.Identifier(f"host_{uuid.uuid4().hex[:8]}")
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(host))
    admin.execute(sql.SQL("CREATE TABLE {}.workspaces (id text, note text)").format(host))
    admin.execute(sql.SQL("INSERT INTO {}.workspaces VALUES ('ws', 'host row')").format(host))

    first = PostgresRepository(conninfo, schema=schema)
    second = PostgresRepository(conninfo, schema=f"{schema}_other")
    try:
        Ledger(first).create_workspace("ws")
        with pytest.raises(WorkspaceNotFound):
            Ledger(second).pool("ws")
        Ledger(second).create_workspace("ws")
        Ledger(second).purchase("ws", 5)

        assert Ledger(first).pool("ws").balance == 0
        assert Ledger(second).pool("ws").balance == 5
    finally:
        first.close()
        second.close()
    rows = admin.execute(sql.SQL("SELECT id, note FROM {}.workspaces").format(host)).fetchall()
    assert rows == [("ws", "host row")]


def test_schema_with_foreign_tables_rejected(conninfo: str, schema: str, admin: Any) -> None:
    """A schema that already has a host table of the same name is left alone."""
    target = sql.Identifier(schema)
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(target))
    admin.execute(sql.SQL("CREATE TABLE {}.members (name text)").format(target))
    admin.execute(sql.SQL("INSERT INTO {}.members VALUES ('host row')").format(target))

    with pytest.raises(StorageError, match="did not create") as caught:
        PostgresRepository(conninfo, schema=schema)

    assert isinstance(caught.value.__cause__, psycopg.errors.DuplicateTable)
    assert _tables(admin, schema) == {"members"}
    rows = admin.execute(sql.SQL("SELECT name FROM {}.members").format(target)).fetchall()
    assert rows == [("host row",)]


def test_schema_name_is_quoted(conninfo: str, admin: Any) -> None:
    """A schema name with quotes, spaces and capitals is used as given, never as SQL."""
    odd = f'Odd "Name"; DROP {uuid.uuid4().hex[:6]}'
    repository = PostgresRepository(conninfo, schema=odd)
    try:
        Ledger(repository).create_workspace("ws")
        assert Ledger(repository).pool("ws").balance == 0
    finally:
        repository.close()
    assert "workspaces" in _tables(admin, odd)


@pytest.mark.parametrize("name", ["", "x" * 64, "nul\x00"])
def test_invalid_schema_name_rejected(conninfo: str, name: str) -> None:
    """An empty, overlong or NUL-containing schema name is rejected before connecting."""
    with pytest.raises(StorageError, match="invalid schema name"):
        PostgresRepository(conninfo, schema=name)


# Connections and pools ----------------------------------------------------------------------


def test_host_pool_is_used_and_left_open(conninfo: str, schema: str) -> None:
    """A pool passed in serves the ledger, and close() leaves it open for the host."""
    with ConnectionPool(conninfo, min_size=1, max_size=2, open=True) as pool:
        repository = PostgresRepository(pool, schema=schema)
        ledger = Ledger(repository)
        ledger.create_workspace("ws")
        ledger.purchase("ws", 7)
        assert ledger.pool("ws").balance == 7
        repository.close()

        assert not pool.closed
        with pool.connection() as connection:
            table = sql.Identifier(schema, "workspaces")
            row = connection.execute(sql.SQL("SELECT pool_balance FROM {}").format(table))
            assert row.fetchone() == (7,)
        # The closed repository still reaches the host's pool, not some other server.
        assert ledger.pool("ws").balance == 7


def test_create_schema_false_needs_migrate(conninfo: str, schema: str, admin: Any) -> None:
    """Without DDL rights the repository requires migrate() first, then works."""
    with pytest.raises(StorageError, match="migrate") as caught:
        PostgresRepository(conninfo, schema=schema, create_schema=False)
    assert "no coaching-credits tables" in str(caught.value)
    assert _tables(admin, schema) == set()

    migrate(conninfo, schema=schema)
    repository = PostgresRepository(conninfo, schema=schema, create_schema=False)
    try:
        Ledger(repository).create_workspace("ws")
        assert Ledger(repository).pool("ws").balance == 0
    finally:
        repository.close()


def test_runs_as_role_without_ddl_rights(conninfo: str, schema: str, admin: Any) -> None:
    """A role that may only read and write the tables runs the ledger after migrate()."""
    role = f"cc_app_{uuid.uuid4().hex[:8]}"
    migrate(conninfo, schema=schema)
    quoted_schema, quoted_role = sql.Identifier(schema), sql.Identifier(role)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(quoted_role))
    try:
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(quoted_schema, quoted_role))
        admin.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                quoted_schema, quoted_role
            )
        )
        app_conninfo = psycopg.conninfo.make_conninfo(conninfo, user=role)

        repository = PostgresRepository(app_conninfo, schema=schema, create_schema=False)
        try:
            ledger = Ledger(repository)
            ledger.create_workspace("ws")
            ledger.add_member("ws", "admin", role=Role.ADMIN)
            ledger.add_member("ws", "m")
            ledger.purchase("ws", 10)
            ledger.transfer_to("ws", "m", 4, actor="admin", idempotency_key="k")
            assert ledger.member("ws", "m").balance == 4
        finally:
            repository.close()

        # With create_schema=True the up-to-date schema needs no DDL either.
        PostgresRepository(app_conninfo, schema=schema).close()
    finally:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(quoted_role))
        admin.execute(sql.SQL("DROP ROLE {}").format(quoted_role))


# Error translation --------------------------------------------------------------------------


def test_unreachable_server_is_storage_error() -> None:
    """A refused connection raises StorageError with the driver's error as its cause."""
    with pytest.raises(StorageError, match="failed") as caught:
        PostgresRepository("host=127.0.0.1 port=1 user=postgres connect_timeout=5")

    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_driver_error_is_storage_error(repository: PostgresRepository, admin: Any) -> None:
    """A table dropped under the repository raises StorageError carrying the SQLSTATE."""
    table = sql.Identifier(repository.schema, "idempotency_keys")
    admin.execute(sql.SQL("DROP TABLE {}").format(table))

    with pytest.raises(StorageError, match="UndefinedTable") as caught:
        Ledger(repository).purchase("ws", 1, idempotency_key="k")

    assert caught.value.sqlstate == "42P01"
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
    assert Ledger(repository).pool("ws").balance == 100


def test_duplicates_keep_transaction_usable(repository: PostgresRepository) -> None:
    """Duplicate ids raise the domain errors without aborting the transaction."""
    ledger = Ledger(repository)
    with pytest.raises(WorkspaceAlreadyExists):
        ledger.create_workspace("ws")
    with pytest.raises(MemberAlreadyExists):
        ledger.add_member("ws", "m")

    with repository.transaction() as tx:
        with pytest.raises(MemberAlreadyExists):
            tx.insert_member(ledger.member("ws", "m"))
        tx.update_pool(Pool(workspace_id="ws", balance=99))

    assert ledger.pool("ws").balance == 99


def test_lock_timeout_is_retryable(conninfo: str, repository: PostgresRepository) -> None:
    """A writer blocked past lock_timeout retries, then raises ConcurrencyConflict."""
    impatient = PostgresRepository(conninfo, schema=repository.schema, lock_timeout=0.2)
    table = sql.Identifier(repository.schema, "workspaces")
    try:
        with psycopg.connect(conninfo) as holder:
            holder.execute(sql.SQL("SELECT 1 FROM {} WHERE id = 'ws' FOR UPDATE").format(table))

            with pytest.raises(RetryableConflict, match="LockNotAvailable"):  # noqa: SIM117
                with impatient.transaction() as tx:
                    tx.lock_workspace("ws")
            with pytest.raises(ConcurrencyConflict) as caught:
                Ledger(impatient, max_attempts=2).transfer_to("ws", "m", 10, actor="admin")
            assert caught.value.attempts == 2

        # Once the other transaction ends, the same call goes through.
        Ledger(impatient).transfer_to("ws", "m", 10, actor="admin")
        assert Ledger(impatient).member("ws", "m").balance == 10
    finally:
        impatient.close()


def test_stale_snapshot_is_retryable(conninfo: str, repository: PostgresRepository) -> None:
    """Locking a row changed since a read step's snapshot raises RetryableConflict."""
    table = sql.Identifier(repository.schema, "workspaces")
    with pytest.raises(RetryableConflict, match="SerializationFailure"):  # noqa: SIM117
        with repository.transaction() as tx:
            # A step that starts by reading runs at REPEATABLE READ: its snapshot is fixed.
            tx.get_workspace("ws")
            with psycopg.connect(conninfo, autocommit=True) as other:
                other.execute(
                    sql.SQL("UPDATE {} SET pool_balance = 90 WHERE id = 'ws'").format(table)
                )
            tx.lock_workspace("ws")


def test_journal_totals_exceed_bigint(repository: PostgresRepository) -> None:
    """Journal totals are summed as numeric, so twice the largest amount does not overflow."""
    ledger = Ledger(repository)
    ledger.transfer_to("ws", "m", 100, actor="admin")
    ledger.spend("ws", "m", 100)
    ledger.purchase("ws", MAX_AMOUNT)
    ledger.transfer_to("ws", "m", MAX_AMOUNT, actor="admin")
    ledger.spend("ws", "m", MAX_AMOUNT)
    ledger.purchase("ws", MAX_AMOUNT)

    with repository.transaction() as tx:
        totals = {(m, kind): total for m, kind, total in tx.journal_totals("ws")}

    assert totals[(None, TransferKind.PURCHASE)] == 100 + 2 * MAX_AMOUNT
    assert totals[("m", TransferKind.SPEND)] == 100 + MAX_AMOUNT
    assert ledger.pool("ws").balance == MAX_AMOUNT


# Host transactions --------------------------------------------------------------------------


@pytest.fixture
def orders(admin: Any) -> sql.Composable:
    """A host application's own table, in a schema of its own."""
    host = f"host_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(host)))
    table = sql.Identifier(host, "orders")
    admin.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY)").format(table))
    return table


def _order_ids(admin: Any, orders: sql.Composable) -> list[str]:
    rows = admin.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(orders))
    return [row[0] for row in rows]


def _member_balance(conninfo: str, schema: str) -> int:
    repository = PostgresRepository(conninfo, schema=schema)
    try:
        return Ledger(repository).member("ws", "m").balance
    finally:
        repository.close()


def test_host_rollback_undoes_credit_change(
    conninfo: str, repository: PostgresRepository, admin: Any, orders: sql.Composable
) -> None:
    """The host rolls back its transaction: its row and the credit change both vanish."""
    with psycopg.connect(conninfo) as connection:
        connection.execute(sql.SQL("INSERT INTO {} VALUES ('order-1')").format(orders))
        ledger = Ledger(PostgresRepository.from_connection(connection, schema=repository.schema))
        ledger.transfer_to("ws", "m", 30, actor="admin", idempotency_key="order-1")
        assert ledger.member("ws", "m").balance == 30
        # Nothing is committed yet, so another session sees the old balance.
        assert _member_balance(conninfo, repository.schema) == 0

        connection.rollback()

    assert _order_ids(admin, orders) == []
    assert _member_balance(conninfo, repository.schema) == 0
    history = Ledger(repository).history("ws", kinds=[TransferKind.TRANSFER_TO])
    assert history == []


def test_host_commit_keeps_both(
    conninfo: str, repository: PostgresRepository, admin: Any, orders: sql.Composable
) -> None:
    """The host commits: its row and the credit change are both stored."""
    with psycopg.connect(conninfo, autocommit=True) as connection, connection.transaction():
        connection.execute(sql.SQL("INSERT INTO {} VALUES ('order-2')").format(orders))
        ledger = Ledger(PostgresRepository.from_connection(connection, schema=repository.schema))
        ledger.transfer_to("ws", "m", 30, actor="admin")
        ledger.spend("ws", "m", 5)

    assert _order_ids(admin, orders) == ["order-2"]
    assert _member_balance(conninfo, repository.schema) == 25
    assert Ledger(repository).pool("ws").balance == 70


def test_failed_call_keeps_host_transaction(
    conninfo: str, repository: PostgresRepository, admin: Any, orders: sql.Composable
) -> None:
    """A rejected ledger call rolls back to its savepoint; the host's work goes on."""
    with psycopg.connect(conninfo) as connection:
        connection.execute(sql.SQL("INSERT INTO {} VALUES ('order-3')").format(orders))
        ledger = Ledger(PostgresRepository.from_connection(connection, schema=repository.schema))
        with pytest.raises(MemberAlreadyExists):
            ledger.add_member("ws", "m")
        connection.execute(sql.SQL("INSERT INTO {} VALUES ('order-4')").format(orders))
        connection.commit()

    assert _order_ids(admin, orders) == ["order-3", "order-4"]


def test_host_autocommit_outside_transaction_rejected(
    conninfo: str, repository: PostgresRepository
) -> None:
    """On an autocommit connection outside a transaction, the call is rejected unapplied."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        ledger = Ledger(PostgresRepository.from_connection(connection, schema=repository.schema))
        with pytest.raises(StorageError, match="autocommit"):
            ledger.purchase("ws", 1)

    assert Ledger(repository).pool("ws").balance == 100


def test_conflict_rolls_back_to_savepoint(
    conninfo: str, repository: PostgresRepository, admin: Any, orders: sql.Composable
) -> None:
    """A lock time-out aborts only the ledger's savepoint; the host transaction commits."""
    workspaces = sql.Identifier(repository.schema, "workspaces")
    with psycopg.connect(conninfo) as holder, psycopg.connect(conninfo) as connection:
        holder.execute(sql.SQL("SELECT 1 FROM {} WHERE id = 'ws' FOR UPDATE").format(workspaces))
        connection.execute("SET lock_timeout = 100")
        connection.execute(sql.SQL("INSERT INTO {} VALUES ('order-5')").format(orders))
        repository_in_host = PostgresRepository.from_connection(
            connection, schema=repository.schema
        )

        with pytest.raises(ConcurrencyConflict):
            Ledger(repository_in_host, max_attempts=2).purchase("ws", 1)
        connection.execute(sql.SQL("INSERT INTO {} VALUES ('order-6')").format(orders))
        connection.commit()
        holder.rollback()

    assert _order_ids(admin, orders) == ["order-5", "order-6"]
    assert Ledger(repository).pool("ws").balance == 100


def test_audit_sees_one_snapshot(conninfo: str, repository: PostgresRepository) -> None:
    """An audit during concurrent writes always balances: its queries share one snapshot."""
    writer = PostgresRepository(conninfo, schema=repository.schema)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        ledger = Ledger(writer)
        try:
            while not stop.is_set():
                ledger.purchase("ws", 2)
                ledger.transfer_to("ws", "m", 2, actor="admin")
                ledger.spend("ws", "m", 1)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        reports = [Ledger(repository).audit("ws") for _ in range(200)]
    finally:
        stop.set()
        thread.join(60)
        writer.close()

    assert errors == []
    assert [r for r in reports if not r.ok] == []
    assert len({r.purchased for r in reports}) > 1, "the writer never overlapped an audit"


# The guide's examples -------------------------------------------------------------------------

GUIDE = Path(__file__).parents[1] / "docs" / "postgresql.md"


def test_guide_examples_run(postgres_database: str) -> None:
    """The Python blocks of docs/postgresql.md run in order in a fresh database."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    name = f"coaching_credits_guide_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    guide_conninfo = psycopg.conninfo.make_conninfo(postgres_database, dbname=name)
    namespace: dict[str, Any] = {}
    opened: list[PostgresRepository] = []
    try:
        for block in blocks:
            # The examples name a made-up server; run them against the test database.
            code = re.sub(r'"postgresql://\w+@db\.internal/credits"', repr(guide_conninfo), block)
            exec(compile(code, str(GUIDE), "exec"), namespace)
            # A later block may rebind a name, so collect the repositories to close each time.
            opened += [v for v in namespace.values() if isinstance(v, PostgresRepository)]

        with psycopg.connect(guide_conninfo) as connection:
            orders = connection.execute("SELECT id FROM orders").fetchall()
        assert orders == [("order-17",)]
    finally:
        for repository in opened:
            repository.close()
        with psycopg.connect(postgres_database, autocommit=True) as admin:
            query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(query.format(sql.Identifier(name)))
