"""A writer killed with SIGKILL mid-transaction leaves all of its change or none of it.

A child process runs one ``set_balances`` over 10,000 members through a repository wrapper
that sets an event at a chosen point of the step (see ``_workers.set_balances_until_killed``):

* ``hold``: the event is set after every member update and journal entry has been sent to the
  database, and the child then sleeps. The kill therefore always lands inside the open
  transaction, after the writes and before the commit, and nothing may remain of it.
* commit: the event is set as the commit starts and the child does not wait, so the kill lands
  just before, during or just after the commit. Either outcome is allowed; a mix is not.

The parent then reopens the storage and checks that every member has the old balance or every
member the new one, that the pool matches, and that the journal has all entries or none.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

from _workers import set_balances_until_killed, start
from coaching_credits import Ledger, Member, Role, TransferKind
from conftest import Backend

MEMBERS = 10_000
NEW_BALANCE = 5
#: Upper bound for the child to reach the signalling point, in seconds.
SIGNAL_TIMEOUT = 120.0


def _setup(backend: Backend) -> tuple[Ledger, list[str]]:
    ledger = Ledger(backend.open())
    ledger.create_workspace("ws")
    ledger.add_member("ws", "admin", role=Role.ADMIN)
    member_ids = [f"member-{index:05d}" for index in range(MEMBERS)]
    # One transaction through the protocol: 10,000 ledger calls would take far longer.
    with ledger.repository.transaction() as tx:
        for member_id in member_ids:
            tx.insert_member(Member(workspace_id="ws", id=member_id))
    ledger.purchase("ws", MEMBERS * NEW_BALANCE)
    return ledger, member_ids


def _kill_writer(backend: Backend, member_ids: list[str], *, hold: bool) -> None:
    written = multiprocessing.get_context("spawn").Event()
    child = start(
        set_balances_until_killed,
        backend.name,
        backend.location,
        "ws",
        member_ids,
        NEW_BALANCE,
        hold,
        written,
    )
    try:
        assert written.wait(SIGNAL_TIMEOUT), "the writer never reached its signalling point"
        if hold:
            # The child sleeps inside the transaction; it must still be there to be killed.
            assert child.is_alive()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(SIGNAL_TIMEOUT)
        if child.is_alive():
            child.kill()
            child.join()
    if hold:
        assert child.exitcode == -signal.SIGKILL


def _applied(backend: Backend, member_ids: list[str]) -> bool:
    """Reopen the storage, check that the change is whole or absent, and return which."""
    ledger = Ledger(backend.open())
    balances = {m.id: m.balance for m in ledger.members("ws") if m.id != "admin"}
    pool = ledger.pool("ws").balance
    entries = ledger.history("ws", kinds=[TransferKind.TRANSFER_TO], limit=None)

    assert len(balances) == MEMBERS
    applied = balances[member_ids[0]] == NEW_BALANCE
    expected_balance = NEW_BALANCE if applied else 0
    assert set(balances.values()) == {expected_balance}
    assert pool == (0 if applied else MEMBERS * NEW_BALANCE)
    assert len(entries) == (MEMBERS if applied else 0)
    if applied:
        assert {e.member_id for e in entries} == set(member_ids)
    return applied


def test_kill_inside_transaction_applies_nothing(persistent_backend: Backend) -> None:
    """SIGKILL after every write but before the commit: nothing of the change remains."""
    ledger, member_ids = _setup(persistent_backend)

    _kill_writer(persistent_backend, member_ids, hold=True)

    assert _applied(persistent_backend, member_ids) is False
    # The dead writer's locks are gone: the same change now runs to the end.
    ledger.set_balances("ws", member_ids, NEW_BALANCE, actor="admin")
    assert _applied(persistent_backend, member_ids) is True


def test_kill_at_commit_applies_all_or_nothing(persistent_backend: Backend) -> None:
    """SIGKILL as the commit starts: the change is whole or absent, never partial."""
    _ledger, member_ids = _setup(persistent_backend)

    _kill_writer(persistent_backend, member_ids, hold=False)

    applied = _applied(persistent_backend, member_ids)
    print(f"{persistent_backend.name}: kill at commit left the change applied={applied}")
