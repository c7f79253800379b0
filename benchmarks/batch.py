"""Measure Ledger.apply_batch against one transaction per operation, on SQLite and PostgreSQL.

Run from the repository root after ``pip install -e '.[dev]'``:

    python benchmarks/batch.py            # PostgreSQL part needs a server
    python benchmarks/batch.py --quick    # shorter runs

Both sides apply the same transfer_to operations to the same kind of database, one after the
other in this process. The PostgreSQL part uses ``COACHING_CREDITS_BENCH_POSTGRES`` (a libpq
conninfo; default ``host=127.0.0.1 port=5432 user=postgres dbname=postgres``), creates a
throwaway database and drops it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, Report, best_rate

from coaching_credits import Ledger, Operation, Repository, Role, SQLiteRepository

#: Operations per batch on the batched side.
BATCH_SIZE = 100
DEFAULT_POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _prepared_ledger(repository: Repository) -> Ledger:
    ledger = Ledger(repository)
    ledger.create_workspace("bench")
    ledger.add_member("bench", "admin", role=Role.ADMIN)
    ledger.add_member("bench", "member")
    ledger.purchase("bench", 2**62)
    return ledger


def _compare(open_repository: Callable[[], Repository], seconds: float) -> tuple[float, float]:
    """Return operations per second one at a time and in batches of ``BATCH_SIZE``."""
    single = _prepared_ledger(open_repository())
    batched = _prepared_ledger(open_repository())
    operation = Operation(
        "transfer_to", "bench", {"member_id": "member", "amount": 1, "actor": "admin"}
    )

    def one_per_transaction(count: int) -> None:
        for _ in range(count):
            single.transfer_to("bench", "member", 1, actor="admin")

    def in_batches(count: int) -> None:
        # count is a number of operations, so both sides report operations per second.
        for start in range(0, count, BATCH_SIZE):
            batched.apply_batch([operation] * min(BATCH_SIZE, count - start))

    try:
        return best_rate(one_per_transaction, seconds), best_rate(in_batches, seconds)
    finally:
        single.repository.close()
        batched.repository.close()


def _figure(area: str, single: float, batched: float, note: str = "") -> Figure:
    speedup = batched / single
    return Figure(
        area,
        f"committed transfer_to operations per second, batches of {BATCH_SIZE} against one "
        f"transaction each",
        f"batched {batched:,.0f}/s; one per transaction {single:,.0f}/s; {speedup:.1f}x",
        "none set: measured for comparison",
        None,
        note,
    )


@contextmanager
def _throwaway_database(conninfo: str) -> Iterator[str]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"coaching_credits_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(conninfo, dbname=name)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_batching(report: Report, seconds: float, postgres_conninfo: str | None) -> None:
    """Add one figure for SQLite and one for PostgreSQL (skipped without a conninfo)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = iter(os.path.join(folder, f"ledger-{n}.db") for n in range(2))
        single, batched = _compare(lambda: SQLiteRepository(next(paths)), seconds)
    report.add(_figure("SQLite batches", single, batched))

    if postgres_conninfo is None:
        report.add(
            Figure(
                "PostgreSQL batches",
                "committed transfer_to operations per second, batched against one each",
                "not measured: no PostgreSQL conninfo given",
                "none set: measured for comparison",
                None,
            )
        )
        return

    from coaching_credits.repository.postgres import PostgresRepository

    with _throwaway_database(postgres_conninfo) as conninfo:
        schemas = iter(["single", "batched"])
        single, batched = _compare(
            lambda: PostgresRepository(conninfo, schema=next(schemas)), seconds
        )
    # A batch saves the commit and the transaction set-up, but each operation still makes
    # about five round trips to the server (workspace, members, pool, members, journal).
    note = "each operation still makes about five round trips; the commit is what a batch saves"
    report.add(_figure("PostgreSQL batches", single, batched, note))


def main(argv: list[str] | None = None) -> int:
    """Run the batching benchmark alone and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL part")
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else 2.0
    conninfo = None
    if not args.no_postgres:
        conninfo = os.environ.get("COACHING_CREDITS_BENCH_POSTGRES", DEFAULT_POSTGRES)

    from run import machine_facts

    report = Report(machine_facts(conninfo))
    bench_batching(report, seconds, conninfo)
    print(report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
