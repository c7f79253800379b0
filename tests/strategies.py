"""Hypothesis strategies shared by the property and stateful tests.

Amounts stay small by default so random sequences of operations hit the interesting cases
(an empty pool, a member at 0, a balance set to what it already is) instead of drifting to
huge numbers that never run short.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
from hypothesis import strategies as st

from coaching_credits import MAX_AMOUNT, Member, Pool, Role, Workspace

#: Ids from a small alphabet, so two draws often collide and hit the duplicate-id paths.
ids = st.text(alphabet="abcde", min_size=1, max_size=3)

#: Workspace ids: "ws" and "other" keep two workspaces apart in cross-workspace tests.
workspace_ids = st.sampled_from(["ws", "other"])

#: Valid amounts: small ones mostly, plus the edges of the allowed range.
amounts = st.one_of(
    st.integers(min_value=1, max_value=50),
    st.sampled_from([1, MAX_AMOUNT - 1, MAX_AMOUNT]),
)

#: Valid balances, 0 included.
balances = st.one_of(st.integers(min_value=0, max_value=50), st.just(MAX_AMOUNT))

#: Values that every amount check must reject with ``InvalidAmount``.
invalid_amounts: st.SearchStrategy[Any] = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=MAX_AMOUNT + 1),
    st.booleans(),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=100).map(str),
    st.sampled_from([None, [], {}, Decimal(5), 5.0, "5", b"5", 2**63]),
)

#: Values that every balance check must reject: like invalid amounts, but 0 is allowed.
invalid_balances: st.SearchStrategy[Any] = invalid_amounts.filter(
    lambda value: not (type(value) is int and value == 0)
)


@st.composite
def workspaces(draw: st.DrawFn, *, coaching_enabled: bool | None = None) -> Workspace:
    """Draw a workspace with id ``"ws"``, with coaching drawn too unless it is given."""
    enabled = draw(st.booleans()) if coaching_enabled is None else coaching_enabled
    return Workspace(id="ws", coaching_enabled=enabled)


def pools(workspace_id: str = "ws", *, max_balance: int = 200) -> st.SearchStrategy[Pool]:
    """Pools of ``workspace_id`` with a balance from 0 to ``max_balance``."""
    return st.builds(
        Pool,
        workspace_id=st.just(workspace_id),
        balance=st.integers(min_value=0, max_value=max_balance),
    )


def members(
    workspace_id: str = "ws", *, max_balance: int = 50, role: Role | None = None
) -> st.SearchStrategy[Member]:
    """Members of ``workspace_id`` with a drawn id, role and balance."""
    return st.builds(
        Member,
        workspace_id=st.just(workspace_id),
        id=ids,
        role=st.sampled_from(Role) if role is None else st.just(role),
        balance=st.integers(min_value=0, max_value=max_balance),
    )


def distinct_members(
    workspace_id: str = "ws", *, min_size: int = 0, max_size: int = 6, max_balance: int = 50
) -> st.SearchStrategy[list[Member]]:
    """Lists of members of one workspace with pairwise distinct ids."""
    return st.lists(
        members(workspace_id, max_balance=max_balance),
        min_size=min_size,
        max_size=max_size,
        unique_by=lambda member: member.id,
    )


def admin(workspace_id: str = "ws") -> Member:
    """An admin with id ``"boss"``, which :data:`ids` never draws."""
    return Member(workspace_id=workspace_id, id="boss", role=Role.ADMIN)


@attrs.frozen
class Operation:
    """One step of a random sequence: ``name`` is the rule, the other fields its arguments.

    ``member`` is an index into the list of members, and ``targets`` lists the indexes for
    ``set_balances``. Fields a rule does not use are ignored.
    """

    name: str
    amount: int
    member: int = 0
    targets: tuple[int, ...] = ()


MEMBER_COUNT = 4
"""How many members the operation sequences work on."""

_member_index = st.integers(min_value=0, max_value=MEMBER_COUNT - 1)
_small_amounts = st.integers(min_value=1, max_value=40)

operations = st.one_of(
    st.builds(Operation, name=st.just("purchase"), amount=_small_amounts),
    st.builds(Operation, name=st.just("transfer_to"), amount=_small_amounts, member=_member_index),
    st.builds(
        Operation, name=st.just("transfer_from"), amount=_small_amounts, member=_member_index
    ),
    st.builds(Operation, name=st.just("spend"), amount=_small_amounts, member=_member_index),
    st.builds(
        Operation,
        name=st.just("set_balances"),
        amount=st.integers(min_value=0, max_value=40),
        targets=st.lists(_member_index, unique=True, max_size=MEMBER_COUNT).map(tuple),
    ),
)

#: Sequences of operations on one workspace with :data:`MEMBER_COUNT` members.
operation_sequences = st.lists(operations, max_size=40)
