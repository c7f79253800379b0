"""Checks of the untrusted input of ledger calls, run before any transaction starts.

Values that no backend can store, or that would reach a driver as an error of its own, are
rejected here as :class:`~coaching_credits.InvalidRequest`, so every backend behaves alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequest, _shown
from .models import Role

#: Maximum length of an idempotency key, member id or workspace id, in characters.
MAX_KEY_LENGTH = 200
#: Maximum length of the ``reason`` text stored on a transfer, in characters.
MAX_REASON_LENGTH = 500
#: Maximum number of entries in a transfer's ``metadata``. Each key and value is at most
#: ``MAX_KEY_LENGTH`` characters long.
MAX_METADATA_ITEMS = 20


def is_storable(text: str) -> bool:
    """Return whether every backend can store ``text``: no NUL and valid UTF-8 when encoded.

    PostgreSQL text cannot hold NUL characters, and a lone surrogate has no UTF-8 encoding.
    """
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_valid_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_KEY_LENGTH and is_storable(value)


def check_id(value: object, name: str) -> None:
    if not is_valid_id(value):
        raise InvalidRequest(
            f"invalid {name} {_shown(value)}: expected a non-empty str of at most "
            f"{MAX_KEY_LENGTH} characters, without NUL characters or lone surrogates",
            value=value,
        )


def parse_role(role: object) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidRequest(
            f"invalid role {role!r}: expected 'admin' or 'member'", value=role
        ) from None


def check_note(reason: object, metadata: object) -> None:
    if reason is not None and (
        type(reason) is not str or len(reason) > MAX_REASON_LENGTH or not is_storable(reason)
    ):
        raise InvalidRequest(
            f"invalid reason {_shown(reason)}: expected a str of at most {MAX_REASON_LENGTH} "
            f"characters, without NUL characters or lone surrogates",
            value=reason,
        )
    if metadata is None:
        return
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_ITEMS:
        raise InvalidRequest(
            f"invalid metadata {_shown(metadata)}: expected a mapping of at most "
            f"{MAX_METADATA_ITEMS} str keys to str values",
            value=metadata,
        )
    for key, value in metadata.items():
        for text in (key, value):
            if type(text) is not str or len(text) > MAX_KEY_LENGTH or not is_storable(text):
                raise InvalidRequest(
                    f"invalid metadata entry {_shown(key)}: {_shown(value)}: keys and values "
                    f"must be str of at most {MAX_KEY_LENGTH} characters, without NUL "
                    f"characters or lone surrogates",
                    value=metadata,
                )


def note_request(reason: str | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    note: dict[str, Any] = {}
    if reason is not None:
        note["reason"] = reason
    if metadata:
        note["metadata"] = dict(metadata)
    return note
