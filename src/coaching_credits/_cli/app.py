"""Build the argument parser and run one command of the ``coaching-credits`` tool."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO, cast

from ..errors import CreditError, StorageError
from ..ledger import Ledger
from ..models import Role, TransferKind
from ..repository import Repository
from .apply import apply_lines, file_size, print_summary
from .database import (
    DATABASE_ENVIRONMENT_VARIABLE,
    DEFAULT_DATABASE,
    CommandError,
    driver_errors,
    migrate_database,
    one_line,
    open_repository,
    resolve_database,
)
from .demo import run_demo
from .journal import JOURNAL_COMMANDS
from .members_csv import import_members, print_import_result
from .operations import OPERATIONS
from .output import FORMATS, Balances, print_balances, print_history

__all__ = ["build_parser", "main"]

PROG = "coaching-credits"

#: Exit status of a failed operation or any error the library raises.
EXIT_FAILURE = 1
#: Exit status of a usage error, as argparse uses.
EXIT_USAGE = 2
#: Exit status after Ctrl-C, as shells report a process ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Exit status when standard output is a pipe whose reader has gone, as shells report a process
#: ended by SIGPIPE.
EXIT_BROKEN_PIPE = 141

#: Maximum digits of a whole-number option. int() raises ValueError above 4300 digits, and 19
#: digits already exceed every count the tool accepts.
_MAX_NUMBER_DIGITS = 19

# Commands that may create a SQLite file; every other one needs an existing database.
_CREATING_COMMANDS = {"create-workspace", "migrate", "demo"}


def _positive_int(text: str) -> int:
    if len(text.strip().lstrip("+-").lstrip("0")) > _MAX_NUMBER_DIGITS:
        raise argparse.ArgumentTypeError(
            f"invalid number ({len(text)} characters): expected at most {_MAX_NUMBER_DIGITS} digits"
        )
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number {text!r}: expected a whole number"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {value}: expected 1 or more")
    return value


def _moment(text: str) -> datetime:
    # Python 3.10's fromisoformat does not read a trailing "Z", so it is spelled out first.
    normalized = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        value = datetime.fromisoformat(normalized)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected ISO 8601 with a UTC offset, "
            f"such as 2026-01-31T18:00:00+01:00"
        ) from None
    if value.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: it has no UTC offset; add one, such as +00:00 or Z"
        )
    return value


def _metadata_item(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(
            f"invalid metadata {text!r}: expected KEY=VALUE with a non-empty KEY"
        )
    return key, value


class _MetadataAction(argparse.Action):
    """Collect ``--metadata`` pairs, and reject a key given twice as a usage error.

    Raising :class:`argparse.ArgumentError` here makes the subcommand's parser print its own
    usage line, not the top-level one.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        # The option's type, _metadata_item, has made each value a (key, value) pair.
        key, value = cast("tuple[str, str]", values)
        pairs: list[tuple[str, str]] = list(getattr(namespace, self.dest, None) or [])
        if any(seen == key for seen, _ in pairs):
            raise argparse.ArgumentError(self, f"key {key!r} is given twice; give each key once")
        pairs.append((key, value))
        setattr(namespace, self.dest, pairs)


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=FORMATS, default="text", help="output format (default: text)"
    )


def _add_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        help="idempotency key: repeating the command with the same key changes nothing",
    )


