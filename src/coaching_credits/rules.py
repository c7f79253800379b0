"""Pure rules: each takes domain values and returns new ones, or raises a :class:`CreditError`.

Nothing here does I/O, reads a clock or draws random numbers, so a rule called twice with equal
arguments returns equal results. The checks run in one fixed order, which every backend and the
ledger share: the amount, then the actor's permission, then whether coaching is enabled, then
membership, then the balances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from .errors import (
    AlreadyReversed,
    CoachingDisabled,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberNotFound,
    NotReversible,
    PermissionDenied,
)
from .models import MAX_AMOUNT, Member, Pool, PoolStatus, Role, Transfer, TransferKind, Workspace

__all__ = [
    "REVERSIBLE_KINDS",
    "MemberRemoval",
    "PurchaseResult",
    "ReversalResult",
    "SetBalancesResult",
    "SpendResult",
    "TransferResult",
    "add_member",
    "check_amount",
    "check_balance",
    "check_distinct",
    "low_balances",
    "pool_status",
    "purchase",
    "remove_member",
    "require_admin",
    "require_coaching",
    "reverse",
    "set_balances",
    "set_coaching",
    "set_low_pool_threshold",
    "spend",
    "transfer_from",
    "transfer_to",
]

Metadata = Mapping[str, str]


@attrs.frozen
class TransferResult:
    """Outcome of :func:`transfer_to` or :func:`transfer_from`."""

    pool: Pool
    member: Member
    transfer: Transfer


@attrs.frozen
class SetBalancesResult:
    """Outcome of :func:`set_balances`.

    ``members`` contains the new values in the order given. ``transfers`` contains one entry per
    member whose balance changed: first the members being lowered, then those being raised,
    each group in the order given, so replaying the journal never takes the pool below zero.
    """

    pool: Pool
    members: tuple[Member, ...]
    transfers: tuple[Transfer, ...]

    @property
    def net_change(self) -> int:
        """Credits that left the pool (positive) or returned to it (negative)."""
        raised = sum(t.amount for t in self.transfers if t.kind is TransferKind.TRANSFER_TO)
        lowered = sum(t.amount for t in self.transfers if t.kind is TransferKind.TRANSFER_FROM)
        return raised - lowered


@attrs.frozen
class PurchaseResult:
    """Outcome of :func:`purchase`."""

    pool: Pool
    transfer: Transfer


@attrs.frozen
class SpendResult:
    """Outcome of :func:`spend`."""

    member: Member
    transfer: Transfer


@attrs.frozen
class ReversalResult:
    """Outcome of :func:`reverse`.

    ``member`` is the member's new value, or ``None`` when a purchase was refunded.
    ``transfer`` is the opposite entry, with ``reverses`` set to the original's id.
    """

    pool: Pool
    member: Member | None
    transfer: Transfer


@attrs.frozen
class MemberRemoval:
    """Outcome of :func:`remove_member`: the pool after the member's balance returned to it."""

    pool: Pool
    member: Member
    transfer: Transfer


def check_amount(amount: object, *, field: str = "amount") -> int:
    """Return ``amount`` if it is an ``int`` from 1 to :data:`MAX_AMOUNT`, else raise.

    ``bool`` is rejected although it subclasses ``int``.
    """
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        raise InvalidAmount(amount, minimum=1, maximum=MAX_AMOUNT, field=field)
    return amount


def check_balance(balance: object, *, field: str = "balance") -> int:
    """Return ``balance`` if it is an ``int`` from 0 to :data:`MAX_AMOUNT`, else raise."""
    if type(balance) is not int or not 0 <= balance <= MAX_AMOUNT:
        raise InvalidAmount(balance, minimum=0, maximum=MAX_AMOUNT, field=field)
    return balance


def require_admin(workspace: Workspace, actor: Member | None, action: str, actor_id: str) -> None:
    """Raise :class:`PermissionDenied` unless ``actor`` is an admin of ``workspace``.

    ``actor`` is ``None`` when no member with ``actor_id`` exists in the workspace.
    """
    if actor is None or actor.workspace_id != workspace.id:
        raise PermissionDenied(
            workspace_id=workspace.id, actor_id=actor_id, action=action, is_member=False
        )
    if actor.role is not Role.ADMIN:
        raise PermissionDenied(workspace_id=workspace.id, actor_id=actor_id, action=action)


