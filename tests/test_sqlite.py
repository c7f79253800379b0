"""SQLite specifics: schema version, WAL mode, busy timeout, CHECK constraints, reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coaching_credits import (
    MAX_AMOUNT,
    CreditError,
    Ledger,
    Role,
    SQLiteRepository,
    StorageError,
)
from coaching_credits.repository.sqlite import SCHEMA_VERSION


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


def test_schema_version_recorded(path: Path) -> None:
    """A new database records the schema version this release writes."""
    SQLiteRepository(path).close()
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT version FROM coaching_credits_schema").fetchall()
    connection.close()
    assert rows == [(SCHEMA_VERSION,)]


def test_reopen_keeps_one_version_row(path: Path) -> None:
    """Opening an existing database does not record the version again."""
    SQLiteRepository(path).close()
    SQLiteRepository(path).close()
    with sqlite3.connect(path) as connection:
        count = connection.execute("SELECT count(*) FROM coaching_credits_schema").fetchone()[0]
    connection.close()
    assert count == 1


def test_newer_schema_rejected(path: Path) -> None:
    """A database written by a newer release is rejected with a clear error."""
    SQLiteRepository(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE coaching_credits_schema SET version = ?", (SCHEMA_VERSION + 1,))
    connection.close()

    with pytest.raises(CreditError) as caught:
        SQLiteRepository(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade the library" in message


def test_wal_mode(path: Path) -> None:
    """A file database runs in WAL mode, so readers do not block the writer."""
    repository = SQLiteRepository(path)
    with repository.transaction() as tx:
        mode = tx.connection.execute("PRAGMA journal_mode").fetchone()[0]
    repository.close()
    assert mode == "wal"

    with sqlite3.connect(path) as connection:
        persisted = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert persisted == "wal"


def test_busy_timeout(path: Path) -> None:
    """The busy timeout given in seconds is set on the connection in milliseconds."""
    repository = SQLiteRepository(path, busy_timeout=2.5)
    with repository.transaction() as tx:
        timeout = tx.connection.execute("PRAGMA busy_timeout").fetchone()[0]
    repository.close()
    assert repository.busy_timeout == 2.5
    assert timeout == 2500


def test_foreign_keys_enforced(path: Path) -> None:
    """Foreign keys are on, so a member cannot point at a missing workspace."""
    repository = SQLiteRepository(path)
    with repository.transaction() as tx:
        enabled = tx.connection.execute("PRAGMA foreign_keys").fetchone()[0]
    repository.close()
    assert enabled == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE workspaces SET pool_balance = -1 WHERE id = 'ws'",
        "UPDATE members SET balance = -5 WHERE id = 'ann'",
        "UPDATE members SET role = 'owner' WHERE id = 'ann'",
        "UPDATE workspaces SET coaching_enabled = 2 WHERE id = 'ws'",
    ],
)
def test_check_constraints(path: Path, statement: str) -> None:
    """The schema rejects negative balances and bad values written behind the library's back."""
    repository = SQLiteRepository(path)
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "ann")
    ledger.purchase("ws", 5)
    repository.close()

    connection = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        connection.execute(statement)
    connection.close()

    reopened = SQLiteRepository(path)
    assert Ledger(reopened).pool("ws").balance == 5
    reopened.close()


def test_reopen_keeps_state(path: Path) -> None:
    """Closing and reopening a file database keeps balances, members, journal and keys."""
    repository = SQLiteRepository(path)
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.add_member("ws", "ann")
    ledger.purchase("ws", 30)
    first = ledger.transfer_to("ws", "ann", 12, actor="boss", idempotency_key="give")
    history = ledger.history("ws", limit=None)
    repository.close()

    reopened = SQLiteRepository(path)
    again = Ledger(reopened)
    assert again.pool("ws").balance == 18
    assert again.member("ws", "ann").balance == 12
    assert again.member("ws", "boss").role is Role.ADMIN
    assert again.history("ws", limit=None) == history
    assert again.transfer_to("ws", "ann", 12, actor="boss", idempotency_key="give") == first
    assert again.last_call_replayed is True
    assert again.pool("ws").balance == 18
    reopened.close()


def test_two_repositories_share_file(path: Path) -> None:
    """Two repository objects on one file see each other's commits."""
    writer = SQLiteRepository(path)
    reader = SQLiteRepository(path)
    Ledger(writer).create_workspace("ws")
    Ledger(writer).purchase("ws", 4)
    assert Ledger(reader).pool("ws").balance == 4
    writer.close()
    reader.close()


