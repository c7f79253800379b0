"""Many ledger write calls applied in one transaction: operations as data, and their outcomes.

:meth:`Ledger.apply_batch` turns each :class:`Operation` into the same plan its single call
builds, locks every workspace the batch names in ascending id order, then runs the plans one
after another in that one transaction. A rejected operation is reported in its
:class:`Outcome` and the batch goes on; a storage error, a crash or running out of retries
commits none of it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from . import _rejections
from .errors import CreditError, InvalidRequest, StorageError, WorkspaceNotFound
from .models import Pool, Workspace
from .repository._protocol import Transaction

if TYPE_CHECKING:
    from .ledger import Ledger, _Key, _Plan

__all__ = ["BATCH_OPERATIONS", "Operation", "Outcome"]

#: The :class:`Ledger` write methods an :class:`Operation` may name.
BATCH_OPERATIONS = frozenset(
    {
        "add_member",
        "purchase",
        "remove_member",
        "reverse",
        "set_balances",
        "set_coaching",
        "set_low_pool_threshold",
        "spend",
        "transfer_from",
        "transfer_to",
    }
)


@functools.cache
def _parameters(op: str) -> inspect.Signature:
    # Imported here because the ledger module imports this one.
    from .ledger import Ledger

    return inspect.signature(getattr(Ledger, f"_{op}_plan"))


def _copied(arguments: Mapping[str, Any]) -> dict[str, Any]:
    # A copy, so that changing the caller's dict later does not change the operation.
    return dict(arguments)


@attrs.frozen
class Operation:
    """One ledger write call as data, for :meth:`Ledger.apply_batch`.

    ``op`` names the :class:`Ledger` method, such as ``"transfer_to"``. ``arguments``
    contains that method's arguments other than the workspace id and the idempotency key, by
    parameter name: ``{"member_id": "ann", "amount": 5, "actor": "boss"}``. An unknown ``op`` or an
    argument the method does not take raises :class:`~coaching_credits.InvalidRequest` here;
    the values themselves are checked when the batch runs, exactly as the single call checks
    them.
    """

    op: str
    workspace_id: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict, converter=_copied)
    idempotency_key: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.op not in BATCH_OPERATIONS:
            raise InvalidRequest(
                f"invalid operation {self.op!r}: expected one of "
                f"{', '.join(sorted(BATCH_OPERATIONS))}",
                value=self.op,
            )
        signature = _parameters(self.op)
        try:
            signature.bind(None, self.workspace_id, **self.arguments)
        except TypeError as error:
            names = [name for name in signature.parameters if name not in ("self", "workspace_id")]
            raise InvalidRequest(
                f"invalid arguments {dict(self.arguments)!r} for operation {self.op!r}: {error}; "
                f"it takes {', '.join(names)}",
                value=self.arguments,
            ) from None


@attrs.frozen
class Outcome:
    """The result of one operation in :meth:`Ledger.apply_batch`.

    ``status`` is one of:

    - ``"applied"``: ``result`` is what the single call returns.
    - ``"replayed"``: the key was used before with the same request, so nothing changed and
      ``result`` is the original result.
    - ``"rejected"``: ``error`` is the :class:`~coaching_credits.CreditError` the single call
      would raise, and nothing changed.
    """

    operation: Operation
    status: Literal["applied", "replayed", "rejected"]
    result: Any = None
    error: CreditError | None = None


@attrs.frozen
class _Prepared:
    """An operation with its plan and key, or the error its arguments raised."""

    operation: Operation
    plan: _Plan[Any] | None = None
    key: _Key | None = None
    error: CreditError | None = None


# Methods of Transaction that change stored state.
_WRITES = frozenset(
    {
        "create_workspace",
        "insert_member",
        "delete_member",
        "update_workspace",
        "update_pool",
        "update_members",
        "append_transfers",
        "put_idempotency",
    }
)


class _WriteGuard:
    """Forward to a transaction and note whether any write succeeded.

    A step that rejects its request must raise before its first write, because the batch
    has no savepoint to undo a half-done operation. A write that raises (such as
    ``insert_member`` raising ``MemberAlreadyExists``) stored nothing in every backend, so
    only successful writes count.
    """

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self.wrote = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._tx, name)
        if name not in _WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            self.wrote = True
            return result

        return write


def apply_batch(ledger: Ledger, operations: Sequence[Operation]) -> list[Outcome]:
    """Apply ``operations`` in one transaction of ``ledger``'s repository; see the ledger."""
    prepared = [_prepare(ledger, operation) for operation in operations]
    workspace_ids = sorted({p.plan.workspace_id for p in prepared if p.plan is not None})
    if not workspace_ids:
        return [_rejected(p.operation, p.error) for p in prepared]

    def step(tx: Transaction) -> list[Outcome]:
        return _run(ledger, tx, workspace_ids, prepared)

    return ledger._retrying(", ".join(workspace_ids), step)


