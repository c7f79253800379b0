"""The pure rules, one case at a time: results, every error, and the order of the checks."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import pytest

from coaching_credits import (
    MAX_AMOUNT,
    CoachingDisabled,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    Member,
    MemberNotFound,
    PermissionDenied,
    Pool,
    Role,
    TransferKind,
    Workspace,
    add_member,
    purchase,
    remove_member,
    set_balances,
    set_coaching,
    spend,
    transfer_from,
    transfer_to,
)
from coaching_credits.rules import check_amount, check_balance, check_distinct

WS = Workspace(id="ws")
OFF = Workspace(id="ws", coaching_enabled=False)
BOSS = Member(workspace_id="ws", id="boss", role=Role.ADMIN)
ANN = Member(workspace_id="ws", id="ann", balance=10)
BOB = Member(workspace_id="ws", id="bob", balance=0)
STRANGER = Member(workspace_id="other", id="zed", balance=10)
OTHER_ADMIN = Member(workspace_id="other", id="boss", role=Role.ADMIN)


def pool(balance: int) -> Pool:
    return Pool(workspace_id="ws", balance=balance)


INVALID_AMOUNTS: list[Any] = [
    True,
    False,
    1.0,
    5.5,
    float("nan"),
    Decimal(5),
    "5",
    None,
    0,
    -1,
    -(2**63),
    2**63,
    2**64,
]
#: Everything in ``INVALID_AMOUNTS`` except 0, which is a valid balance.
INVALID_BALANCES = [b for b in INVALID_AMOUNTS if not (type(b) is int and b == 0)]


# check_amount and check_balance ------------------------------------------------------------


@pytest.mark.parametrize("amount", [1, 2, 1000, MAX_AMOUNT - 1, MAX_AMOUNT])
def test_check_amount_accepts(amount: int) -> None:
    """Every int from 1 to 2**63-1 is a valid amount and comes back unchanged."""
    assert check_amount(amount) == amount


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_check_amount_rejects(amount: Any) -> None:
    """bool, float, Decimal, str, None, 0, negatives and 2**63 are ``InvalidAmount``."""
    with pytest.raises(InvalidAmount) as caught:
        check_amount(amount)
    assert caught.value.value is amount
    assert caught.value.minimum == 1
    assert caught.value.maximum == MAX_AMOUNT
    assert caught.value.field == "amount"


def test_check_amount_names_field() -> None:
    """The field given shows up on the error."""
    with pytest.raises(InvalidAmount, match="invalid quantity"):
        check_amount(0, field="quantity")


@pytest.mark.parametrize("balance", [0, 1, MAX_AMOUNT])
def test_check_balance_accepts(balance: int) -> None:
    """Every int from 0 to 2**63-1 is a valid balance."""
    assert check_balance(balance) == balance


@pytest.mark.parametrize("balance", INVALID_BALANCES)
def test_check_balance_rejects(balance: Any) -> None:
    """A balance follows the amount rules except that 0 is allowed."""
    with pytest.raises(InvalidAmount) as caught:
        check_balance(balance)
    assert caught.value.minimum == 0
    assert caught.value.field == "balance"


def test_check_distinct() -> None:
    """A repeated id is ``InvalidRequest`` naming it; distinct ids pass."""
    check_distinct(["a", "b", "c"])
    with pytest.raises(InvalidRequest, match="'b' is listed more than once") as caught:
        check_distinct(["a", "b", "c", "b"])
    assert caught.value.value == "b"


# purchase ----------------------------------------------------------------------------------


def test_purchase_fills_pool() -> None:
    """A purchase adds to the pool and records a PURCHASE without member or actor."""
    result = purchase(WS, pool(5), 20, reason="invoice 7", metadata={"invoice": "7"})
    assert result.pool == pool(25)
    assert result.transfer.kind is TransferKind.PURCHASE
    assert result.transfer.amount == 20
    assert result.transfer.member_id is None
    assert result.transfer.actor_id is None
    assert result.transfer.pool_balance == 25
    assert result.transfer.reason == "invoice 7"
    assert result.transfer.metadata == (("invoice", "7"),)


def test_purchase_works_while_coaching_disabled() -> None:
    """Buying credits is the billing system's job, so it works with coaching off."""
    assert purchase(OFF, pool(0), 3).pool.balance == 3


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_purchase_rejects_invalid_amount(amount: Any) -> None:
    """A purchase checks its amount like every rule."""
    with pytest.raises(InvalidAmount):
        purchase(WS, pool(0), amount)


