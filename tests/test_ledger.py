"""Ledger behaviour that does not depend on the storage backend.

These tests run on the in-memory backend, which is a real repository. Only the retry tests
wrap it, because a clash between concurrent writers cannot be produced on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from coaching_credits import (
    MAX_AMOUNT,
    CoachingDisabled,
    ConcurrencyConflict,
    IdempotencyConflict,
    InMemoryRepository,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    Ledger,
    MemberNotFound,
    PermissionDenied,
    Repository,
    RetryableConflict,
    Role,
    Transaction,
    TransferKind,
    WorkspaceNotFound,
)
from coaching_credits.ledger import MAX_KEY_LENGTH, MAX_METADATA_ITEMS, MAX_REASON_LENGTH

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


class StepClock:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def make_ledger(repository: Any = None, **options: Any) -> Ledger:
    """Return a ledger with workspace ``ws``: admin ``boss``, members ``ann`` and ``bob``."""
    ledger = Ledger(repository or InMemoryRepository(), clock=StepClock(), **options)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.add_member("ws", "ann")
    ledger.add_member("ws", "bob")
    return ledger


@pytest.fixture
def ledger() -> Ledger:
    return make_ledger()


class FlakyRepository:
    """An in-memory repository whose commits clash with a simulated concurrent writer.

    A real clash (a PostgreSQL serialization failure, a SQLite lock time-out) cannot be
    produced on demand, so this test double raises :class:`RetryableConflict` at the end of
    the first ``failures`` transactions, after rolling back their writes as a real backend
    would. ``failures=None`` makes every transaction clash.
    """

    def __init__(self, failures: int | None) -> None:
        self.inner = InMemoryRepository()
        self.failures = failures
        self.transactions = 0
        self.armed = False

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        self.transactions += 1
        with self.inner.transaction() as tx:
            yield tx
            if self.armed and (self.failures is None or self.failures > 0):
                if self.failures is not None:
                    self.failures -= 1
                # Raising inside the inner block rolls back what this attempt wrote.
                raise RetryableConflict("could not serialize access (simulated)")

    def close(self) -> None:
        self.inner.close()


# Retries -------------------------------------------------------------------------------------


def test_retry_until_success() -> None:
    """After three clashes the fourth attempt commits, exactly once."""
    repository = FlakyRepository(failures=3)
    ledger = make_ledger(repository, retry_delay=0)
    repository.armed = True
    repository.transactions = 0

    result = ledger.purchase("ws", 40)

    assert repository.transactions == 4
    assert result.pool.balance == 40
    repository.armed = False
    assert ledger.pool("ws").balance == 40
    assert len(ledger.history("ws", kinds=[TransferKind.PURCHASE])) == 1


def test_retry_keyed_call_stores_one_record() -> None:
    """A keyed call that retried is replayed afterwards, not applied a second time."""
    repository = FlakyRepository(failures=2)
    ledger = make_ledger(repository, retry_delay=0)
    ledger.purchase("ws", 50)
    repository.armed = True

    first = ledger.transfer_to("ws", "ann", 10, actor="boss", idempotency_key="k1")
    again = ledger.transfer_to("ws", "ann", 10, actor="boss", idempotency_key="k1")

    assert again == first
    assert ledger.last_call_replayed is True
    assert ledger.member("ws", "ann").balance == 10


def test_retry_gives_up() -> None:
    """A writer that always clashes raises ``ConcurrencyConflict`` with the attempt count."""
    repository = FlakyRepository(failures=None)
    ledger = make_ledger(repository, max_attempts=5, retry_delay=0)
    repository.armed = True
    repository.transactions = 0

    with pytest.raises(ConcurrencyConflict) as caught:
        ledger.purchase("ws", 40)

    assert repository.transactions == 5
    assert caught.value.attempts == 5
    assert caught.value.workspace_id == "ws"
    assert "could not serialize access" in caught.value.cause
    assert isinstance(caught.value.__cause__, RetryableConflict)
    repository.armed = False
    assert ledger.pool("ws").balance == 0
    assert ledger.history("ws") == []


def test_one_attempt_no_retry() -> None:
    """With ``max_attempts=1`` the first clash is final."""
    repository = FlakyRepository(failures=1)
    ledger = make_ledger(repository, max_attempts=1, retry_delay=0)
    repository.armed = True

    with pytest.raises(ConcurrencyConflict) as caught:
        ledger.purchase("ws", 1)
    assert caught.value.attempts == 1


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_validated(attempts: int) -> None:
    """A ledger needs at least one attempt per call."""
    with pytest.raises(ValueError, match="max_attempts"):
        Ledger(InMemoryRepository(), max_attempts=attempts)


# Idempotency ---------------------------------------------------------------------------------


def test_replay_after_state_changed(ledger: Ledger) -> None:
    """A replay returns the original result even after later calls changed the balances."""
    first = ledger.purchase("ws", 10, idempotency_key="buy-1")
    ledger.purchase("ws", 5)

    again = ledger.purchase("ws", 10, idempotency_key="buy-1")

    assert again == first
    assert again.pool.balance == 10
    assert ledger.pool("ws").balance == 15


def test_replay_after_member_removed(ledger: Ledger) -> None:
    """A replay does not run the rules again, so it succeeds after the member left."""
    ledger.purchase("ws", 10)
    first = ledger.transfer_to("ws", "ann", 4, actor="boss", idempotency_key="give")
    ledger.remove_member("ws", "ann", actor="boss")

    assert ledger.transfer_to("ws", "ann", 4, actor="boss", idempotency_key="give") == first
    assert ledger.last_call_replayed is True
    assert ledger.pool("ws").balance == 10


def test_replay_after_coaching_disabled(ledger: Ledger) -> None:
    """A replay returns the stored result although the call would now be rejected."""
    ledger.purchase("ws", 10)
    ledger.transfer_to("ws", "ann", 4, actor="boss")
    first = ledger.spend("ws", "ann", 1, idempotency_key="s")
    ledger.set_coaching("ws", False, actor="boss")

    assert ledger.spend("ws", "ann", 1, idempotency_key="s") == first
    with pytest.raises(CoachingDisabled):
        ledger.spend("ws", "ann", 1, idempotency_key="s2")


@pytest.mark.parametrize(
    ("original", "changed"),
    [
        ({"amount": 5}, {"amount": 6}),
        ({"amount": 5, "reason": "a"}, {"amount": 5, "reason": "b"}),
        ({"amount": 5, "metadata": {"x": "1"}}, {"amount": 5, "metadata": {"x": "2"}}),
        ({"amount": 5}, {"amount": 5, "reason": "added later"}),
    ],
)
def test_key_conflict_on_any_argument(
    ledger: Ledger, original: dict[str, Any], changed: dict[str, Any]
) -> None:
    """Any difference in the arguments makes a reused key an ``IdempotencyConflict``."""
    ledger.purchase("ws", idempotency_key="k", **original)

    with pytest.raises(IdempotencyConflict) as caught:
        ledger.purchase("ws", idempotency_key="k", **changed)

    assert caught.value.original is not None
    assert caught.value.request is not None
    assert caught.value.original["amount"] == 5
    assert ledger.pool("ws").balance == 5


def test_key_conflict_across_operations(ledger: Ledger) -> None:
    """A key used for a purchase cannot be reused for a spend."""
    ledger.purchase("ws", 5, idempotency_key="k")
    with pytest.raises(IdempotencyConflict) as caught:
        ledger.spend("ws", "ann", 5, idempotency_key="k")
    assert caught.value.request is not None
    assert caught.value.request["op"] == "spend"


def test_metadata_order_is_same_request(ledger: Ledger) -> None:
    """Metadata in another order is the same request, so it replays."""
    first = ledger.purchase("ws", 5, idempotency_key="k", metadata={"a": "1", "b": "2"})
    again = ledger.purchase("ws", 5, idempotency_key="k", metadata={"b": "2", "a": "1"})
    assert again == first
    assert ledger.last_call_replayed is True


def test_rejected_call_keeps_key(ledger: Ledger) -> None:
    """Rejected calls, for any reason, leave the key free for a different request."""
    with pytest.raises(InsufficientCredits):
        ledger.transfer_to("ws", "ann", 5, actor="boss", idempotency_key="k")
    with pytest.raises(PermissionDenied):
        ledger.transfer_to("ws", "ann", 5, actor="bob", idempotency_key="k")
    with pytest.raises(MemberNotFound):
        ledger.transfer_to("ws", "ghost", 5, actor="boss", idempotency_key="k")
    with pytest.raises(InvalidAmount):
        ledger.transfer_to("ws", "ann", 0, actor="boss", idempotency_key="k")

    ledger.purchase("ws", 9, idempotency_key="k")
    assert ledger.last_call_replayed is False
    assert ledger.pool("ws").balance == 9


def test_rejection_replayed_same_request(ledger: Ledger) -> None:
    """The same keyed request is rejected again with the same error, even after a top-up."""
    with pytest.raises(InsufficientCredits) as first:
        ledger.transfer_to("ws", "ann", 5, actor="boss", idempotency_key="k")
    ledger.purchase("ws", 10)

    with pytest.raises(InsufficientCredits) as again:
        ledger.transfer_to("ws", "ann", 5, actor="boss", idempotency_key="k")

    assert str(again.value) == str(first.value)
    assert ledger.member("ws", "ann").balance == 0
    assert ledger.pool("ws").balance == 10
    assert ledger.transfer_to("ws", "ann", 5, actor="boss").member.balance == 5


def test_replayed_flag_tracks_last_call(ledger: Ledger) -> None:
    """``last_call_replayed`` describes the most recent write call only."""
    assert ledger.last_call_replayed is False
    ledger.purchase("ws", 5, idempotency_key="k")
    assert ledger.last_call_replayed is False
    ledger.purchase("ws", 5, idempotency_key="k")
    assert ledger.last_call_replayed is True
    ledger.purchase("ws", 5)
    assert ledger.last_call_replayed is False


def test_keyed_add_member_replays(ledger: Ledger) -> None:
    """Adding a member with a key twice adds them once."""
    first = ledger.add_member("ws", "cat", idempotency_key="add-cat")
    again = ledger.add_member("ws", "cat", idempotency_key="add-cat")
    assert again == first
    assert [m.id for m in ledger.members("ws")].count("cat") == 1


def test_key_on_missing_workspace(ledger: Ledger) -> None:
    """A key on a missing workspace is ``WorkspaceNotFound``, not a conflict."""
    with pytest.raises(WorkspaceNotFound):
        ledger.purchase("nowhere", 5, idempotency_key="k")


# Input validation ----------------------------------------------------------------------------

TOO_LONG_ID = "x" * (MAX_KEY_LENGTH + 1)
BAD_IDS: list[Any] = ["", None, 5, b"ws", TOO_LONG_ID]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_validated(ledger: Ledger, bad: Any) -> None:
    """Workspace, member, actor ids and keys must be non-empty str of bounded length."""
    calls: list[Callable[[], object]] = [
        lambda: ledger.purchase(bad, 5),
        lambda: ledger.transfer_to("ws", bad, 5, actor="boss"),
        lambda: ledger.transfer_from("ws", "ann", 5, actor=bad),
        lambda: ledger.spend("ws", bad, 5),
        lambda: ledger.set_balances("ws", [bad], 5, actor="boss"),
        lambda: ledger.add_member("ws", bad),
        lambda: ledger.remove_member("ws", bad, actor="boss"),
        lambda: ledger.create_workspace(bad),
    ]
    if bad is not None:
        # None means "no key", so only the other values are invalid keys.
        calls.append(lambda: ledger.purchase("ws", 5, idempotency_key=bad))
    for call in calls:
        with pytest.raises(InvalidRequest) as caught:
            call()
        assert caught.value.value == bad
        assert f"at most {MAX_KEY_LENGTH} characters" in str(caught.value)
    assert ledger.pool("ws").balance == 0


def test_longest_id_accepted(ledger: Ledger) -> None:
    """An id of exactly the maximum length is fine."""
    longest = "m" * MAX_KEY_LENGTH
    assert ledger.add_member("ws", longest).id == longest


@pytest.mark.parametrize("amount", [True, 1.0, "5", 0, -3, 2**63])
def test_amounts_validated(ledger: Ledger, amount: Any) -> None:
    """The ledger checks amounts before it opens a transaction."""
    with pytest.raises(InvalidAmount):
        ledger.purchase("ws", amount)
    with pytest.raises(InvalidAmount):
        ledger.transfer_to("ws", "ann", amount, actor="boss")
    with pytest.raises(InvalidAmount):
        ledger.spend("ws", "ann", amount)


def test_amount_checked_before_workspace(ledger: Ledger) -> None:
    """An invalid amount on a missing workspace is reported as the invalid amount."""
    with pytest.raises(InvalidAmount):
        ledger.purchase("nowhere", 0)


def test_ledger_check_order(ledger: Ledger) -> None:
    """Permission, then coaching, then membership, then balances, as in the rules."""
    ledger.set_coaching("ws", False, actor="boss")
    with pytest.raises(PermissionDenied):
        ledger.transfer_to("ws", "ghost", 5, actor="ann")
    with pytest.raises(CoachingDisabled):
        ledger.transfer_to("ws", "ghost", 5, actor="boss")
    ledger.set_coaching("ws", True, actor="boss")
    with pytest.raises(MemberNotFound):
        ledger.transfer_to("ws", "ghost", 5, actor="boss")
    with pytest.raises(InsufficientCredits):
        ledger.transfer_to("ws", "ann", 5, actor="boss")


@pytest.mark.parametrize("reason", [5, b"why", "r" * (MAX_REASON_LENGTH + 1)])
def test_reason_validated(ledger: Ledger, reason: Any) -> None:
    """A reason must be a str of bounded length."""
    with pytest.raises(InvalidRequest, match="invalid reason"):
        ledger.purchase("ws", 5, reason=reason)
    assert ledger.pool("ws").balance == 0


def test_longest_reason_accepted(ledger: Ledger) -> None:
    """A reason of exactly the maximum length is stored."""
    reason = "r" * MAX_REASON_LENGTH
    assert ledger.purchase("ws", 5, reason=reason).transfer.reason == reason


@pytest.mark.parametrize(
    "metadata",
    [
        ["a", "b"],
        "a=b",
        {"a": 1},
        {1: "a"},
        {"a": "v" * (MAX_KEY_LENGTH + 1)},
        {"k" * (MAX_KEY_LENGTH + 1): "v"},
        {f"k{i}": "v" for i in range(MAX_METADATA_ITEMS + 1)},
    ],
)
def test_metadata_validated(ledger: Ledger, metadata: Any) -> None:
    """Metadata is a small mapping of bounded str keys to bounded str values."""
    with pytest.raises(InvalidRequest, match="invalid metadata"):
        ledger.purchase("ws", 5, metadata=metadata)
    assert ledger.pool("ws").balance == 0


def test_largest_metadata_accepted(ledger: Ledger) -> None:
    """The maximum number of entries is accepted and stored sorted."""
    metadata = {f"k{i:02d}": "v" for i in range(MAX_METADATA_ITEMS)}
    transfer = ledger.purchase("ws", 5, metadata=metadata).transfer
    assert dict(transfer.metadata) == metadata


@pytest.mark.parametrize("role", ["owner", 3, None])
def test_role_validated(ledger: Ledger, role: Any) -> None:
    """An unknown role is ``InvalidRequest``; the text values of ``Role`` are accepted."""
    with pytest.raises(InvalidRequest, match="invalid role"):
        ledger.add_member("ws", "cat", role=role)


def test_role_text_accepted(ledger: Ledger) -> None:
    """``"admin"`` is parsed into ``Role.ADMIN``."""
    assert ledger.add_member("ws", "cat", role="admin").role is Role.ADMIN  # type: ignore[arg-type]  # text is parsed at the edge


@pytest.mark.parametrize("flag", [1, "yes", None])
def test_coaching_flag_validated(ledger: Ledger, flag: Any) -> None:
    """``coaching_enabled`` must be a real bool."""
    with pytest.raises(InvalidRequest):
        ledger.create_workspace("ws2", coaching_enabled=flag)
    with pytest.raises(InvalidRequest):
        ledger.set_coaching("ws", flag, actor="boss")
    assert ledger.workspace("ws").coaching_enabled is True


@pytest.mark.parametrize("member_ids", ["ann", {"ann"}, 5])
def test_set_balances_ids_validated(ledger: Ledger, member_ids: Any) -> None:
    """``member_ids`` must be a list of ids, not a str or a set."""
    with pytest.raises(InvalidRequest, match="invalid member ids"):
        ledger.set_balances("ws", member_ids, 1, actor="boss")


def test_set_balances_duplicates_rejected(ledger: Ledger) -> None:
    """A member listed twice is ``InvalidRequest`` and changes nothing."""
    ledger.purchase("ws", 10)
    with pytest.raises(InvalidRequest, match="more than once"):
        ledger.set_balances("ws", ["ann", "bob", "ann"], 2, actor="boss")
    assert ledger.pool("ws").balance == 10


def test_set_balances_missing_smallest_id(ledger: Ledger) -> None:
    """Several missing members are reported by the smallest id, whatever the order."""
    ledger.purchase("ws", 10)
    with pytest.raises(MemberNotFound) as caught:
        ledger.set_balances("ws", ["zz", "ann", "mm"], 2, actor="boss")
    assert caught.value.member_id == "mm"


# History ---------------------------------------------------------------------------------------


def test_history_pages_through_all(ledger: Ledger) -> None:
    """Pages of ``limit`` entries with the ``before`` cursor list each entry exactly once."""
    for amount in range(1, 12):
        ledger.purchase("ws", amount)

    seen: list[int] = []
    cursor: int | None = None
    while True:
        page = ledger.history("ws", limit=3, before=cursor)
        if not page:
            break
        assert len(page) <= 3
        seen.extend(t.amount for t in page)
        cursor = page[-1].sequence
    assert seen == list(range(11, 0, -1))


def test_history_page_ignores_new_entries(ledger: Ledger) -> None:
    """Entries committed between two pages do not shift the second page."""
    for amount in range(1, 6):
        ledger.purchase("ws", amount)
    first = ledger.history("ws", limit=2)
    ledger.purchase("ws", 100)
    second = ledger.history("ws", limit=2, before=first[-1].sequence)
    assert [t.amount for t in first] == [5, 4]
    assert [t.amount for t in second] == [3, 2]


def test_history_default_limit(ledger: Ledger) -> None:
    """``history`` returns at most 100 entries unless ``limit`` is given."""
    for _ in range(105):
        ledger.purchase("ws", 1)
    assert len(ledger.history("ws")) == 100
    assert len(ledger.history("ws", limit=None)) == 105


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "10"])
def test_history_limit_validated(ledger: Ledger, limit: Any) -> None:
    """``limit`` must be a positive int or ``None``."""
    with pytest.raises(InvalidRequest, match="invalid limit"):
        ledger.history("ws", limit=limit)


def test_history_missing_workspace(ledger: Ledger) -> None:
    """History of a missing workspace is ``WorkspaceNotFound``."""
    with pytest.raises(WorkspaceNotFound):
        ledger.history("nowhere")


def test_history_stamps_ids_and_times(ledger: Ledger) -> None:
    """The ledger stamps each stored transfer with a unique id and its clock's time."""
    first = ledger.purchase("ws", 1).transfer
    second = ledger.purchase("ws", 2).transfer
    assert first.id is not None
    assert second.id is not None
    assert first.id != second.id
    assert first.created_at == T0 + timedelta(seconds=1)
    assert second.created_at == T0 + timedelta(seconds=2)
    assert [t.id for t in ledger.history("ws")] == [second.id, first.id]


def test_set_balances_near_limit(repository: Repository) -> None:
    """Near the 2**63-1 limit, purchases cap pool plus members, and set_balances stays valid.

    This runs on every backend because an out-of-range journal value fails differently on
    each: the in-memory backend would store it, SQLite raises ``OverflowError``.
    """
    ledger = Ledger(repository)
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.add_member("ws", "ann")
    ledger.purchase("ws", 10)
    ledger.transfer_to("ws", "ann", 10, actor="boss")

    with pytest.raises(InvalidAmount):
        ledger.purchase("ws", MAX_AMOUNT - 9)
    ledger.purchase("ws", MAX_AMOUNT - 10)
    result = ledger.set_balances("ws", ["ann", "boss"], 5, actor="boss")

    assert result.pool.balance == MAX_AMOUNT - 10
    journal = ledger.history("ws", limit=None)
    assert max(t.pool_balance or 0 for t in journal) == MAX_AMOUNT - 5
