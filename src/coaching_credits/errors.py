"""The exceptions that coaching-credits raises on purpose.

Every one derives from :class:`CreditError`, keeps the facts of the failure as attributes and
builds its message from them::

    CreditError
    +-- InvalidAmount (also ValueError)
    +-- InvalidRequest (also ValueError)
    +-- InsufficientCredits
    +-- PermissionDenied
    +-- CoachingDisabled
    +-- WorkspaceNotFound (also LookupError)
    +-- MemberNotFound (also LookupError)
    +-- TransferNotFound (also LookupError)
    +-- WorkspaceAlreadyExists
    +-- MemberAlreadyExists
    +-- IdempotencyConflict
    +-- ConcurrencyConflict
    +-- StorageError
    +-- AlreadyReversed
    +-- NotReversible

Storage backends translate their driver's errors into these, so every backend raises the same
error for the same fault.
"""

from __future__ import annotations

import json
from collections.abc import Sized
from typing import Any

__all__ = [
    "AlreadyReversed",
    "CoachingDisabled",
    "ConcurrencyConflict",
    "CreditError",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidRequest",
    "MemberAlreadyExists",
    "MemberNotFound",
    "NotReversible",
    "PermissionDenied",
    "StorageError",
    "TransferNotFound",
    "WorkspaceAlreadyExists",
    "WorkspaceNotFound",
]


class CreditError(Exception):
    """Root of every error the library raises on purpose."""