def _add_note(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", help="note stored on the journal entry, at most 500 characters")
    parser.add_argument(
        "--metadata",
        action=_MetadataAction,
        type=_metadata_item,
        metavar="KEY=VALUE",
        help="a pair stored on the journal entry (repeatable, at most 20)",
    )


def _add_preview(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preview",
        action="store_true",
        help="show the balances before and after, and change nothing",
    )


def _add_actor(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--actor",
        required=required,
        metavar="ADMIN",
        help="id of the admin of the workspace who runs the operation",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage a workspace's shared pool of prepaid coaching credits.",
        epilog=(
            f"--db takes a SQLite file path or a postgresql:// URI; without it, "
            f"{DATABASE_ENVIRONMENT_VARIABLE} is read, then {DEFAULT_DATABASE} is used."
        ),
    )
    parser.add_argument(
        "--db",
        metavar="DATABASE",
        help=f"SQLite file or postgresql:// URI (default: ${DATABASE_ENVIRONMENT_VARIABLE} "
        f"or {DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        help="PostgreSQL schema of the tables (default: coaching_credits)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = commands.add_parser("create-workspace", help="create a workspace with an empty pool")
    create.add_argument("workspace", metavar="ID")
    create.add_argument(
        "--coaching-disabled",
        action="store_true",
        help="create the workspace with coaching switched off",
    )

    importing = commands.add_parser("import-members", help="add the members listed in a CSV file")
    importing.add_argument("workspace", metavar="WORKSPACE")
    importing.add_argument(
        "csv", metavar="CSV", type=Path, help="columns member_id,display_name,email,role,team"
    )
    _add_format(importing)

    apply = commands.add_parser("apply", help="apply the operations of a JSON lines file")
    apply.add_argument("file", metavar="FILE", help="JSON lines file, or - for standard input")
    apply.add_argument("--verbose", action="store_true", help="print each line's outcome on stderr")
    apply.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1,
        metavar="N",
        help="lines applied per transaction (default 1); a larger N commits less often, and a "
        "storage failure rejects every line of its batch",
    )
    _add_format(apply)

    balances = commands.add_parser("balances", help="show the pool and every member's balance")
    balances.add_argument("workspace", metavar="WORKSPACE")
    _add_format(balances)

    history = commands.add_parser("history", help="show journal entries, newest first")
    history.add_argument("workspace", metavar="WORKSPACE")
    history.add_argument("--member", metavar="ID", help="only entries of this member")
    history.add_argument(
        "--kind",
        action="extend",
        nargs="+",
        choices=[k.value for k in TransferKind],
        help="only entries of these kinds (repeatable)",
    )
    history.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="entries per page (default 50)"
    )
    history.add_argument(
        "--since",
        type=_moment,
        metavar="TIME",
        help="only entries at or after this ISO 8601 time with a UTC offset",
    )
    history.add_argument(
        "--until",
        type=_moment,
        metavar="TIME",
        help="only entries before this ISO 8601 time with a UTC offset",
    )
    history.add_argument(
        "--before",
        type=_positive_int,
        metavar="SEQUENCE",
        help="only entries older than this sequence number, to fetch the next page",
    )
    _add_format(history)

    _add_journal_parsers(commands)

    purchase = commands.add_parser("purchase", help="add bought credits to the pool")
    purchase.add_argument("workspace", metavar="WORKSPACE")
    purchase.add_argument("amount", metavar="AMOUNT", help="credits bought, a whole number")
    _add_key(purchase)
    _add_note(purchase)
    _add_format(purchase)

    for name, direction in (
        ("transfer-to", "move credits from the pool to a member"),
        ("transfer-from", "move credits from a member back to the pool"),
    ):
        transfer = commands.add_parser(name, help=direction)
        transfer.add_argument("workspace", metavar="WORKSPACE")
        transfer.add_argument("member", metavar="MEMBER")
        transfer.add_argument("amount", metavar="AMOUNT", help="credits moved, a whole number")
        _add_actor(transfer)
        _add_key(transfer)
        _add_note(transfer)
        _add_preview(transfer)
        _add_format(transfer)

    set_balances = commands.add_parser(
        "set-balances", help="set several members' balances to one number, all or nothing"
    )
    set_balances.add_argument("workspace", metavar="WORKSPACE")
    set_balances.add_argument("balance", metavar="BALANCE", help="the new balance, 0 or more")
    set_balances.add_argument("members", metavar="MEMBER", nargs="+")
    _add_actor(set_balances)
    _add_key(set_balances)
    _add_note(set_balances)
    _add_preview(set_balances)
    _add_format(set_balances)

    spend = commands.add_parser("spend", help="spend a member's credits on coaching")
    spend.add_argument("workspace", metavar="WORKSPACE")
    spend.add_argument("member", metavar="MEMBER")
    spend.add_argument("amount", metavar="AMOUNT", help="credits spent, a whole number")
    _add_key(spend)
    _add_note(spend)
    _add_format(spend)

    add_member = commands.add_parser("add-member", help="add a member with a balance of 0")
    add_member.add_argument("workspace", metavar="WORKSPACE")
    add_member.add_argument("member", metavar="MEMBER")
    add_member.add_argument(
        "--role", choices=[r.value for r in Role], default=Role.MEMBER.value, help="default: member"
    )
    _add_actor(add_member, required=False)
    _add_key(add_member)
    _add_format(add_member)

    remove_member = commands.add_parser(
        "remove-member", help="remove a member and return their balance to the pool"
    )
    remove_member.add_argument("workspace", metavar="WORKSPACE")
    remove_member.add_argument("member", metavar="MEMBER")
    _add_actor(remove_member)
    _add_key(remove_member)
    _add_note(remove_member)
    _add_format(remove_member)

    set_coaching = commands.add_parser(
        "set-coaching", help="switch coaching on or off for a workspace"
    )
    set_coaching.add_argument("workspace", metavar="WORKSPACE")
    set_coaching.add_argument("state", choices=["on", "off"])
    _add_actor(set_coaching)
    _add_key(set_coaching)
    _add_format(set_coaching)

    commands.add_parser("migrate", help="create or upgrade the database schema ahead of time")

    demo = commands.add_parser(
        "demo", help="walk through an admin's first session on a temporary database"
    )
    # Overrides the global --db only when given here; with neither, the demo uses a new
    # temporary database rather than the default file.
    demo.add_argument(
        "--db", default=argparse.SUPPRESS, metavar="DATABASE", help="keep the demo in this database"
    )
    demo.add_argument("--workspace", default="demo", help="workspace id (default: demo)")
    _add_format(demo)

    return parser


