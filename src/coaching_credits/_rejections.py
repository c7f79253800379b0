"""Store and rebuild the errors of rejected keyed calls.

A keyed call that the rules reject stores its error beside the request, so an identical resend
raises the same error again instead of being checked against a later state. Errors raised
before the workspace is locked (malformed input) are not stored: they repeat by themselves.
"""

from __future__ import annotations

import json
from typing import Any

from . import errors
from .errors import (
    AlreadyReversed,
    CoachingDisabled,
    CreditError,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberAlreadyExists,
    MemberNotFound,
    NotReversible,
    PermissionDenied,
    TransferNotFound,
)

#: Rejections that depend on the state at the time of the call. ``WorkspaceNotFound`` is not
#: here because its key has no workspace to live in, nor are ``IdempotencyConflict`` and
#: ``ConcurrencyConflict``, which are about the key or the timing, not the request itself.
REMEMBERED: tuple[type[CreditError], ...] = (
    AlreadyReversed,
    CoachingDisabled,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberAlreadyExists,
    MemberNotFound,
    NotReversible,
    PermissionDenied,
    TransferNotFound,
)

_REPLAYED_FLAG = "_coaching_credits_replayed"


def encode(error: CreditError) -> str:
    """Return JSON text with the error's class, message and JSON-compatible attributes."""
    facts = {}
    for name, value in vars(error).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        facts[name] = value
    return json.dumps(
        {"error": type(error).__name__, "message": str(error), "facts": facts},
        sort_keys=True,
    )


def decode(text: str) -> CreditError:
    """Rebuild an error stored by :func:`encode`, marked as replayed."""
    data: dict[str, Any] = json.loads(text)
    error_type = getattr(errors, data["error"], None)
    if not (isinstance(error_type, type) and issubclass(error_type, CreditError)):
        raise ValueError(f"stored rejection names an unknown error {data['error']!r}")
    error = error_type.__new__(error_type)
    Exception.__init__(error, data["message"])
    vars(error).update(data["facts"])
    setattr(error, _REPLAYED_FLAG, True)
    return error


def is_replayed(error: BaseException) -> bool:
    """Return whether ``error`` was rebuilt from a stored rejection rather than raised afresh."""
    return bool(getattr(error, _REPLAYED_FLAG, False))
