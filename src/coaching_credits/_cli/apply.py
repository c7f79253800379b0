"""The ``apply`` command: run each line of a JSON lines file through the ledger.

Each line is one operation, applied in its own transaction in file order. A rejected or
malformed line changes nothing and the file goes on with the next line.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, TextIO, cast

import attrs

from ..errors import CreditError
from ..ledger import Ledger
from ..models import Role
from .database import CommandError, driver_errors
from .output import print_json

__all__ = ["MALFORMED_LINE", "ApplySummary", "apply_lines", "file_size", "print_summary"]

#: The name malformed lines are counted under in the summary's ``rejected`` counts.
MALFORMED_LINE = "MalformedLine"


@attrs.define
class ApplySummary:
    """Outcome counts of one ``apply`` run."""

    lines: int = 0
    applied: int = 0
    replayed: int = 0
    rejected: Counter[str] = attrs.Factory(Counter)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape of ``apply --format json``."""
        return {
            "applied": self.applied,
            "replayed": self.replayed,
            "rejected": dict(sorted(self.rejected.items())),
        }


class _MalformedLine(Exception):
    """A line that is not a well-formed operation; the message names the wrong part."""


# The expected kind of each field. Amount and balance fields may contain any JSON value because
# the library checks them, so `true`, `2.5` and `"3"` are rejected with InvalidAmount.
_STRING = "a string"
_ANY = "any value"
_STRINGS = "a list of strings"
_BOOLEAN = "true or false"

_COMMON_REQUIRED = {"op": _STRING, "workspace": _STRING}
_COMMON_OPTIONAL = {"key": _STRING, "at": _STRING}

# op -> (required fields, optional fields), besides the common ones.
_FIELDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "purchase": ({"amount": _ANY}, {"reason": _STRING}),
    "transfer_to": ({"actor": _STRING, "member": _STRING, "amount": _ANY}, {"reason": _STRING}),
    "transfer_from": ({"actor": _STRING, "member": _STRING, "amount": _ANY}, {"reason": _STRING}),
    "set_balances": (
        {"actor": _STRING, "members": _STRINGS, "balance": _ANY},
        {"reason": _STRING},
    ),
    "spend": ({"member": _STRING, "amount": _ANY}, {"reason": _STRING}),
    "add_member": ({"member": _STRING}, {"actor": _STRING, "role": _STRING}),
    "remove_member": ({"actor": _STRING, "member": _STRING}, {"reason": _STRING}),
    "set_coaching": ({"actor": _STRING, "enabled": _BOOLEAN}, {}),
}


def _has_kind(value: object, kind: str) -> bool:
    if kind == _STRING:
        return isinstance(value, str)
    if kind == _STRINGS:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == _BOOLEAN:
        return isinstance(value, bool)
    return True