def _prepare(ledger: Ledger, operation: Operation) -> _Prepared:
    """Build the operation's plan as its single call would, before any transaction."""
    # Imported here because the ledger module imports this one.
    from .ledger import _Key

    build: Callable[..., _Plan[Any]] = getattr(ledger, f"_{operation.op}_plan")
    try:
        plan = build(operation.workspace_id, **operation.arguments)
        key = _Key.of(plan, operation.idempotency_key)
    except CreditError as error:
        return _Prepared(operation, error=error)
    return _Prepared(operation, plan=plan, key=key)


def _run(
    ledger: Ledger, tx: Transaction, workspace_ids: list[str], prepared: list[_Prepared]
) -> list[Outcome]:
    # Every writer locks a workspace before its members, and this batch locks all of its
    # workspaces up front in ascending id order, so two batches, or a batch and single
    # calls, wait for each other on PostgreSQL instead of deadlocking.
    current: dict[str, tuple[Workspace, Pool]] = {}
    missing: set[str] = set()
    for workspace_id in workspace_ids:
        try:
            current[workspace_id] = tx.lock_workspace(workspace_id)
        except WorkspaceNotFound:
            missing.add(workspace_id)

    outcomes = []
    for item in prepared:
        if item.plan is None:
            outcomes.append(_rejected(item.operation, item.error))
            continue
        workspace_id = item.plan.workspace_id
        if workspace_id in missing:
            outcomes.append(_rejected(item.operation, WorkspaceNotFound(workspace_id)))
            continue
        if workspace_id not in current:
            # An earlier operation changed this workspace; its row is locked by this
            # transaction, so the read returns exactly what that operation wrote.
            current[workspace_id] = tx.get_workspace(workspace_id)
        workspace, pool = current[workspace_id]
        outcome = _run_one(ledger, tx, workspace, pool, item)
        if outcome.status == "applied":
            del current[workspace_id]
        outcomes.append(outcome)
    return outcomes


def _run_one(
    ledger: Ledger, tx: Transaction, workspace: Workspace, pool: Pool, item: _Prepared
) -> Outcome:
    from .ledger import _Replayed

    assert item.plan is not None
    guard = _WriteGuard(tx)
    try:
        value = ledger._run_plan(guard, workspace, pool, item.plan, item.key)
    except StorageError:
        raise
    except CreditError as error:
        if guard.wrote:
            raise AssertionError(
                f"operation {item.operation.op!r} wrote to storage before it was rejected "
                f"with {type(error).__name__}; the whole batch was rolled back"
            ) from error
        if (
            isinstance(error, _rejections.REMEMBERED)
            and item.key is not None
            and not _rejections.is_replayed(error)
        ):
            # The key was checked unused in this same transaction, so the record can be
            # stored without the checks a separate transaction needs.
            tx.put_idempotency(ledger._rejection_record(item.plan.workspace_id, item.key, error))
        return _rejected(item.operation, error)

    if isinstance(value, _Replayed):
        return Outcome(item.operation, "replayed", result=value.value)
    return Outcome(item.operation, "applied", result=value)


def _rejected(operation: Operation, error: CreditError | None) -> Outcome:
    assert error is not None
    return Outcome(operation, "rejected", error=error)