def test_memory_database() -> None:
    """``:memory:`` gives a working private database that is gone after close."""
    repository = SQLiteRepository(":memory:")
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.purchase("ws", 10)
    ledger.transfer_to("ws", "boss", 3, actor="boss")
    assert ledger.pool("ws").balance == 7
    assert ledger.member("ws", "boss").balance == 3
    repository.close()

    other = SQLiteRepository(":memory:")
    with pytest.raises(CreditError):
        Ledger(other).pool("ws")
    other.close()


def test_memory_databases_private() -> None:
    """Two ``:memory:`` repositories do not share state."""
    first = SQLiteRepository(":memory:")
    second = SQLiteRepository(":memory:")
    Ledger(first).create_workspace("ws")
    Ledger(second).create_workspace("ws")
    Ledger(first).purchase("ws", 9)
    assert Ledger(second).pool("ws").balance == 0
    first.close()
    second.close()


def test_rollback_on_constraint_error(path: Path) -> None:
    """A failing statement inside a transaction rolls back the earlier writes in it."""
    repository = SQLiteRepository(path)
    Ledger(repository).create_workspace("ws")

    failing = pytest.raises(StorageError, match="CHECK constraint failed")
    with failing as raised, repository.transaction() as tx:
        connection = tx.connection
        connection.execute("UPDATE workspaces SET pool_balance = 50 WHERE id = 'ws'")
        connection.execute("UPDATE workspaces SET pool_balance = -1 WHERE id = 'ws'")

    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    assert Ledger(repository).pool("ws").balance == 0
    repository.close()


def test_read_not_blocked_by_writer(path: Path) -> None:
    """A ledger read returns while another connection holds the write lock."""
    repository = SQLiteRepository(path, busy_timeout=0.2)
    ledger = Ledger(repository, max_attempts=1)
    ledger.create_workspace("ws")
    ledger.purchase("ws", 7)

    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE workspaces SET pool_balance = 99 WHERE id = 'ws'")
    try:
        assert ledger.pool("ws").balance == 7
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    repository.close()


def test_journal_totals_past_int64(path: Path) -> None:
    """Journal totals past 2**63-1 come back exact instead of overflowing in SQL."""
    repository = SQLiteRepository(path)
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.purchase("ws", MAX_AMOUNT)
    ledger.transfer_to("ws", "boss", MAX_AMOUNT, actor="boss")
    ledger.spend("ws", "boss", MAX_AMOUNT)
    ledger.purchase("ws", 3)

    report = ledger.audit("ws")
    assert report.ok
    assert report.purchased == MAX_AMOUNT + 3
    assert report.spent == MAX_AMOUNT
    repository.close()


def test_unopenable_path_is_storage_error(tmp_path: Path) -> None:
    """A path SQLite cannot open raises StorageError naming the path, not a sqlite3 error."""
    missing = tmp_path / "no" / "such" / "folder" / "ledger.db"
    with pytest.raises(StorageError, match=r"ledger\.db"):
        SQLiteRepository(missing)

    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("plain text, not SQLite\n" * 100)
    with pytest.raises(StorageError, match=r"notes\.db"):
        SQLiteRepository(not_a_database)


def test_unknown_kind_rejected_by_schema(path: Path) -> None:
    """The schema rejects a journal row with a kind the library does not know."""
    repository = SQLiteRepository(path)
    Ledger(repository).create_workspace("ws")
    repository.close()

    connection = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        connection.execute(
            "INSERT INTO transfers (id, workspace_id, kind, amount, created_at)"
            " VALUES ('t1', 'ws', 'bogus', 1, '2026-01-01T00:00:00+00:00')"
        )
    connection.close()


def test_audit_finds_tampered_snapshot(path: Path) -> None:
    """Balances recorded on a journal entry and changed with raw SQL fail the audit."""
    repository = SQLiteRepository(path)
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.purchase("ws", 100)
    given = ledger.transfer_to("ws", "boss", 30, actor="boss").transfer
    repository.close()

    connection = sqlite3.connect(path)
    connection.execute(
        "UPDATE transfers SET pool_balance = 999, member_balance = 999 WHERE id = ?", (given.id,)
    )
    connection.commit()
    connection.close()

    report = Ledger(SQLiteRepository(path)).audit("ws")
    checks = {(m.check.value, m.member_id, m.expected, m.stored) for m in report.mismatches}
    assert not report.ok
    assert checks == {("pool_snapshot", None, 999, 70), ("member_snapshot", "boss", 999, 30)}
