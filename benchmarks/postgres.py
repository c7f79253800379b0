"""Measure committed Ledger.transfer_to calls per second on PostgreSQL with concurrent workers.

Run from the repository root after ``pip install -e '.[dev]'``, with a PostgreSQL server on
this machine:

    python benchmarks/postgres.py               # 2 s rounds
    python benchmarks/postgres.py --seconds 0.5

Each worker is a separate process (multiprocessing, spawn context) with one connection.
On the library side it calls ``Ledger.transfer_to`` on a :class:`PostgresRepository`. On the
raw side it runs, with psycopg, the statements that the PostgreSQL backend sends for one
``transfer_to`` call, in one transaction per call. Both sides work on identical tables in two
schemas of one throwaway database, which is created with ``CREATE DATABASE`` through
``COACHING_CREDITS_BENCH_POSTGRES`` (default ``host=127.0.0.1 port=5432 user=postgres
dbname=postgres``) and dropped at the end, also after a failure. Only a server on this
machine is accepted, because the script creates and drops databases.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, Report, best_rate

from coaching_credits import Ledger, Role

DEFAULT_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CONNINFO_VARIABLE = "COACHING_CREDITS_BENCH_POSTGRES"

#: Worker counts measured, and the number of workspaces the spread layout uses.
WORKER_COUNTS = (1, 4, 16)
WORKSPACE_COUNT = 16

#: Timed rounds per side and setting; the best one counts, as in best_rate.
ROUNDS = 3
SIDES = ("library", "raw")

LIBRARY_SCHEMA = "coaching_credits"
RAW_SCHEMA = "coaching_credits_raw"
ADMIN = "admin"

#: Maximum time, in seconds, for a worker to start, and for a round to run past its planned
#: length, before the benchmark stops the workers and fails.
START_TIMEOUT = 60.0
ROUND_GRACE = 60.0

_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


# Throwaway database -----------------------------------------------------------------------


def require_loopback(conninfo: str) -> None:
    """Raise ``ValueError`` unless ``conninfo`` names a server on this machine.

    The benchmarks create and drop databases, so they never run against another host. A
    Unix socket directory (a host starting with ``/``) counts as this machine, and so does
    no host at all, which libpq takes as its default socket directory.
    """
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    # hostaddr, when given, is the address libpq connects to, whichever host is named.
    targets = []
    for key, variable in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR")):
        value = params.get(key) or os.environ.get(variable) or ""
        targets.extend(str(value).split(","))
    remote = [t for t in targets if t and t not in _LOOPBACK_HOSTS and not t.startswith("/")]
    if remote:
        raise ValueError(
            f"invalid benchmark conninfo {conninfo!r}: host {remote[0]!r} is not 127.0.0.1, "
            f"::1, localhost or a Unix socket directory, and the benchmark creates and drops "
            f"databases; set {CONNINFO_VARIABLE} to a server on this machine"
        )


@contextmanager
def throwaway_database(conninfo: str, purpose: str) -> Iterator[str]:
    """Create a database through ``conninfo``, yield its conninfo, and drop it on the way out.

    ``purpose`` becomes part of the database name, to tell leftovers of a killed run apart.
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    require_loopback(conninfo)
    name = f"coaching_credits_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(conninfo, dbname=name)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            # FORCE ends sessions that a failed run left open (PostgreSQL 13 or later).
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The two sides of one transfer, run inside a worker process -------------------------------

#: A function committing one transfer in the given workspace, and one closing its connection.
_Side = tuple[Callable[[str], None], Callable[[], None]]


def _library_transfer(conninfo: str, member_id: str) -> _Side:
    from coaching_credits.repository.postgres import PostgresRepository

    ledger = Ledger(PostgresRepository(conninfo, schema=LIBRARY_SCHEMA))

    def transfer(workspace_id: str) -> None:
        ledger.transfer_to(workspace_id, member_id, 1, actor=ADMIN)

    return transfer, ledger.repository.close


