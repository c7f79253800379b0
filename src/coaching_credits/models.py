"""Immutable domain values: workspaces, their pool, members and the transfers between them.

Values check domain invariants only (a balance is a non-negative ``int`` that fits a 64-bit
signed integer). Parsing of untrusted input happens at the edges: the rules, the ledger and the
command-line tool.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Generic, TypeVar

import attrs

from .errors import InvalidAmount

__all__ = [
    "MAX_AMOUNT",
    "AuditCheck",
    "AuditMismatch",
    "AuditReport",
    "BalanceChange",
    "Member",
    "Pool",
    "PoolStatus",
    "Preview",
    "Role",
    "Transfer",
    "TransferKind",
    "Workspace",
]

#: The largest balance or amount: 2**63 - 1, the largest value a PostgreSQL ``bigint`` or an
#: SQLite integer holds. Every backend enforces the same limit.
MAX_AMOUNT = 2**63 - 1


class Role(str, enum.Enum):
    """A member's permission level in a workspace."""

    ADMIN = "admin"
    MEMBER = "member"


class TransferKind(str, enum.Enum):
    """Direction and cause of a journal entry."""

    #: Credits bought by the workspace enter the pool.
    PURCHASE = "purchase"
    #: Credits move from the pool to a member.
    TRANSFER_TO = "transfer_to"
    #: Credits move from a member back to the pool.
    TRANSFER_FROM = "transfer_from"
    #: A member uses credits on coaching; they leave the workspace.
    SPEND = "spend"
    #: A removed member's whole balance returns to the pool.
    MEMBER_REMOVED = "member_removed"
    #: Credits of a reversed purchase leave the pool, back to the buyer.
    REFUND = "refund"


def _check_balance(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
        raise InvalidAmount(value, minimum=0, maximum=MAX_AMOUNT, field=attribute.name)


def _check_id(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if type(value) is not str or not value:
        raise TypeError(f"{attribute.name} must be a non-empty str, got {value!r}")


def _freeze_metadata(
    value: Mapping[str, str] | tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...]:
    if not value:
        # Most transfers carry no metadata; skipping the sort keeps the rules fast.
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), str(v)) for k, v in items))


@attrs.frozen
class Workspace:
    """An organisation that owns one pool of credits."""

    id: str = attrs.field(validator=_check_id)
    coaching_enabled: bool = True
    #: The pool counts as low when its balance is below this number of credits (0: never).
    low_pool_threshold: int = attrs.field(default=0, validator=_check_balance)


@attrs.frozen
class Pool:
    """A workspace's shared balance of credits that admins hand out to members."""

    workspace_id: str = attrs.field(validator=_check_id)
    balance: int = attrs.field(default=0, validator=_check_balance)


@attrs.frozen
class Member:
    """A person in a workspace with their own balance of credits."""

    workspace_id: str = attrs.field(validator=_check_id)
    id: str = attrs.field(validator=_check_id)
    role: Role = Role.MEMBER
    balance: int = attrs.field(default=0, validator=_check_balance)

    @property
    def is_admin(self) -> bool:
        """Whether this member may move credits in the workspace."""
        return self.role is Role.ADMIN


@attrs.frozen
class Transfer:
    """One immutable journal entry: credits that entered, moved within or left a workspace.

    The pure rules return transfers with ``id``, ``created_at`` and ``sequence`` left as
    ``None``; the ledger fills them in when it commits. ``pool_balance`` and
    ``member_balance`` are the balances right after this entry, so any balance can be
    rebuilt from the journal and checked against it.
    """

    workspace_id: str
    member_id: str | None
    kind: TransferKind
    amount: int
    actor_id: str | None
    pool_balance: int | None = None
    member_balance: int | None = None
    id: str | None = None
    created_at: datetime | None = None
    sequence: int | None = None
    reason: str | None = None
    metadata: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_freeze_metadata)
    #: Id of the transfer this one reverses, or ``None``. A transfer is reversed at most once.
    reverses: str | None = None


