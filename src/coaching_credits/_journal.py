"""Reads of the journal inside one transaction: history pages and past balances.

The ledger checks the arguments here before it opens a transaction, so a bad argument never
reaches a backend.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta, timezone

from .errors import CreditError, InvalidRequest, MemberNotFound
from .models import MAX_AMOUNT, Transfer, TransferKind
from .repository._protocol import Transaction

#: Python's ``datetime`` resolution. Both SQL backends keep transfer times to the
#: microsecond, so "earlier than ``at`` plus one tick" is "at or before ``at``".
_TICK = timedelta(microseconds=1)


def check_moment(value: object, name: str) -> datetime:
    """Return ``value`` if it is a timezone-aware ``datetime``, else raise ``InvalidRequest``.

    Naive times are rejected because the journal stores aware times and comparing the two
    would depend on the backend.
    """
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidRequest(
            f"invalid {name} {value!r}: expected a datetime with a time zone, "
            f"such as datetime.now(timezone.utc)",
            value=value,
        )
    try:
        # Backends compare times in UTC; a time near datetime.min or max has no UTC value.
        value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidRequest(
            f"invalid {name} {value!r}: it cannot be converted to UTC; use a time between "
            f"the years 1 and 9999 in UTC",
            value=value,
        ) from None
    return value


def check_kinds(kinds: object) -> frozenset[TransferKind] | None:
    """Return ``kinds`` as a set of :class:`TransferKind`, accepting their string values."""
    if kinds is None:
        return None
    if isinstance(kinds, str) or not isinstance(kinds, Collection):
        raise InvalidRequest(
            f"invalid kinds {kinds!r}: expected a collection of transfer kinds", value=kinds
        )
    parsed = set()
    for kind in kinds:
        try:
            parsed.add(TransferKind(kind))
        except ValueError:
            known = ", ".join(k.value for k in TransferKind)
            raise InvalidRequest(
                f"invalid transfer kind {kind!r}: expected one of {known}", value=kind
            ) from None
    return frozenset(parsed)


def check_cursor(before: object) -> int | None:
    """Return ``before`` if it is ``None`` or a positive ``int`` sequence number."""
    if before is not None and (type(before) is not int or not 1 <= before <= MAX_AMOUNT):
        raise InvalidRequest(
            f"invalid cursor {before!r}: expected the sequence of the last entry of the "
            f"previous page, a positive int",
            value=before,
        )
    return before


def require_known_member(tx: Transaction, workspace_id: str, member_id: str) -> None:
    """Raise :class:`MemberNotFound` unless ``member_id`` is a member or has journal entries.

    A removed member keeps their entries, so their history stays readable.
    """
    if tx.get_members(workspace_id, [member_id]):
        return
    if tx.list_transfers(workspace_id, member_id=member_id, limit=1):
        return
    raise MemberNotFound(workspace_id=workspace_id, member_id=member_id)


def balance_at(tx: Transaction, workspace_id: str, at: datetime, member_id: str | None) -> int:
    """Return the pool's balance, or a member's, right after the last entry at or before ``at``.

    Each entry records the balances right after it, so one entry is enough. Before the first
    entry every balance is 0.
    """
    # NOTE: "last" means the highest sequence among entries stamped at or before ``at``. It
    # matches time order as long as the ledger's clock never runs backwards.
    try:
        until: datetime | None = at + _TICK
    except OverflowError:
        until = None  # ``at`` is the latest time a datetime can hold, so every entry counts
    latest = tx.list_transfers(workspace_id, member_id=member_id, until=until, limit=1)
    if not latest:
        return 0
    entry = latest[0]
    balance = entry.pool_balance if member_id is None else entry.member_balance
    if balance is None:
        raise _missing_balance(entry, "pool" if member_id is None else "member")
    return balance


def _missing_balance(entry: Transfer, which: str) -> CreditError:
    return CreditError(
        f"journal entry {entry.id!r} of workspace {entry.workspace_id!r} has no {which} "
        f"balance recorded, so the balance at its time cannot be read from the journal; "
        f"run an audit of the workspace"
    )
