"""Measure coaching-credits against the limit each backend sets, and write docs/benchmarks.md.

Run from the repository root after ``pip install -e '.[dev]'``:

    python benchmarks/run.py            # everything; PostgreSQL parts need a server
    python benchmarks/run.py --quick    # smaller sizes, for a smoke run

Each comparison runs both sides in this one process, one after the other, so the ratio holds on
a noisy machine even where the absolute figures move. The PostgreSQL parts use
``COACHING_CREDITS_BENCH_POSTGRES`` (a libpq conninfo; default
``host=127.0.0.1 port=5432 user=postgres dbname=postgres``), create a throwaway database and
drop it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, Report, best_rate
from batch import bench_batching
from journal import bench_journal
from postgres import CONNINFO_VARIABLE, DEFAULT_CONNINFO, bench_postgres

from coaching_credits import (
    InsufficientCredits,
    Ledger,
    Member,
    Pool,
    Role,
    SQLiteRepository,
    Workspace,
    set_balances,
    transfer_from,
    transfer_to,
)

ROOT = Path(__file__).resolve().parents[1]

NOTES = """\
- Status `n/a` marks a comparison without a target (batching) or a part that was skipped.
- The machine has 2 cores, so ratios move by several points between runs: the SQLite ledger
  measured between 76% and 89% of raw sqlite3 in three runs of that comparison alone. Both
  sides of each comparison run in this one process, alternating where the script can.
- Both SQLite sides write ids of the ledger's shape (32 hex digits, time-ordered), because the
  size and order of index keys change the cost of an insert by a fifth.
- With 16 worker processes on 2 cores, PostgreSQL throughput is limited by client CPU, which
  is why it falls again after 4 workers.
- The psycopg here is its pure-Python build. In a trial on this machine its C build
  (`pip install "psycopg[binary]"`) cut the client CPU per PostgreSQL call by about a third
  and history pages from 2.8 ms to 0.8 ms, so use the C build in production.
- PostgreSQL batches save one commit per operation but keep the other round trips of each
  operation, so they gain far less than SQLite batches, whose cost is dominated by the commit.