def _raw_transfer(conninfo: str, member_id: str) -> _Side:
    """Return a function running the backend's statements for one ``transfer_to`` call.

    The statements, their order and the transaction settings are those the PostgreSQL
    backend sends, as seen in the server log with ``log_statement = all``.
    """
    import psycopg

    schema = f'"{RAW_SCHEMA}"'
    setup = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 30000"
    lock_workspace = (
        f"SELECT coaching_enabled, low_pool_threshold, pool_balance FROM {schema}.workspaces"
        " WHERE id = %s FOR UPDATE"
    )
    lock_members = (
        f"SELECT id, role, balance FROM {schema}.members"
        " WHERE workspace_id = %s AND id = ANY(%s::text[]) ORDER BY id FOR UPDATE"
    )
    update_pool = f"UPDATE {schema}.workspaces SET pool_balance = %s WHERE id = %s"
    update_members = (
        f"UPDATE {schema}.members AS m SET role = u.role, balance = u.balance"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[])"
        " AS u (workspace_id, id, role, balance)"
        " WHERE m.workspace_id = u.workspace_id AND m.id = u.id"
    )
    insert_transfer = (
        f"INSERT INTO {schema}.transfers (id, workspace_id, member_id, kind, amount, actor_id,"
        " pool_balance, member_balance, created_at, reason, metadata, reverses)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING sequence"
    )
    member_ids = sorted({ADMIN, member_id})
    connection = psycopg.connect(conninfo)

    def transfer(workspace_id: str) -> None:
        with connection.transaction():
            connection.execute(setup)
            row = connection.execute(lock_workspace, (workspace_id,)).fetchone()
            if row is None:
                raise LookupError(f"workspace {workspace_id!r} not found in the raw schema")
            coaching_enabled, _threshold, pool_balance = row
            found = {
                found_id: (role, balance)
                for found_id, role, balance in connection.execute(
                    lock_members, (workspace_id, member_ids)
                )
            }
            # The checks of the transfer_to rule, on the values just read.
            if not coaching_enabled or found[ADMIN][0] != "admin" or pool_balance < 1:
                raise RuntimeError(f"raw transfer_to rejected in workspace {workspace_id!r}")
            role, balance = found[member_id]
            connection.execute(update_pool, (pool_balance - 1, workspace_id))
            connection.execute(update_members, ([workspace_id], [member_id], [role], [balance + 1]))
            connection.execute(
                insert_transfer,
                (
                    uuid.uuid4().hex,
                    workspace_id,
                    member_id,
                    "transfer_to",
                    1,
                    ADMIN,
                    pool_balance - 1,
                    balance + 1,
                    datetime.now(timezone.utc),
                    None,
                    None,
                    None,
                ),
            ).fetchone()

    return transfer, connection.close


def _worker(
    channel: Connection, conninfo: str, side: str, workspace_ids: list[str], member_id: str
) -> None:
    """Run transfers on request: receive ``(count, seconds)``, send back how many committed.

    A round stops early when ``seconds`` have passed, so a stuck server cannot hold the
    benchmark. ``None`` ends the worker; an error is sent back as text.
    """
    try:
        setup = _library_transfer if side == "library" else _raw_transfer
        transfer, close = setup(conninfo, member_id)
    except Exception as error:
        channel.send(f"{side} worker failed to start: {type(error).__name__}: {error}")
        return
    try:
        channel.send("ready")
        while True:
            task = channel.recv()
            if task is None:
                break
            count, seconds = task
            deadline = time.monotonic() + seconds
            done = 0
            while done < count and time.monotonic() < deadline:
                transfer(workspace_ids[done % len(workspace_ids)])
                done += 1
            channel.send(done)
    except Exception as error:
        channel.send(f"{side} worker failed: {type(error).__name__}: {error}")
    finally:
        close()


class _Workers:
    """A fixed set of worker processes that split each round's transfers between them."""

    def __init__(
        self, conninfo: str, side: str, layouts: list[list[str]], round_limit: float
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.round_limit = round_limit
        self.committed = 0
        self._channels: list[Connection] = []
        self._processes: list[BaseProcess] = []
        try:
            for index, workspace_ids in enumerate(layouts):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=_worker,
                    args=(child_end, conninfo, side, workspace_ids, f"member-{index:02d}"),
                    daemon=True,
                )
                process.start()
                child_end.close()
                self._channels.append(parent_end)
                self._processes.append(process)
            for channel in self._channels:
                reply = self._receive(channel, START_TIMEOUT)
                if reply != "ready":
                    raise RuntimeError(str(reply))
        except BaseException:
            self.stop()
            raise

    def run(self, count: int) -> None:
        """Commit ``count`` transfers in total, split evenly over the workers."""
        share, extra = divmod(count, len(self._channels))
        planned = [share + (1 if index < extra else 0) for index in range(len(self._channels))]
        for channel, assigned in zip(self._channels, planned, strict=True):
            channel.send((assigned, self.round_limit))
        for channel, assigned in zip(self._channels, planned, strict=True):
            done = self._receive(channel, self.round_limit + ROUND_GRACE)
            if not isinstance(done, int):
                raise RuntimeError(str(done))
            self.committed += done
            if done < assigned:
                raise TimeoutError(
                    f"a worker committed {done} of {assigned} transfers within the "
                    f"{self.round_limit:.0f} s round limit; check the server's load and locks"
                )

    @staticmethod
    def _receive(channel: Connection, timeout: float) -> object:
        if not channel.poll(timeout):
            raise TimeoutError(f"no reply from a benchmark worker within {timeout:.0f} s")
        return channel.recv()

    def stop(self) -> None:
        for channel in self._channels:
            with contextlib.suppress(OSError):  # the worker has already exited
                channel.send(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        for channel in self._channels:
            channel.close()


def _layouts(workers: int, spread: bool) -> list[list[str]]:
    """Return the workspaces each worker uses: one for all, or disjoint shares of 16."""
    if not spread:
        return [[_workspace_id(0)] for _ in range(workers)]
    return [
        [_workspace_id(j) for j in range(index, WORKSPACE_COUNT, workers)]
        for index in range(workers)
    ]


def _workspace_id(index: int) -> str:
    return f"workspace-{index:02d}"


def _create_workspaces(conninfo: str, schema: str) -> None:
    from coaching_credits.repository.postgres import PostgresRepository

    ledger = Ledger(PostgresRepository(conninfo, schema=schema))
    try:
        for index in range(WORKSPACE_COUNT):
            workspace_id = _workspace_id(index)
            ledger.create_workspace(workspace_id)
            ledger.add_member(workspace_id, ADMIN, role=Role.ADMIN)
            for member in range(max(WORKER_COUNTS)):
                ledger.add_member(workspace_id, f"member-{member:02d}")
            ledger.purchase(workspace_id, 2**62)
    finally:
        ledger.repository.close()


def _check_journals(conninfo: str, schema: str, committed: int) -> None:
    """Audit every workspace of ``schema`` and count its transfers against ``committed``."""
    import psycopg

    from coaching_credits.repository.postgres import PostgresRepository

    ledger = Ledger(PostgresRepository(conninfo, schema=schema))
    try:
        for index in range(WORKSPACE_COUNT):
            report = ledger.audit(_workspace_id(index))
            if not report.ok:
                raise AssertionError(f"audit of schema {schema!r} failed: {report.mismatches}")
    finally:
        ledger.repository.close()
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            f"SELECT count(*) FROM \"{schema}\".transfers WHERE kind = 'transfer_to'"
        ).fetchone()
    stored = row[0] if row else 0
    if stored != committed:
        raise AssertionError(
            f"schema {schema!r} contains {stored} transfers, but the workers reported {committed}"
        )


