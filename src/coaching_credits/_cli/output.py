"""Print values as aligned text or as JSON on standard output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from .. import _codec
from ..models import Member, Pool, Transfer, Workspace

__all__ = [
    "FORMATS",
    "Balances",
    "balances_to_dict",
    "print_balances",
    "print_history",
    "print_json",
    "print_member_table",
    "transfer_line",
]

#: The values of ``--format``.
FORMATS = ("text", "json")


@attrs.frozen
class Balances:
    """A workspace, its pool and its members, read in one transaction."""

    workspace: Workspace
    pool: Pool
    members: tuple[Member, ...]


def print_json(value: object, stream: TextIO) -> None:
    """Print ``value`` as one line of JSON."""
    print(json.dumps(value, ensure_ascii=False), file=stream)


def balances_to_dict(balances: Balances) -> dict[str, Any]:
    """Return the JSON shape of ``balances --format json``."""
    return {
        "workspace": balances.workspace.id,
        "coaching_enabled": balances.workspace.coaching_enabled,
        "pool": balances.pool.balance,
        "members": [
            {"id": m.id, "role": m.role.value, "balance": m.balance} for m in balances.members
        ],
    }


def print_balances(balances: Balances, output_format: str, stream: TextIO) -> None:
    """Print the pool and every member's balance."""
    if output_format == "json":
        print_json(balances_to_dict(balances), stream)
        return

    coaching = "enabled" if balances.workspace.coaching_enabled else "disabled"
    total = sum(m.balance for m in balances.members)
    print(
        f"workspace {balances.workspace.id}: coaching {coaching}, pool {balances.pool.balance}, "
        f"{len(balances.members)} members holding {total}",
        file=stream,
    )
    print_member_table(balances.members, stream)


def print_member_table(members: Sequence[Member], stream: TextIO) -> None:
    """Print one indented row per member: id, role and balance, under a header row."""
    rows = [("member", "role", "balance")]
    rows += [(m.id, m.role.value, str(m.balance)) for m in members]
    id_width = max(len(row[0]) for row in rows)
    balance_width = max(len(row[2]) for row in rows)
    for member_id, role, balance in rows:
        print(f"  {member_id:<{id_width}}  {role:<6}  {balance:>{balance_width}}", file=stream)


def transfer_line(transfer: Transfer) -> str:
    """Describe one journal entry on one line."""
    parts = [
        f"#{transfer.sequence}",
        "-" if transfer.created_at is None else transfer.created_at.isoformat(timespec="seconds"),
        transfer.kind.value,
        f"amount {transfer.amount}",
    ]
    if transfer.member_id is not None:
        parts.append(f"member {transfer.member_id}")
    if transfer.actor_id is not None and transfer.actor_id != transfer.member_id:
        parts.append(f"by {transfer.actor_id}")
    if transfer.pool_balance is not None:
        parts.append(f"pool {transfer.pool_balance}")
    if transfer.member_balance is not None:
        parts.append(f"member balance {transfer.member_balance}")
    if transfer.reason:
        parts.append(f"reason {transfer.reason!r}")
    if transfer.metadata:
        parts.append("metadata " + ",".join(f"{k}={v}" for k, v in transfer.metadata))
    if transfer.reverses is not None:
        parts.append(f"reverses {transfer.reverses}")
    # Last because it is long; the `reverse` command takes this id.
    if transfer.id is not None:
        parts.append(f"id {transfer.id}")
    return "  ".join(parts)


def print_history(
    workspace_id: str,
    transfers: Sequence[Transfer],
    *,
    limit: int,
    output_format: str,
    stream: TextIO,
) -> None:
    """Print journal entries newest first, with the ``--before`` value of the next page."""
    # A full page may have more entries behind it; a short page is the last one.
    next_before = transfers[-1].sequence if len(transfers) == limit else None
    if output_format == "json":
        print_json(
            {
                "workspace": workspace_id,
                "transfers": [_codec.transfer_to_dict(t) for t in transfers],
                "next_before": next_before,
            },
            stream,
        )
        return

    if not transfers:
        print(f"workspace {workspace_id}: no matching journal entries", file=stream)
        return
    for transfer in transfers:
        print(transfer_line(transfer), file=stream)
    if next_before is not None:
        print(f"more entries: add --before {next_before}", file=stream)
