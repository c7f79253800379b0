"""The journal contract: history, past balances, audits, reversals, previews and low balances.

:class:`JournalContract` is a plain class of pytest tests. Subclass it in a test module whose
``repository`` fixture returns a fresh, empty repository, and every test runs on it::

    class TestJournalContract(JournalContract):
        pass

The audit tests change a stored balance behind the library's back through
:meth:`JournalContract.set_stored_balance`, which handles the in-memory, SQLite and PostgreSQL
backends; override it for another backend, or those tests skip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from .. import (
    AlreadyReversed,
    AuditCheck,
    AuditMismatch,
    CoachingDisabled,
    CreditError,
    InMemoryRepository,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    Ledger,
    Member,
    MemberNotFound,
    NotReversible,
    PermissionDenied,
    Pool,
    Repository,
    Role,
    SetBalancesResult,
    SQLiteRepository,
    Transfer,
    TransferKind,
    TransferNotFound,
    WorkspaceNotFound,
)

__all__ = ["JournalContract"]

WS = "acme"
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


class StepClock:
    """A clock that moves one second forward on every call, starting at ``START``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return START + timedelta(seconds=self.calls)


State = tuple[Pool, list[Member], list[Transfer]]


def _state(ledger: Ledger, workspace_id: str = WS) -> State:
    return (
        ledger.pool(workspace_id),
        ledger.members(workspace_id),
        ledger.history(workspace_id, limit=None),
    )


def _unstamped(result: Any) -> Any:
    """Return ``result`` with its transfers' ids, times and sequences cleared, as in a preview."""

    def bare(transfer: Transfer) -> Transfer:
        return attrs.evolve(transfer, id=None, created_at=None, sequence=None)

    if isinstance(result, SetBalancesResult):
        return attrs.evolve(result, transfers=tuple(bare(t) for t in result.transfers))
    return attrs.evolve(result, transfer=bare(result.transfer))


def _raised(call: Callable[[], object]) -> tuple[type[BaseException], str] | None:
    try:
        call()
    except CreditError as error:
        return type(error), str(error)
    return None