def _shown(value: object, limit: int = 80) -> str:
    """Return ``repr(value)``, cut to about ``limit`` characters so messages stay one line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"{len(value)} characters"
    elif isinstance(value, Sized):
        size = f"{len(value)} items"
    else:
        size = f"{len(text)} characters as text"
    return f"{text[: limit - 15]}... ({size})"


class InvalidAmount(CreditError, ValueError):
    """An amount or balance that is not a whole number in the allowed range.

    Amounts are ``int`` and nothing else: ``bool``, ``float``, ``Decimal`` and ``str`` are
    rejected, and so is anything outside ``minimum`` .. ``maximum``.
    """

    def __init__(self, value: object, *, minimum: int, maximum: int, field: str = "amount") -> None:
        self.value = value
        self.minimum = minimum
        self.maximum = maximum
        self.field = field
        if maximum < minimum:
            expected = f"no {field} fits, because the balance is at the limit of {MAX_INT64}"
        else:
            expected = f"expected an int from {minimum} to {maximum}"
        super().__init__(f"invalid {field} {_shown(value)}: {expected}")


class InvalidRequest(CreditError, ValueError):
    """A request that is malformed in a way other than its amount, such as a duplicated id."""

    def __init__(self, message: str, *, value: object = None) -> None:
        self.value = value
        super().__init__(message)


class InsufficientCredits(CreditError):
    """The pool, or a member's balance, has fewer credits than a change needs.

    ``member_id`` is ``None`` when the pool is short.
    """

    def __init__(
        self,
        *,
        workspace_id: str,
        requested: int,
        available: int,
        member_id: str | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.member_id = member_id
        self.requested = requested
        self.available = available
        if member_id is None:
            message = (
                f"insufficient credits in the pool of workspace {workspace_id!r}: "
                f"{requested} requested, {available} available; "
                f"purchase at least {requested - available} more credits first"
            )
        else:
            message = (
                f"insufficient credits for member {member_id!r} of workspace {workspace_id!r}: "
                f"{requested} requested, {available} available; an admin must transfer at "
                f"least {requested - available} more credits to the member first"
            )
        super().__init__(message)


class PermissionDenied(CreditError):
    """The acting member is not an admin of the workspace.

    ``is_member`` is ``False`` when the actor id is not a member of the workspace at all.
    """

    def __init__(
        self, *, workspace_id: str, actor_id: str, action: str, is_member: bool = True
    ) -> None:
        self.workspace_id = workspace_id
        self.actor_id = actor_id
        self.action = action
        self.is_member = is_member
        what = "an admin" if is_member else "a member"
        super().__init__(
            f"permission denied: {actor_id!r} is not {what} of workspace {workspace_id!r} "
            f"and cannot {action}; ask an admin of the workspace to do it"
        )


class CoachingDisabled(CreditError):
    """Coaching is switched off for the workspace, so credits cannot move or be spent."""

    def __init__(self, *, workspace_id: str, action: str) -> None:
        self.workspace_id = workspace_id
        self.action = action
        super().__init__(
            f"coaching is disabled for workspace {workspace_id!r}, so it cannot {action}; "
            f"an admin must enable coaching first"
        )


class WorkspaceNotFound(CreditError, LookupError):
    """No workspace with this id exists."""

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        super().__init__(f"workspace {workspace_id!r} not found; create it first or check the id")


class MemberNotFound(CreditError, LookupError):
    """The member id is not a member of this workspace (another workspace may have it)."""

    def __init__(self, *, workspace_id: str, member_id: str) -> None:
        self.workspace_id = workspace_id
        self.member_id = member_id
        super().__init__(
            f"member {member_id!r} not found in workspace {workspace_id!r}; "
            f"add the member first or check the id"
        )


class WorkspaceAlreadyExists(CreditError):
    """A workspace with this id exists already."""

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        super().__init__(f"workspace {workspace_id!r} already exists; choose another id")


class MemberAlreadyExists(CreditError):
    """The member id is already a member of this workspace."""

    def __init__(self, *, workspace_id: str, member_id: str) -> None:
        self.workspace_id = workspace_id
        self.member_id = member_id
        super().__init__(f"member {member_id!r} already exists in workspace {workspace_id!r}")


class IdempotencyConflict(CreditError):
    """An idempotency key was used before in this workspace for a different request."""

    def __init__(
        self,
        *,
        workspace_id: str,
        key: str,
        original: dict[str, Any] | None = None,
        request: dict[str, Any] | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.key = key
        self.original = original
        self.request = request
        super().__init__(
            f"idempotency key {key!r} of workspace {workspace_id!r} was already used for a "
            f"different request: {_canonical(original)} was stored, {_canonical(request)} "
            f"was sent; send a different request with a new key"
        )


class ConcurrencyConflict(CreditError):
    """Concurrent writers kept conflicting and the ledger ran out of retries."""

    def __init__(self, *, workspace_id: str, attempts: int, cause: str = "") -> None:
        self.workspace_id = workspace_id
        self.attempts = attempts
        self.cause = cause
        detail = f": {cause}" if cause else ""
        super().__init__(
            f"gave up on workspace {workspace_id!r} after {attempts} attempts that conflicted "
            f"with concurrent writers{detail}; retry the call later"
        )


class TransferNotFound(CreditError, LookupError):
    """No journal entry with this id exists in the workspace (another workspace may have it)."""

    def __init__(self, *, workspace_id: str, transfer_id: str) -> None:
        self.workspace_id = workspace_id
        self.transfer_id = transfer_id
        super().__init__(
            f"transfer {transfer_id!r} not found in workspace {workspace_id!r}; "
            f"look the id up in the workspace's history"
        )


class AlreadyReversed(CreditError):
    """The transfer was reversed before; a transfer can be reversed only once."""

    def __init__(self, *, workspace_id: str, transfer_id: str, reversal_id: str) -> None:
        self.workspace_id = workspace_id
        self.transfer_id = transfer_id
        self.reversal_id = reversal_id
        super().__init__(
            f"transfer {transfer_id!r} of workspace {workspace_id!r} was already reversed by "
            f"transfer {reversal_id!r}; a transfer can be reversed only once, so make a new "
            f"transfer to correct it further"
        )


class NotReversible(CreditError):
    """The transfer's kind or history does not allow a reversal, as ``why`` explains."""

    def __init__(self, *, workspace_id: str, transfer_id: str, kind: str, why: str) -> None:
        self.workspace_id = workspace_id
        self.transfer_id = transfer_id
        self.kind = kind
        self.why = why
        super().__init__(
            f"transfer {transfer_id!r} ({kind}) of workspace {workspace_id!r} cannot be "
            f"reversed: {why}"
        )


class StorageError(CreditError):
    """The database failed in a way that retrying the same step will not fix.

    ``sqlstate`` is the five-character SQL error code where the database reports one
    (PostgreSQL), or ``None`` (SQLite, or a failure before the server responded, such as a
    refused connection).
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


def _canonical(request: dict[str, Any] | None) -> str:
    """Return a request as JSON with sorted keys, so two requests read side by side."""
    if request is None:
        return "an unknown request"
    text = json.dumps(request, sort_keys=True, default=repr)
    return text if len(text) <= 300 else f"{text[:285]}... ({len(text)} characters)"


#: The largest value a signed 64-bit integer holds; amounts and balances stop there.
MAX_INT64 = 2**63 - 1
