"""Hypothesis properties of the pure rules: conservation, order independence, all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from coaching_credits import (
    CreditError,
    InsufficientCredits,
    InvalidAmount,
    Member,
    Pool,
    Role,
    Transfer,
    TransferKind,
    Workspace,
    purchase,
    set_balances,
    spend,
    transfer_from,
    transfer_to,
)
from strategies import (
    MEMBER_COUNT,
    Operation,
    admin,
    amounts,
    balances,
    distinct_members,
    invalid_amounts,
    invalid_balances,
    operation_sequences,
    pools,
    workspaces,
)
from strategies import (
    members as members_of,
)

WS = Workspace(id="ws")
BOSS = admin()


@attrs.define
class State:
    """A workspace's balances as plain values, plus what entered and left it."""

    pool: Pool
    members: list[Member]
    purchased: int = 0
    spent: int = 0

    def total(self) -> int:
        return self.pool.balance + sum(m.balance for m in self.members)


def apply(state: State, operation: Operation) -> list[Transfer]:
    """Apply one operation through the pure rules and return its transfers.

    A rejected operation raises and leaves ``state`` alone.
    """
    if operation.name == "purchase":
        bought = purchase(WS, state.pool, operation.amount)
        state.pool = bought.pool
        state.purchased += operation.amount
        return [bought.transfer]

    if operation.name in ("transfer_to", "transfer_from"):
        rule = transfer_to if operation.name == "transfer_to" else transfer_from
        moved = rule(WS, state.pool, state.members[operation.member], operation.amount, actor=BOSS)
        state.pool = moved.pool
        state.members[operation.member] = moved.member
        return [moved.transfer]

    if operation.name == "spend":
        used = spend(WS, state.members[operation.member], operation.amount)
        state.members[operation.member] = used.member
        state.spent += operation.amount
        return [used.transfer]

    chosen = [state.members[i] for i in operation.targets]
    result = set_balances(WS, state.pool, chosen, operation.amount, actor=BOSS)
    state.pool = result.pool
    for index, member in zip(operation.targets, result.members, strict=True):
        state.members[index] = member
    return list(result.transfers)


def fresh_state() -> State:
    members = [Member(workspace_id="ws", id=f"m{i}") for i in range(MEMBER_COUNT)]
    return State(pool=Pool(workspace_id="ws"), members=members)


@settings(max_examples=150)
@given(operation_sequences)
def test_sequences_conserve_credits(sequence: list[Operation]) -> None:
    """After every step, pool + members = purchased - spent, and no balance is negative."""
    state = fresh_state()
    for operation in sequence:
        before = attrs.evolve(state, members=list(state.members))
        try:
            apply(state, operation)
        except CreditError:
            # A rejected rule changes nothing.
            assert state == before
        assert state.total() == state.purchased - state.spent
        assert state.pool.balance >= 0
        assert all(m.balance >= 0 for m in state.members)


@settings(max_examples=150)
@given(operation_sequences)
def test_transfers_rebuild_balances(sequence: list[Operation]) -> None:
    """Summing the transfers the rules return rebuilds the pool and every member balance."""
    state = fresh_state()
    journal: list[Transfer] = []
    for operation in sequence:
        try:
            journal.extend(apply(state, operation))
        except CreditError:
            continue

    pool = 0
    member_balances = {m.id: 0 for m in state.members}
    for transfer in journal:
        if transfer.kind is TransferKind.PURCHASE:
            pool += transfer.amount
        elif transfer.kind is TransferKind.TRANSFER_TO:
            pool -= transfer.amount
            member_balances[transfer.member_id or ""] += transfer.amount
        elif transfer.kind is TransferKind.TRANSFER_FROM:
            pool += transfer.amount
            member_balances[transfer.member_id or ""] -= transfer.amount
        else:
            assert transfer.kind is TransferKind.SPEND
            member_balances[transfer.member_id or ""] -= transfer.amount

    assert pool == state.pool.balance
    assert member_balances == {m.id: m.balance for m in state.members}


def _journal_effect(transfers: Sequence[Transfer]) -> tuple[int, dict[str, int]]:
    """Return the pool change and each member's change that ``transfers`` record."""
    pool_change = 0
    member_changes: dict[str, int] = {}
    for transfer in transfers:
        sign = 1 if transfer.kind is TransferKind.TRANSFER_TO else -1
        pool_change -= sign * transfer.amount
        member_id = transfer.member_id or ""
        member_changes[member_id] = member_changes.get(member_id, 0) + sign * transfer.amount
    return pool_change, member_changes


def _set_balances_outcome(pool: Pool, members: Sequence[Member], balance: int) -> object:
    """Return what ``set_balances`` does, in a form that ignores the order of ``members``."""
    try:
        result = set_balances(WS, pool, members, balance, actor=BOSS)
    except CreditError as error:
        return (type(error).__name__, str(error))
    by_id = {m.id: m.balance for m in result.members}
    return ("ok", result.pool.balance, by_id, result.net_change)


@settings(max_examples=200)
@given(
    pool=pools(max_balance=150),
    members=st.lists(
        st.one_of(members_of("ws"), members_of("other")),
        max_size=6,
        unique_by=lambda member: member.id,
    ),
    balance=st.integers(min_value=0, max_value=60),
    data=st.data(),
)
def test_set_balances_order_independent(
    pool: Pool, members: list[Member], balance: int, data: st.DataObject
) -> None:
    """A permutation of the members gives the same pool and balances, or the same error.

    Some members belong to another workspace, so the ``MemberNotFound`` path is covered too.
    """
    shuffled = data.draw(st.permutations(members))
    assert _set_balances_outcome(pool, members, balance) == _set_balances_outcome(
        pool, shuffled, balance
    )