@attrs.frozen
class PoolStatus:
    """A pool's balance beside the workspace's low-pool threshold."""

    workspace_id: str
    balance: int
    threshold: int

    @property
    def is_low(self) -> bool:
        """Whether the balance is below the threshold, so the pool needs a purchase.

        The default threshold 0 never counts as low, so the check is off until set.
        """
        return self.balance < self.threshold


class AuditCheck(str, enum.Enum):
    """The stored figure that an audit compares with the journal."""

    #: The pool's stored balance against the balance rebuilt from the journal.
    POOL = "pool"
    #: A member's stored balance against the balance rebuilt from the journal.
    MEMBER = "member"
    #: Pool plus all member balances against credits purchased - refunded - spent.
    CONSERVATION = "conservation"
    #: The pool's stored balance against the pool balance recorded on the latest entry.
    POOL_SNAPSHOT = "pool_snapshot"
    #: A member's stored balance against the balance recorded on their latest entry.
    MEMBER_SNAPSHOT = "member_snapshot"


@attrs.frozen
class AuditMismatch:
    """One stored figure that disagrees with the journal.

    ``expected`` is rebuilt from the journal, ``stored`` is what the repository holds.
    ``member_id`` is set for :attr:`AuditCheck.MEMBER` and :attr:`AuditCheck.MEMBER_SNAPSHOT`
    only. For the snapshot checks, ``expected`` is the balance recorded on the latest entry.
    """

    check: AuditCheck
    member_id: str | None
    expected: int
    stored: int


@attrs.frozen
class AuditReport:
    """The outcome of rebuilding a workspace's balances from its journal.

    The totals come from the journal; ``stored_pool`` and ``stored_members_total`` from the
    stored balances. Conservation holds when
    ``stored_pool + stored_members_total == purchased - refunded - spent``.
    """

    workspace_id: str
    purchased: int
    refunded: int
    spent: int
    expected_pool: int
    stored_pool: int
    stored_members_total: int
    members_checked: int
    mismatches: tuple[AuditMismatch, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every stored balance agrees with the journal."""
        return not self.mismatches

    @property
    def in_circulation(self) -> int:
        """Credits that the pool and the members should hold together, according to the journal."""
        return self.purchased - self.refunded - self.spent


@attrs.frozen
class BalanceChange:
    """One balance before and after a change; ``member_id`` is ``None`` for the pool."""

    member_id: str | None
    before: int
    after: int

    @property
    def delta(self) -> int:
        """Credits gained (positive) or lost (negative)."""
        return self.after - self.before


_Result = TypeVar("_Result")


@attrs.frozen
class Preview(Generic[_Result]):
    """The outcome a change would have, computed with every check and then rolled back.

    ``result`` equals what the real call would return, except that its transfers have no
    ``id``, ``created_at`` or ``sequence``, because nothing was stored. ``members`` lists the
    affected members in the order given.
    """

    result: _Result
    pool: BalanceChange
    members: tuple[BalanceChange, ...]

    @property
    def net_change(self) -> int:
        """Credits that would leave the pool (positive) or return to it (negative)."""
        return self.pool.before - self.pool.after

    def summary(self) -> list[str]:
        """Describe each balance as one line: ``from`` loses credits, ``to`` gains them.

        For example ``from pool: 100 -> 90 (-10)`` and ``to member 'ann': 0 -> 10 (+10)``.
        """
        lines = [_describe_change("pool", self.pool)]
        lines.extend(_describe_change(f"member {m.member_id!r}", m) for m in self.members)
        if self.net_change > 0:
            lines.append(f"net: {self.net_change} credits leave the pool")
        elif self.net_change < 0:
            lines.append(f"net: {-self.net_change} credits return to the pool")
        else:
            lines.append("net: the pool does not change")
        return lines


def _describe_change(name: str, change: BalanceChange) -> str:
    if change.delta < 0:
        side = "from"
    elif change.delta > 0:
        side = "to"
    else:
        side = "unchanged"
    return f"{side} {name}: {change.before} -> {change.after} ({change.delta:+d})"