# Benchmark --------------------------------------------------------------------------------


def bench_postgres(report: Report, seconds: float, conninfo: str) -> None:
    """Compare committed Ledger.transfer_to calls per second with raw psycopg, by worker count."""
    round_limit = max(30.0, 10 * seconds)
    with throwaway_database(conninfo, "postgres") as database:
        for schema in (LIBRARY_SCHEMA, RAW_SCHEMA):
            _create_workspaces(database, schema)

        committed = {"library": 0, "raw": 0}
        rates: dict[tuple[bool, int, str], float] = {}
        for spread in (False, True):
            for workers in WORKER_COUNTS:
                groups: dict[str, _Workers] = {}
                try:
                    for side in SIDES:
                        groups[side] = _Workers(
                            database, side, _layouts(workers, spread), round_limit
                        )
                    # The sides take turns, one round each, so that a change in the load of
                    # the machine during the measurement hits both of them.
                    for _ in range(ROUNDS):
                        for side in SIDES:
                            rate = best_rate(groups[side].run, seconds, rounds=1)
                            rates[spread, workers, side] = max(
                                rate, rates.get((spread, workers, side), 0.0)
                            )
                finally:
                    for side, group in groups.items():
                        group.stop()
                        committed[side] += group.committed
                print(
                    f"  {workers:>2} workers, {WORKSPACE_COUNT if spread else 1} workspaces: "
                    f"Ledger {rates[spread, workers, 'library']:,.0f}/s, "
                    f"raw {rates[spread, workers, 'raw']:,.0f}/s",
                    flush=True,
                )

        _check_journals(database, LIBRARY_SCHEMA, committed["library"])
        _check_journals(database, RAW_SCHEMA, committed["raw"])

    for spread in (False, True):
        parts = []
        ratios = []
        for workers in WORKER_COUNTS:
            library = rates[spread, workers, "library"]
            raw = rates[spread, workers, "raw"]
            ratios.append(library / raw)
            parts.append(
                f"{workers} workers: Ledger {library:,.0f}/s, raw {raw:,.0f}/s "
                f"({library / raw:.0%})"
            )
        within = min(ratios) >= 0.7
        target = "at least 70% of raw psycopg at each worker count"
        met = within
        notes = []
        if not within:
            notes.append(f"lowest ratio {min(ratios):.0%}")
        if spread:
            single = rates[spread, 1, "library"]
            four = rates[spread, 4, "library"]
            target += ", and more calls/s with 4 workers than with 1"
            met = within and four > single
            if four <= single:
                notes.append(f"4 workers {four:,.0f}/s is not above 1 worker {single:,.0f}/s")
        layout = f"{WORKSPACE_COUNT} workspaces" if spread else "one workspace"
        report.add(
            Figure(
                f"PostgreSQL, {layout}",
                "committed transfer_to calls per second by worker processes",
                "; ".join(parts),
                target,
                met,
                note="; ".join(notes),
            )
        )


def main(argv: list[str] | None = None) -> int:
    """Run the PostgreSQL benchmark alone and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="length of one timed round, in seconds"
    )
    args = parser.parse_args(argv)
    report = Report({})
    bench_postgres(report, args.seconds, os.environ.get(CONNINFO_VARIABLE, DEFAULT_CONNINFO))
    print(report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