- The journal benchmarks bulk-insert the 1,000,000 transfers with consistent balances, then
  check that the audit reports no mismatch before timing it."""


# Pure rules ---------------------------------------------------------------------------------


def bench_pure_rules(report: Report, seconds: float) -> None:
    """Compare transfer_to + transfer_from pairs with a bare-dict version of the same checks."""
    workspace = Workspace(id="bench")
    admin = Member(workspace_id="bench", id="admin", role=Role.ADMIN)
    member = Member(workspace_id="bench", id="member")
    pool = Pool(workspace_id="bench", balance=1_000_000)

    def library_pairs(count: int) -> None:
        current_pool, current_member = pool, member
        for _ in range(count):
            given = transfer_to(workspace, current_pool, current_member, 5, actor=admin)
            taken = transfer_from(workspace, given.pool, given.member, 5, actor=admin)
            current_pool, current_member = taken.pool, taken.member

    bare_workspace = {"id": "bench", "coaching_enabled": True}
    bare_admin = {"workspace_id": "bench", "id": "admin", "role": "admin", "balance": 0}

    def bare_move(
        pool_state: dict[str, object], member_state: dict[str, object], amount: int, to_member: bool
    ) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
        # The same checks and arithmetic as the rules, on plain dicts.
        if type(amount) is not int or not 1 <= amount <= 2**63 - 1:
            raise ValueError(amount)
        if bare_admin["workspace_id"] != bare_workspace["id"] or bare_admin["role"] != "admin":
            raise PermissionError
        if not bare_workspace["coaching_enabled"]:
            raise PermissionError
        if member_state["workspace_id"] != bare_workspace["id"]:
            raise LookupError
        pool_balance = pool_state["balance"]
        member_balance = member_state["balance"]
        assert isinstance(pool_balance, int) and isinstance(member_balance, int)
        source = pool_balance if to_member else member_balance
        if source < amount:
            raise InsufficientCredits(workspace_id="bench", requested=amount, available=source)
        sign = 1 if to_member else -1
        new_pool = {"workspace_id": "bench", "balance": pool_balance - sign * amount}
        new_member = {**member_state, "balance": member_balance + sign * amount}
        transfer = {
            "workspace_id": "bench",
            "member_id": member_state["id"],
            "kind": "transfer_to" if to_member else "transfer_from",
            "amount": amount,
            "actor_id": "admin",
            "pool_balance": new_pool["balance"],
            "member_balance": new_member["balance"],
        }
        return new_pool, new_member, transfer

    def bare_pairs(count: int) -> None:
        pool_state: dict[str, object] = {"workspace_id": "bench", "balance": 1_000_000}
        member_state: dict[str, object] = {
            "workspace_id": "bench",
            "id": "member",
            "role": "member",
            "balance": 0,
        }
        for _ in range(count):
            pool_state, member_state, _t = bare_move(pool_state, member_state, 5, True)
            pool_state, member_state, _t = bare_move(pool_state, member_state, 5, False)

    def library_transfers_to(count: int) -> None:
        current_pool, current_member = big_pool, member
        for _ in range(count):
            given = transfer_to(workspace, current_pool, current_member, 5, actor=admin)
            current_pool, current_member = given.pool, given.member

    def bare_transfers_to(count: int) -> None:
        pool_state: dict[str, object] = {"workspace_id": "bench", "balance": 10**15}
        member_state: dict[str, object] = {
            "workspace_id": "bench",
            "id": "member",
            "role": "member",
            "balance": 0,
        }
        for _ in range(count):
            pool_state, member_state, _t = bare_move(pool_state, member_state, 5, True)

    big_pool = Pool(workspace_id="bench", balance=10**15)
    library = best_rate(library_pairs, seconds)
    bare = best_rate(bare_pairs, seconds)
    library_to = best_rate(library_transfers_to, seconds)
    bare_to = best_rate(bare_transfers_to, seconds)
    report.add(
        Figure(
            "pure rules",
            "transfer_to calls per second alone, and transfer_to + transfer_from pairs",
            f"transfer_to {library_to:,.0f} calls/s, bare dicts {bare_to:,.0f}/s, "
            f"{bare_to / library_to:.1f}x slower than bare; pairs {library:,.0f}/s, bare dicts "
            f"{bare:,.0f}/s, {bare / library:.1f}x slower than bare",
            "at least 300,000 transfer_to calls/s and within 12x of the bare baseline",
            library_to >= 300_000 and bare_to / library_to <= 12 and bare / library <= 12,
        )
    )


def bench_set_balances(report: Report, sizes: list[int]) -> None:
    """Time set_balances on growing member lists and record peak memory with tracemalloc."""
    import tracemalloc

    workspace = Workspace(id="bench")
    admin = Member(workspace_id="bench", id="admin", role=Role.ADMIN)
    rows = []
    timings: dict[int, float] = {}
    for size in sizes:
        members = [
            Member(workspace_id="bench", id=f"m{i:07d}", balance=i % 11) for i in range(size)
        ]
        pool = Pool(workspace_id="bench", balance=10 * size)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            set_balances(workspace, pool, members, 5, actor=admin)
            best = min(best, time.perf_counter() - started)
        tracemalloc.start()
        set_balances(workspace, pool, members, 5, actor=admin)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        timings[size] = best
        rows.append(f"{size:,} members: {best * 1000:.1f} ms, peak {peak / 2**20:.1f} MiB")
    largest = max(sizes)
    smallest = min(sizes)
    growth = (timings[largest] / timings[smallest]) / (largest / smallest)
    report.add(
        Figure(
            "set_balances",
            "time and peak memory by member count",
            "; ".join(rows) + f"; time per member grows {growth:.2f}x from smallest to largest",
            "100,000 members under 0.5 s, growing linearly",
            (largest < 100_000 or timings[largest] < 0.5) and growth < 2.0,
        )
    )


# SQLite -----------------------------------------------------------------------------------


def bench_sqlite(report: Report, seconds: float) -> None:
    """Compare committed Ledger.transfer_to calls with raw sqlite3 running the same statements."""
    with tempfile.TemporaryDirectory() as folder:
        ledger_path = os.path.join(folder, "ledger.db")
        raw_path = os.path.join(folder, "raw.db")
        ledger = Ledger(SQLiteRepository(ledger_path))
        ledger.create_workspace("bench")
        ledger.add_member("bench", "admin", role=Role.ADMIN)
        ledger.add_member("bench", "member")
        ledger.purchase("bench", 2**62)

        def ledger_transfers(count: int) -> None:
            for _ in range(count):
                ledger.transfer_to("bench", "member", 1, actor="admin")

        # The raw side: a copy of the same database, and the statements the SQLite backend
        # runs for one transfer_to call, with parameters, in one transaction per call.
        SQLiteRepository(raw_path).close()
        connection = sqlite3.connect(raw_path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(
            "INSERT INTO workspaces (id, coaching_enabled, low_pool_threshold, pool_balance)"
            " VALUES ('bench', 1, 0, ?)",
            (2**62,),
        )
        connection.execute(
            "INSERT INTO members VALUES ('bench', 'admin', 'admin', 0), "
            "('bench', 'member', 'member', 0)"
        )

        def raw_id() -> str:
            # Ids of the ledger's shape: 32 hex digits that start with the time in milliseconds,
            # so both sides write index keys of the same size in the same order.
            return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"

        def raw_transfers(count: int) -> None:
            for _ in range(count):
                connection.execute("BEGIN IMMEDIATE")
                pool_balance = connection.execute(
                    "SELECT coaching_enabled, low_pool_threshold, pool_balance FROM workspaces"
                    " WHERE id = ?",
                    ("bench",),
                ).fetchone()[2]
                balances = dict(
                    connection.execute(
                        "SELECT id, balance FROM members WHERE workspace_id = ? AND id IN (?,?)",
                        ("bench", "admin", "member"),
                    ).fetchall()
                )
                connection.execute(
                    "UPDATE workspaces SET pool_balance = ? WHERE id = ?",
                    (pool_balance - 1, "bench"),
                )
                connection.executemany(
                    "UPDATE members SET role = ?, balance = ? WHERE workspace_id = ? AND id = ?",
                    [("member", balances["member"] + 1, "bench", "member")],
                )
                connection.execute(
                    "INSERT INTO transfers (id, workspace_id, member_id, kind, amount, actor_id,"
                    " pool_balance, member_balance, created_at, reason, metadata, reverses)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        raw_id(),
                        "bench",
                        "member",
                        "transfer_to",
                        1,
                        "admin",
                        pool_balance - 1,
                        balances["member"] + 1,
                        "2026-01-01T00:00:00.000000+00:00",
                        None,
                        None,
                        None,
                    ),
                )
                connection.execute("COMMIT")

        library = best_rate(ledger_transfers, seconds)
        raw = best_rate(raw_transfers, seconds)
        connection.close()
        ledger.repository.close()
    report.add(
        Figure(
            "SQLite ledger",
            "committed transfer_to calls per second, one writer",
            f"Ledger {library:,.0f}/s; raw sqlite3 {raw:,.0f}/s; {library / raw:.0%} of raw",
            "at least 70% of raw sqlite3",
            library / raw >= 0.7,
        )
    )


# Main -------------------------------------------------------------------------------------


def machine_facts(conninfo: str | None) -> dict[str, str]:
    """Return the facts that make the figures comparable: CPU, cores, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": _postgres_version(conninfo),
        "psycopg": _psycopg_version(),
    }