def test_purchase_up_to_limit() -> None:
    """A purchase may fill the pool exactly to 2**63-1."""
    assert purchase(WS, pool(10), MAX_AMOUNT - 10).pool.balance == MAX_AMOUNT


def test_purchase_past_limit_rejected() -> None:
    """A purchase that would push the pool past 2**63-1 is ``InvalidAmount``."""
    with pytest.raises(InvalidAmount) as caught:
        purchase(WS, pool(10), MAX_AMOUNT - 9)
    assert caught.value.maximum == MAX_AMOUNT - 10


def test_purchase_rejects_foreign_pool() -> None:
    """A pool of another workspace is a programming error, not a lookup."""
    with pytest.raises(InvalidRequest, match="pool of workspace 'other'"):
        purchase(WS, Pool(workspace_id="other"), 5)


# transfer_to -------------------------------------------------------------------------------


def test_transfer_to_moves_credits() -> None:
    """Credits leave the pool and reach the member; the transfer records both balances."""
    result = transfer_to(WS, pool(30), ANN, 12, actor=BOSS, reason="onboarding")
    assert result.pool == pool(18)
    assert result.member == attrs.evolve(ANN, balance=22)
    transfer = result.transfer
    assert transfer.kind is TransferKind.TRANSFER_TO
    assert transfer.workspace_id == "ws"
    assert transfer.member_id == "ann"
    assert transfer.actor_id == "boss"
    assert transfer.amount == 12
    assert transfer.pool_balance == 18
    assert transfer.member_balance == 22
    assert transfer.reason == "onboarding"
    assert transfer.id is None
    assert transfer.sequence is None


def test_transfer_to_whole_pool() -> None:
    """The pool may be emptied exactly."""
    result = transfer_to(WS, pool(7), BOB, 7, actor=BOSS)
    assert result.pool.balance == 0
    assert result.member.balance == 7


def test_transfer_to_keeps_role() -> None:
    """An admin receiving credits stays an admin."""
    result = transfer_to(WS, pool(7), BOSS, 3, actor=BOSS)
    assert result.member.role is Role.ADMIN


def test_transfer_to_pool_short() -> None:
    """More than the pool contains is ``InsufficientCredits`` on the pool."""
    with pytest.raises(InsufficientCredits) as caught:
        transfer_to(WS, pool(5), ANN, 6, actor=BOSS)
    assert caught.value.member_id is None
    assert caught.value.requested == 6
    assert caught.value.available == 5
    assert "purchase at least 1 more" in str(caught.value)


def test_transfer_to_member_past_limit() -> None:
    """A member balance past 2**63-1 is ``InvalidAmount``."""
    rich = attrs.evolve(ANN, balance=MAX_AMOUNT)
    with pytest.raises(InvalidAmount):
        transfer_to(WS, pool(5), rich, 1, actor=BOSS)


def test_transfer_to_needs_admin() -> None:
    """A plain member cannot hand out credits."""
    with pytest.raises(PermissionDenied) as caught:
        transfer_to(WS, pool(30), BOB, 5, actor=ANN)
    assert caught.value.actor_id == "ann"
    assert caught.value.workspace_id == "ws"
    assert caught.value.action == "transfer credits to a member"


def test_transfer_to_foreign_admin_denied() -> None:
    """An admin of another workspace has no rights here."""
    with pytest.raises(PermissionDenied):
        transfer_to(WS, pool(30), ANN, 5, actor=OTHER_ADMIN)


