"""Concurrent writers in separate processes, and in threads, on SQLite and PostgreSQL.

Each process opens its own repository on the same storage (``open_location``) and waits on a
barrier, so the writers issue their calls at the same moment instead of one after another as
they happen to start. Every wait and join has a time-out, so a deadlock fails the test instead
of hanging it.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _workers import (
    set_balance_rounds,
    set_pair_rounds,
    spend_rounds,
    start,
    transfer_to_member,
)
from coaching_credits import (
    InsufficientCredits,
    Ledger,
    Role,
    SQLiteRepository,
    TransferKind,
)
from conftest import Backend

#: Upper bound for one race test's processes to finish, in seconds.
JOIN_TIMEOUT = 120.0

_context = multiprocessing.get_context("spawn")


def _setup(backend: Backend, members: list[str], purchase: int) -> Ledger:
    ledger = Ledger(backend.open())
    ledger.create_workspace("ws")
    ledger.add_member("ws", "admin", role=Role.ADMIN)
    for member_id in members:
        ledger.add_member("ws", member_id)
    ledger.purchase("ws", purchase)
    return ledger


def _run(
    jobs: list[tuple[Callable[..., None], tuple[Any, ...]]], expected_results: int
) -> list[Any]:
    """Start one process per job, collect ``expected_results`` results, join them all."""
    results: Any = _context.Queue()
    barrier: Any = _context.Barrier(len(jobs))
    processes = [start(target, *args, barrier, results) for target, args in jobs]
    collected = []
    try:
        for _ in range(expected_results):
            collected.append(results.get(timeout=JOIN_TIMEOUT))
    except queue.Empty:
        pytest.fail(f"only {len(collected)} of {expected_results} results within the time-out")
    finally:
        for process in processes:
            process.join(JOIN_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return collected


def test_writers_to_one_member_all_apply(persistent_backend: Backend) -> None:
    """20 processes each moving 10 credits to one member: none is lost."""
    ledger = _setup(persistent_backend, ["m"], 1_000)
    args = (persistent_backend.name, persistent_backend.location, "ws", "m", 10)

    outcomes = _run([(transfer_to_member, args)] * 20, expected_results=20)

    assert outcomes == [("ok", "")] * 20
    assert ledger.pool("ws").balance == 800
    assert ledger.member("ws", "m").balance == 200
    entries = ledger.history("ws", kinds=[TransferKind.TRANSFER_TO], limit=None)
    assert len(entries) == 20
    assert sorted(e.pool_balance or 0 for e in entries) == list(range(800, 1_000, 10))


def test_two_spends_one_overdraws(persistent_backend: Backend) -> None:
    """Two processes spend 7 of a balance of 10 at once: exactly one succeeds, each round."""
    members = [f"m{i}" for i in range(5)]
    ledger = _setup(persistent_backend, members, 50)
    ledger.set_balances("ws", members, 10, actor="admin")
    args = (persistent_backend.name, persistent_backend.location, "ws", members, 7)

    outcomes = _run([(spend_rounds, args)] * 2, expected_results=2 * len(members))

    by_member: dict[str, list[str]] = {m: [] for m in members}
    for member_id, kind, _message in outcomes:
        by_member[member_id].append(kind)
    for member_id in members:
        assert sorted(by_member[member_id]) == ["InsufficientCredits", "ok"], member_id
        assert ledger.member("ws", member_id).balance == 3
    assert len(ledger.history("ws", kinds=[TransferKind.SPEND], limit=None)) == len(members)


def test_set_balance_races_spend(persistent_backend: Backend) -> None:
    """Setting a member to 40 while they spend 20 matches one of the two serial orders."""
    members = [f"m{i}" for i in range(6)]
    ledger = _setup(persistent_backend, members, 1_000)
    ledger.set_balances("ws", members, 30, actor="admin")
    name, location = persistent_backend.name, persistent_backend.location

    outcomes = _run(
        [
            (set_balance_rounds, (name, location, "ws", members, 40)),
            (spend_rounds, (name, location, "ws", members, 20)),
        ],
        expected_results=2 * len(members),
    )

    assert all(kind == "ok" for _member, kind, _message in outcomes), outcomes
    # Set first: +10 from the pool, then 20 spent, so the member ends at 20. Spend first:
    # the member drops to 10, then +30 from the pool, so the member ends at 40.
    pool_draw = 0
    orders: Counter[str] = Counter()
    for member_id in members:
        balance = ledger.member("ws", member_id).balance
        assert balance in (20, 40), member_id
        orders["set first" if balance == 20 else "spend first"] += 1
        pool_draw += 10 if balance == 20 else 30
    assert ledger.pool("ws").balance == 1_000 - 6 * 30 - pool_draw
    # Conservation: what is held equals what was bought minus what was spent.
    held = ledger.pool("ws").balance + sum(m.balance for m in ledger.members("ws"))
    assert held == 1_000 - 20 * len(members)
    print(f"{persistent_backend.name}: serial orders seen {dict(orders)}")


def test_crossed_set_balances_never_deadlock(persistent_backend: Backend) -> None:
    """200 rounds of set_balances([A, B], 50) racing set_balances([B, A], 150)."""
    rounds = 200
    ledger = _setup(persistent_backend, ["A", "B"], 1_000)
    name, location = persistent_backend.name, persistent_backend.location

    outcomes = _run(
        [
            (set_pair_rounds, (name, location, "ws", ["A", "B"], 50, rounds, 1_000, True)),
            (set_pair_rounds, (name, location, "ws", ["B", "A"], 150, rounds, 1_000, False)),
        ],
        expected_results=2,
    )

    # Each worker reports only failures and inconsistent rounds, then one "done".
    assert outcomes == [(rounds, "done", ""), (rounds, "done", "")]
    final = (ledger.member("ws", "A").balance, ledger.member("ws", "B").balance)
    assert final in ((50, 50), (150, 150))
    assert ledger.pool("ws").balance == 1_000 - sum(final)


def test_threads_share_sqlite_file(tmp_path: Path) -> None:
    """Ledgers in 8 threads on one SQLite file: no lost update, no overdraft, no lock error."""
    path = tmp_path / "threads.db"
    threads, attempts = 8, 20
    setup = Ledger(SQLiteRepository(path))
    setup.create_workspace("ws")
    setup.add_member("ws", "admin", role=Role.ADMIN)
    for index in range(threads):
        setup.add_member("ws", f"m{index}")
    setup.purchase("ws", 100)

    barrier = threading.Barrier(threads)
    successes = [0] * threads
    unexpected: list[BaseException] = []

    def work(index: int) -> None:
        ledger = Ledger(SQLiteRepository(path))
        barrier.wait(JOIN_TIMEOUT)
        try:
            for _ in range(attempts):
                try:
                    ledger.transfer_to("ws", f"m{index}", 1, actor="admin")
                except InsufficientCredits:
                    continue
                successes[index] += 1
        except BaseException as error:
            unexpected.append(error)
        finally:
            ledger.repository.close()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_TIMEOUT)
    assert not any(worker.is_alive() for worker in workers)

    assert unexpected == []
    # 160 requests for 1 credit compete for 100 credits: exactly 100 succeed.
    assert sum(successes) == 100
    assert setup.pool("ws").balance == 0
    for index in range(threads):
        assert setup.member("ws", f"m{index}").balance == successes[index]
    setup.repository.close()


def test_threads_share_backend(backend: Backend) -> None:
    """Ledgers in 8 threads on one storage of each backend: no lost update, no overdraft.

    The in-memory backend hands every thread the same repository object, so this is the test
    that shows that object is safe to share between threads.
    """
    threads, attempts = 8, 20
    setup = Ledger(backend.open())
    setup.create_workspace("ws")
    setup.add_member("ws", "admin", role=Role.ADMIN)
    for index in range(threads):
        setup.add_member("ws", f"m{index}")
    setup.purchase("ws", 100)

    barrier = threading.Barrier(threads)
    successes = [0] * threads
    unexpected: list[BaseException] = []

    def work(index: int) -> None:
        ledger = Ledger(backend.open())
        barrier.wait(JOIN_TIMEOUT)
        try:
            for step in range(attempts):
                try:
                    ledger.transfer_to("ws", f"m{index}", 1, actor="admin")
                except InsufficientCredits:
                    continue
                successes[index] += 1
                if step % 5 == 0:
                    ledger.spend("ws", f"m{index}", 1)
        except BaseException as error:
            unexpected.append(error)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_TIMEOUT)
    assert not any(worker.is_alive() for worker in workers)

    assert unexpected == []
    # 160 requests for 1 credit compete for 100 credits: exactly 100 succeed.
    assert sum(successes) == 100
    assert setup.pool("ws").balance == 0
    members = {m.id: m.balance for m in setup.members("ws")}
    spent = sum(1 for t in setup.history("ws", limit=None) if t.kind.value == "spend")
    assert sum(members.values()) == 100 - spent
    assert all(balance >= 0 for balance in members.values())
    assert setup.audit("ws").ok
