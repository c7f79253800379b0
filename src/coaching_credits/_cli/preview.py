"""The ``--preview`` output of ``transfer-to``, ``transfer-from`` and ``set-balances``.

A preview runs every check of the real command, reads the balances the change would commit,
and rolls back, so it changes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

from .. import _codec
from ..ledger import Ledger
from ..models import BalanceChange, Preview, Transfer
from .output import print_json

__all__ = ["print_preview"]


def _key_used(ledger: Ledger, workspace_id: str, key: str | None) -> bool:
    """Return whether ``key`` already has a stored result in the workspace."""
    if key is None:
        return False
    with ledger.repository.transaction() as tx:
        return tx.get_idempotency(workspace_id, key) is not None


def _change_to_dict(change: BalanceChange) -> dict[str, Any]:
    return {"before": change.before, "after": change.after, "delta": change.delta}


def print_preview(
    args: argparse.Namespace,
    ledger: Ledger,
    preview: Preview[Any],
    transfers: Sequence[Transfer],
    stdout: TextIO,
) -> None:
    """Print the From/To lines of ``preview`` and the net change of the pool.

    The preview itself ignores ``--key``. When the key is already used, the real command
    would replay or be rejected instead of doing what the preview shows, so the output warns.
    """
    key_used = _key_used(ledger, args.workspace, args.key)
    if args.format == "json":
        print_json(
            {
                "op": args.command,
                "preview": True,
                "key_used": key_used,
                "net_change": preview.net_change,
                "pool": _change_to_dict(preview.pool),
                "members": [{"id": m.member_id, **_change_to_dict(m)} for m in preview.members],
                "summary": preview.summary(),
                "transfers": [_codec.transfer_to_dict(t) for t in transfers],
            },
            stdout,
        )
        return

    print(f"preview of {args.command} in workspace {args.workspace}; nothing changed:", file=stdout)
    for line in preview.summary():
        print(f"  {line}", file=stdout)
    if key_used:
        print(
            f"key {args.key!r} is already used: without --preview the command replays the "
            f"earlier result if its arguments match, or is rejected with IdempotencyConflict",
            file=stdout,
        )
    else:
        print("run the same command without --preview to apply it", file=stdout)
