"""The ``apply`` command: run each line of a JSON lines file through the ledger.

Each line is one operation, applied in file order, by default one transaction per line and
with ``--batch-size N`` N lines per transaction. A rejected or malformed line changes nothing
and the file goes on with the next line.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, TextIO

import attrs

from .._batch import Operation, Outcome
from ..errors import ConcurrencyConflict, StorageError
from ..ledger import Ledger
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
# The library checks the entries of a metadata object: strings only, bounded in number and size.
_OBJECT = "a JSON object"

_COMMON_REQUIRED = {"op": _STRING, "workspace": _STRING}
_COMMON_OPTIONAL = {"key": _STRING, "at": _STRING}

# The optional note that every operation with a journal entry stores on its transfers.
_NOTE = {"reason": _STRING, "metadata": _OBJECT}

# op -> (required fields, optional fields), besides the common ones.
_FIELDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "purchase": ({"amount": _ANY}, _NOTE),
    "transfer_to": ({"actor": _STRING, "member": _STRING, "amount": _ANY}, _NOTE),
    "transfer_from": ({"actor": _STRING, "member": _STRING, "amount": _ANY}, _NOTE),
    "set_balances": ({"actor": _STRING, "members": _STRINGS, "balance": _ANY}, _NOTE),
    "spend": ({"member": _STRING, "amount": _ANY}, _NOTE),
    "add_member": ({"member": _STRING}, {"actor": _STRING, "role": _STRING}),
    "remove_member": ({"actor": _STRING, "member": _STRING}, _NOTE),
    "set_coaching": ({"actor": _STRING, "enabled": _BOOLEAN}, {}),
}


def _has_kind(value: object, kind: str) -> bool:
    if kind == _STRING:
        return isinstance(value, str)
    if kind == _STRINGS:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == _BOOLEAN:
        return isinstance(value, bool)
    if kind == _OBJECT:
        return isinstance(value, dict)
    return True


#: Maximum digits of a JSON integer that is converted to an int. It is far above the 19 digits
#: of the largest amount, so the library still shows such numbers in full. It is far below the
#: 4300 digits above which int() raises ValueError (the default of sys.set_int_max_str_digits
#: since Python 3.11 and 3.10.7).
_MAX_INTEGER_DIGITS = 100


@attrs.frozen
class _LongInteger:
    """A JSON integer with more than :data:`_MAX_INTEGER_DIGITS` digits, left unconverted.

    It is not an ``int``, so the library rejects it as an amount with ``InvalidAmount``, as it
    rejects any number above the 64-bit limit, and a field that expects a string or a boolean
    reports it as malformed.
    """

    digits: str

    def __repr__(self) -> str:
        return f"{self.digits[:10]}...({len(self.digits.lstrip('-'))} digits)"


def _integer(text: str) -> int | _LongInteger:
    # JSON allows no leading zeros, so the digit count is the number's size.
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        return _LongInteger(text)
    return int(text)


def _parse_line(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _MalformedLine(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        line = json.loads(text, parse_int=_integer)
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


_NOTE_ARGUMENTS = {"reason": "reason", "metadata": "metadata"}

# Line field -> Ledger parameter name, for the fields each op passes on besides the common ones.
_ARGUMENTS: dict[str, dict[str, str]] = {
    "purchase": {"amount": "amount", **_NOTE_ARGUMENTS},
    "transfer_to": {"member": "member_id", "amount": "amount", "actor": "actor", **_NOTE_ARGUMENTS},
    "transfer_from": {
        "member": "member_id",
        "amount": "amount",
        "actor": "actor",
        **_NOTE_ARGUMENTS,
    },
    "set_balances": {
        "members": "member_ids",
        "balance": "balance",
        "actor": "actor",
        **_NOTE_ARGUMENTS,
    },
    "spend": {"member": "member_id", "amount": "amount", **_NOTE_ARGUMENTS},
    # The ledger parses the role text and rejects an unknown role with InvalidRequest.
    "add_member": {"member": "member_id", "role": "role", "actor": "actor"},
    "remove_member": {"member": "member_id", "actor": "actor", **_NOTE_ARGUMENTS},
    "set_coaching": {"enabled": "enabled", "actor": "actor"},
}


def _operation(line: dict[str, Any]) -> Operation:
    """Return the ledger operation of a line that :func:`_parse_line` accepted."""
    required, _ = _FIELDS[line["op"]]
    # Required fields pass on as given, null included, so the ledger rejects a null amount;
    # an optional field that is null counts as absent.
    arguments = {
        parameter: line[field]
        for field, parameter in _ARGUMENTS[line["op"]].items()
        if field in required or line.get(field) is not None
    }
    if line["op"] == "add_member" and not line.get("role"):
        # An empty role counts as absent: the member joins with the default role.
        arguments.pop("role", None)
    return Operation(line["op"], line["workspace"], arguments, line.get("key"))


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


@attrs.frozen
class _Line:
    """One non-blank line: its operation, or the reason it is malformed."""

    number: int
    operation: Operation | None = None
    malformed: str = ""


def apply_lines(
    ledger: Ledger,
    source: IO[bytes],
    *,
    stderr: TextIO,
    verbose: bool,
    total_bytes: int | None,
    report: Callable[[str], None],
    batch_size: int = 1,
) -> ApplySummary:
    """Apply every line of ``source`` and return the outcome counts.

    ``batch_size`` lines are applied per transaction with :meth:`Ledger.apply_batch`;
    malformed lines are counted under :data:`MALFORMED_LINE` and skipped without counting
    towards a batch. With ``verbose``, each line's outcome is printed on ``stderr``; without
    it, ``report`` prints a warning line for each malformed line. A progress bar is drawn on
    ``stderr`` only when it is a terminal, the size is known and ``verbose`` is off.
    """
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"invalid batch size {batch_size!r}: expected an int of at least 1")
    summary = ApplySummary()
    progress = None
    if total_bytes is not None and not verbose and stderr.isatty():
        progress = _ProgressBar(stderr, total_bytes)
    done_bytes = 0
    pending: list[_Line] = []
    operations = 0

    def flush() -> None:
        nonlocal operations
        for line, outcome in _apply_pending(ledger, pending, summary):
            if verbose:
                print(f"line {line.number}: {outcome}", file=stderr)
            elif line.operation is None:
                # Without --verbose only malformed lines are reported; with it, the outcome
                # line above already names the reason, so it is not printed twice.
                report(f"line {line.number}: malformed line skipped: {line.malformed}")
        pending.clear()
        operations = 0
        if progress is not None:
            progress.update(done_bytes, summary.lines)

    try:
        for number, raw in enumerate(source, start=1):
            done_bytes += len(raw)
            if not raw.strip():
                continue
            summary.lines += 1
            try:
                pending.append(_Line(number, operation=_operation(_parse_line(raw))))
                operations += 1
            except _MalformedLine as error:
                pending.append(_Line(number, malformed=str(error)))
            if operations >= batch_size:
                flush()
        flush()
        if progress is not None:
            progress.update(done_bytes, summary.lines, force=True)
    finally:
        if progress is not None:
            progress.clear()
    return summary


def _apply_pending(
    ledger: Ledger, pending: list[_Line], summary: ApplySummary
) -> list[tuple[_Line, str]]:
    """Apply the pending lines' operations in one batch; return each line's outcome text."""
    batch = [(line.number, line.operation) for line in pending if line.operation is not None]
    outcomes: dict[int, Outcome] = {}
    if batch:
        operations = [operation for _, operation in batch]
        try:
            results = ledger.apply_batch(operations)
        except (StorageError, ConcurrencyConflict) as error:
            # The whole batch rolled back: each of its lines is rejected with that error, as
            # a single line would be, and the file goes on with the next batch.
            results = [Outcome(operation, "rejected", error=error) for operation in operations]
        except driver_errors() as error:
            raise CommandError(
                f"lines {batch[0][0]} to {batch[-1][0]}: storage failed ({error}); the lines "
                f"before them were applied, so fix the database and apply the file again "
                f"(keyed lines replay)"
            ) from error
        outcomes = {number: outcome for (number, _), outcome in zip(batch, results, strict=True)}

    texts = []
    for line in pending:
        if line.operation is None:
            summary.rejected[MALFORMED_LINE] += 1
            texts.append((line, f"rejected {MALFORMED_LINE}: {line.malformed}"))
        else:
            texts.append((line, _count(outcomes[line.number], summary)))
    return texts


def _count(outcome: Outcome, summary: ApplySummary) -> str:
    """Add ``outcome`` to ``summary`` and return its ``--verbose`` text."""
    key = outcome.operation.idempotency_key
    label = outcome.operation.op if key is None else f"{outcome.operation.op} key {key!r}"
    if outcome.status == "rejected":
        name = type(outcome.error).__name__
        summary.rejected[name] += 1
        return f"{label}: rejected {name}: {outcome.error}"
    if outcome.status == "replayed":
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
