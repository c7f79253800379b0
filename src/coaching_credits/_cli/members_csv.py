"""The ``import-members`` command: add the members listed in a CSV export.

The whole file is checked against the workspace's current members before anything is added,
so a file with a bad row adds no member. Members already in the workspace with the same role
are skipped, so importing an unchanged file again adds only the listed members that are not in
the workspace now, such as members removed since the last import.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import attrs

from ..errors import MemberAlreadyExists
from ..ledger import MAX_KEY_LENGTH, Ledger
from ..models import Role
from .database import CommandError
from .output import print_json

__all__ = ["REQUIRED_COLUMNS", "ImportResult", "import_members", "print_import_result"]

#: Columns the CSV file must have. ``display_name``, ``email`` and ``team`` may be present too;
#: they are checked but not stored, because the ledger keeps only ids, roles and balances.
REQUIRED_COLUMNS = ("member_id", "role")
_KNOWN_COLUMNS = ("member_id", "display_name", "email", "role", "team")
#: Bad rows listed one by one before the rest are only counted.
_MAX_LISTED_PROBLEMS = 20


@attrs.frozen
class MemberRow:
    """One valid row of the CSV file."""

    line: int
    member_id: str
    role: Role


@attrs.frozen
class ImportResult:
    """How many listed members were added and how many were in the workspace already."""

    workspace_id: str
    added: int
    already_present: int


def _check_row(row: dict[str, str], line: int) -> MemberRow | str:
    member_id = row["member_id"]
    if not member_id:
        return f"line {line}: member_id is empty"
    if member_id != member_id.strip():
        return f"line {line}: member_id {member_id!r} has leading or trailing spaces"
    if len(member_id) > MAX_KEY_LENGTH:
        return f"line {line}: member_id is longer than {MAX_KEY_LENGTH} characters"
    try:
        role = Role(row["role"])
    except ValueError:
        return (
            f"line {line}: invalid role {row['role']!r} for {member_id!r}: expected admin or member"
        )
    email = row.get("email") or ""
    local, at, domain = email.partition("@")
    if email and not (local and at and domain and "@" not in domain):
        return f"line {line}: invalid email {email!r} for {member_id!r}"
    return MemberRow(line=line, member_id=member_id, role=role)


def _with_article(role: Role) -> str:
    return f"an {role.value}" if role is Role.ADMIN else f"a {role.value}"


def _role_conflict(row: MemberRow, existing: Role, workspace_id: str) -> str:
    return (
        f"line {row.line}: {row.member_id!r} is already {_with_article(existing)} of workspace "
        f"{workspace_id!r}, but the file makes them {_with_article(row.role)}; remove the "
        f"member first to change the role"
    )


def read_member_rows(
    path: Path, workspace_id: str, existing: Mapping[str, Role]
) -> list[MemberRow]:
    """Read and check every row; raise :class:`CommandError` listing every bad row.

    ``existing`` maps the ids of the workspace's current members to their roles: a row that
    gives one of them another role is a bad row too.
    """
    problems: list[str] = []
    rows: list[MemberRow] = []
    first_line: dict[str, int] = {}
    try:
        # utf-8-sig drops the byte order mark that spreadsheet programs write.
        with path.open(encoding="utf-8-sig", newline="") as source:
            reader = csv.reader(source)
            header = next(reader, None)
            if header is None:
                raise CommandError(f"{path}: the file is empty; expected a header row")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CommandError(
                    f"{path} line 1: missing column {missing[0]!r}; expected the columns "
                    f"{','.join(_KNOWN_COLUMNS)}"
                )
            for fields in reader:
                line = reader.line_num
                if not any(field.strip() for field in fields):
                    continue
                if len(fields) != len(header):
                    problems.append(
                        f"line {line}: {len(fields)} fields, but the header has {len(header)}"
                    )
                    continue
                checked = _check_row(dict(zip(header, fields, strict=True)), line)
                if isinstance(checked, str):
                    problems.append(checked)
                    continue
                if checked.member_id in first_line:
                    problems.append(
                        f"line {line}: member_id {checked.member_id!r} is listed again "
                        f"(first on line {first_line[checked.member_id]})"
                    )
                    continue
                first_line[checked.member_id] = line
                role = existing.get(checked.member_id)
                if role is not None and role is not checked.role:
                    problems.append(_role_conflict(checked, role, workspace_id))
                    continue
                rows.append(checked)
    except UnicodeDecodeError as error:
        raise CommandError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None
    except csv.Error as error:
        raise CommandError(f"{path}: invalid CSV: {error}") from None
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None

    if problems:
        raise CommandError(_problem_message(path, problems))
    return rows


def _problem_message(path: Path, problems: Sequence[str]) -> str:
    listed = [f"{path} {p}" for p in problems[:_MAX_LISTED_PROBLEMS]]
    if len(problems) > _MAX_LISTED_PROBLEMS:
        listed.append(f"... and {len(problems) - _MAX_LISTED_PROBLEMS} more")
    count = len(problems)
    fix = "fix it" if count == 1 else "fix them"
    listed.append(
        f"{count} invalid {'row' if count == 1 else 'rows'} in {path}; nothing imported, "
        f"{fix} and rerun"
    )
    return "\n".join(listed)


def import_members(ledger: Ledger, workspace_id: str, path: Path) -> ImportResult:
    """Add every member of the CSV file that the workspace does not have yet."""
    # Read first, so a row that conflicts with a current member is listed with the other bad
    # rows in one run.
    existing = {m.id: m for m in ledger.members(workspace_id)}
    rows = read_member_rows(path, workspace_id, {i: m.role for i, m in existing.items()})

    added = 0
    already_present = 0
    for row in rows:
        if row.member_id in existing:
            already_present += 1
            continue
        try:
            ledger.add_member(workspace_id, row.member_id, role=row.role)
        except MemberAlreadyExists:
            # Another writer added the member since the list above was read.
            already_present += 1
            continue
        added += 1
    return ImportResult(workspace_id=workspace_id, added=added, already_present=already_present)


def print_import_result(result: ImportResult, output_format: str, stdout: TextIO) -> None:
    """Print how many members were added and how many were present already."""
    if output_format == "json":
        print_json(
            {
                "workspace": result.workspace_id,
                "added": result.added,
                "already_present": result.already_present,
            },
            stdout,
        )
        return
    members = "member" if result.added == 1 else "members"
    verb = "was" if result.already_present == 1 else "were"
    print(
        f"imported {result.added} {members} into workspace {result.workspace_id}; "
        f"{result.already_present} {verb} already present",
        file=stdout,
    )