def test_set_balances_duplicates_order_independent() -> None:
    """The error for duplicated members does not depend on their order."""
    pool = Pool(workspace_id="ws", balance=100)
    ann = Member(workspace_id="ws", id="ann")
    bob = Member(workspace_id="ws", id="bob")
    first = _set_balances_outcome(pool, [ann, bob, bob, ann], 5)
    second = _set_balances_outcome(pool, [bob, ann, ann, bob], 5)
    assert first == second


@settings(max_examples=200)
@given(
    pool=pools(max_balance=150),
    members=distinct_members(max_size=6),
    balance=st.integers(min_value=0, max_value=60),
)
def test_set_balances_fails_only_on_need(pool: Pool, members: list[Member], balance: int) -> None:
    """``set_balances`` fails exactly when the net need exceeds the pool."""
    need = sum(balance - m.balance for m in members)
    try:
        result = set_balances(WS, pool, members, balance, actor=BOSS)
    except InsufficientCredits as error:
        assert need > pool.balance
        assert error.requested == need
        assert error.available == pool.balance
        return

    assert need <= pool.balance
    assert result.pool.balance == pool.balance - need
    assert result.net_change == need
    assert [m.id for m in result.members] == [m.id for m in members]
    assert all(m.balance == balance for m in result.members)


@settings(max_examples=200)
@given(
    pool=pools(max_balance=150),
    members=distinct_members(max_size=6),
    balance=st.integers(min_value=0, max_value=60),
)
def test_set_balances_journal_consistent(pool: Pool, members: list[Member], balance: int) -> None:
    """The transfers account for every change, and their running pool never goes negative."""
    try:
        result = set_balances(WS, pool, members, balance, actor=BOSS)
    except InsufficientCredits:
        return

    pool_change, member_changes = _journal_effect(result.transfers)
    assert pool.balance + pool_change == result.pool.balance
    for old, new in zip(members, result.members, strict=True):
        assert old.balance + member_changes.get(old.id, 0) == new.balance

    changed = [m.id for m in members if m.balance != balance]
    assert sorted(t.member_id or "" for t in result.transfers) == sorted(changed)
    assert all(t.amount > 0 for t in result.transfers)

    running = [t.pool_balance for t in result.transfers]
    assert all(value is not None and value >= 0 for value in running)
    if running:
        assert running[-1] == result.pool.balance


@settings(max_examples=200)
@given(
    workspace=workspaces(),
    pool=pools(max_balance=60),
    members=distinct_members(min_size=1, max_size=4, max_balance=30),
    amount=st.one_of(amounts, invalid_amounts),
    is_admin=st.booleans(),
    data=st.data(),
)
def test_failed_rules_change_nothing(
    workspace: Workspace,
    pool: Pool,
    members: list[Member],
    amount: Any,
    is_admin: bool,
    data: st.DataObject,
) -> None:
    """A rule that raises returns nothing and leaves every argument equal to before."""
    member = data.draw(st.sampled_from(members))
    actor = BOSS if is_admin else Member(workspace_id="ws", id="pleb", role=Role.MEMBER)
    snapshot = (workspace, pool, tuple(members), member, actor)
    copies = tuple(attrs.evolve(v) for v in (workspace, pool, member, actor))

    calls: list[Callable[[], object]] = [
        lambda: purchase(workspace, pool, amount),
        lambda: transfer_to(workspace, pool, member, amount, actor=actor),
        lambda: transfer_from(workspace, pool, member, amount, actor=actor),
        lambda: spend(workspace, member, amount),
        lambda: set_balances(workspace, pool, members, amount, actor=actor),
    ]
    for call in calls:
        result = None
        try:
            result = call()
        except CreditError:
            assert result is None
        assert (workspace, pool, tuple(members), member, actor) == snapshot
        assert (workspace, pool, member, actor) == copies


@settings(max_examples=150)
@given(amount=invalid_amounts, member_balance=balances)
def test_invalid_amounts_always_rejected(amount: Any, member_balance: int) -> None:
    """Every moving rule rejects an amount that is not an int from 1 to 2**63-1."""
    pool = Pool(workspace_id="ws", balance=100)
    member = Member(workspace_id="ws", id="ann", balance=member_balance)
    calls: list[Callable[[], object]] = [
        lambda: purchase(WS, pool, amount),
        lambda: transfer_to(WS, pool, member, amount, actor=BOSS),
        lambda: transfer_from(WS, pool, member, amount, actor=BOSS),
        lambda: spend(WS, member, amount),
    ]
    for call in calls:
        try:
            call()
        except InvalidAmount as error:
            assert error.value is amount
        else:
            raise AssertionError(f"amount {amount!r} was accepted")


@settings(max_examples=150)
@given(balance=invalid_balances)
def test_invalid_balances_rejected(balance: Any) -> None:
    """``set_balances`` rejects a target balance outside 0 .. 2**63-1."""
    pool = Pool(workspace_id="ws", balance=100)
    member = Member(workspace_id="ws", id="ann")
    try:
        set_balances(WS, pool, [member], balance, actor=BOSS)
    except InvalidAmount as error:
        assert error.field == "balance"
    else:
        raise AssertionError(f"balance {balance!r} was accepted")


@settings(max_examples=100)
@given(
    pool=pools(max_balance=150),
    members=distinct_members(max_size=5),
    balance=st.integers(min_value=0, max_value=60),
)
def test_set_balances_deterministic(pool: Pool, members: list[Member], balance: int) -> None:
    """Equal arguments give equal results, errors included."""
    outcomes: list[object] = []
    for _ in range(2):
        try:
            outcomes.append(set_balances(WS, pool, members, balance, actor=BOSS))
        except InsufficientCredits as error:
            outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]