def require_coaching(workspace: Workspace, action: str) -> None:
    """Raise :class:`CoachingDisabled` unless coaching is enabled for ``workspace``."""
    if not workspace.coaching_enabled:
        raise CoachingDisabled(workspace_id=workspace.id, action=action)


def _require_pool(workspace: Workspace, pool: Pool) -> None:
    if pool.workspace_id != workspace.id:
        raise InvalidRequest(
            f"pool of workspace {pool.workspace_id!r} passed for workspace {workspace.id!r}",
            value=pool.workspace_id,
        )


def _require_member(workspace: Workspace, member: Member) -> None:
    if member.workspace_id != workspace.id:
        raise MemberNotFound(workspace_id=workspace.id, member_id=member.id)


def _check_fits(balance: int, amount: int) -> None:
    if balance + amount > MAX_AMOUNT:
        raise InvalidAmount(
            amount, minimum=1, maximum=MAX_AMOUNT - balance, field="amount (balance limit)"
        )


def purchase(
    workspace: Workspace,
    pool: Pool,
    amount: int,
    *,
    members_total: int = 0,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> PurchaseResult:
    """Add ``amount`` bought credits to the pool.

    ``members_total`` is the sum of the workspace's member balances. Raises
    :class:`InvalidAmount` when the amount is not valid or the credits in the workspace
    (pool plus members) would pass :data:`MAX_AMOUNT`: keeping that total within the limit
    keeps every balance, and every running balance in the journal, within it too. A purchase
    needs no admin and works while coaching is disabled, because buying is the billing
    system's job.
    """
    check_amount(amount)
    check_balance(members_total, field="members_total")
    _require_pool(workspace, pool)
    _check_fits(pool.balance + members_total, amount)

    new_pool = Pool(workspace_id=pool.workspace_id, balance=pool.balance + amount)
    transfer = Transfer(
        workspace_id=workspace.id,
        member_id=None,
        kind=TransferKind.PURCHASE,
        amount=amount,
        actor_id=None,
        pool_balance=new_pool.balance,
        reason=reason,
        metadata=metadata or (),
    )
    return PurchaseResult(pool=new_pool, transfer=transfer)


def transfer_to(
    workspace: Workspace,
    pool: Pool,
    member: Member,
    amount: int,
    *,
    actor: Member,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> TransferResult:
    """Move ``amount`` credits from the pool to ``member``; ``actor`` must be an admin."""
    check_amount(amount)
    require_admin(workspace, actor, "transfer credits to a member", actor.id)
    require_coaching(workspace, "transfer credits to a member")
    _require_pool(workspace, pool)
    _require_member(workspace, member)
    if pool.balance < amount:
        raise InsufficientCredits(
            workspace_id=workspace.id, requested=amount, available=pool.balance
        )
    _check_fits(member.balance, amount)

    new_pool = Pool(workspace_id=pool.workspace_id, balance=pool.balance - amount)
    new_member = Member(
        workspace_id=member.workspace_id,
        id=member.id,
        role=member.role,
        balance=member.balance + amount,
    )
    transfer = Transfer(
        workspace_id=workspace.id,
        member_id=member.id,
        kind=TransferKind.TRANSFER_TO,
        amount=amount,
        actor_id=actor.id,
        pool_balance=new_pool.balance,
        member_balance=new_member.balance,
        reason=reason,
        metadata=metadata or (),
    )
    return TransferResult(pool=new_pool, member=new_member, transfer=transfer)


def transfer_from(
    workspace: Workspace,
    pool: Pool,
    member: Member,
    amount: int,
    *,
    actor: Member,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> TransferResult:
    """Move ``amount`` credits from ``member`` back to the pool; ``actor`` must be an admin."""
    check_amount(amount)
    require_admin(workspace, actor, "transfer credits from a member", actor.id)
    require_coaching(workspace, "transfer credits from a member")
    _require_pool(workspace, pool)
    _require_member(workspace, member)
    if member.balance < amount:
        raise InsufficientCredits(
            workspace_id=workspace.id,
            member_id=member.id,
            requested=amount,
            available=member.balance,
        )
    _check_fits(pool.balance, amount)

    new_pool = Pool(workspace_id=pool.workspace_id, balance=pool.balance + amount)
    new_member = Member(
        workspace_id=member.workspace_id,
        id=member.id,
        role=member.role,
        balance=member.balance - amount,
    )
    transfer = Transfer(
        workspace_id=workspace.id,
        member_id=member.id,
        kind=TransferKind.TRANSFER_FROM,
        amount=amount,
        actor_id=actor.id,
        pool_balance=new_pool.balance,
        member_balance=new_member.balance,
        reason=reason,
        metadata=metadata or (),
    )
    return TransferResult(pool=new_pool, member=new_member, transfer=transfer)


def set_balances(
    workspace: Workspace,
    pool: Pool,
    members: Sequence[Member],
    balance: int,
    *,
    actor: Member,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> SetBalancesResult:
    """Set the balance of every member in ``members`` to ``balance``, all or nothing.

    Each member's difference moves between that member and the pool. Members being lowered
    fund members being raised, so the call fails with :class:`InsufficientCredits` only when
    the net need exceeds the pool. The outcome does not depend on the order of ``members``:
    a missing member is reported by its smallest id.
    """
    check_balance(balance)
    require_admin(workspace, actor, "set member balances", actor.id)
    require_coaching(workspace, "set member balances")
    _require_pool(workspace, pool)
    check_distinct(m.id for m in members)
    strangers = sorted(m.id for m in members if m.workspace_id != workspace.id)
    if strangers:
        raise MemberNotFound(workspace_id=workspace.id, member_id=strangers[0])

    need = sum(balance - m.balance for m in members)
    if need > pool.balance:
        raise InsufficientCredits(workspace_id=workspace.id, requested=need, available=pool.balance)

    # Lowered members go first in the journal, so the running pool balance never dips below
    # zero while their credits fund the raised members.
    running_pool = pool.balance
    lowered: list[Transfer] = []
    raised: list[Transfer] = []
    new_members = []
    for member in members:
        new_members.append(
            Member(
                workspace_id=member.workspace_id, id=member.id, role=member.role, balance=balance
            )
        )
    for member in members:
        if member.balance > balance:
            running_pool += member.balance - balance
            lowered.append(
                _set_balance_transfer(
                    workspace, member, balance, actor, running_pool, reason, metadata
                )
            )
    for member in members:
        if member.balance < balance:
            running_pool -= balance - member.balance
            raised.append(
                _set_balance_transfer(
                    workspace, member, balance, actor, running_pool, reason, metadata
                )
            )

    return SetBalancesResult(
        pool=Pool(workspace_id=pool.workspace_id, balance=running_pool),
        members=tuple(new_members),
        transfers=(*lowered, *raised),
    )


def _set_balance_transfer(
    workspace: Workspace,
    member: Member,
    balance: int,
    actor: Member,
    pool_balance: int,
    reason: str | None,
    metadata: Metadata | None,
) -> Transfer:
    raising = member.balance < balance
    return Transfer(
        workspace_id=workspace.id,
        member_id=member.id,
        kind=TransferKind.TRANSFER_TO if raising else TransferKind.TRANSFER_FROM,
        amount=abs(balance - member.balance),
        actor_id=actor.id,
        pool_balance=pool_balance,
        member_balance=balance,
        reason=reason,
        metadata=metadata or (),
    )


def check_distinct(member_ids: Iterable[str]) -> None:
    """Raise :class:`InvalidRequest` if a member id appears more than once.

    The error names the smallest repeated id, so it does not depend on the order given.
    """
    seen: set[str] = set()
    repeated: set[str] = set()
    for member_id in member_ids:
        if member_id in seen:
            repeated.add(member_id)
        seen.add(member_id)
    if repeated:
        first = min(repeated)
        raise InvalidRequest(
            f"member {first!r} is listed more than once; list each member once",
            value=first,
        )


def spend(
    workspace: Workspace,
    member: Member,
    amount: int,
    *,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> SpendResult:
    """Spend ``amount`` of ``member``'s credits on coaching; the credits leave the workspace."""
    check_amount(amount)
    require_coaching(workspace, "spend credits")
    _require_member(workspace, member)
    if member.balance < amount:
        raise InsufficientCredits(
            workspace_id=workspace.id,
            member_id=member.id,
            requested=amount,
            available=member.balance,
        )

    new_member = Member(
        workspace_id=member.workspace_id,
        id=member.id,
        role=member.role,
        balance=member.balance - amount,
    )
    transfer = Transfer(
        workspace_id=workspace.id,
        member_id=member.id,
        kind=TransferKind.SPEND,
        amount=amount,
        actor_id=member.id,
        member_balance=new_member.balance,
        reason=reason,
        metadata=metadata or (),
    )
    return SpendResult(member=new_member, transfer=transfer)


def add_member(
    workspace: Workspace,
    member_id: str,
    *,
    role: Role = Role.MEMBER,
    actor: Member | None = None,
) -> Member:
    """Return a new member of ``workspace`` with a balance of 0.

    ``actor`` is ``None`` for the host application's own calls (for example importing the
    first admins); when given, it must be an admin of the workspace.
    """
    if type(member_id) is not str or not member_id:
        raise InvalidRequest(
            f"invalid member id {member_id!r}: expected a non-empty str", value=member_id
        )
    if not isinstance(role, Role):
        raise InvalidRequest(f"invalid role {role!r}: expected 'admin' or 'member'", value=role)
    if actor is not None:
        require_admin(workspace, actor, "add members", actor.id)
    return Member(workspace_id=workspace.id, id=member_id, role=role, balance=0)


def remove_member(
    workspace: Workspace,
    pool: Pool,
    member: Member,
    *,
    actor: Member,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> MemberRemoval:
    """Remove ``member`` and return their whole balance to the pool.

    The removal is recorded as a ``MEMBER_REMOVED`` transfer even when the balance is 0, so
    the journal shows when each member left. It works while coaching is disabled.
    """
    require_admin(workspace, actor, "remove members", actor.id)
    _require_pool(workspace, pool)
    _require_member(workspace, member)
    _check_fits(pool.balance, member.balance)

    new_pool = Pool(workspace_id=pool.workspace_id, balance=pool.balance + member.balance)
    transfer = Transfer(
        workspace_id=workspace.id,
        member_id=member.id,
        kind=TransferKind.MEMBER_REMOVED,
        amount=member.balance,
        actor_id=actor.id,
        pool_balance=new_pool.balance,
        member_balance=0,
        reason=reason,
        metadata=metadata or (),
    )
    return MemberRemoval(pool=new_pool, member=member, transfer=transfer)


def set_coaching(workspace: Workspace, enabled: bool, *, actor: Member) -> Workspace:
    """Return ``workspace`` with coaching switched on or off; ``actor`` must be an admin."""
    if type(enabled) is not bool:
        raise InvalidRequest(
            f"invalid enabled flag {enabled!r}: expected true or false", value=enabled
        )
    require_admin(workspace, actor, "switch coaching on or off", actor.id)
    return attrs.evolve(workspace, coaching_enabled=enabled)


def set_low_pool_threshold(workspace: Workspace, threshold: int, *, actor: Member) -> Workspace:
    """Return ``workspace`` with a new low-pool threshold; ``actor`` must be an admin.

    The pool counts as low below ``threshold`` credits. It works while coaching is
    disabled, because it only changes how the pool is reported.
    """
    check_balance(threshold, field="threshold")
    require_admin(workspace, actor, "set the low-pool threshold", actor.id)
    return attrs.evolve(workspace, low_pool_threshold=threshold)


def pool_status(workspace: Workspace, pool: Pool) -> PoolStatus:
    """Return the pool's balance beside the workspace's low-pool threshold."""
    _require_pool(workspace, pool)
    return PoolStatus(
        workspace_id=workspace.id, balance=pool.balance, threshold=workspace.low_pool_threshold
    )


def low_balances(members: Iterable[Member], threshold: int) -> list[Member]:
    """Return the members whose balance is at or below ``threshold``, by balance, then id."""
    check_balance(threshold, field="threshold")
    low = [m for m in members if m.balance <= threshold]
    return sorted(low, key=lambda m: (m.balance, m.id))


#: The kinds :func:`reverse` accepts. A transfer to or from a member is undone by the
#: opposite move, and a purchase by a refund. Spends, member removals, refunds and reversals
#: are final, and :class:`NotReversible` gives the reason for each.
REVERSIBLE_KINDS = frozenset(
    {TransferKind.TRANSFER_TO, TransferKind.TRANSFER_FROM, TransferKind.PURCHASE}
)

_FINAL_KINDS = {
    TransferKind.SPEND: (
        "spent credits paid for coaching outside the workspace, and giving them back would "
        "create credits no purchase paid for; transfer credits from the pool instead"
    ),
    TransferKind.MEMBER_REMOVED: (
        "the member left; add the member again and transfer credits to them instead"
    ),
    TransferKind.REFUND: "the credits went back to the buyer; record a new purchase instead",
}


def reverse(
    workspace: Workspace,
    pool: Pool,
    original: Transfer,
    *,
    actor: Member,
    member: Member | None,
    reversal: Transfer | None = None,
    member_left: bool = False,
    reason: str | None = None,
    metadata: Metadata | None = None,
) -> ReversalResult:
    """Undo ``original`` with the opposite transfer, linked to it through ``reverses``.

    A transfer to a member is undone by a transfer from them, a transfer from a member by a
    transfer to them, and a purchase by a ``REFUND`` that takes the credits out of the pool.
    ``actor`` must be an admin; moves between pool and member also need coaching enabled,
    refunds do not (like purchases, they are the billing system's side).

    ``member`` is the original's member as stored now (``None`` if missing or for a
    purchase), ``reversal`` the entry that already reverses ``original``, if any, and
    ``member_left`` whether the member was removed after ``original``.

    Raises :class:`NotReversible` for spends, member removals, refunds, reversals and moves
    of a member who left since; :class:`AlreadyReversed` when ``reversal`` is given;
    :class:`InsufficientCredits` when the member or the pool no longer has the credits.
    """
    action = "reverse transfers"
    require_admin(workspace, actor, action, actor.id)
    transfer_id = original.id or ""
    kind = original.kind
    if original.reverses is not None:
        raise NotReversible(
            workspace_id=workspace.id,
            transfer_id=transfer_id,
            kind=kind.value,
            why=(
                f"it reverses transfer {original.reverses!r} and a reversal is final; "
                f"make a new transfer instead"
            ),
        )
    if kind not in REVERSIBLE_KINDS:
        raise NotReversible(
            workspace_id=workspace.id,
            transfer_id=transfer_id,
            kind=kind.value,
            why=_FINAL_KINDS.get(kind, "this kind of transfer is final"),
        )
    if reversal is not None:
        raise AlreadyReversed(
            workspace_id=workspace.id, transfer_id=transfer_id, reversal_id=reversal.id or ""
        )

    if kind is TransferKind.PURCHASE:
        return _refund(workspace, pool, original, actor, reason, metadata)

    require_coaching(workspace, action)
    assert original.member_id is not None  # transfers to and from a member always name one
    if member_left:
        raise NotReversible(
            workspace_id=workspace.id,
            transfer_id=transfer_id,
            kind=kind.value,
            why=(
                f"member {original.member_id!r} was removed after it and their balance went "
                f"back to the pool; make a new transfer instead"
            ),
        )
    if member is None:
        raise MemberNotFound(workspace_id=workspace.id, member_id=original.member_id)
    opposite = transfer_from if kind is TransferKind.TRANSFER_TO else transfer_to
    moved = opposite(
        workspace, pool, member, original.amount, actor=actor, reason=reason, metadata=metadata
    )
    return ReversalResult(
        pool=moved.pool,
        member=moved.member,
        transfer=attrs.evolve(moved.transfer, reverses=original.id),
    )


def _refund(
    workspace: Workspace,
    pool: Pool,
    original: Transfer,
    actor: Member,
    reason: str | None,
    metadata: Metadata | None,
) -> ReversalResult:
    _require_pool(workspace, pool)
    if pool.balance < original.amount:
        raise InsufficientCredits(
            workspace_id=workspace.id, requested=original.amount, available=pool.balance
        )
    new_pool = Pool(workspace_id=pool.workspace_id, balance=pool.balance - original.amount)
    transfer = Transfer(
        workspace_id=workspace.id,
        member_id=None,
        kind=TransferKind.REFUND,
        amount=original.amount,
        actor_id=actor.id,
        pool_balance=new_pool.balance,
        reason=reason,
        metadata=metadata or (),
        reverses=original.id,
    )
    return ReversalResult(pool=new_pool, member=None, transfer=transfer)
