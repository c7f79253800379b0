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

from collections.abc import Iterable, Mapping, Sequence

from .models import AuditCheck, AuditMismatch, AuditReport, Member, Pool, TransferKind
from .repository._protocol import Transaction

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


def audit_workspace(tx: Transaction, workspace_id: str) -> AuditReport:
    """Read a workspace's stored balances and journal through ``tx`` and compare them.

    Besides the totals, it reads the latest entry of the pool and of each member, so a
    balance recorded on the journal that disagrees with the stored one is reported too.
    """
    _, pool = tx.get_workspace(workspace_id)
    members = tx.list_members(workspace_id)
    totals = tx.journal_totals(workspace_id)

    latest = tx.list_transfers(workspace_id, limit=1)
    pool_snapshot = latest[0].pool_balance if latest else None
    member_snapshots: dict[str, int] = {}
    for member in members:
        entries = tx.list_transfers(workspace_id, member_id=member.id, limit=1)
        if entries and entries[0].member_balance is not None:
            member_snapshots[member.id] = entries[0].member_balance

    return build_report(
        pool,
        members,
        totals,
        pool_snapshot=pool_snapshot,
        member_snapshots=member_snapshots,
    )


def build_report(
    pool: Pool,
    members: Sequence[Member],
    totals: Iterable[tuple[str | None, TransferKind, int]],
    *,
    pool_snapshot: int | None = None,
    member_snapshots: Mapping[str, int] | None = None,
) -> AuditReport:
    """Compare ``pool`` and ``members`` (stored) with the journal ``totals`` of their workspace.

    ``totals`` contains ``(member_id, kind, sum of amounts)`` rows. A member who left has no
    stored row, so the journal must bring their balance back to 0. ``pool_snapshot`` and
    ``member_snapshots`` are the balances recorded on the latest entries, where known.
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

    if pool_snapshot is not None and pool_snapshot != pool.balance:
        mismatches.append(
            AuditMismatch(
                check=AuditCheck.POOL_SNAPSHOT,
                member_id=None,
                expected=pool_snapshot,
                stored=pool.balance,
            )
        )
    for member_id, snapshot in sorted((member_snapshots or {}).items()):
        stored = stored_members.get(member_id, 0)
        if snapshot != stored:
            mismatches.append(
                AuditMismatch(
                    check=AuditCheck.MEMBER_SNAPSHOT,
                    member_id=member_id,
                    expected=snapshot,
                    stored=stored,
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
