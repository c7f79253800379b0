"""The commands that read the journal and the pool: audits, past balances and low balances.

Each returns its exit status, because ``audit`` fails with 1 when a stored balance disagrees
with the journal, and takes ``report`` to print one error line on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from ..ledger import Ledger
from ..models import AuditCheck, AuditMismatch, AuditReport
from .operations import parse_amount
from .output import print_json, print_member_table

__all__ = ["JOURNAL_COMMANDS", "audit_to_dict"]

#: Exit status of an audit that found a mismatch, as for any failed command.
_EXIT_MISMATCH = 1


def audit_to_dict(report: AuditReport) -> dict[str, Any]:
    """Return the JSON shape of ``audit --format json``."""
    return {
        "workspace": report.workspace_id,
        "ok": report.ok,
        "totals": {
            "purchased": report.purchased,
            "refunded": report.refunded,
            "spent": report.spent,
            "in_circulation": report.in_circulation,
            "expected_pool": report.expected_pool,
            "stored_pool": report.stored_pool,
            "stored_members_total": report.stored_members_total,
            "members_checked": report.members_checked,
        },
        "mismatches": [
            {
                "check": m.check.value,
                "member_id": m.member_id,
                "expected": m.expected,
                "stored": m.stored,
            }
            for m in report.mismatches
        ],
    }


def _mismatch_line(mismatch: AuditMismatch) -> str:
    values = f"journal {mismatch.expected}, stored {mismatch.stored}"
    check = mismatch.check
    if check is AuditCheck.MEMBER:
        return f"member {mismatch.member_id}: {values}"
    if check is AuditCheck.MEMBER_SNAPSHOT:
        return f"member {mismatch.member_id}: {values} (balance recorded on the latest entry)"
    if check is AuditCheck.CONSERVATION:
        return f"conservation: {values} (pool + members against purchased - refunded - spent)"
    if check is AuditCheck.POOL_SNAPSHOT:
        return f"pool: {values} (balance recorded on the latest entry)"
    return f"pool: {values}"


def _print_audit(report: AuditReport, stdout: TextIO) -> None:
    count = len(report.mismatches)
    if report.ok:
        print(
            f"workspace {report.workspace_id}: audit passed; the pool and "
            f"{report.members_checked} members agree with the journal",
            file=stdout,
        )
    else:
        noun = "mismatch" if count == 1 else "mismatches"
        print(
            f"workspace {report.workspace_id}: audit failed with {count} {noun} between the "
            f"stored balances and the journal",
            file=stdout,
        )
    for mismatch in report.mismatches:
        print(f"  {_mismatch_line(mismatch)}", file=stdout)
    print(
        f"journal: purchased {report.purchased}, refunded {report.refunded}, "
        f"spent {report.spent}, in circulation {report.in_circulation}, "
        f"pool {report.expected_pool}",
        file=stdout,
    )
    print(
        f"stored: pool {report.stored_pool}, {report.members_checked} members holding "
        f"{report.stored_members_total}",
        file=stdout,
    )


def run_audit(
    args: argparse.Namespace, ledger: Ledger, stdout: TextIO, report: Callable[[str], None]
) -> int:
    """Print the audit report; return 1 when any stored balance disagrees with the journal."""
    audit = ledger.audit(args.workspace)
    if args.format == "json":
        print_json(audit_to_dict(audit), stdout)
    else:
        _print_audit(audit, stdout)
    if audit.ok:
        return 0

    count = len(audit.mismatches)
    report(
        f"audit of workspace {audit.workspace_id!r} found {count} "
        f"{'mismatch' if count == 1 else 'mismatches'} (listed on stdout); find what changed "
        f"the stored balances outside the ledger before moving more credits"
    )
    return _EXIT_MISMATCH


def run_balance_at(
    args: argparse.Namespace, ledger: Ledger, stdout: TextIO, report: Callable[[str], None]
) -> int:
    """Print the pool's balance, or a member's, at ``args.at``, read from the journal."""
    balance = ledger.balance_at(args.workspace, args.at, member_id=args.member)
    at = args.at.isoformat()
    if args.format == "json":
        print_json(
            {"workspace": args.workspace, "member": args.member, "at": at, "balance": balance},
            stdout,
        )
        return 0

    owner = "pool" if args.member is None else f"member {args.member}"
    print(f"workspace {args.workspace}: {owner} balance at {at}: {balance}", file=stdout)
    return 0


def run_low_balances(
    args: argparse.Namespace, ledger: Ledger, stdout: TextIO, report: Callable[[str], None]
) -> int:
    """Print the members whose balance is at or below ``--threshold``, lowest first."""
    threshold = parse_amount(args.threshold, minimum=0, field="threshold")
    members = ledger.low_balances(args.workspace, threshold)
    if args.format == "json":
        print_json(
            {
                "workspace": args.workspace,
                "threshold": threshold,
                "members": [
                    {"id": m.id, "role": m.role.value, "balance": m.balance} for m in members
                ],
            },
            stdout,
        )
        return 0

    noun = "member" if len(members) == 1 else "members"
    print(
        f"workspace {args.workspace}: {len(members)} {noun} at or below {threshold} credits",
        file=stdout,
    )
    if members:
        print_member_table(members, stdout)
    return 0


def run_pool_status(
    args: argparse.Namespace, ledger: Ledger, stdout: TextIO, report: Callable[[str], None]
) -> int:
    """Print the pool's balance, the low-pool threshold and whether the pool is low."""
    status = ledger.pool_status(args.workspace)
    if args.format == "json":
        print_json(
            {
                "workspace": status.workspace_id,
                "balance": status.balance,
                "threshold": status.threshold,
                "is_low": status.is_low,
            },
            stdout,
        )
        return 0

    state = "low; buy credits before handing more out" if status.is_low else "not low"
    print(
        f"workspace {status.workspace_id}: pool {status.balance}, low below "
        f"{status.threshold}: {state}",
        file=stdout,
    )
    return 0


#: Command name to function, for the commands that read the journal or the pool.
JOURNAL_COMMANDS: dict[
    str, Callable[[argparse.Namespace, Ledger, TextIO, Callable[[str], None]], int]
] = {
    "audit": run_audit,
    "balance-at": run_balance_at,
    "low-balances": run_low_balances,
    "pool-status": run_pool_status,
}
