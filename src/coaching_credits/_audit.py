"""Rebuild a workspace's balances from journal totals and compare them with the stored ones.

Every entry kind moves its amount in one fixed direction, so sums per member and kind are
enough to rebuild every balance::

    kind            pool   its member
    purchase        +      (none)
    refund          -      (none)
    transfer_to     -      +
    transfer_from   +      -
    spend           0      -
    member_removed  +      -

A reversal is recorded with the kind of the opposite move, so it needs no row of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .models import AuditCheck, AuditMismatch, AuditReport, Member, Pool, TransferKind

#: Change per credit of each kind to the pool, and to the entry's member.
_POOL_SIGN = {
    TransferKind.PURCHASE: 1,
    TransferKind.REFUND: -1,
    TransferKind.TRANSFER_TO: -1,
    TransferKind.TRANSFER_FROM: 1,
    TransferKind.SPEND: 0,
    TransferKind.MEMBER_REMOVED: 1,
}
_MEMBER_SIGN = {
    TransferKind.PURCHASE: 0,
    TransferKind.REFUND: 0,
    TransferKind.TRANSFER_TO: 1,
    TransferKind.TRANSFER_FROM: -1,
    TransferKind.SPEND: -1,
    TransferKind.MEMBER_REMOVED: -1,
}


def build_report(
    pool: Pool,
    members: Sequence[Member],
    totals: Iterable[tuple[str | None, TransferKind, int]],
) -> AuditReport:
    """Compare ``pool`` and ``members`` (stored) with the journal ``totals`` of their workspace.

    ``totals`` contains ``(member_id, kind, sum of amounts)`` rows. A member who left has no
    stored row, so the journal must bring their balance back to 0.
    """
    by_kind = dict.fromkeys(TransferKind, 0)
    expected_members: dict[str, int] = {}
    for member_id, kind, total in totals:
        by_kind[kind] += total
        if member_id is not None:
            expected_members[member_id] = (
                expected_members.get(member_id, 0) + _MEMBER_SIGN[kind] * total
            )
    expected_pool = sum(_POOL_SIGN[kind] * total for kind, total in by_kind.items())

    mismatches: list[AuditMismatch] = []
    if expected_pool != pool.balance:
        mismatches.append(
            AuditMismatch(
                check=AuditCheck.POOL, member_id=None, expected=expected_pool, stored=pool.balance
            )
        )
    stored_members = {m.id: m.balance for m in members}
    for member_id in sorted(stored_members.keys() | expected_members.keys()):
        expected = expected_members.get(member_id, 0)
        stored = stored_members.get(member_id, 0)
        if expected != stored:
            mismatches.append(
                AuditMismatch(
                    check=AuditCheck.MEMBER, member_id=member_id, expected=expected, stored=stored
                )
            )

    purchased = by_kind[TransferKind.PURCHASE]
    refunded = by_kind[TransferKind.REFUND]
    spent = by_kind[TransferKind.SPEND]
    stored_members_total = sum(stored_members.values())
    in_circulation = purchased - refunded - spent
    if pool.balance + stored_members_total != in_circulation:
        mismatches.append(
            AuditMismatch(
                check=AuditCheck.CONSERVATION,
                member_id=None,
                expected=in_circulation,
                stored=pool.balance + stored_members_total,
            )
        )

    return AuditReport(
        workspace_id=pool.workspace_id,
        purchased=purchased,
        refunded=refunded,
        spent=spent,
        expected_pool=expected_pool,
        stored_pool=pool.balance,
        stored_members_total=stored_members_total,
        members_checked=len(stored_members),
        mismatches=tuple(mismatches),
    )