def _parse_line(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _MalformedLine(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        line = json.loads(text)
    except json.JSONDecodeError as error:
        raise _MalformedLine(f"invalid JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(line, dict):
        raise _MalformedLine(f"expected a JSON object, got {type(line).__name__}")

    op = line.get("op")
    if not isinstance(op, str):
        raise _MalformedLine(f"missing or invalid field 'op' ({op!r}): expected {_STRING}")
    if op not in _FIELDS:
        raise _MalformedLine(f"unknown op {op!r}: expected one of {', '.join(sorted(_FIELDS))}")
    required, optional = _FIELDS[op]
    required = {**_COMMON_REQUIRED, **required}
    optional = {**_COMMON_OPTIONAL, **optional}

    for field, kind in required.items():
        if field not in line:
            raise _MalformedLine(f"{op}: missing field {field!r}")
        if not _has_kind(line[field], kind):
            raise _MalformedLine(f"{op}: field {field!r} is {line[field]!r}, expected {kind}")
    for field, kind in optional.items():
        # null counts as absent, so hosts may log "key": null for an unkeyed call.
        if line.get(field) is not None and not _has_kind(line[field], kind):
            raise _MalformedLine(f"{op}: field {field!r} is {line[field]!r}, expected {kind}")
    unexpected = sorted(set(line) - set(required) - set(optional))
    if unexpected:
        raise _MalformedLine(f"{op}: unexpected field {unexpected[0]!r}")
    return line


def _dispatch(ledger: Ledger, line: dict[str, Any]) -> None:
    op = line["op"]
    workspace = line["workspace"]
    key = line.get("key")
    reason = line.get("reason")
    if op == "purchase":
        ledger.purchase(workspace, line["amount"], idempotency_key=key, reason=reason)
    elif op == "transfer_to":
        ledger.transfer_to(
            workspace,
            line["member"],
            line["amount"],
            actor=line["actor"],
            idempotency_key=key,
            reason=reason,
        )
    elif op == "transfer_from":
        ledger.transfer_from(
            workspace,
            line["member"],
            line["amount"],
            actor=line["actor"],
            idempotency_key=key,
            reason=reason,
        )
    elif op == "set_balances":
        ledger.set_balances(
            workspace,
            line["members"],
            line["balance"],
            actor=line["actor"],
            idempotency_key=key,
            reason=reason,
        )
    elif op == "spend":
        ledger.spend(workspace, line["member"], line["amount"], idempotency_key=key, reason=reason)
    elif op == "add_member":
        # The ledger parses the role text and rejects an unknown role with InvalidRequest.
        role = cast(Role, line.get("role") or Role.MEMBER.value)
        ledger.add_member(
            workspace, line["member"], role=role, actor=line.get("actor"), idempotency_key=key
        )
    elif op == "remove_member":
        ledger.remove_member(
            workspace, line["member"], actor=line["actor"], idempotency_key=key, reason=reason
        )
    elif op == "set_coaching":
        ledger.set_coaching(workspace, line["enabled"], actor=line["actor"], idempotency_key=key)
    else:
        raise AssertionError(f"unreachable: _parse_line accepted op {op!r}")


class _ProgressBar:
    """A one-line progress bar redrawn on a terminal, at most ten times a second."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total_bytes: int) -> None:
        self._stream = stream
        self._total = max(total_bytes, 1)
        self._drawn_at = 0.0

    def update(self, done_bytes: int, lines: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        fraction = min(done_bytes / self._total, 1.0)
        filled = round(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(f"\r[{bar}] {fraction:4.0%} {lines} lines")
        self._stream.flush()

    def clear(self) -> None:
        self._stream.write("\r" + " " * (self.WIDTH + 30) + "\r")
        self._stream.flush()


def apply_lines(
    ledger: Ledger,
    source: IO[bytes],
    *,
    stderr: TextIO,
    verbose: bool,
    total_bytes: int | None,
    report: Callable[[str], None],
) -> ApplySummary:
    """Apply every line of ``source`` and return the outcome counts.

    ``report`` prints a warning line on stderr (malformed lines). A progress bar is drawn on
    ``stderr`` only when it is a terminal, the size is known and ``verbose`` is off.
    """
    summary = ApplySummary()
    progress = None
    if total_bytes is not None and not verbose and stderr.isatty():
        progress = _ProgressBar(stderr, total_bytes)
    done_bytes = 0
    storage_errors = driver_errors()

    try:
        for number, raw in enumerate(source, start=1):
            done_bytes += len(raw)
            if not raw.strip():
                continue
            summary.lines += 1
            outcome = _apply_one(ledger, number, raw, summary, storage_errors, report)
            if verbose:
                print(f"line {number}: {outcome}", file=stderr)
            if progress is not None:
                progress.update(done_bytes, summary.lines)
        if progress is not None:
            progress.update(done_bytes, summary.lines, force=True)
    finally:
        if progress is not None:
            progress.clear()
    return summary


def _apply_one(
    ledger: Ledger,
    number: int,
    raw: bytes,
    summary: ApplySummary,
    storage_errors: tuple[type[BaseException], ...],
    report: Callable[[str], None],
) -> str:
    try:
        line = _parse_line(raw)
    except _MalformedLine as error:
        summary.rejected[MALFORMED_LINE] += 1
        report(f"line {number}: malformed line skipped: {error}")
        return f"rejected {MALFORMED_LINE}: {error}"

    label = f"{line['op']} key {line.get('key')!r}"
    try:
        _dispatch(ledger, line)
    except CreditError as error:
        name = type(error).__name__
        summary.rejected[name] += 1
        return f"{label}: rejected {name}: {error}"
    except storage_errors as error:
        raise CommandError(
            f"line {number}: storage failed ({error}); the lines before it were applied, "
            f"so fix the database and apply the file again (keyed lines replay)"
        ) from error

    if ledger.last_call_replayed:
        summary.replayed += 1
        return f"{label}: replayed"
    summary.applied += 1
    return f"{label}: applied"


def print_summary(summary: ApplySummary, output_format: str, stdout: TextIO) -> None:
    """Print the outcome counts of an ``apply`` run."""
    if output_format == "json":
        print_json(summary.to_dict(), stdout)
        return
    rejected = sum(summary.rejected.values())
    print(
        f"{summary.lines} lines: {summary.applied} applied, {summary.replayed} replayed, "
        f"{rejected} rejected",
        file=stdout,
    )
    for name, count in sorted(summary.rejected.items()):
        print(f"  {name}: {count}", file=stdout)


def file_size(source: IO[bytes]) -> int | None:
    """Return the size of a regular file, or ``None`` for a pipe or terminal."""
    try:
        status = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    return status.st_size if status.st_size > 0 else None