def test_transfer_to_coaching_disabled() -> None:
    """Credits do not move while coaching is disabled."""
    with pytest.raises(CoachingDisabled) as caught:
        transfer_to(OFF, pool(30), ANN, 5, actor=BOSS)
    assert caught.value.workspace_id == "ws"


def test_transfer_to_foreign_member() -> None:
    """A member of another workspace is ``MemberNotFound`` here."""
    with pytest.raises(MemberNotFound) as caught:
        transfer_to(WS, pool(30), STRANGER, 5, actor=BOSS)
    assert caught.value.member_id == "zed"
    assert caught.value.workspace_id == "ws"


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_transfer_to_invalid_amount(amount: Any) -> None:
    """An invalid amount is rejected before anything else."""
    with pytest.raises(InvalidAmount):
        transfer_to(WS, pool(30), ANN, amount, actor=BOSS)


# transfer_from -----------------------------------------------------------------------------


def test_transfer_from_moves_credits() -> None:
    """Credits leave the member and return to the pool."""
    result = transfer_from(WS, pool(3), ANN, 4, actor=BOSS, metadata={"why": "left team"})
    assert result.pool == pool(7)
    assert result.member.balance == 6
    assert result.transfer.kind is TransferKind.TRANSFER_FROM
    assert result.transfer.amount == 4
    assert result.transfer.pool_balance == 7
    assert result.transfer.member_balance == 6
    assert result.transfer.actor_id == "boss"
    assert result.transfer.metadata == (("why", "left team"),)


def test_transfer_from_whole_balance() -> None:
    """A member may be emptied exactly."""
    assert transfer_from(WS, pool(0), ANN, 10, actor=BOSS).member.balance == 0


def test_transfer_from_member_short() -> None:
    """More than the member has is ``InsufficientCredits`` naming the member."""
    with pytest.raises(InsufficientCredits) as caught:
        transfer_from(WS, pool(0), ANN, 11, actor=BOSS)
    assert caught.value.member_id == "ann"
    assert caught.value.requested == 11
    assert caught.value.available == 10


def test_transfer_from_pool_past_limit() -> None:
    """Returning credits to a full pool is ``InvalidAmount``."""
    with pytest.raises(InvalidAmount):
        transfer_from(WS, pool(MAX_AMOUNT), ANN, 1, actor=BOSS)


def test_transfer_from_needs_admin() -> None:
    """A plain member cannot pull credits back, not even their own."""
    with pytest.raises(PermissionDenied) as caught:
        transfer_from(WS, pool(0), ANN, 1, actor=ANN)
    assert caught.value.action == "transfer credits from a member"


def test_transfer_from_coaching_disabled() -> None:
    """Credits do not move back while coaching is disabled."""
    with pytest.raises(CoachingDisabled):
        transfer_from(OFF, pool(0), ANN, 1, actor=BOSS)


def test_transfer_from_foreign_member() -> None:
    """Credits of another workspace's member cannot be pulled in."""
    with pytest.raises(MemberNotFound):
        transfer_from(WS, pool(0), STRANGER, 1, actor=BOSS)


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_transfer_from_invalid_amount(amount: Any) -> None:
    """An invalid amount is rejected."""
    with pytest.raises(InvalidAmount):
        transfer_from(WS, pool(0), ANN, amount, actor=BOSS)


# set_balances ------------------------------------------------------------------------------


def test_set_balances_raises_members() -> None:
    """Raising members draws the differences from the pool."""
    result = set_balances(WS, pool(50), [ANN, BOB], 15, actor=BOSS)
    assert result.pool == pool(50 - 5 - 15)
    assert [m.balance for m in result.members] == [15, 15]
    assert [(t.member_id, t.kind, t.amount) for t in result.transfers] == [
        ("ann", TransferKind.TRANSFER_TO, 5),
        ("bob", TransferKind.TRANSFER_TO, 15),
    ]
    assert result.net_change == 20