class JournalContract:
    """Tests of the journal features, run on the ``repository`` fixture's backend."""

    # Set-up helpers -------------------------------------------------------------------------

    @pytest.fixture
    def clock(self) -> StepClock:
        return StepClock()

    @pytest.fixture
    def ledger(self, repository: Repository, clock: StepClock) -> Iterator[Ledger]:
        """Create workspace ``acme``: admin ``adm``, members ``ann`` and ``bob``, pool 100."""
        ledger = Ledger(repository, clock=clock)
        ledger.create_workspace(WS)
        ledger.add_member(WS, "adm", role=Role.ADMIN)
        ledger.add_member(WS, "ann")
        ledger.add_member(WS, "bob")
        ledger.purchase(WS, 100)
        yield ledger

    def set_stored_balance(
        self, repository: Repository, workspace_id: str, member_id: str | None, balance: int
    ) -> None:
        """Overwrite a stored balance without a journal entry; ``member_id=None`` is the pool.

        Override this to run the audit tests on another backend.
        """
        if isinstance(repository, InMemoryRepository):
            if member_id is None:
                repository._pools[workspace_id] = Pool(workspace_id=workspace_id, balance=balance)
            else:
                members = repository._members[workspace_id]
                members[member_id] = attrs.evolve(members[member_id], balance=balance)
            return

        if isinstance(repository, SQLiteRepository):
            placeholder, prefix = "?", ""
        elif type(repository).__name__ == "PostgresRepository":
            placeholder, prefix = "%s", f'"{repository.schema}".'  # type: ignore[attr-defined]
        else:
            pytest.skip(f"override set_stored_balance to tamper with {type(repository).__name__}")
        if member_id is None:
            sql = (
                f"UPDATE {prefix}workspaces SET pool_balance = {placeholder}"
                f" WHERE id = {placeholder}"
            )
            params: tuple[object, ...] = (balance, workspace_id)
        else:
            sql = (
                f"UPDATE {prefix}members SET balance = {placeholder}"
                f" WHERE workspace_id = {placeholder} AND id = {placeholder}"
            )
            params = (balance, workspace_id, member_id)
        with repository.transaction() as tx:
            tx.connection.execute(sql, params)  # type: ignore[attr-defined]

    # What each transfer records ---------------------------------------------------------------

    def test_entries_store_reason_and_metadata(self, ledger: Ledger) -> None:
        """Every operation that records a transfer stores its reason and metadata on it."""
        note = {"ticket": "T-1"}
        ledger.purchase(WS, 10, reason="invoice 7", metadata=note)
        ledger.transfer_to(WS, "ann", 5, actor="adm", reason="onboarding", metadata=note)
        moved = ledger.transfer_from(WS, "ann", 2, actor="adm", reason="too many", metadata=note)
        ledger.set_balances(WS, ["ann", "bob"], 4, actor="adm", reason="reset", metadata=note)
        ledger.spend(WS, "bob", 1, reason="session", metadata=note)
        ledger.reverse(WS, moved.transfer.id or "", actor="adm", reason="undo", metadata=note)
        ledger.remove_member(WS, "bob", actor="adm", reason="left", metadata=note)

        # The bulk set records one entry per member whose balance changed: ann and bob.
        entries = ledger.history(WS, limit=8)
        reasons = [e.reason for e in reversed(entries)]
        assert reasons == [
            "invoice 7", "onboarding", "too many", "reset", "reset", "session", "undo", "left",
        ]  # fmt: skip
        for entry in entries:
            assert dict(entry.metadata) == note

    def test_entries_store_ids_times_actors(self, ledger: Ledger) -> None:
        """Each entry has an id, an aware time, a sequence, its kind, amount and actor."""
        ledger.transfer_to(WS, "ann", 5, actor="adm")
        ledger.spend(WS, "ann", 2)
        entries = ledger.history(WS, limit=None)

        assert [e.kind for e in entries] == [
            TransferKind.SPEND,
            TransferKind.TRANSFER_TO,
            TransferKind.PURCHASE,
        ]
        assert [e.amount for e in entries] == [2, 5, 100]
        assert [e.actor_id for e in entries] == ["ann", "adm", None]
        assert [e.member_id for e in entries] == ["ann", "ann", None]
        assert len({e.id for e in entries}) == 3
        for entry in entries:
            assert entry.id
            assert entry.created_at is not None
            assert entry.created_at.utcoffset() is not None
            assert isinstance(entry.sequence, int)

    def test_entries_store_balances_after(self, ledger: Ledger) -> None:
        """Entries record pool and member balances after them; spends keep the pool's."""
        ledger.transfer_to(WS, "ann", 30, actor="adm")
        ledger.spend(WS, "ann", 10)
        ledger.transfer_from(WS, "ann", 5, actor="adm")
        back, spend, given, bought = ledger.history(WS, limit=None)

        assert (bought.pool_balance, bought.member_balance) == (100, None)
        assert (given.pool_balance, given.member_balance) == (70, 30)
        assert (spend.pool_balance, spend.member_balance) == (70, 20)
        assert (back.pool_balance, back.member_balance) == (75, 15)

    def test_stored_entry_equals_returned(self, ledger: Ledger) -> None:
        """An entry read back from storage equals the one the call returned."""
        result = ledger.transfer_to(WS, "ann", 3, actor="adm", reason="r", metadata={"k": "v"})
        (stored,) = ledger.history(WS, limit=1)
        assert stored == result.transfer

    # History ----------------------------------------------------------------------------------

    def test_history_member_filter(self, ledger: Ledger) -> None:
        """A member's history holds only that member's entries, newest first."""
        ledger.transfer_to(WS, "ann", 5, actor="adm")
        ledger.transfer_to(WS, "bob", 6, actor="adm")
        ledger.spend(WS, "ann", 1)

        ann = ledger.history(WS, member_id="ann")
        assert [(e.kind, e.amount) for e in ann] == [
            (TransferKind.SPEND, 1),
            (TransferKind.TRANSFER_TO, 5),
        ]
        sequences = [e.sequence or 0 for e in ledger.history(WS)]
        assert sequences == sorted(sequences, reverse=True)

    def test_history_kind_filter(self, ledger: Ledger) -> None:
        """``kinds`` keeps the listed kinds, given as members or as their string values."""
        ledger.transfer_to(WS, "ann", 5, actor="adm")
        ledger.spend(WS, "ann", 1)

        spends = ledger.history(WS, kinds={TransferKind.SPEND})
        assert [e.kind for e in spends] == [TransferKind.SPEND]
        by_value = ledger.history(WS, kinds=["purchase", "spend"])
        assert [e.kind for e in by_value] == [TransferKind.SPEND, TransferKind.PURCHASE]
        assert ledger.history(WS, kinds=[]) == []
        with pytest.raises(InvalidRequest, match="'bonus'"):
            ledger.history(WS, kinds=["bonus"])

    def test_history_time_range(self, ledger: Ledger, clock: StepClock) -> None:
        """``since`` is inclusive and ``until`` exclusive."""
        first = ledger.transfer_to(WS, "ann", 1, actor="adm").transfer
        second = ledger.transfer_to(WS, "ann", 2, actor="adm").transfer
        third = ledger.transfer_to(WS, "ann", 3, actor="adm").transfer
        assert first.created_at is not None
        assert third.created_at is not None

        found = ledger.history(WS, since=first.created_at, until=third.created_at)
        assert [e.id for e in found] == [second.id, first.id]

    def test_history_rejects_naive_times(self, ledger: Ledger) -> None:
        """Times without a time zone are rejected rather than guessed."""
        with pytest.raises(InvalidRequest, match="time zone"):
            ledger.history(WS, since=datetime(2026, 1, 1))
        with pytest.raises(InvalidRequest, match="time zone"):
            ledger.balance_at(WS, datetime(2026, 1, 1))

    def test_history_rejects_bad_cursor(self, ledger: Ledger) -> None:
        """A cursor must be a positive int sequence."""
        for cursor in (0, -1, True, "5"):
            with pytest.raises(InvalidRequest, match="cursor"):
                ledger.history(WS, before=cursor)  # type: ignore[arg-type]

    def test_history_pages_while_writing(self, ledger: Ledger) -> None:
        """Paging with ``before`` neither skips nor repeats entries while new ones arrive."""
        for amount in range(1, 11):
            ledger.transfer_to(WS, "ann", amount, actor="adm")
        snapshot = ledger.history(WS, limit=None)

        pages: list[list[Transfer]] = []
        cursor: int | None = None
        while True:
            page = ledger.history(WS, before=cursor, limit=3)
            if not page:
                break
            pages.append(page)
            cursor = page[-1].sequence
            # New entries commit between the pages.
            ledger.transfer_to(WS, "bob", 1, actor="adm")
            ledger.spend(WS, "ann", 1)

        first_page_start = snapshot[0]
        read = [e for page in pages for e in page]
        assert [len(p) for p in pages] == [3, 3, 3, 2]
        assert [e.id for e in read] == [e.id for e in snapshot]
        assert read[0] == first_page_start

    def test_history_of_removed_member(self, ledger: Ledger) -> None:
        """A removed member's history stays readable; an unknown id is not found."""
        ledger.transfer_to(WS, "ann", 5, actor="adm")
        ledger.remove_member(WS, "ann", actor="adm")

        kinds = [e.kind for e in ledger.history(WS, member_id="ann")]
        assert kinds == [TransferKind.MEMBER_REMOVED, TransferKind.TRANSFER_TO]
        with pytest.raises(MemberNotFound, match="'nobody'"):
            ledger.history(WS, member_id="nobody")
        assert ledger.history(WS, member_id="bob") == []

    def test_history_scoped_to_workspace(self, ledger: Ledger) -> None:
        """One workspace's history never shows another's entries."""
        ledger.create_workspace("other")
        ledger.add_member("other", "ann")
        ledger.purchase("other", 7)

        assert [e.amount for e in ledger.history("other")] == [7]
        assert [e.amount for e in ledger.history(WS)] == [100]
        with pytest.raises(MemberNotFound):
            ledger.history("other", member_id="bob")
        with pytest.raises(WorkspaceNotFound):
            ledger.history("missing")

    def test_balance_at(self, ledger: Ledger) -> None:
        """Past balances of the pool and of a member come from the journal."""
        bought = ledger.history(WS, limit=1)[0]
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        spent = ledger.spend(WS, "ann", 10).transfer
        removed = ledger.remove_member(WS, "ann", actor="adm").transfer
        assert bought.created_at is not None
        assert given.created_at is not None
        assert spent.created_at is not None
        assert removed.created_at is not None

        before_all = bought.created_at - timedelta(seconds=1)
        assert ledger.balance_at(WS, before_all) == 0
        assert ledger.balance_at(WS, bought.created_at) == 100
        assert ledger.balance_at(WS, given.created_at) == 70
        assert ledger.balance_at(WS, given.created_at, member_id="ann") == 30
        assert (
            ledger.balance_at(WS, given.created_at - timedelta(microseconds=1), member_id="ann")
            == 0
        )
        assert ledger.balance_at(WS, spent.created_at) == 70
        assert ledger.balance_at(WS, spent.created_at, member_id="ann") == 20
        assert ledger.balance_at(WS, removed.created_at) == 90
        assert ledger.balance_at(WS, removed.created_at, member_id="ann") == 0
        assert ledger.balance_at(WS, removed.created_at, member_id="bob") == 0
        latest = datetime.max.replace(tzinfo=timezone.utc)
        assert ledger.balance_at(WS, latest) == 90

    def test_balance_at_unknown(self, ledger: Ledger) -> None:
        """An unknown member or workspace is reported, not read as 0."""
        with pytest.raises(MemberNotFound):
            ledger.balance_at(WS, START, member_id="nobody")
        with pytest.raises(WorkspaceNotFound):
            ledger.balance_at("missing", START)

    # Audit ------------------------------------------------------------------------------------

    def test_audit_clean_journal(self, ledger: Ledger) -> None:
        """After every kind of change the audit finds no mismatch and sums the totals."""
        bought = ledger.purchase(WS, 50).transfer
        given = ledger.transfer_to(WS, "ann", 40, actor="adm").transfer
        ledger.reverse(WS, given.id or "", actor="adm")
        ledger.set_balances(WS, ["ann", "bob"], 25, actor="adm")
        ledger.spend(WS, "bob", 5)
        ledger.remove_member(WS, "bob", actor="adm")
        ledger.reverse(WS, bought.id or "", actor="adm")

        report = ledger.audit(WS)
        assert report.ok
        assert report.mismatches == ()
        assert (report.purchased, report.refunded, report.spent) == (150, 50, 5)
        pool = ledger.pool(WS).balance
        members_total = sum(m.balance for m in ledger.members(WS))
        assert report.stored_pool == report.expected_pool == pool
        assert report.stored_members_total == members_total
        assert report.in_circulation == pool + members_total == 95
        assert report.members_checked == 2

    def test_audit_empty_workspace(self, repository: Repository) -> None:
        """A new workspace audits clean with zero totals."""
        ledger = Ledger(repository)
        ledger.create_workspace("new")
        report = ledger.audit("new")
        assert report.ok
        assert (report.purchased, report.expected_pool, report.members_checked) == (0, 0, 0)
        with pytest.raises(WorkspaceNotFound):
            ledger.audit("missing")

    def test_audit_finds_tampered_member(self, ledger: Ledger, repository: Repository) -> None:
        """A member balance changed behind the library's back shows up with both values."""
        ledger.transfer_to(WS, "ann", 30, actor="adm")
        self.set_stored_balance(repository, WS, "ann", 35)

        report = ledger.audit(WS)
        assert not report.ok
        assert report.mismatches == (
            AuditMismatch(check=AuditCheck.MEMBER, member_id="ann", expected=30, stored=35),
            AuditMismatch(
                check=AuditCheck.MEMBER_SNAPSHOT, member_id="ann", expected=30, stored=35
            ),
            AuditMismatch(check=AuditCheck.CONSERVATION, member_id=None, expected=100, stored=105),
        )

    def test_audit_finds_tampered_pool(self, ledger: Ledger, repository: Repository) -> None:
        """A pool balance changed behind the library's back shows up with both values."""
        self.set_stored_balance(repository, WS, None, 90)

        report = ledger.audit(WS)
        assert not report.ok
        assert report.mismatches == (
            AuditMismatch(check=AuditCheck.POOL, member_id=None, expected=100, stored=90),
            AuditMismatch(check=AuditCheck.POOL_SNAPSHOT, member_id=None, expected=100, stored=90),
            AuditMismatch(check=AuditCheck.CONSERVATION, member_id=None, expected=100, stored=90),
        )

    # Reversal ---------------------------------------------------------------------------------

    def test_reverse_transfer_to(self, ledger: Ledger) -> None:
        """Reversing a transfer to a member moves the credits back, linked to the original."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        result = ledger.reverse(WS, given.id or "", actor="adm", reason="wrong member")

        assert result.pool.balance == 100
        assert result.member is not None
        assert result.member.balance == 0
        entry = result.transfer
        assert (entry.kind, entry.amount, entry.member_id) == (
            TransferKind.TRANSFER_FROM,
            30,
            "ann",
        )
        assert (entry.reverses, entry.actor_id, entry.reason) == (given.id, "adm", "wrong member")
        assert ledger.history(WS, limit=1) == [entry]
        assert ledger.member(WS, "ann").balance == 0
        assert ledger.audit(WS).ok

    def test_reverse_transfer_from(self, ledger: Ledger) -> None:
        """Reversing a transfer from a member gives the credits back to the member."""
        ledger.transfer_to(WS, "ann", 30, actor="adm")
        taken = ledger.transfer_from(WS, "ann", 10, actor="adm").transfer
        result = ledger.reverse(WS, taken.id or "", actor="adm")

        assert result.transfer.kind is TransferKind.TRANSFER_TO
        assert result.transfer.reverses == taken.id
        assert ledger.member(WS, "ann").balance == 30
        assert ledger.pool(WS).balance == 70

    def test_reverse_set_balances_entry(self, ledger: Ledger) -> None:
        """Each entry of a bulk set can be reversed on its own."""
        bulk = ledger.set_balances(WS, ["ann", "bob"], 10, actor="adm")
        ledger.reverse(WS, bulk.transfers[1].id or "", actor="adm")
        assert [m.balance for m in ledger.members(WS)] == [0, 10, 0]
        assert ledger.pool(WS).balance == 90

    def test_reverse_purchase_is_refund(self, ledger: Ledger) -> None:
        """A purchase is reversed as a refund that takes its credits out of the pool."""
        bought = ledger.purchase(WS, 40).transfer
        ledger.set_coaching(WS, False, actor="adm")
        result = ledger.reverse(WS, bought.id or "", actor="adm")

        assert result.member is None
        assert result.transfer.kind is TransferKind.REFUND
        assert (result.transfer.member_id, result.transfer.amount) == (None, 40)
        assert result.transfer.pool_balance == 100
        assert ledger.pool(WS).balance == 100
        report = ledger.audit(WS)
        assert report.ok
        assert report.refunded == 40

    def test_refund_needs_pool_credits(self, ledger: Ledger) -> None:
        """A refund fails once the pool has less than the purchased credits."""
        bought = ledger.history(WS, limit=1)[0]
        ledger.transfer_to(WS, "ann", 80, actor="adm")
        before = _state(ledger)

        with pytest.raises(InsufficientCredits) as caught:
            ledger.reverse(WS, bought.id or "", actor="adm")
        assert (caught.value.requested, caught.value.available) == (100, 20)
        assert _state(ledger) == before

    def test_reverse_spent_credits_fails(self, ledger: Ledger) -> None:
        """Credits the member already spent cannot be pulled back; nothing changes."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        ledger.spend(WS, "ann", 25)
        before = _state(ledger)

        with pytest.raises(InsufficientCredits) as caught:
            ledger.reverse(WS, given.id or "", actor="adm")
        assert caught.value.member_id == "ann"
        assert (caught.value.requested, caught.value.available) == (30, 5)
        assert _state(ledger) == before
        assert ledger.audit(WS).ok

    def test_reverse_only_once(self, ledger: Ledger) -> None:
        """A second reversal names the first one."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        first = ledger.reverse(WS, given.id or "", actor="adm").transfer
        before = _state(ledger)

        with pytest.raises(AlreadyReversed) as caught:
            ledger.reverse(WS, given.id or "", actor="adm")
        assert caught.value.transfer_id == given.id
        assert caught.value.reversal_id == first.id
        assert str(first.id) in str(caught.value)
        assert _state(ledger) == before

    def test_concurrent_reversals(self, ledger: Ledger, repository: Repository) -> None:
        """Of several threads reversing one transfer at once, exactly one succeeds."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def reverse() -> None:
            own = Ledger(repository)
            barrier.wait()
            try:
                own.reverse(WS, given.id or "", actor="adm")
            except AlreadyReversed:
                outcomes.append("already reversed")
            else:
                outcomes.append("reversed")

        threads = [threading.Thread(target=reverse) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(outcomes) == ["already reversed"] * 3 + ["reversed"]
        assert ledger.member(WS, "ann").balance == 0
        assert ledger.pool(WS).balance == 100
        assert len(ledger.history(WS, member_id="ann")) == 2

    def test_reverse_replays_with_key(self, ledger: Ledger) -> None:
        """The same key returns the first reversal instead of raising."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        first = ledger.reverse(WS, given.id or "", actor="adm", idempotency_key="undo-1")
        again = ledger.reverse(WS, given.id or "", actor="adm", idempotency_key="undo-1")
        assert ledger.last_call_replayed
        assert again == first
        assert ledger.pool(WS).balance == 100

    def test_final_kinds_not_reversible(self, ledger: Ledger) -> None:
        """Spends, removals, refunds and reversals are final."""
        bought = ledger.purchase(WS, 10).transfer
        refund = ledger.reverse(WS, bought.id or "", actor="adm").transfer
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        undo = ledger.reverse(WS, given.id or "", actor="adm").transfer
        ledger.transfer_to(WS, "bob", 5, actor="adm")
        spent = ledger.spend(WS, "bob", 2).transfer
        removed = ledger.remove_member(WS, "bob", actor="adm").transfer
        before = _state(ledger)

        for entry in (spent, removed, refund, undo):
            with pytest.raises(NotReversible) as caught:
                ledger.reverse(WS, entry.id or "", actor="adm")
            assert caught.value.transfer_id == entry.id
            assert caught.value.kind == entry.kind.value
        assert _state(ledger) == before

    def test_reverse_after_member_left(self, ledger: Ledger) -> None:
        """A move to a member who left since is final, even if they rejoined."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer
        ledger.remove_member(WS, "ann", actor="adm")
        ledger.add_member(WS, "ann")
        ledger.transfer_to(WS, "ann", 30, actor="adm")

        with pytest.raises(NotReversible, match="removed"):
            ledger.reverse(WS, given.id or "", actor="adm")
        assert ledger.member(WS, "ann").balance == 30

    def test_reverse_unknown_transfer(self, ledger: Ledger) -> None:
        """An unknown id, or one of another workspace, is not found."""
        ledger.create_workspace("other")
        ledger.add_member("other", "boss", role=Role.ADMIN)
        foreign = ledger.purchase("other", 5).transfer

        with pytest.raises(TransferNotFound, match="'nope'"):
            ledger.reverse(WS, "nope", actor="adm")
        with pytest.raises(TransferNotFound) as caught:
            ledger.reverse(WS, foreign.id or "", actor="adm")
        assert caught.value.workspace_id == WS
        assert ledger.pool("other").balance == 5

    def test_reverse_needs_admin_and_coaching(self, ledger: Ledger) -> None:
        """Only admins reverse; moves need coaching enabled, refunds do not."""
        given = ledger.transfer_to(WS, "ann", 30, actor="adm").transfer

        with pytest.raises(PermissionDenied):
            ledger.reverse(WS, given.id or "", actor="ann")
        with pytest.raises(PermissionDenied):
            ledger.reverse(WS, given.id or "", actor="nobody")
        ledger.set_coaching(WS, False, actor="adm")
        with pytest.raises(CoachingDisabled):
            ledger.reverse(WS, given.id or "", actor="adm")
        assert ledger.member(WS, "ann").balance == 30

    # Preview ----------------------------------------------------------------------------------

    def test_preview_transfer_to(self, ledger: Ledger) -> None:
        """A preview changes nothing and equals the real call's result."""
        before = _state(ledger)
        preview = ledger.preview_transfer_to(WS, "ann", 30, actor="adm", reason="r")
        assert _state(ledger) == before

        real = ledger.transfer_to(WS, "ann", 30, actor="adm", reason="r")
        assert preview.result == _unstamped(real)
        assert preview.result.transfer.id is None
        assert (preview.pool.before, preview.pool.after) == (100, 70)
        assert [(m.member_id, m.before, m.after) for m in preview.members] == [("ann", 0, 30)]
        assert preview.net_change == 30
        assert preview.summary() == [
            "from pool: 100 -> 70 (-30)",
            "to member 'ann': 0 -> 30 (+30)",
            "net: 30 credits leave the pool",
        ]

    def test_preview_transfer_from(self, ledger: Ledger) -> None:
        """A transfer-from preview shows the credits returning to the pool."""
        ledger.transfer_to(WS, "ann", 30, actor="adm")
        before = _state(ledger)
        preview = ledger.preview_transfer_from(WS, "ann", 10, actor="adm")
        assert _state(ledger) == before

        real = ledger.transfer_from(WS, "ann", 10, actor="adm")
        assert preview.result == _unstamped(real)
        assert preview.net_change == -10
        assert preview.summary()[0] == "to pool: 70 -> 80 (+10)"

    def test_preview_set_balances(self, ledger: Ledger) -> None:
        """A bulk-set preview lists each member and the net credits leaving the pool."""
        ledger.transfer_to(WS, "ann", 30, actor="adm")
        before = _state(ledger)
        preview = ledger.preview_set_balances(WS, ["bob", "ann"], 20, actor="adm")
        assert _state(ledger) == before

        real = ledger.set_balances(WS, ["bob", "ann"], 20, actor="adm")
        assert preview.result == _unstamped(real)
        assert preview.net_change == real.net_change == 10
        assert [(m.member_id, m.before, m.after) for m in preview.members] == [
            ("bob", 0, 20),
            ("ann", 30, 20),
        ]
        assert preview.pool.after == ledger.pool(WS).balance == 60

    def test_preview_raises_like_real_call(self, ledger: Ledger) -> None:
        """A preview raises the same error, with the same message, as the real call."""
        ledger.transfer_to(WS, "ann", 30, actor="adm")
        ledger.add_member(WS, "off")
        bad_calls: list[tuple[str, dict[str, Any]]] = [
            ("to", {"member_id": "ann", "amount": 500, "actor": "adm"}),
            ("to", {"member_id": "ann", "amount": 0, "actor": "adm"}),
            ("to", {"member_id": "ann", "amount": True, "actor": "adm"}),
            ("to", {"member_id": "ann", "amount": 5, "actor": "ann"}),
            ("to", {"member_id": "ghost", "amount": 5, "actor": "adm"}),
            ("from", {"member_id": "ann", "amount": 31, "actor": "adm"}),
            ("from", {"member_id": "bob", "amount": 1, "actor": "bob"}),
            ("set", {"member_ids": ["ann", "bob"], "balance": 100, "actor": "adm"}),
            ("set", {"member_ids": ["ann", "ann"], "balance": 1, "actor": "adm"}),
            ("set", {"member_ids": ["ann", "ghost"], "balance": 1, "actor": "adm"}),
            ("set", {"member_ids": ["ann"], "balance": -1, "actor": "adm"}),
        ]
        pairs: dict[str, tuple[Callable[..., object], Callable[..., object]]] = {
            "to": (ledger.preview_transfer_to, ledger.transfer_to),
            "from": (ledger.preview_transfer_from, ledger.transfer_from),
            "set": (ledger.preview_set_balances, ledger.set_balances),
        }
        before = _state(ledger)

        for op, kwargs in bad_calls:
            preview, real = pairs[op]
            expected = _raised(lambda: real(WS, **kwargs))  # noqa: B023  # called right away
            assert expected is not None, (op, kwargs)
            assert _raised(lambda: preview(WS, **kwargs)) == expected, (op, kwargs)  # noqa: B023
        assert _state(ledger) == before

        ledger.set_coaching(WS, False, actor="adm")
        with pytest.raises(CoachingDisabled):
            ledger.preview_transfer_to(WS, "ann", 1, actor="adm")
        with pytest.raises(CoachingDisabled):
            ledger.preview_set_balances(WS, ["ann"], 1, actor="adm")
        with pytest.raises(WorkspaceNotFound):
            ledger.preview_transfer_to("missing", "ann", 1, actor="adm")

    # Low balances -----------------------------------------------------------------------------

    def test_low_balances(self, ledger: Ledger) -> None:
        """Members at or below the threshold come sorted by balance, then id."""
        ledger.add_member(WS, "cat")
        ledger.transfer_to(WS, "ann", 5, actor="adm")
        ledger.transfer_to(WS, "bob", 3, actor="adm")
        ledger.transfer_to(WS, "cat", 3, actor="adm")
        ledger.transfer_to(WS, "adm", 9, actor="adm")

        low = ledger.low_balances(WS, 5)
        assert [(m.id, m.balance) for m in low] == [("bob", 3), ("cat", 3), ("ann", 5)]
        assert [m.id for m in ledger.low_balances(WS, 0)] == []
        with pytest.raises(InvalidAmount):
            ledger.low_balances(WS, -1)
        with pytest.raises(WorkspaceNotFound):
            ledger.low_balances("missing", 1)

    def test_pool_status_threshold(self, ledger: Ledger) -> None:
        """The pool is low below its threshold; only admins set the threshold."""
        status = ledger.pool_status(WS)
        assert (status.balance, status.threshold, status.is_low) == (100, 0, False)

        updated = ledger.set_low_pool_threshold(WS, 101, actor="adm")
        assert updated.low_pool_threshold == 101
        assert ledger.pool_status(WS).is_low
        ledger.purchase(WS, 1)
        assert not ledger.pool_status(WS).is_low

        with pytest.raises(PermissionDenied):
            ledger.set_low_pool_threshold(WS, 5, actor="ann")
        with pytest.raises(InvalidAmount):
            ledger.set_low_pool_threshold(WS, -5, actor="adm")
        assert ledger.pool_status(WS).threshold == 101

    def test_threshold_survives_coaching_switch(self, ledger: Ledger) -> None:
        """Switching coaching off and on keeps the low-pool threshold."""
        ledger.set_low_pool_threshold(WS, 40, actor="adm")
        ledger.set_coaching(WS, False, actor="adm")
        ledger.set_coaching(WS, True, actor="adm")
        assert ledger.workspace(WS).low_pool_threshold == 40
