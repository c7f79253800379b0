"""Domain values: their defaults, invariants and immutability."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest

from coaching_credits import (
    MAX_AMOUNT,
    InvalidAmount,
    Member,
    Pool,
    Role,
    Transfer,
    TransferKind,
    Workspace,
)


def test_max_amount_is_bigint_limit() -> None:
    """The shared limit is the largest signed 64-bit integer."""
    assert MAX_AMOUNT == 2**63 - 1


def test_workspace_defaults() -> None:
    """A workspace starts with coaching enabled and no low-pool threshold."""
    workspace = Workspace(id="ws")
    assert workspace.coaching_enabled is True
    assert workspace.low_pool_threshold == 0


def test_pool_and_member_defaults() -> None:
    """A pool and a member start at 0, and a member is not an admin by default."""
    pool = Pool(workspace_id="ws")
    member = Member(workspace_id="ws", id="ann")
    assert pool.balance == 0
    assert member.balance == 0
    assert member.role is Role.MEMBER
    assert member.is_admin is False
    assert Member(workspace_id="ws", id="bob", role=Role.ADMIN).is_admin is True


def test_role_values() -> None:
    """Roles are stored by their text value."""
    assert Role("admin") is Role.ADMIN
    assert Role("member") is Role.MEMBER


@pytest.mark.parametrize("balance", [0, 1, MAX_AMOUNT])
def test_balances_accept_range(balance: int) -> None:
    """A pool and a member accept every balance from 0 to the limit."""
    assert Pool(workspace_id="ws", balance=balance).balance == balance
    assert Member(workspace_id="ws", id="ann", balance=balance).balance == balance


@pytest.mark.parametrize(
    "balance", [-1, MAX_AMOUNT + 1, 2**63, True, False, 1.0, Decimal(1), "1", None]
)
def test_balances_reject_invalid(balance: Any) -> None:
    """A balance that is not an int from 0 to the limit is ``InvalidAmount``."""
    with pytest.raises(InvalidAmount) as pool_error:
        Pool(workspace_id="ws", balance=balance)
    with pytest.raises(InvalidAmount) as member_error:
        Member(workspace_id="ws", id="ann", balance=balance)

    assert pool_error.value.field == "balance"
    assert member_error.value.field == "balance"
    assert pool_error.value.value is balance


@pytest.mark.parametrize("bad_id", ["", None, 5, b"ws"])
def test_ids_reject_invalid(bad_id: Any) -> None:
    """Workspace, pool and member ids must be non-empty str."""
    with pytest.raises(TypeError, match="non-empty str"):
        Workspace(id=bad_id)
    with pytest.raises(TypeError, match="non-empty str"):
        Pool(workspace_id=bad_id)
    with pytest.raises(TypeError, match="non-empty str"):
        Member(workspace_id="ws", id=bad_id)


def test_low_pool_threshold_rejects_negative() -> None:
    """The low-pool threshold follows the balance rules."""
    with pytest.raises(InvalidAmount):
        Workspace(id="ws", low_pool_threshold=-1)


@pytest.mark.parametrize(
    ("value", "field", "new"),
    [
        (Workspace(id="ws"), "coaching_enabled", False),
        (Pool(workspace_id="ws", balance=3), "balance", 4),
        (Member(workspace_id="ws", id="ann"), "balance", 9),
        (
            Transfer(
                workspace_id="ws",
                member_id=None,
                kind=TransferKind.PURCHASE,
                amount=5,
                actor_id=None,
            ),
            "amount",
            6,
        ),
    ],
)
def test_values_are_frozen(value: object, field: str, new: object) -> None:
    """No domain value can be changed after it is made."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, field, new)


def test_values_have_slots() -> None:
    """Slotted values reject attributes that are not fields."""
    with pytest.raises((AttributeError, attrs.exceptions.FrozenInstanceError)):
        Pool(workspace_id="ws").extra = 1  # type: ignore[attr-defined]  # the point of the test


def test_values_compare_by_fields() -> None:
    """Two values with equal fields are equal and hash alike."""
    first = Member(workspace_id="ws", id="ann", balance=4)
    second = Member(workspace_id="ws", id="ann", balance=4)
    assert first == second
    assert hash(first) == hash(second)
    assert first != attrs.evolve(second, balance=5)


def test_transfer_metadata_frozen_sorted() -> None:
    """Transfer metadata becomes a sorted tuple of pairs, so it is hashable and ordered."""
    transfer = Transfer(
        workspace_id="ws",
        member_id="ann",
        kind=TransferKind.TRANSFER_TO,
        amount=5,
        actor_id="boss",
        metadata={"ticket": "T-9", "batch": "b1"},
    )
    assert transfer.metadata == (("batch", "b1"), ("ticket", "T-9"))
    assert hash(transfer) == hash(attrs.evolve(transfer))


def test_transfer_optional_fields_default() -> None:
    """A transfer made by a rule has no id, time or sequence until the ledger stores it."""
    transfer = Transfer(
        workspace_id="ws", member_id=None, kind=TransferKind.PURCHASE, amount=5, actor_id=None
    )
    assert transfer.id is None
    assert transfer.created_at is None
    assert transfer.sequence is None
    assert transfer.reverses is None
    assert transfer.metadata == ()

    stamped = attrs.evolve(transfer, created_at=datetime(2024, 1, 1, tzinfo=timezone.utc))
    assert stamped.created_at is not None
    assert transfer.created_at is None


def test_transfer_kind_values() -> None:
    """Every kind is stored by a stable text value: its name in lower case."""
    for kind in TransferKind:
        assert kind.value == kind.name.lower()
    assert TransferKind("member_removed") is TransferKind.MEMBER_REMOVED