def test_set_balances_lowers_members() -> None:
    """Lowering members returns the differences to the pool."""
    result = set_balances(WS, pool(0), [ANN], 4, actor=BOSS)
    assert result.pool == pool(6)
    assert result.members == (attrs.evolve(ANN, balance=4),)
    (transfer,) = result.transfers
    assert transfer.kind is TransferKind.TRANSFER_FROM
    assert transfer.amount == 6
    assert transfer.member_balance == 4
    assert result.net_change == -6


def test_set_balances_lowered_fund_raised() -> None:
    """With an empty pool, a lowered member can fund a raised one."""
    carl = Member(workspace_id="ws", id="carl", balance=2)
    result = set_balances(WS, pool(0), [BOB, ANN, carl], 4, actor=BOSS)
    assert result.pool == pool(0)
    assert [m.balance for m in result.members] == [4, 4, 4]
    assert [m.id for m in result.members] == ["bob", "ann", "carl"]
    # Lowered members come first in the journal, so its running pool never goes negative.
    assert [(t.member_id, t.kind) for t in result.transfers] == [
        ("ann", TransferKind.TRANSFER_FROM),
        ("bob", TransferKind.TRANSFER_TO),
        ("carl", TransferKind.TRANSFER_TO),
    ]
    assert [t.pool_balance for t in result.transfers] == [6, 2, 0]
    assert result.net_change == 0


def test_set_balances_unchanged_members_no_transfer() -> None:
    """A member already at the balance gets no transfer but is still in ``members``."""
    result = set_balances(WS, pool(13), [ANN, BOB], 10, actor=BOSS)
    assert [t.member_id for t in result.transfers] == ["bob"]
    assert result.members[0] == ANN
    assert result.pool == pool(3)


def test_set_balances_empty_list() -> None:
    """An empty selection changes nothing."""
    result = set_balances(WS, pool(3), [], 10, actor=BOSS)
    assert result.pool == pool(3)
    assert result.members == ()
    assert result.transfers == ()


def test_set_balances_net_need_exceeds_pool() -> None:
    """Only the net need counts against the pool, and it fails when that is too much."""
    with pytest.raises(InsufficientCredits) as caught:
        set_balances(WS, pool(9), [ANN, BOB], 10, actor=BOSS)
    assert caught.value.requested == 10
    assert caught.value.available == 9
    assert caught.value.member_id is None


def test_set_balances_net_need_equals_pool() -> None:
    """A net need equal to the pool succeeds and empties it."""
    result = set_balances(WS, pool(10), [ANN, BOB], 10, actor=BOSS)
    assert result.pool.balance == 0


def test_set_balances_duplicate_member() -> None:
    """A member listed twice is ``InvalidRequest``: the request is ambiguous."""
    with pytest.raises(InvalidRequest, match="'ann'"):
        set_balances(WS, pool(50), [ANN, BOB, ANN], 1, actor=BOSS)


def test_set_balances_foreign_member() -> None:
    """A member of another workspace is ``MemberNotFound``, reported by its smallest id."""
    other_amy = Member(workspace_id="other", id="amy")
    with pytest.raises(MemberNotFound) as caught:
        set_balances(WS, pool(50), [STRANGER, ANN, other_amy], 1, actor=BOSS)
    assert caught.value.member_id == "amy"


@pytest.mark.parametrize("balance", INVALID_BALANCES)
def test_set_balances_invalid_balance(balance: Any) -> None:
    """The target balance follows the balance rules."""
    with pytest.raises(InvalidAmount) as caught:
        set_balances(WS, pool(50), [ANN], balance, actor=BOSS)
    assert caught.value.field == "balance"


def test_set_balances_to_zero() -> None:
    """Setting everyone to 0 returns every credit to the pool."""
    result = set_balances(WS, pool(1), [ANN, BOB], 0, actor=BOSS)
    assert result.pool.balance == 11


