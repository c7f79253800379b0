"""The contract every :class:`~coaching_credits.Repository` backend must meet, as pytest tests.

The suite is written once and runs against the in-memory, SQLite and PostgreSQL backends. A
third-party backend reuses it by subclassing :class:`RepositoryContract`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone

import attrs
import pytest

from ..errors import (
    CoachingDisabled,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    MemberAlreadyExists,
    MemberNotFound,
    PermissionDenied,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
)
from ..ledger import Ledger
from ..models import MAX_AMOUNT, Member, Pool, Role, Transfer, TransferKind, Workspace
from ..repository import IdempotencyRecord, Repository

__all__ = ["RepositoryContract"]

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


class _Boom(Exception):
    """Raised inside a transaction to force a rollback."""


def _transfer(
    kind: TransferKind,
    amount: int,
    *,
    workspace_id: str = "ws",
    member_id: str | None = "ann",
    number: int = 0,
    at: datetime = T0,
    **fields: object,
) -> Transfer:
    """Build a journal entry ready to store: it has an id and a time, as the ledger sets them."""
    return Transfer(
        workspace_id=workspace_id,
        member_id=None if kind is TransferKind.PURCHASE else member_id,
        kind=kind,
        amount=amount,
        actor_id=None if kind is TransferKind.PURCHASE else "boss",
        id=f"{workspace_id}-t{number}",
        created_at=at,
        **fields,  # type: ignore[arg-type]  # the test passes only Transfer's own fields
    )


def _without_sequence(transfers: Sequence[Transfer]) -> list[Transfer]:
    return [attrs.evolve(t, sequence=None) for t in transfers]


class _Clock:
    """A clock that moves one second per reading, so history filters by time are exact."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class RepositoryContract:
    """Tests that every storage backend must pass, against its ``Transaction`` and a ``Ledger``.

    To run them on a backend, subclass this class in a pytest module and supply a
    ``repository`` fixture that returns a new, empty repository for each test::

        import pytest
        from coaching_credits.testing import RepositoryContract

        class TestMyBackend(RepositoryContract):
            @pytest.fixture
            def repository(self, tmp_path):
                repository = MyRepository(tmp_path / "ledger")
                yield repository
                repository.close()

    A ``repository`` fixture defined in a ``conftest.py`` works too. The subclass inherits
    every test; add backend-specific tests beside them. The class has no ``__init__`` and no
    ``Test`` prefix, so pytest collects it only through a subclass.
    """

    # Helpers ------------------------------------------------------------------------------

    @staticmethod
    def setup_workspace(
        repository: Repository,
        workspace_id: str = "ws",
        *,
        pool: int = 0,
        members: Sequence[tuple[str, Role, int]] = (),
    ) -> None:
        """Create a workspace with a pool balance and members, committed."""
        with repository.transaction() as tx:
            tx.create_workspace(
                Workspace(id=workspace_id), Pool(workspace_id=workspace_id, balance=pool)
            )
            for member_id, role, balance in members:
                tx.insert_member(
                    Member(workspace_id=workspace_id, id=member_id, role=role, balance=balance)
                )

    @staticmethod
    def ledger(repository: Repository) -> Ledger:
        """Return a ledger with a clock that moves one second per reading."""
        return Ledger(repository, clock=_Clock())

    @pytest.fixture
    def filled(self, repository: Repository) -> Iterator[tuple[Repository, list[Transfer]]]:
        """A workspace ``ws`` with members ann and bob and six stored transfers, oldest first.

        A second workspace ``other`` has one transfer of its own, so filters that leak
        across workspaces show up.
        """
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 0), ("bob", Role.MEMBER, 0)])
        self.setup_workspace(repository, "other", members=[("ann", Role.MEMBER, 0)])
        entries = [
            _transfer(TransferKind.PURCHASE, 100, number=1, at=T0),
            _transfer(TransferKind.TRANSFER_TO, 30, member_id="ann", number=2, at=T0),
            _transfer(
                TransferKind.TRANSFER_TO,
                20,
                member_id="bob",
                number=3,
                at=T0 + timedelta(seconds=1),
            ),
            _transfer(
                TransferKind.SPEND, 5, member_id="ann", number=4, at=T0 + timedelta(seconds=2)
            ),
            _transfer(
                TransferKind.TRANSFER_FROM,
                10,
                member_id="bob",
                number=5,
                at=T0 + timedelta(seconds=3),
            ),
            _transfer(
                TransferKind.TRANSFER_TO,
                10,
                member_id="ann",
                number=6,
                at=T0 + timedelta(seconds=4),
                reason="bonus",
                metadata={"ticket": "T-1"},
            ),
        ]
        with repository.transaction() as tx:
            stored = tx.append_transfers(entries[:3])
            tx.append_transfers(
                [_transfer(TransferKind.PURCHASE, 7, workspace_id="other", number=1)]
            )
            stored += tx.append_transfers(entries[3:])
        yield repository, stored

    # Workspaces ---------------------------------------------------------------------------

    def test_create_and_get_workspace(self, repository: Repository) -> None:
        """A created workspace and its pool read back equal, through get and lock alike."""
        workspace = Workspace(id="ws", coaching_enabled=False, low_pool_threshold=12)
        pool = Pool(workspace_id="ws", balance=40)
        with repository.transaction() as tx:
            tx.create_workspace(workspace, pool)

        with repository.transaction() as tx:
            assert tx.get_workspace("ws") == (workspace, pool)
            assert tx.lock_workspace("ws") == (workspace, pool)

    def test_workspace_not_found(self, repository: Repository) -> None:
        """Reading or locking a missing workspace raises ``WorkspaceNotFound``."""
        with repository.transaction() as tx, pytest.raises(WorkspaceNotFound) as caught:
            tx.get_workspace("nope")
        assert caught.value.workspace_id == "nope"

        with repository.transaction() as tx, pytest.raises(WorkspaceNotFound):
            tx.lock_workspace("nope")

    def test_workspace_already_exists(self, repository: Repository) -> None:
        """A second workspace with the same id raises and leaves the first one alone."""
        self.setup_workspace(repository, pool=5)

        with pytest.raises(WorkspaceAlreadyExists) as caught, repository.transaction() as tx:
            tx.create_workspace(Workspace(id="ws"), Pool(workspace_id="ws", balance=99))
        assert caught.value.workspace_id == "ws"

        with repository.transaction() as tx:
            assert tx.get_workspace("ws")[1].balance == 5

    def test_update_workspace_and_pool(self, repository: Repository) -> None:
        """Settings and the pool balance persist across transactions."""
        self.setup_workspace(repository)
        with repository.transaction() as tx:
            tx.update_workspace(Workspace(id="ws", coaching_enabled=False, low_pool_threshold=3))
            tx.update_pool(Pool(workspace_id="ws", balance=77))

        with repository.transaction() as tx:
            workspace, pool = tx.get_workspace("ws")
        assert workspace.coaching_enabled is False
        assert workspace.low_pool_threshold == 3
        assert pool.balance == 77

    def test_max_balances_round_trip(self, repository: Repository) -> None:
        """Balances and amounts of 2**63-1 are stored and read back exactly."""
        self.setup_workspace(repository, pool=MAX_AMOUNT, members=[("ann", Role.ADMIN, 0)])
        with repository.transaction() as tx:
            tx.update_members([Member(workspace_id="ws", id="ann", balance=MAX_AMOUNT)])
            stored = tx.append_transfers(
                [
                    _transfer(
                        TransferKind.TRANSFER_TO,
                        MAX_AMOUNT,
                        pool_balance=MAX_AMOUNT,
                        member_balance=MAX_AMOUNT,
                    )
                ]
            )

        with repository.transaction() as tx:
            assert tx.get_workspace("ws")[1].balance == MAX_AMOUNT
            ann = tx.get_members("ws", ["ann"])["ann"]
            (transfer,) = tx.list_transfers("ws")
        assert ann.balance == MAX_AMOUNT
        assert transfer == stored[0]
        assert transfer.amount == MAX_AMOUNT
        assert transfer.pool_balance == MAX_AMOUNT

    # Members ------------------------------------------------------------------------------

    def test_insert_and_get_members(self, repository: Repository) -> None:
        """``get_members`` returns the listed members of one workspace and skips missing ids."""
        self.setup_workspace(repository, members=[("ann", Role.ADMIN, 4), ("bob", Role.MEMBER, 0)])
        self.setup_workspace(repository, "other", members=[("cat", Role.MEMBER, 9)])

        with repository.transaction() as tx:
            found = tx.get_members("ws", ["bob", "ann", "cat", "zed"])
            empty = tx.get_members("ws", [])
        assert found == {
            "ann": Member(workspace_id="ws", id="ann", role=Role.ADMIN, balance=4),
            "bob": Member(workspace_id="ws", id="bob", role=Role.MEMBER, balance=0),
        }
        assert empty == {}

    def test_get_members_many_ids(self, repository: Repository) -> None:
        """Long id lists work: backends with a parameter limit must split them."""
        ids = [f"m{i:04d}" for i in range(1200)]
        self.setup_workspace(repository, members=[(i, Role.MEMBER, 1) for i in ids])

        with repository.transaction() as tx:
            found = tx.get_members("ws", ids)
        assert sorted(found) == ids

    def test_list_members_sorted(self, repository: Repository) -> None:
        """``list_members`` returns one workspace's members sorted by id."""
        self.setup_workspace(
            repository,
            members=[("carl", Role.MEMBER, 1), ("ann", Role.ADMIN, 2), ("bob", Role.MEMBER, 3)],
        )
        self.setup_workspace(repository, "other", members=[("aaron", Role.MEMBER, 0)])

        with repository.transaction() as tx:
            listed = tx.list_members("ws")
            none = tx.list_members("other-missing")
        assert [m.id for m in listed] == ["ann", "bob", "carl"]
        assert [m.balance for m in listed] == [2, 3, 1]
        assert all(m.workspace_id == "ws" for m in listed)
        assert none == []

    def test_member_already_exists(self, repository: Repository) -> None:
        """A duplicate member raises; the same id in another workspace is a different member."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 3)])
        self.setup_workspace(repository, "other")

        with pytest.raises(MemberAlreadyExists) as caught, repository.transaction() as tx:
            tx.insert_member(Member(workspace_id="ws", id="ann", balance=50))
        assert caught.value.member_id == "ann"
        assert caught.value.workspace_id == "ws"

        with repository.transaction() as tx:
            tx.insert_member(Member(workspace_id="other", id="ann"))
        with repository.transaction() as tx:
            assert tx.get_members("ws", ["ann"])["ann"].balance == 3
            assert tx.get_members("other", ["ann"])["ann"].balance == 0

    def test_update_members(self, repository: Repository) -> None:
        """Balances and roles of several members persist together."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 0), ("bob", Role.MEMBER, 0)])
        with repository.transaction() as tx:
            tx.update_members(
                [
                    Member(workspace_id="ws", id="ann", role=Role.ADMIN, balance=8),
                    Member(workspace_id="ws", id="bob", balance=2),
                ]
            )

        with repository.transaction() as tx:
            found = tx.get_members("ws", ["ann", "bob"])
        assert found["ann"].role is Role.ADMIN
        assert found["ann"].balance == 8
        assert found["bob"].balance == 2

    def test_delete_member_keeps_journal(self, repository: Repository) -> None:
        """A deleted member is gone, but the journal keeps their transfers."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 0), ("bob", Role.MEMBER, 0)])
        with repository.transaction() as tx:
            tx.append_transfers([_transfer(TransferKind.MEMBER_REMOVED, 0, member_id="ann")])
            tx.delete_member("ws", "ann")

        with repository.transaction() as tx:
            assert tx.get_members("ws", ["ann", "bob"]).keys() == {"bob"}
            assert [t.member_id for t in tx.list_transfers("ws")] == ["ann"]

        with repository.transaction() as tx:
            tx.insert_member(Member(workspace_id="ws", id="ann"))
        with repository.transaction() as tx:
            assert tx.get_members("ws", ["ann"])["ann"].balance == 0

    # The journal --------------------------------------------------------------------------

    def test_append_sets_increasing_sequence(self, repository: Repository) -> None:
        """Appended entries come back with sequences that increase in commit order."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 0)])
        with repository.transaction() as tx:
            first = tx.append_transfers(
                [
                    _transfer(TransferKind.PURCHASE, 10, number=1),
                    _transfer(TransferKind.TRANSFER_TO, 4, number=2),
                ]
            )
        with repository.transaction() as tx:
            second = tx.append_transfers([_transfer(TransferKind.SPEND, 1, number=3)])

        sequences = [t.sequence or 0 for t in [*first, *second]]
        assert all(t.sequence is not None for t in [*first, *second])
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == 3
        assert [t.id for t in first] == ["ws-t1", "ws-t2"]

    def test_transfer_fields_round_trip(self, repository: Repository) -> None:
        """Every field of a transfer reads back equal to what was stored."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 0)])
        entry = _transfer(
            TransferKind.TRANSFER_FROM,
            6,
            pool_balance=16,
            member_balance=4,
            reason="moved team, équipe 3",
            metadata={"ticket": "T-9", "batch": "b1"},
            number=5,
            reverses="ws-t1",
            at=datetime(2024, 3, 1, 14, 0, 0, 500, tzinfo=timezone(timedelta(hours=2))),
        )
        with repository.transaction() as tx:
            (stored,) = tx.append_transfers([entry])
        assert _without_sequence([stored]) == [entry]

        with repository.transaction() as tx:
            listed = tx.list_transfers("ws")
            fetched = tx.get_transfer("ws", "ws-t5")
        assert listed == [stored]
        assert fetched == stored
        assert listed[0].created_at == entry.created_at
        assert listed[0].metadata == (("batch", "b1"), ("ticket", "T-9"))

    def test_list_transfers_newest_first(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """Without filters, every entry of the workspace comes back, newest first."""
        repository, stored = filled
        with repository.transaction() as tx:
            listed = tx.list_transfers("ws")
        assert listed == stored[::-1]

    def test_list_transfers_by_member(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """``member_id`` keeps only that member's entries."""
        repository = filled[0]
        with repository.transaction() as tx:
            listed = tx.list_transfers("ws", member_id="ann")
        assert [t.id for t in listed] == ["ws-t6", "ws-t4", "ws-t2"]

    def test_list_transfers_by_kinds(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """``kinds`` keeps entries of any of the listed kinds; an empty list keeps none."""
        repository = filled[0]
        with repository.transaction() as tx:
            moves = tx.list_transfers(
                "ws", kinds=[TransferKind.TRANSFER_TO, TransferKind.TRANSFER_FROM]
            )
            spends = tx.list_transfers("ws", kinds={TransferKind.SPEND})
            none = tx.list_transfers("ws", kinds=[])
        assert [t.id for t in moves] == ["ws-t6", "ws-t5", "ws-t3", "ws-t2"]
        assert [t.id for t in spends] == ["ws-t4"]
        assert none == []

    def test_list_transfers_by_time(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """``since`` is inclusive and ``until`` exclusive."""
        repository = filled[0]
        second = T0 + timedelta(seconds=1)
        fourth = T0 + timedelta(seconds=3)
        with repository.transaction() as tx:
            window = tx.list_transfers("ws", since=second, until=fourth)
            from_second = tx.list_transfers("ws", since=second)
            before_second = tx.list_transfers("ws", until=second)
        assert [t.id for t in window] == ["ws-t4", "ws-t3"]
        assert [t.id for t in from_second] == ["ws-t6", "ws-t5", "ws-t4", "ws-t3"]
        assert [t.id for t in before_second] == ["ws-t2", "ws-t1"]

    def test_list_transfers_time_zones(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """Time filters compare instants, whatever the offset they are given in."""
        repository = filled[0]
        plus_two = timezone(timedelta(hours=2))
        since = (T0 + timedelta(seconds=1)).astimezone(plus_two)
        with repository.transaction() as tx:
            listed = tx.list_transfers("ws", since=since)
        assert [t.id for t in listed] == ["ws-t6", "ws-t5", "ws-t4", "ws-t3"]

    def test_list_transfers_paging(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """``limit`` with the ``before_sequence`` cursor pages through the journal."""
        repository = filled[0]
        pages: list[list[str]] = []
        cursor: int | None = None
        with repository.transaction() as tx:
            while True:
                page = tx.list_transfers("ws", before_sequence=cursor, limit=4)
                if not page:
                    break
                pages.append([t.id or "" for t in page])
                cursor = page[-1].sequence
        assert pages == [["ws-t6", "ws-t5", "ws-t4", "ws-t3"], ["ws-t2", "ws-t1"]]

    def test_paging_stable_under_appends(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """Entries committed after the first page do not shift the next page."""
        repository = filled[0]
        with repository.transaction() as tx:
            first = tx.list_transfers("ws", limit=2)
        with repository.transaction() as tx:
            tx.append_transfers([_transfer(TransferKind.PURCHASE, 1, number=7)])
        with repository.transaction() as tx:
            second = tx.list_transfers("ws", before_sequence=first[-1].sequence, limit=2)
        assert [t.id for t in first] == ["ws-t6", "ws-t5"]
        assert [t.id for t in second] == ["ws-t4", "ws-t3"]

    def test_list_transfers_filters_combine(
        self, filled: tuple[Repository, list[Transfer]]
    ) -> None:
        """All filters apply together, and ``limit`` counts only matching entries."""
        repository, stored = filled
        with repository.transaction() as tx:
            listed = tx.list_transfers(
                "ws",
                member_id="ann",
                kinds=[TransferKind.TRANSFER_TO],
                since=T0,
                before_sequence=stored[5].sequence,
                limit=1,
            )
        assert [t.id for t in listed] == ["ws-t2"]

    def test_list_transfers_other_workspace(
        self, filled: tuple[Repository, list[Transfer]]
    ) -> None:
        """A workspace's journal holds only its own entries."""
        repository = filled[0]
        with repository.transaction() as tx:
            other = tx.list_transfers("other")
            missing = tx.list_transfers("missing")
        assert [(t.id, t.amount) for t in other] == [("other-t1", 7)]
        assert missing == []

    def test_get_transfer(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """``get_transfer`` finds an entry by id within its workspace only."""
        repository, stored = filled
        with repository.transaction() as tx:
            assert tx.get_transfer("ws", "ws-t4") == stored[3]
            assert tx.get_transfer("ws", "missing") is None
            assert tx.get_transfer("other", "ws-t4") is None

    def test_find_reversal(self, repository: Repository) -> None:
        """``find_reversal`` returns the entry whose ``reverses`` points at a transfer."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 0)])
        with repository.transaction() as tx:
            stored = tx.append_transfers(
                [
                    _transfer(TransferKind.TRANSFER_TO, 5, number=1),
                    _transfer(TransferKind.TRANSFER_FROM, 5, number=2, reverses="ws-t1"),
                ]
            )

        with repository.transaction() as tx:
            assert tx.find_reversal("ws", "ws-t1") == stored[1]
            assert tx.find_reversal("ws", "ws-t2") is None
            assert tx.find_reversal("other", "ws-t1") is None

    def test_journal_totals(self, filled: tuple[Repository, list[Transfer]]) -> None:
        """``journal_totals`` sums amounts per member and kind, purchases under ``None``."""
        repository = filled[0]
        with repository.transaction() as tx:
            totals = tx.journal_totals("ws")
            empty = tx.journal_totals("missing")
        assert sorted(totals, key=lambda row: (row[0] or "", row[1].value)) == [
            (None, TransferKind.PURCHASE, 100),
            ("ann", TransferKind.SPEND, 5),
            ("ann", TransferKind.TRANSFER_TO, 40),
            ("bob", TransferKind.TRANSFER_FROM, 10),
            ("bob", TransferKind.TRANSFER_TO, 20),
        ]
        assert empty == []

    # Idempotency records ------------------------------------------------------------------

    def test_idempotency_records(self, repository: Repository) -> None:
        """A stored record reads back equal, and keys are scoped to their workspace."""
        self.setup_workspace(repository)
        self.setup_workspace(repository, "other")
        record = IdempotencyRecord(
            workspace_id="ws",
            key="k-1",
            request='{"op":"purchase"}',
            response='{"pool":{"balance":5}}',
            created_at=T0,
        )
        with repository.transaction() as tx:
            assert tx.get_idempotency("ws", "k-1") is None
            tx.put_idempotency(record)

        with repository.transaction() as tx:
            assert tx.get_idempotency("ws", "k-1") == record
            assert tx.get_idempotency("other", "k-1") is None
            assert tx.get_idempotency("ws", "k-2") is None
            tx.put_idempotency(attrs.evolve(record, workspace_id="other", response="{}"))

        with repository.transaction() as tx:
            other = tx.get_idempotency("other", "k-1")
            assert tx.get_idempotency("ws", "k-1") == record
        assert other is not None
        assert other.response == "{}"

    # Transactions -------------------------------------------------------------------------

    def test_rollback_leaves_nothing(self, repository: Repository) -> None:
        """An error inside a transaction undoes every write made in it."""
        self.setup_workspace(repository, pool=50, members=[("ann", Role.MEMBER, 5)])

        with pytest.raises(_Boom), repository.transaction() as tx:
            tx.create_workspace(Workspace(id="new"), Pool(workspace_id="new"))
            tx.insert_member(Member(workspace_id="ws", id="bob"))
            tx.update_pool(Pool(workspace_id="ws", balance=1))
            tx.update_members([Member(workspace_id="ws", id="ann", balance=49)])
            tx.update_workspace(Workspace(id="ws", coaching_enabled=False))
            tx.append_transfers([_transfer(TransferKind.TRANSFER_TO, 44)])
            tx.put_idempotency(
                IdempotencyRecord(
                    workspace_id="ws", key="k", request="{}", response="{}", created_at=T0
                )
            )
            raise _Boom

        with repository.transaction() as tx:
            workspace, pool = tx.get_workspace("ws")
            assert workspace.coaching_enabled is True
            assert pool.balance == 50
            assert tx.list_members("ws") == [Member(workspace_id="ws", id="ann", balance=5)]
            assert tx.list_transfers("ws") == []
            assert tx.get_idempotency("ws", "k") is None
            with pytest.raises(WorkspaceNotFound):
                tx.get_workspace("new")

    def test_rollback_of_delete(self, repository: Repository) -> None:
        """A deleted member comes back when the transaction fails."""
        self.setup_workspace(repository, members=[("ann", Role.MEMBER, 5)])

        with pytest.raises(_Boom), repository.transaction() as tx:
            tx.delete_member("ws", "ann")
            raise _Boom

        with repository.transaction() as tx:
            assert tx.get_members("ws", ["ann"])["ann"].balance == 5

    def test_usable_after_error(self, repository: Repository) -> None:
        """A translated error does not break the repository for the next transaction."""
        self.setup_workspace(repository)
        with pytest.raises(WorkspaceAlreadyExists), repository.transaction() as tx:
            tx.create_workspace(Workspace(id="ws"), Pool(workspace_id="ws"))

        with repository.transaction() as tx:
            tx.create_workspace(Workspace(id="ws2"), Pool(workspace_id="ws2", balance=3))
        with repository.transaction() as tx:
            assert tx.get_workspace("ws2")[1].balance == 3

    # The Ledger on top --------------------------------------------------------------------

    def test_ledger_operations(self, repository: Repository) -> None:
        """Every ledger operation commits its balances and journal entries."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        ledger.add_member("ws", "ann", actor="boss")
        ledger.add_member("ws", "bob")

        assert ledger.purchase("ws", 100).pool.balance == 100
        assert ledger.transfer_to("ws", "ann", 30, actor="boss").member.balance == 30
        assert ledger.transfer_from("ws", "ann", 10, actor="boss").pool.balance == 80
        result = ledger.set_balances("ws", ["ann", "bob"], 15, actor="boss")
        assert [m.balance for m in result.members] == [15, 15]
        assert ledger.spend("ws", "bob", 4).member.balance == 11
        removal = ledger.remove_member("ws", "ann", actor="boss")
        assert removal.pool.balance == 70 + 15

        assert ledger.pool("ws").balance == 85
        assert ledger.member("ws", "bob").balance == 11
        assert [m.id for m in ledger.members("ws")] == ["bob", "boss"]
        with pytest.raises(MemberNotFound):
            ledger.member("ws", "ann")

        kinds = [t.kind for t in ledger.history("ws", limit=None)]
        assert kinds == [
            TransferKind.MEMBER_REMOVED,
            TransferKind.SPEND,
            TransferKind.TRANSFER_TO,
            TransferKind.TRANSFER_FROM,
            TransferKind.TRANSFER_FROM,
            TransferKind.TRANSFER_TO,
            TransferKind.PURCHASE,
        ]

    def test_ledger_set_coaching(self, repository: Repository) -> None:
        """Coaching switched off stops transfers and spending until switched on again."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        ledger.purchase("ws", 10)
        ledger.transfer_to("ws", "boss", 5, actor="boss")

        assert ledger.set_coaching("ws", False, actor="boss").coaching_enabled is False
        assert ledger.workspace("ws").coaching_enabled is False
        with pytest.raises(CoachingDisabled):
            ledger.transfer_to("ws", "boss", 1, actor="boss")
        with pytest.raises(CoachingDisabled):
            ledger.spend("ws", "boss", 1)
        assert ledger.purchase("ws", 1).pool.balance == 6

        ledger.set_coaching("ws", True, actor="boss")
        assert ledger.spend("ws", "boss", 1).member.balance == 4

    def test_ledger_rejections_change_nothing(self, repository: Repository) -> None:
        """Each rejected call leaves balances and the journal as they were."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        ledger.add_member("ws", "ann")
        ledger.purchase("ws", 10)
        before = (ledger.pool("ws"), ledger.members("ws"), ledger.history("ws", limit=None))

        with pytest.raises(InsufficientCredits):
            ledger.transfer_to("ws", "ann", 11, actor="boss")
        with pytest.raises(InsufficientCredits):
            ledger.set_balances("ws", ["ann", "boss"], 6, actor="boss")
        with pytest.raises(PermissionDenied):
            ledger.transfer_to("ws", "ann", 1, actor="ann")
        with pytest.raises(MemberNotFound):
            ledger.set_balances("ws", ["ann", "ghost"], 1, actor="boss")
        with pytest.raises(InvalidAmount):
            ledger.purchase("ws", MAX_AMOUNT)
        with pytest.raises(WorkspaceNotFound):
            ledger.purchase("nowhere", 5)
        with pytest.raises(MemberAlreadyExists):
            ledger.add_member("ws", "ann")

        after = (ledger.pool("ws"), ledger.members("ws"), ledger.history("ws", limit=None))
        assert after == before

    def test_ledger_workspace_already_exists(self, repository: Repository) -> None:
        """Creating a workspace twice raises ``WorkspaceAlreadyExists``."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        with pytest.raises(WorkspaceAlreadyExists):
            ledger.create_workspace("ws")

    def test_ledger_replay_returns_original(self, repository: Repository) -> None:
        """A keyed call replayed with the same arguments returns the original result only."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        ledger.add_member("ws", "ann")
        ledger.purchase("ws", 100)

        first = ledger.transfer_to("ws", "ann", 10, actor="boss", idempotency_key="k1")
        assert ledger.last_call_replayed is False
        again = ledger.transfer_to("ws", "ann", 10, actor="boss", idempotency_key="k1")
        assert ledger.last_call_replayed is True
        assert again == first
        assert ledger.member("ws", "ann").balance == 10
        assert ledger.pool("ws").balance == 90
        assert len(ledger.history("ws", kinds=[TransferKind.TRANSFER_TO])) == 1

        bought = ledger.purchase("ws", 5, idempotency_key="p1", metadata={"invoice": "9"})
        assert ledger.purchase("ws", 5, idempotency_key="p1", metadata={"invoice": "9"}) == bought
        balanced = ledger.set_balances("ws", ["ann"], 3, actor="boss", idempotency_key="s1")
        assert ledger.set_balances("ws", ["ann"], 3, actor="boss", idempotency_key="s1") == balanced
        spent = ledger.spend("ws", "ann", 1, idempotency_key="x1")
        assert ledger.spend("ws", "ann", 1, idempotency_key="x1") == spent
        assert ledger.member("ws", "ann").balance == 2

    def test_ledger_key_conflict(self, repository: Repository) -> None:
        """A key reused with different arguments raises and changes nothing."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.purchase("ws", 5, idempotency_key="k1")

        with pytest.raises(IdempotencyConflict) as caught:
            ledger.purchase("ws", 6, idempotency_key="k1")
        assert caught.value.key == "k1"
        assert caught.value.workspace_id == "ws"
        assert ledger.pool("ws").balance == 5

    def test_ledger_rejected_call_keeps_key(self, repository: Repository) -> None:
        """A rejected call does not use up its key: another request may still take it.

        Resending the very same request is rejected the same way again, even after the cause
        went away, so replaying a log of keyed calls gives the same outcomes each time.
        """
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)

        with pytest.raises(InsufficientCredits):
            ledger.transfer_to("ws", "boss", 5, actor="boss", idempotency_key="k1")
        ledger.purchase("ws", 5)
        with pytest.raises(InsufficientCredits):
            ledger.transfer_to("ws", "boss", 5, actor="boss", idempotency_key="k1")
        assert ledger.pool("ws").balance == 5

        result = ledger.transfer_to("ws", "boss", 4, actor="boss", idempotency_key="k1")
        assert ledger.last_call_replayed is False
        assert result.member.balance == 4
        with pytest.raises(IdempotencyConflict):
            ledger.transfer_to("ws", "boss", 5, actor="boss", idempotency_key="k1")

    def test_ledger_keys_scoped_per_workspace(self, repository: Repository) -> None:
        """The same key in two workspaces names two different calls."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.create_workspace("other")

        ledger.purchase("ws", 5, idempotency_key="k1")
        ledger.purchase("other", 7, idempotency_key="k1")
        assert ledger.last_call_replayed is False
        assert ledger.pool("ws").balance == 5
        assert ledger.pool("other").balance == 7

    def test_ledger_workspaces_isolated(self, repository: Repository) -> None:
        """Nothing in one workspace can read or move another's credits."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.create_workspace("other")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        ledger.add_member("other", "zed")
        ledger.add_member("other", "chief", role=Role.ADMIN)
        ledger.purchase("other", 50)
        ledger.transfer_to("other", "zed", 20, actor="chief")
        ledger.purchase("ws", 10)

        with pytest.raises(MemberNotFound):
            ledger.member("ws", "zed")
        with pytest.raises(MemberNotFound):
            ledger.transfer_to("ws", "zed", 1, actor="boss")
        with pytest.raises(MemberNotFound):
            ledger.transfer_from("ws", "zed", 1, actor="boss")
        with pytest.raises(MemberNotFound):
            ledger.spend("ws", "zed", 1)
        with pytest.raises(MemberNotFound):
            ledger.set_balances("ws", ["zed"], 0, actor="boss")
        with pytest.raises(PermissionDenied):
            ledger.transfer_to("ws", "boss", 1, actor="chief")

        assert ledger.member("other", "zed").balance == 20
        assert ledger.pool("other").balance == 30
        assert ledger.pool("ws").balance == 10
        with pytest.raises(MemberNotFound):
            ledger.history("ws", member_id="zed")

    def test_ledger_history_paging(self, repository: Repository) -> None:
        """``history`` pages with ``before`` and filters by member, kind and time."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        for amount in range(1, 6):
            ledger.purchase("ws", amount)
        ledger.transfer_to("ws", "boss", 3, actor="boss")

        first = ledger.history("ws", limit=4)
        second = ledger.history("ws", limit=4, before=first[-1].sequence)
        assert [t.amount for t in first] == [3, 5, 4, 3]
        assert [t.amount for t in second] == [2, 1]
        assert [t.amount for t in ledger.history("ws", member_id="boss")] == [3]
        purchases = ledger.history("ws", kinds=[TransferKind.PURCHASE], limit=None)
        assert len(purchases) == 5
        middle = ledger.history("ws", since=first[2].created_at, until=first[0].created_at)
        assert [t.sequence for t in middle] == [first[1].sequence, first[2].sequence]

    def test_ledger_journal_rebuilds_balances(self, repository: Repository) -> None:
        """The journal's totals rebuild the pool and every member balance."""
        ledger = self.ledger(repository)
        ledger.create_workspace("ws")
        ledger.add_member("ws", "boss", role=Role.ADMIN)
        ledger.add_member("ws", "ann")
        ledger.add_member("ws", "bob")
        ledger.purchase("ws", 60)
        ledger.set_balances("ws", ["ann", "bob"], 20, actor="boss")
        ledger.transfer_from("ws", "bob", 5, actor="boss")
        ledger.spend("ws", "ann", 7)
        ledger.remove_member("ws", "bob", actor="boss")

        with repository.transaction() as tx:
            totals = tx.journal_totals("ws")
        pool = 0
        members: dict[str, int] = {}
        for member_id, kind, total in totals:
            if kind is TransferKind.PURCHASE:
                pool += total
            elif kind is TransferKind.TRANSFER_TO:
                pool -= total
                members[member_id or ""] = members.get(member_id or "", 0) + total
            elif kind in (TransferKind.TRANSFER_FROM, TransferKind.MEMBER_REMOVED):
                pool += total
                members[member_id or ""] = members.get(member_id or "", 0) - total
            elif kind is TransferKind.SPEND:
                members[member_id or ""] = members.get(member_id or "", 0) - total

        assert pool == ledger.pool("ws").balance == 60 - 40 + 5 + 15
        stored = {m.id: m.balance for m in ledger.members("ws")}
        assert {k: v for k, v in members.items() if v} == {k: v for k, v in stored.items() if v}
        assert members["bob"] == 0
