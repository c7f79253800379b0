"""The ``demo`` command: an admin's first session, step by step, with balances after each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from ..errors import WorkspaceAlreadyExists
from ..ledger import Ledger
from ..models import Role
from .database import CommandError
from .output import Balances, balances_to_dict, print_balances, print_json

__all__ = ["run_demo"]

_ADMIN = "admin-ada"
_MEMBERS = ("member-ben", "member-cleo", "member-dev", "member-eli")


def run_demo(
    ledger: Ledger,
    workspace_id: str,
    read_balances: Callable[[str], Balances],
    output_format: str,
    stdout: TextIO,
) -> None:
    """Run the walk-through on ``ledger``, printing the balances after each step."""
    first, second, *rest = _MEMBERS
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            f"create workspace {workspace_id} with coaching enabled and an empty pool",
            lambda: _create_workspace(ledger, workspace_id),
        ),
        (
            f"add the admin {_ADMIN} and the members {', '.join(_MEMBERS)}",
            lambda: _add_people(ledger, workspace_id),
        ),
        (
            "buy 100 credits for the pool",
            lambda: ledger.purchase(workspace_id, 100, idempotency_key="demo-purchase"),
        ),
        (
            f"{_ADMIN} tops up {first} with 20 credits",
            lambda: ledger.transfer_to(
                workspace_id, first, 20, actor=_ADMIN, idempotency_key="demo-top-up"
            ),
        ),
        (
            f"{_ADMIN} pulls 8 credits back from {first}",
            lambda: ledger.transfer_from(
                workspace_id, first, 8, actor=_ADMIN, idempotency_key="demo-pull-back"
            ),
        ),
        (
            f"{_ADMIN} sets {', '.join([first, second, *rest])} to 5 credits each",
            lambda: ledger.set_balances(
                workspace_id, list(_MEMBERS), 5, actor=_ADMIN, idempotency_key="demo-set-5"
            ),
        ),
        (
            f"{second} spends 1 credit on a coaching session",
            lambda: ledger.spend(workspace_id, second, 1, idempotency_key="demo-spend"),
        ),
    ]

    for number, (description, action) in enumerate(steps, start=1):
        action()
        balances = read_balances(workspace_id)
        if output_format == "json":
            print_json(
                {"step": number, "description": description, **balances_to_dict(balances)},
                stdout,
            )
            continue
        print(f"step {number}: {description}", file=stdout)
        print_balances(balances, "text", stdout)
        print(file=stdout)


def _create_workspace(ledger: Ledger, workspace_id: str) -> None:
    try:
        ledger.create_workspace(workspace_id)
    except WorkspaceAlreadyExists:
        # The library's message asks for another id without naming how to give one; this
        # command takes it with --workspace.
        raise CommandError(
            f"workspace {workspace_id!r} already exists in this database; pass --workspace "
            f"with another id, or --db with a new file"
        ) from None


def _add_people(ledger: Ledger, workspace_id: str) -> None:
    ledger.add_member(workspace_id, _ADMIN, role=Role.ADMIN)
    for member_id in _MEMBERS:
        ledger.add_member(workspace_id, member_id, actor=_ADMIN)