def test_set_balances_needs_admin() -> None:
    """A plain member cannot set balances."""
    with pytest.raises(PermissionDenied) as caught:
        set_balances(WS, pool(50), [BOB], 3, actor=ANN)
    assert caught.value.action == "set member balances"


def test_set_balances_coaching_disabled() -> None:
    """Balances cannot be set while coaching is disabled."""
    with pytest.raises(CoachingDisabled):
        set_balances(OFF, pool(50), [BOB], 3, actor=BOSS)


def test_set_balances_journal_pool_within_limit() -> None:
    """With pool plus members at 2**63-1, no journal entry records a larger pool balance.

    Purchases keep that total within the limit, so the running pool, which peaks after the
    lowered members, stays within it too.
    """
    rich = Member(workspace_id="ws", id="rich", balance=10)
    poor = Member(workspace_id="ws", id="poor", balance=0)
    result = set_balances(WS, pool(MAX_AMOUNT - 10), [rich, poor], 5, actor=BOSS)
    assert result.pool.balance == MAX_AMOUNT - 10
    assert [t.pool_balance for t in result.transfers] == [MAX_AMOUNT - 5, MAX_AMOUNT - 10]


def test_purchase_counts_member_balances() -> None:
    """A purchase that would push pool plus members past 2**63-1 is ``InvalidAmount``."""
    assert purchase(WS, pool(0), MAX_AMOUNT - 10, members_total=10).pool.balance == MAX_AMOUNT - 10
    with pytest.raises(InvalidAmount) as caught:
        purchase(WS, pool(0), MAX_AMOUNT - 9, members_total=10)
    assert caught.value.maximum == MAX_AMOUNT - 10


def test_set_balances_pool_past_limit() -> None:
    """Lowering members into a full pool is ``InvalidAmount``, not a silent overflow."""
    with pytest.raises(InvalidAmount):
        set_balances(WS, pool(MAX_AMOUNT), [ANN], 0, actor=BOSS)


# spend -------------------------------------------------------------------------------------


def test_spend_uses_member_credits() -> None:
    """Spending lowers the member's balance; the member is the actor."""
    result = spend(WS, ANN, 4, reason="session 12")
    assert result.member.balance == 6
    assert result.transfer.kind is TransferKind.SPEND
    assert result.transfer.amount == 4
    assert result.transfer.member_id == "ann"
    assert result.transfer.actor_id == "ann"
    assert result.transfer.member_balance == 6
    assert result.transfer.reason == "session 12"


def test_spend_whole_balance() -> None:
    """A member may spend every credit they hold."""
    assert spend(WS, ANN, 10).member.balance == 0


def test_spend_member_short() -> None:
    """Spending more than the balance is ``InsufficientCredits`` naming the member."""
    with pytest.raises(InsufficientCredits) as caught:
        spend(WS, BOB, 1)
    assert caught.value.member_id == "bob"
    assert caught.value.requested == 1
    assert caught.value.available == 0


def test_spend_coaching_disabled() -> None:
    """No spending while coaching is disabled."""
    with pytest.raises(CoachingDisabled) as caught:
        spend(OFF, ANN, 1)
    assert caught.value.action == "spend credits"


def test_spend_foreign_member() -> None:
    """A member of another workspace cannot spend here."""
    with pytest.raises(MemberNotFound):
        spend(WS, STRANGER, 1)


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_spend_invalid_amount(amount: Any) -> None:
    """An invalid amount is rejected."""
    with pytest.raises(InvalidAmount):
        spend(WS, ANN, amount)


# add_member, remove_member, set_coaching ---------------------------------------------------


def test_add_member_starts_at_zero() -> None:
    """A new member belongs to the workspace and has a balance of 0."""
    member = add_member(WS, "dora", role=Role.ADMIN, actor=BOSS)
    assert member == Member(workspace_id="ws", id="dora", role=Role.ADMIN, balance=0)


def test_add_member_without_actor() -> None:
    """The host application may add members with no acting member."""
    assert add_member(WS, "dora").role is Role.MEMBER


