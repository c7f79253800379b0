"""Functions that the race and crash tests run in separate processes.

They are module-level so the ``spawn`` start method can import them by name in a fresh
interpreter. Each worker opens its own repository on the shared storage location and waits on
a barrier, so the workers really start together. It reports every outcome, errors included,
through a queue instead of raising, and the parent asserts on all of them.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from coaching_credits import CreditError, Ledger
from conftest import open_location

#: How long a worker waits at a barrier before it gives up, in seconds. It only bounds a hung
#: run: a healthy one passes each barrier within a fraction of a second.
BARRIER_TIMEOUT = 60.0

Outcome = tuple[str, str]  # ("ok", "") or (error class name, message)


def _outcome(call: Callable[[], object]) -> Outcome:
    try:
        call()
    except CreditError as error:
        return type(error).__name__, str(error)
    except Exception as error:
        # Anything else is a bug to report, such as a driver error that escaped translation.
        return f"unexpected {type(error).__module__}.{type(error).__name__}", str(error)
    return "ok", ""


def transfer_to_member(
    backend: str,
    location: dict[str, Any],
    workspace_id: str,
    member_id: str,
    amount: int,
    barrier: Any,
    results: Any,
) -> None:
    """Transfer ``amount`` from the pool to one member once, right after the barrier."""
    ledger = Ledger(open_location(backend, location))
    barrier.wait(BARRIER_TIMEOUT)
    results.put(
        _outcome(lambda: ledger.transfer_to(workspace_id, member_id, amount, actor="admin"))
    )
    ledger.repository.close()


def spend_rounds(
    backend: str,
    location: dict[str, Any],
    workspace_id: str,
    member_ids: list[str],
    amount: int,
    barrier: Any,
    results: Any,
) -> None:
    """Spend ``amount`` from each member in turn, one barrier-synchronised round per member."""
    ledger = Ledger(open_location(backend, location))
    for member_id in member_ids:
        barrier.wait(BARRIER_TIMEOUT)
        outcome = _outcome(partial(ledger.spend, workspace_id, member_id, amount))
        results.put((member_id, *outcome))
    ledger.repository.close()


def set_balance_rounds(
    backend: str,
    location: dict[str, Any],
    workspace_id: str,
    member_ids: list[str],
    balance: int,
    barrier: Any,
    results: Any,
) -> None:
    """Set each listed member's balance to ``balance`` in turn, one round per member."""
    ledger = Ledger(open_location(backend, location))
    for member_id in member_ids:
        barrier.wait(BARRIER_TIMEOUT)
        outcome = _outcome(
            partial(ledger.set_balances, workspace_id, [member_id], balance, actor="admin")
        )
        results.put((member_id, *outcome))
    ledger.repository.close()


def set_pair_rounds(
    backend: str,
    location: dict[str, Any],
    workspace_id: str,
    member_ids: list[str],
    balance: int,
    rounds: int,
    total: int,
    check: bool,
    barrier: Any,
    results: Any,
) -> None:
    """Set both members to ``balance`` each round, in the order given.

    A second barrier wait ends each round. With ``check`` this worker then reads the state and
    reports a round whose members differ or whose credits do not add up to ``total``. It also
    sets both members back to 0 (except after the last round), so that in every round both
    writers change both rows.
    """
    ledger = Ledger(open_location(backend, location))
    for round_number in range(rounds):
        barrier.wait(BARRIER_TIMEOUT)
        outcome = _outcome(
            lambda: ledger.set_balances(workspace_id, member_ids, balance, actor="admin")
        )
        if outcome[0] != "ok":
            results.put((round_number, *outcome))
        barrier.wait(BARRIER_TIMEOUT)
        if check:
            first, second = (ledger.member(workspace_id, m).balance for m in member_ids)
            pool = ledger.pool(workspace_id).balance
            if first != second or pool + first + second != total:
                results.put((round_number, "inconsistent", f"{first} {second} pool {pool}"))
            if round_number < rounds - 1:
                ledger.set_balances(workspace_id, member_ids, 0, actor="admin")
        barrier.wait(BARRIER_TIMEOUT)
    results.put((rounds, "done", ""))
    ledger.repository.close()


class _SignallingTransaction:
    """Delegate to a backend transaction; signal once the journal entries are written."""

    def __init__(self, inner: Any, written: Any, hold: bool) -> None:
        self._inner = inner
        self._written = written
        self._hold = hold

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def append_transfers(self, transfers: Any) -> Any:
        stored = self._inner.append_transfers(transfers)
        if self._hold:
            # Every write of the step has reached the database and nothing is committed:
            # tell the parent, then wait here until it kills this process.
            self._written.set()
            time.sleep(BARRIER_TIMEOUT)
            sys.exit("the parent did not kill the writer")
        return stored


class _SignallingRepository:
    """Delegate to a repository; signal inside the write step or right before its commit."""

    def __init__(self, inner: Any, written: Any, hold: bool) -> None:
        self._inner = inner
        self._written = written
        self._hold = hold

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._inner.transaction() as tx:
            yield _SignallingTransaction(tx, self._written, self._hold)
            if not self._hold:
                # The step is done and the commit starts as this block exits.
                self._written.set()

    def close(self) -> None:
        self._inner.close()


def set_balances_until_killed(
    backend: str,
    location: dict[str, Any],
    workspace_id: str,
    member_ids: list[str],
    balance: int,
    hold: bool,
    written: Any,
) -> None:
    """Run one ``set_balances`` over ``member_ids`` and signal ``written`` for the parent.

    With ``hold`` the signal comes once every row is written but before the commit, and the
    process then blocks. Without ``hold`` the signal comes as the commit starts, and the
    process goes on to commit.
    """
    repository = _SignallingRepository(open_location(backend, location), written, hold)
    ledger = Ledger(repository)
    ledger.set_balances(workspace_id, member_ids, balance, actor="admin")
    # Reached only without ``hold``, when the parent's kill came too late to interrupt.
    repository.close()


def start(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a fresh interpreter (the ``spawn`` start method)."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process
