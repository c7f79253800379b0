"""Encode write results for idempotency records, and decode them when a call is replayed."""

from __future__ import annotations

from typing import Any

from . import _codec
from .rules import (
    MemberRemoval,
    PurchaseResult,
    ReversalResult,
    SetBalancesResult,
    SpendResult,
    TransferResult,
)


def encode_transfer(result: TransferResult) -> dict[str, Any]:
    return {
        "pool": _codec.pool_to_dict(result.pool),
        "member": _codec.member_to_dict(result.member),
        "transfer": _codec.transfer_to_dict(result.transfer),
    }


def decode_transfer(data: dict[str, Any]) -> TransferResult:
    return TransferResult(
        pool=_codec.pool_from_dict(data["pool"]),
        member=_codec.member_from_dict(data["member"]),
        transfer=_codec.transfer_from_dict(data["transfer"]),
    )


def encode_removal(result: MemberRemoval) -> dict[str, Any]:
    return encode_transfer(result)  # type: ignore[arg-type]


def decode_removal(data: dict[str, Any]) -> MemberRemoval:
    return MemberRemoval(
        pool=_codec.pool_from_dict(data["pool"]),
        member=_codec.member_from_dict(data["member"]),
        transfer=_codec.transfer_from_dict(data["transfer"]),
    )


def encode_purchase(result: PurchaseResult) -> dict[str, Any]:
    return {
        "pool": _codec.pool_to_dict(result.pool),
        "transfer": _codec.transfer_to_dict(result.transfer),
    }


def decode_purchase(data: dict[str, Any]) -> PurchaseResult:
    return PurchaseResult(
        pool=_codec.pool_from_dict(data["pool"]),
        transfer=_codec.transfer_from_dict(data["transfer"]),
    )


def encode_spend(result: SpendResult) -> dict[str, Any]:
    return {
        "member": _codec.member_to_dict(result.member),
        "transfer": _codec.transfer_to_dict(result.transfer),
    }


def decode_spend(data: dict[str, Any]) -> SpendResult:
    return SpendResult(
        member=_codec.member_from_dict(data["member"]),
        transfer=_codec.transfer_from_dict(data["transfer"]),
    )


def encode_set_balances(result: SetBalancesResult) -> dict[str, Any]:
    return {
        "pool": _codec.pool_to_dict(result.pool),
        "members": [_codec.member_to_dict(m) for m in result.members],
        "transfers": [_codec.transfer_to_dict(t) for t in result.transfers],
    }


def decode_set_balances(data: dict[str, Any]) -> SetBalancesResult:
    return SetBalancesResult(
        pool=_codec.pool_from_dict(data["pool"]),
        members=tuple(_codec.member_from_dict(m) for m in data["members"]),
        transfers=tuple(_codec.transfer_from_dict(t) for t in data["transfers"]),
    )


def encode_reversal(result: ReversalResult) -> dict[str, Any]:
    return {
        "pool": _codec.pool_to_dict(result.pool),
        "member": None if result.member is None else _codec.member_to_dict(result.member),
        "transfer": _codec.transfer_to_dict(result.transfer),
    }


def decode_reversal(data: dict[str, Any]) -> ReversalResult:
    member = data["member"]
    return ReversalResult(
        pool=_codec.pool_from_dict(data["pool"]),
        member=None if member is None else _codec.member_from_dict(member),
        transfer=_codec.transfer_from_dict(data["transfer"]),
    )