def _add_journal_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    balance_at = commands.add_parser(
        "balance-at", help="show the pool's balance, or a member's, at a past time"
    )
    balance_at.add_argument("workspace", metavar="WORKSPACE")
    balance_at.add_argument(
        "at", metavar="TIME", type=_moment, help="ISO 8601 time with a UTC offset"
    )
    balance_at.add_argument("--member", metavar="ID", help="this member's balance, not the pool's")
    _add_format(balance_at)

    audit = commands.add_parser(
        "audit",
        help="rebuild every balance from the journal and compare; exit status 1 on a mismatch",
    )
    audit.add_argument("workspace", metavar="WORKSPACE")
    _add_format(audit)

    reverse = commands.add_parser(
        "reverse", help="undo a transfer with the opposite one, or refund a purchase"
    )
    reverse.add_argument("workspace", metavar="WORKSPACE")
    reverse.add_argument("transfer", metavar="TRANSFER_ID", help="id of the journal entry")
    _add_actor(reverse)
    _add_key(reverse)
    _add_note(reverse)
    _add_format(reverse)

    low_balances = commands.add_parser(
        "low-balances", help="list the members whose balance is at or below a threshold"
    )
    low_balances.add_argument("workspace", metavar="WORKSPACE")
    low_balances.add_argument(
        "--threshold", required=True, metavar="N", help="credits, a whole number from 0"
    )
    _add_format(low_balances)

    pool_status = commands.add_parser(
        "pool-status", help="show the pool's balance, the low-pool threshold and whether it is low"
    )
    pool_status.add_argument("workspace", metavar="WORKSPACE")
    _add_format(pool_status)

    threshold = commands.add_parser(
        "set-low-pool-threshold",
        help="set the balance below which the pool counts as low",
    )
    threshold.add_argument("workspace", metavar="WORKSPACE")
    threshold.add_argument("threshold", metavar="N", help="credits, a whole number from 0")
    _add_actor(threshold)
    _add_key(threshold)
    _add_format(threshold)


def _read_balances(repository: Repository, workspace_id: str) -> Balances:
    # One transaction, so the pool and the members come from the same moment.
    with repository.transaction() as tx:
        workspace, pool = tx.get_workspace(workspace_id)
        members = tx.list_members(workspace_id)
    return Balances(workspace=workspace, pool=pool, members=tuple(members))


def _run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.command == "demo":
        return _run_demo(args, stdout)

    database = resolve_database(args.db)
    if args.command == "migrate":
        print(migrate_database(database, args.schema), file=stdout)
        return 0

    repository = open_repository(
        database, create=args.command in _CREATING_COMMANDS, schema=args.schema
    )
    try:
        return _run_with(repository, args, stdout, stderr)
    finally:
        repository.close()


