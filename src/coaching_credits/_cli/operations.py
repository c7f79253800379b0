"""The commands that run one ledger operation each, for an admin at a terminal."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any, TextIO

from .. import _codec
from ..errors import InvalidAmount
from ..ledger import Ledger
from ..models import MAX_AMOUNT, Member, Pool, Role, Transfer
from ..rules import (
    MemberRemoval,
    PurchaseResult,
    ReversalResult,
    SetBalancesResult,
    SpendResult,
    TransferResult,
)
from .output import print_json
from .preview import print_preview

__all__ = ["OPERATIONS", "parse_amount"]

_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
_MAX_AMOUNT_DIGITS = len(str(MAX_AMOUNT))


def parse_amount(text: str, *, minimum: int = 1, field: str = "amount") -> int:
    """Return the whole number written in ``text``.

    Text that is not a decimal whole number raises the library's
    :class:`~coaching_credits.InvalidAmount`, so every bad amount reads the same. The range is
    left to the library, which rejects 0, negatives and numbers above the 64-bit limit.
    """
    if not _WHOLE_NUMBER.fullmatch(text):
        raise InvalidAmount(text, minimum=minimum, maximum=MAX_AMOUNT, field=field)
    # Counted before converting, because int() raises a plain ValueError above 4300 digits. A
    # number with more digits than the maximum is out of range whatever they are.
    if len(text.lstrip("+-").lstrip("0")) > _MAX_AMOUNT_DIGITS:
        raise InvalidAmount(text, minimum=minimum, maximum=MAX_AMOUNT, field=field)
    return int(text)


def _emit(
    args: argparse.Namespace,
    ledger: Ledger,
    stdout: TextIO,
    text: str,
    result: dict[str, Any],
) -> None:
    replayed = ledger.last_call_replayed
    if args.format == "json":
        print_json({"op": args.command, "replayed": replayed, "result": result}, stdout)
        return
    if replayed:
        text = f"replayed key {args.key!r}, nothing changed: {text}"
    print(text, file=stdout)


def _credits(amount: int) -> str:
    return f"{amount} credit" if amount == 1 else f"{amount} credits"


def _metadata(args: argparse.Namespace) -> dict[str, str] | None:
    # The parser has already rejected a key given twice.
    return dict(args.metadata) if args.metadata else None


def run_purchase(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    result: PurchaseResult = ledger.purchase(
        args.workspace,
        parse_amount(args.amount),
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    text = (
        f"purchased {_credits(result.transfer.amount)} for workspace {args.workspace}; "
        f"pool {result.pool.balance}"
    )
    _emit(args, ledger, stdout, text, _transfer_result(result.pool, None, [result.transfer]))


def run_transfer_to(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    if args.preview:
        preview = ledger.preview_transfer_to(
            args.workspace,
            args.member,
            parse_amount(args.amount),
            actor=args.actor,
            reason=args.reason,
            metadata=_metadata(args),
        )
        print_preview(args, ledger, preview, [preview.result.transfer], stdout)
        return

    result: TransferResult = ledger.transfer_to(
        args.workspace,
        args.member,
        parse_amount(args.amount),
        actor=args.actor,
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    text = (
        f"transferred {_credits(result.transfer.amount)} from the pool to {result.member.id}; "
        f"pool {result.pool.balance}, {result.member.id} {result.member.balance}"
    )
    _emit(
        args, ledger, stdout, text, _transfer_result(result.pool, result.member, [result.transfer])
    )


def run_transfer_from(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    if args.preview:
        preview = ledger.preview_transfer_from(
            args.workspace,
            args.member,
            parse_amount(args.amount),
            actor=args.actor,
            reason=args.reason,
            metadata=_metadata(args),
        )
        print_preview(args, ledger, preview, [preview.result.transfer], stdout)
        return

    result: TransferResult = ledger.transfer_from(
        args.workspace,
        args.member,
        parse_amount(args.amount),
        actor=args.actor,
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    text = (
        f"transferred {_credits(result.transfer.amount)} from {result.member.id} to the pool; "
        f"pool {result.pool.balance}, {result.member.id} {result.member.balance}"
    )
    _emit(
        args, ledger, stdout, text, _transfer_result(result.pool, result.member, [result.transfer])
    )


def run_set_balances(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    if args.preview:
        preview = ledger.preview_set_balances(
            args.workspace,
            args.members,
            parse_amount(args.balance, minimum=0, field="balance"),
            actor=args.actor,
            reason=args.reason,
            metadata=_metadata(args),
        )
        print_preview(args, ledger, preview, preview.result.transfers, stdout)
        return

    result: SetBalancesResult = ledger.set_balances(
        args.workspace,
        args.members,
        parse_amount(args.balance, minimum=0, field="balance"),
        actor=args.actor,
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    balance = result.members[0].balance if result.members else args.balance
    text = (
        f"set {len(result.members)} members to {balance} "
        f"({len(result.transfers)} changed, net {result.net_change:+d} from the pool); "
        f"pool {result.pool.balance}"
    )
    payload = {
        "pool": result.pool.balance,
        "members": [_codec.member_to_dict(m) for m in result.members],
        "transfers": [_codec.transfer_to_dict(t) for t in result.transfers],
    }
    _emit(args, ledger, stdout, text, payload)


def run_spend(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    result: SpendResult = ledger.spend(
        args.workspace,
        args.member,
        parse_amount(args.amount),
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    text = (
        f"{result.member.id} spent {_credits(result.transfer.amount)}; "
        f"{result.member.id} {result.member.balance}"
    )
    _emit(args, ledger, stdout, text, _transfer_result(None, result.member, [result.transfer]))


def run_add_member(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    member = ledger.add_member(
        args.workspace,
        args.member,
        role=Role(args.role),
        actor=args.actor,
        idempotency_key=args.key,
    )
    text = f"added {member.role.value} {member.id} to workspace {member.workspace_id}"
    _emit(args, ledger, stdout, text, {"member": _codec.member_to_dict(member)})


def run_remove_member(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    result: MemberRemoval = ledger.remove_member(
        args.workspace,
        args.member,
        actor=args.actor,
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    text = (
        f"removed {result.member.id} from workspace {args.workspace}; "
        f"returned {_credits(result.transfer.amount)} to the pool; pool {result.pool.balance}"
    )
    _emit(
        args, ledger, stdout, text, _transfer_result(result.pool, result.member, [result.transfer])
    )


def run_set_coaching(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    workspace = ledger.set_coaching(
        args.workspace, args.state == "on", actor=args.actor, idempotency_key=args.key
    )
    state = "enabled" if workspace.coaching_enabled else "disabled"
    text = f"coaching is {state} for workspace {workspace.id}"
    _emit(args, ledger, stdout, text, {"workspace": _codec.workspace_to_dict(workspace)})


def run_reverse(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    result: ReversalResult = ledger.reverse(
        args.workspace,
        args.transfer,
        actor=args.actor,
        idempotency_key=args.key,
        reason=args.reason,
        metadata=_metadata(args),
    )
    entry = result.transfer
    text = (
        f"reversed transfer {args.transfer}: recorded {entry.kind.value} {entry.id} "
        f"of {_credits(entry.amount)}; pool {result.pool.balance}"
    )
    if result.member is not None:
        text += f", {result.member.id} {result.member.balance}"
    _emit(args, ledger, stdout, text, _transfer_result(result.pool, result.member, [entry]))


def run_set_low_pool_threshold(args: argparse.Namespace, ledger: Ledger, stdout: TextIO) -> None:
    workspace = ledger.set_low_pool_threshold(
        args.workspace,
        parse_amount(args.threshold, minimum=0, field="threshold"),
        actor=args.actor,
        idempotency_key=args.key,
    )
    text = (
        f"the pool of workspace {workspace.id} now counts as low below "
        f"{_credits(workspace.low_pool_threshold)}"
    )
    _emit(args, ledger, stdout, text, {"workspace": _codec.workspace_to_dict(workspace)})


def _transfer_result(
    pool: Pool | None, member: Member | None, transfers: Sequence[Transfer]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if pool is not None:
        result["pool"] = pool.balance
    if member is not None:
        result["member"] = _codec.member_to_dict(member)
    result["transfers"] = [_codec.transfer_to_dict(t) for t in transfers]
    return result


#: Command name to function, for the commands that run one ledger operation.
OPERATIONS = {
    "purchase": run_purchase,
    "transfer-to": run_transfer_to,
    "transfer-from": run_transfer_from,
    "set-balances": run_set_balances,
    "spend": run_spend,
    "add-member": run_add_member,
    "remove-member": run_remove_member,
    "set-coaching": run_set_coaching,
    "reverse": run_reverse,
    "set-low-pool-threshold": run_set_low_pool_threshold,
}