def test_add_member_needs_admin() -> None:
    """A plain member cannot add members."""
    with pytest.raises(PermissionDenied) as caught:
        add_member(WS, "dora", actor=ANN)
    assert caught.value.action == "add members"


@pytest.mark.parametrize("member_id", ["", None, 7])
def test_add_member_invalid_id(member_id: Any) -> None:
    """A member id must be a non-empty str."""
    with pytest.raises(InvalidRequest, match="invalid member id"):
        add_member(WS, member_id)


@pytest.mark.parametrize("role", ["admin", "owner", None])
def test_add_member_invalid_role(role: Any) -> None:
    """The pure rule takes a ``Role``; text is parsed at the edges."""
    with pytest.raises(InvalidRequest, match="invalid role"):
        add_member(WS, "dora", role=role)


def test_add_member_works_while_coaching_disabled() -> None:
    """Membership does not depend on coaching."""
    assert add_member(OFF, "dora", actor=BOSS).workspace_id == "ws"


def test_remove_member_returns_balance() -> None:
    """The member's whole balance returns to the pool, recorded as MEMBER_REMOVED."""
    result = remove_member(WS, pool(5), ANN, actor=BOSS, reason="left")
    assert result.pool == pool(15)
    assert result.member == ANN
    transfer = result.transfer
    assert transfer.kind is TransferKind.MEMBER_REMOVED
    assert transfer.member_id == "ann"
    assert transfer.amount == 10
    assert transfer.pool_balance == 15
    assert transfer.member_balance == 0
    assert transfer.actor_id == "boss"
    assert transfer.reason == "left"


def test_remove_member_zero_balance_recorded() -> None:
    """A removal is journaled even with nothing to return."""
    result = remove_member(WS, pool(5), BOB, actor=BOSS)
    assert result.pool == pool(5)
    assert result.transfer.amount == 0


def test_remove_member_works_while_coaching_disabled() -> None:
    """Members can leave while coaching is off."""
    assert remove_member(OFF, pool(0), ANN, actor=BOSS).pool.balance == 10


def test_remove_member_needs_admin() -> None:
    """A plain member cannot remove anyone."""
    with pytest.raises(PermissionDenied):
        remove_member(WS, pool(0), BOB, actor=ANN)


def test_remove_member_foreign() -> None:
    """A member of another workspace cannot be removed here."""
    with pytest.raises(MemberNotFound):
        remove_member(WS, pool(0), STRANGER, actor=BOSS)


def test_remove_member_pool_past_limit() -> None:
    """A balance that would push the pool past 2**63-1 is ``InvalidAmount``."""
    with pytest.raises(InvalidAmount):
        remove_member(WS, pool(MAX_AMOUNT), ANN, actor=BOSS)


def test_set_coaching_switches() -> None:
    """An admin switches coaching off and on again."""
    off = set_coaching(WS, False, actor=BOSS)
    assert off == Workspace(id="ws", coaching_enabled=False)
    assert set_coaching(off, True, actor=BOSS).coaching_enabled is True


def test_set_coaching_keeps_other_settings() -> None:
    """Switching coaching changes nothing else about the workspace."""
    workspace = Workspace(id="ws", low_pool_threshold=25)
    assert set_coaching(workspace, False, actor=BOSS).low_pool_threshold == 25


def test_set_coaching_needs_admin() -> None:
    """A plain member cannot switch coaching."""
    with pytest.raises(PermissionDenied) as caught:
        set_coaching(WS, False, actor=ANN)
    assert caught.value.action == "switch coaching on or off"


@pytest.mark.parametrize("flag", [1, 0, "yes", None])
def test_set_coaching_invalid_flag(flag: Any) -> None:
    """The flag must be a real bool: 1 and "yes" are rejected, not coerced."""
    with pytest.raises(InvalidRequest, match="invalid enabled flag"):
        set_coaching(WS, flag, actor=BOSS)


# The order of the checks -------------------------------------------------------------------


def _call(rule: str, *, amount: Any, actor: Member, workspace: Workspace, member: Member) -> None:
    empty = pool(0)
    if rule == "transfer_to":
        transfer_to(workspace, empty, member, amount, actor=actor)
    elif rule == "transfer_from":
        transfer_from(workspace, empty, member, amount, actor=actor)
    elif rule == "set_balances":
        set_balances(workspace, empty, [member], amount, actor=actor)
    else:
        spend(workspace, member, amount)


@pytest.mark.parametrize("rule", ["transfer_to", "transfer_from", "set_balances"])
def test_check_order(rule: str) -> None:
    """Amount, then permission, then coaching, then membership, then balances.

    Every argument starts out wrong; fixing them one at a time shows which check runs next.
    """
    bad_amount: Any = -5
    good_amount = 3 if rule != "set_balances" else 20
    poor_stranger = Member(workspace_id="other", id="zed", balance=0)
    poor_member = Member(workspace_id="ws", id="zed", balance=0)

    with pytest.raises(InvalidAmount):
        _call(rule, amount=bad_amount, actor=ANN, workspace=OFF, member=poor_stranger)
    with pytest.raises(PermissionDenied):
        _call(rule, amount=good_amount, actor=ANN, workspace=OFF, member=poor_stranger)
    with pytest.raises(CoachingDisabled):
        _call(rule, amount=good_amount, actor=BOSS, workspace=OFF, member=poor_stranger)
    with pytest.raises(MemberNotFound):
        _call(rule, amount=good_amount, actor=BOSS, workspace=WS, member=poor_stranger)
    with pytest.raises(InsufficientCredits):
        _call(rule, amount=good_amount, actor=BOSS, workspace=WS, member=poor_member)


def test_check_order_spend() -> None:
    """Spend has no permission check: amount, coaching, membership, then balance."""
    poor_stranger = Member(workspace_id="other", id="zed", balance=0)
    poor_member = Member(workspace_id="ws", id="zed", balance=0)

    with pytest.raises(InvalidAmount):
        spend(OFF, poor_stranger, 0)
    with pytest.raises(CoachingDisabled):
        spend(OFF, poor_stranger, 1)
    with pytest.raises(MemberNotFound):
        spend(WS, poor_stranger, 1)
    with pytest.raises(InsufficientCredits):
        spend(WS, poor_member, 1)


# Determinism and immutability --------------------------------------------------------------


def _all_rule_calls() -> list[Callable[[], object]]:
    return [
        lambda: purchase(WS, pool(5), 7, metadata={"a": "b"}),
        lambda: transfer_to(WS, pool(30), ANN, 12, actor=BOSS),
        lambda: transfer_from(WS, pool(3), ANN, 4, actor=BOSS),
        lambda: set_balances(WS, pool(50), [ANN, BOB], 6, actor=BOSS),
        lambda: spend(WS, ANN, 4),
        lambda: add_member(WS, "dora", actor=BOSS),
        lambda: remove_member(WS, pool(5), ANN, actor=BOSS),
        lambda: set_coaching(WS, False, actor=BOSS),
    ]


@pytest.mark.parametrize("call", _all_rule_calls())
def test_rules_are_deterministic(call: Callable[[], object]) -> None:
    """Called twice with equal arguments, a rule returns equal results."""
    assert call() == call()


def test_rules_leave_inputs_unchanged() -> None:
    """Rules return new values; the ones passed in keep their balances."""
    before = (WS, pool(50), ANN, BOB, BOSS)
    snapshot = tuple(attrs.evolve(value) for value in before)
    for call in _all_rule_calls():
        call()
    assert before == snapshot
    assert ANN.balance == 10
    assert BOB.balance == 0


def test_rules_no_shared_metadata() -> None:
    """Changing the caller's metadata dict afterwards does not change a returned transfer."""
    metadata = {"ticket": "T-1"}
    result = purchase(WS, pool(0), 5, metadata=metadata)
    metadata["ticket"] = "T-2"
    assert result.transfer.metadata == (("ticket", "T-1"),)