def _run_with(
    repository: Repository, args: argparse.Namespace, stdout: TextIO, stderr: TextIO
) -> int:
    ledger = Ledger(repository)
    command = args.command

    if command == "create-workspace":
        workspace = ledger.create_workspace(
            args.workspace, coaching_enabled=not args.coaching_disabled
        )
        state = "enabled" if workspace.coaching_enabled else "disabled"
        print(f"created workspace {workspace.id} (coaching {state}, pool 0)", file=stdout)
    elif command == "import-members":
        result = import_members(ledger, args.workspace, args.csv)
        print_import_result(result, args.format, stdout)
    elif command == "apply":
        return _run_apply(ledger, args, stdout, stderr)
    elif command == "balances":
        print_balances(_read_balances(repository, args.workspace), args.format, stdout)
    elif command == "history":
        kinds = None if args.kind is None else {TransferKind(k) for k in args.kind}
        transfers = ledger.history(
            args.workspace,
            member_id=args.member,
            kinds=kinds,
            since=args.since,
            until=args.until,
            before=args.before,
            limit=args.limit,
        )
        print_history(
            args.workspace, transfers, limit=args.limit, output_format=args.format, stream=stdout
        )
    elif command in JOURNAL_COMMANDS:
        return JOURNAL_COMMANDS[command](args, ledger, stdout, lambda m: _fail(stderr, m))
    else:
        OPERATIONS[command](args, ledger, stdout)
    return 0


def _run_apply(ledger: Ledger, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    def report(message: str) -> None:
        print(f"{PROG}: {message}", file=stderr)

    if args.file == "-":
        source = sys.stdin.buffer
        summary = apply_lines(
            ledger,
            source,
            stderr=stderr,
            verbose=args.verbose,
            total_bytes=None,
            report=report,
            batch_size=args.batch_size,
        )
    else:
        try:
            with open(args.file, "rb") as source_file:
                summary = apply_lines(
                    ledger,
                    source_file,
                    stderr=stderr,
                    verbose=args.verbose,
                    total_bytes=file_size(source_file),
                    report=report,
                    batch_size=args.batch_size,
                )
        except OSError as error:
            raise CommandError(f"cannot read {args.file}: {error.strerror}") from None
    print_summary(summary, args.format, stdout)
    return 0


def _run_demo(args: argparse.Namespace, stdout: TextIO) -> int:
    if args.db:
        repository = open_repository(args.db, create=True, schema=args.schema)
        try:
            run_demo(
                Ledger(repository),
                args.workspace,
                lambda w: _read_balances(repository, w),
                args.format,
                stdout,
            )
        finally:
            repository.close()
        return 0

    with tempfile.TemporaryDirectory(prefix="coaching-credits-demo-") as directory:
        repository = open_repository(str(Path(directory) / "demo.db"), create=True)
        try:
            run_demo(
                Ledger(repository),
                args.workspace,
                lambda w: _read_balances(repository, w),
                args.format,
                stdout,
            )
        finally:
            repository.close()
    if args.format == "text":
        print(
            "the demo ran on a temporary database, now deleted; pass --db to keep it", file=stdout
        )
    return 0


def _fail(stderr: TextIO, message: str) -> None:
    for line in message.splitlines() or [""]:
        print(f"{PROG}: error: {line}", file=stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command-line tool and return its exit status.

    0 means success, 1 a rejected operation, an audit that found a mismatch or any other
    failure, 2 a usage error, 130 an interruption with Ctrl-C and 141 a standard output whose
    reader closed the pipe early, as ``head`` does.
    """
    try:
        status = _main(argv)
        # Flushed here rather than at interpreter exit, so a closed pipe is handled below.
        sys.stdout.flush()
    except BrokenPipeError:
        # As the Python documentation advises for SIGPIPE: later writes, including the flush
        # at interpreter exit, go to devnull, so the tool ends without a traceback.
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return status


def _discard_stdout() -> None:
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError):
        # An in-memory stream, as under test capture, has no descriptor to redirect.
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    stdout, stderr = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        # argparse exits with 0 after --help and 2 after a usage error.
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE

    try:
        return _run(args, stdout, stderr)
    except StorageError as error:
        # Drivers add hints on lines of their own, such as psycopg's "Is the server running".
        _fail(stderr, one_line(str(error)))
    except (CreditError, CommandError) as error:
        _fail(stderr, str(error))
    except driver_errors() as error:
        _fail(stderr, f"database error: {one_line(str(error))}")
    except KeyboardInterrupt:
        _fail(
            stderr, "interrupted; each completed operation was committed, the current one was not"
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILURE
