"""Conversion of domain values to and from JSON-compatible dicts.

Backends use it to store idempotency responses, and the command-line tool to print values.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .models import Member, Pool, Role, Transfer, TransferKind, Workspace

JSONDict = dict[str, Any]


def dumps(value: object) -> str:
    """Return canonical JSON: sorted keys, no spaces, so equal values give equal texts."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Any:
    """Parse JSON text written by :func:`dumps`."""
    return json.loads(text)


def workspace_to_dict(workspace: Workspace) -> JSONDict:
    return {
        "id": workspace.id,
        "coaching_enabled": workspace.coaching_enabled,
        "low_pool_threshold": workspace.low_pool_threshold,
    }


def workspace_from_dict(data: JSONDict) -> Workspace:
    return Workspace(
        id=data["id"],
        coaching_enabled=data["coaching_enabled"],
        low_pool_threshold=data.get("low_pool_threshold", 0),
    )


def pool_to_dict(pool: Pool) -> JSONDict:
    return {"workspace_id": pool.workspace_id, "balance": pool.balance}


def pool_from_dict(data: JSONDict) -> Pool:
    return Pool(workspace_id=data["workspace_id"], balance=data["balance"])


def member_to_dict(member: Member) -> JSONDict:
    return {
        "workspace_id": member.workspace_id,
        "id": member.id,
        "role": member.role.value,
        "balance": member.balance,
    }


def member_from_dict(data: JSONDict) -> Member:
    return Member(
        workspace_id=data["workspace_id"],
        id=data["id"],
        role=Role(data["role"]),
        balance=data["balance"],
    )


def transfer_to_dict(transfer: Transfer) -> JSONDict:
    return {
        "id": transfer.id,
        "sequence": transfer.sequence,
        "workspace_id": transfer.workspace_id,
        "member_id": transfer.member_id,
        "kind": transfer.kind.value,
        "amount": transfer.amount,
        "actor_id": transfer.actor_id,
        "pool_balance": transfer.pool_balance,
        "member_balance": transfer.member_balance,
        "created_at": None if transfer.created_at is None else transfer.created_at.isoformat(),
        "reason": transfer.reason,
        "metadata": dict(transfer.metadata),
        "reverses": transfer.reverses,
    }


def transfer_from_dict(data: JSONDict) -> Transfer:
    created = data.get("created_at")
    return Transfer(
        id=data.get("id"),
        sequence=data.get("sequence"),
        workspace_id=data["workspace_id"],
        member_id=data.get("member_id"),
        kind=TransferKind(data["kind"]),
        amount=data["amount"],
        actor_id=data.get("actor_id"),
        pool_balance=data.get("pool_balance"),
        member_balance=data.get("member_balance"),
        created_at=None if created is None else datetime.fromisoformat(created),
        reason=data.get("reason"),
        metadata=data.get("metadata") or {},
        reverses=data.get("reverses"),
    )