def _postgres_version(conninfo: str | None) -> str:
    if conninfo is None:
        return "not measured"
    import psycopg

    with psycopg.connect(conninfo, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def _psycopg_version() -> str:
    try:
        import psycopg
    except ImportError:
        return "not installed"
    return f"{psycopg.__version__} ({psycopg.pq.__impl__} implementation)"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table and write docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    parser.add_argument(
        "--no-postgres", action="store_true", help="skip the parts that need a PostgreSQL server"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="Markdown file to write (default: docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else 2.0
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]

    conninfo = None if args.no_postgres else os.environ.get(CONNINFO_VARIABLE, DEFAULT_CONNINFO)
    transfers = 100_000 if args.quick else 1_000_000

    report = Report(machine_facts(conninfo))
    steps: list[Callable[[], None]] = [
        lambda: bench_pure_rules(report, seconds),
        lambda: bench_set_balances(report, sizes),
        lambda: bench_sqlite(report, seconds),
        lambda: bench_batching(report, seconds, conninfo),
        lambda: bench_journal(report, conninfo, transfers=transfers),
    ]
    if conninfo is not None:
        steps.append(lambda: bench_postgres(report, seconds, conninfo))
    for step in steps:
        step()
    print(report.table())
    args.output.write_text(
        report.markdown(command="python benchmarks/run.py", notes=NOTES), encoding="utf-8"
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
