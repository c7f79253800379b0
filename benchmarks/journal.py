"""Measure history paging and the audit on a journal of 1,000,000 transfers.

Run from the repository root after ``pip install -e '.[dev]'``:

    python benchmarks/journal.py                        # SQLite, and PostgreSQL if reachable
    python benchmarks/journal.py --transfers 100000     # a smaller journal, for a smoke run

The journal is built in bulk. The ledger creates the workspace, its members and one purchase.
Then rows that follow the ledger's rules are inserted directly (SQLite ``executemany`` in one
transaction, PostgreSQL ``COPY``), and the stored balances are set to what those rows leave.
A few more transfers then go through the ledger on top, and the audit must report no
mismatch. The SQLite file lives in a temporary folder and the PostgreSQL database is a
throwaway one (see ``benchmarks/postgres.py``); both are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, Report, best_rate
from postgres import CONNINFO_VARIABLE, DEFAULT_CONNINFO, throwaway_database

from coaching_credits import Ledger, Role, SQLiteRepository, TransferKind

WORKSPACE = "journal"
ADMIN = "admin"
MEMBER_COUNT = 100
PAGE_SIZE = 100
PAGES = 100
#: The member whose history is paged on its own. Each member has 1/100 of the entries, so a
#: journal smaller than 1,000,000 gives fewer than ``PAGES`` pages of them.
PAGED_MEMBER = "member-042"
#: Credits bought before the bulk rows; each member-round of the pattern takes 3 from the pool.
PURCHASE = 10**12
#: Transfers committed through the ledger after the bulk rows.
LEDGER_TRANSFERS = 10
AUDIT_RUNS = 3

#: The time of the ledger's own entries; bulk row ``i`` is stamped ``i + 1`` seconds later.
START = datetime(2025, 1, 1, tzinfo=timezone.utc)

#: The moves of each member in turn, repeated: a member's balance goes 3, 5, 4, 2 and then
#: up by 2 per round, so no running balance is ever negative.
_PATTERN = (
    (TransferKind.TRANSFER_TO, 3),
    (TransferKind.TRANSFER_TO, 2),
    (TransferKind.SPEND, 1),
    (TransferKind.TRANSFER_FROM, 2),
)

_INSERT_COLUMNS = (
    "id, workspace_id, member_id, kind, amount, actor_id, pool_balance, member_balance,"
    " created_at, reason, metadata, reverses"
)


def _member_id(index: int) -> str:
    return f"member-{index:03d}"


class _SyntheticJournal:
    """Rows of transfers that obey the ledger's rules, and the balances they leave behind.

    ``pool``, ``balances`` and ``spent`` contain the final values once :meth:`rows` has been
    consumed.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.pool = PURCHASE
        self.balances = [0] * MEMBER_COUNT
        self.spent = 0

    def rows(self, stamp: Callable[[datetime], object]) -> Iterator[tuple[Any, ...]]:
        """Yield one row per transfer in ``_INSERT_COLUMNS`` order; ``stamp`` formats the time."""
        pool = self.pool
        balances = self.balances
        member_ids = [_member_id(index) for index in range(MEMBER_COUNT)]
        for index in range(self.count):
            member = index % MEMBER_COUNT
            kind, amount = _PATTERN[(index // MEMBER_COUNT) % len(_PATTERN)]
            actor: str | None = ADMIN
            if kind is TransferKind.TRANSFER_TO:
                pool -= amount
                balances[member] += amount
            elif kind is TransferKind.TRANSFER_FROM:
                pool += amount
                balances[member] -= amount
            else:
                balances[member] -= amount
                self.spent += amount
                actor = member_ids[member]
            yield (
                f"bulk-{index:08d}",
                WORKSPACE,
                member_ids[member],
                kind.value,
                amount,
                actor,
                pool,
                balances[member],
                stamp(START + timedelta(seconds=index + 1)),
                None,
                None,
                None,
            )
        self.pool = pool


def _prepare_ledger(ledger: Ledger) -> None:
    ledger.create_workspace(WORKSPACE)
    ledger.add_member(WORKSPACE, ADMIN, role=Role.ADMIN)
    for index in range(MEMBER_COUNT):
        ledger.add_member(WORKSPACE, _member_id(index))
    ledger.purchase(WORKSPACE, PURCHASE)


def _final_balances(journal: _SyntheticJournal) -> list[tuple[int, str, str]]:
    return [
        (balance, WORKSPACE, _member_id(index)) for index, balance in enumerate(journal.balances)
    ]


# Building the journal ---------------------------------------------------------------------


def _fill_sqlite(path: str, journal: _SyntheticJournal) -> None:
    """Insert the synthetic rows and the balances they leave, in one transaction."""

    def stamp(moment: datetime) -> str:
        # The SQLite backend's time format: UTC ISO 8601 with microseconds.
        return moment.isoformat(timespec="microseconds")

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            f"INSERT INTO transfers ({_INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            journal.rows(stamp),
        )
        connection.execute(
            "UPDATE workspaces SET pool_balance = ? WHERE id = ?", (journal.pool, WORKSPACE)
        )
        connection.executemany(
            "UPDATE members SET balance = ? WHERE workspace_id = ? AND id = ?",
            _final_balances(journal),
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


def _fill_postgres(conninfo: str, schema: str, journal: _SyntheticJournal) -> None:
    """COPY the synthetic rows in, set the balances they leave, then VACUUM ANALYZE.

    With default settings, autovacuum vacuums and analyzes a table after an insert of this
    size (PostgreSQL 13 or later). Running it here measures that steady state, not the
    minutes before autovacuum reaches the table.
    """
    import psycopg

    quoted = f'"{schema}"'
    with psycopg.connect(conninfo) as connection:
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY {quoted}.transfers ({_INSERT_COLUMNS}) FROM STDIN") as copy:
                for row in journal.rows(lambda moment: moment):
                    copy.write_row(row)
            cursor.execute(
                f"UPDATE {quoted}.workspaces SET pool_balance = %s WHERE id = %s",
                (journal.pool, WORKSPACE),
            )
            cursor.executemany(
                f"UPDATE {quoted}.members SET balance = %s WHERE workspace_id = %s AND id = %s",
                _final_balances(journal),
            )
        connection.commit()
        connection.autocommit = True
        connection.execute(f"VACUUM ANALYZE {quoted}.transfers")


# Measuring --------------------------------------------------------------------------------


def _check_walk(ledger: Ledger, member_id: str | None, pages: int) -> None:
    """Walk the pages once and check that they neither skip nor repeat entries."""
    before: int | None = None
    sequences: list[int] = []
    for _ in range(pages):
        page = ledger.history(WORKSPACE, member_id=member_id, before=before, limit=PAGE_SIZE)
        if len(page) != PAGE_SIZE:
            raise AssertionError(
                f"a history page contained {len(page)} entries, expected {PAGE_SIZE}"
            )
        if member_id is not None and any(t.member_id != member_id for t in page):
            raise AssertionError(
                f"a page of {member_id!r}'s history contained another member's entry"
            )
        sequences.extend(t.sequence or 0 for t in page)
        before = page[-1].sequence
    if sequences != sorted(set(sequences), reverse=True):
        raise AssertionError("history pages repeated entries or were out of order")
    if member_id is None and sequences[0] - sequences[-1] != pages * PAGE_SIZE - 1:
        raise AssertionError("the workspace's history pages skipped entries")


def _page_rate(ledger: Ledger, member_id: str | None, pages: int, seconds: float) -> float:
    """Return history pages per second, walking the newest ``pages`` pages again and again."""
    _check_walk(ledger, member_id, pages)

    def walk(count: int) -> None:
        before: int | None = None
        for index in range(count):
            if index % pages == 0:
                before = None
            page = ledger.history(WORKSPACE, member_id=member_id, before=before, limit=PAGE_SIZE)
            before = page[-1].sequence

    return best_rate(walk, seconds)


def _time_audit(ledger: Ledger, journal: _SyntheticJournal) -> list[float]:
    """Run the audit ``AUDIT_RUNS`` times, check that it passes, and return each time."""
    timings = []
    for _ in range(AUDIT_RUNS):
        started = time.perf_counter()
        audit = ledger.audit(WORKSPACE)
        timings.append(time.perf_counter() - started)
        if not audit.ok:
            raise AssertionError(f"the audit found mismatches: {audit.mismatches}")
        if audit.spent != journal.spent or audit.purchased != PURCHASE:
            raise AssertionError(
                f"the audit counted {audit.spent} spent and {audit.purchased} purchased, "
                f"expected {journal.spent} and {PURCHASE}"
            )
    return timings


def _measure(ledger: Ledger, journal: _SyntheticJournal, seconds: float) -> tuple[str, bool]:
    """Transfer on top of the bulk rows, then time paging and the audit; return the result."""
    for _ in range(LEDGER_TRANSFERS):
        ledger.transfer_to(WORKSPACE, PAGED_MEMBER, 1, actor=ADMIN)
    member_pages = min(PAGES, journal.count // MEMBER_COUNT // PAGE_SIZE)
    workspace_rate = _page_rate(ledger, None, PAGES, seconds)
    member_rate = _page_rate(ledger, PAGED_MEMBER, member_pages, seconds)
    audits = _time_audit(ledger, journal)
    worst = max(audits)
    result = (
        f"page of {PAGE_SIZE}: workspace {1000 / workspace_rate:.2f} ms over {PAGES} pages, "
        f"one member {1000 / member_rate:.2f} ms over {member_pages} pages; "
        f"audit {min(audits):.2f} s best, {worst:.2f} s worst of {AUDIT_RUNS}"
    )
    return result, worst < 10.0


def _figure(backend: str, count: int, result: str, met: bool | None, note: str = "") -> Figure:
    return Figure(
        f"journal, {backend}",
        f"history paging ({PAGES} pages of {PAGE_SIZE}) and audit, {count:,} transfers",
        result,
        "audit under 10 s",
        met,
        note=note,
    )


def bench_journal(
    report: Report,
    postgres_conninfo: str | None,
    *,
    transfers: int = 1_000_000,
    seconds: float = 1.0,
) -> None:
    """Time history pages and the audit on a journal of ``transfers`` entries, per backend.

    The PostgreSQL part is skipped when ``postgres_conninfo`` is ``None``.
    """
    if transfers < PAGES * PAGE_SIZE:
        raise ValueError(
            f"invalid journal size {transfers:,}: paging needs at least "
            f"{PAGES * PAGE_SIZE:,} transfers"
        )

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "journal.db")
        ledger = Ledger(SQLiteRepository(path), clock=lambda: START)
        try:
            _prepare_ledger(ledger)
            journal = _SyntheticJournal(transfers)
            started = time.perf_counter()
            _fill_sqlite(path, journal)
            built = time.perf_counter() - started
            result, met = _measure(ledger, journal, seconds)
            size = os.path.getsize(path) / 2**20
        finally:
            ledger.repository.close()
    report.add(
        _figure(
            "SQLite",
            transfers,
            f"{result}; built in {built:.0f} s, {size:,.0f} MiB file",
            met,
            note="" if met else "audit took 10 s or longer",
        )
    )

    if postgres_conninfo is None:
        report.add(_figure("PostgreSQL", transfers, "not run", None, note="no conninfo given"))
        return

    from coaching_credits.repository.postgres import PostgresRepository

    schema = "coaching_credits"
    with throwaway_database(postgres_conninfo, "journal") as database:
        ledger = Ledger(PostgresRepository(database, schema=schema), clock=lambda: START)
        try:
            _prepare_ledger(ledger)
            journal = _SyntheticJournal(transfers)
            started = time.perf_counter()
            _fill_postgres(database, schema, journal)
            built = time.perf_counter() - started
            result, met = _measure(ledger, journal, seconds)
        finally:
            ledger.repository.close()
    report.add(
        _figure(
            "PostgreSQL",
            transfers,
            f"{result}; built in {built:.0f} s",
            met,
            note="" if met else "audit took 10 s or longer",
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the journal benchmark alone and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--transfers", type=int, default=1_000_000, help="journal entries to build")
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="length of one timed paging round, in seconds"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL part")
    args = parser.parse_args(argv)
    conninfo = None if args.no_postgres else os.environ.get(CONNINFO_VARIABLE, DEFAULT_CONNINFO)
    report = Report({})
    bench_journal(report, conninfo, transfers=args.transfers, seconds=args.seconds)
    print(report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
