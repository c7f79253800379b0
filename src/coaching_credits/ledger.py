"""The Ledger service: load values through a repository, apply a rule, commit atomically.

Each call runs one read-rule-commit step inside one repository transaction, so the balances,
the journal entries and the idempotency record commit together or not at all. When a backend
reports a clash with a concurrent writer, the whole step runs again, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

import attrs

from . import _audit, _batch, _codec, _journal, _rejections, _replay, _validation, rules
from ._batch import Operation, Outcome
from .errors import (
    ConcurrencyConflict,
    CreditError,
    IdempotencyConflict,
    InvalidRequest,
    MemberNotFound,
    TransferNotFound,
    _shown,
)
from .models import (
    MAX_AMOUNT,
    AuditReport,
    BalanceChange,
    Member,
    Pool,
    PoolStatus,
    Preview,
    Role,
    Transfer,
    TransferKind,
    Workspace,
)
from .repository._protocol import IdempotencyRecord, Repository, RetryableConflict, Transaction
from .rules import (
    MemberRemoval,
    PurchaseResult,
    ReversalResult,
    SetBalancesResult,
    SpendResult,
    TransferResult,
)

__all__ = ["MAX_KEY_LENGTH", "MAX_METADATA_ITEMS", "MAX_REASON_LENGTH", "Ledger"]

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = _validation.MAX_KEY_LENGTH
MAX_REASON_LENGTH = _validation.MAX_REASON_LENGTH
MAX_METADATA_ITEMS = _validation.MAX_METADATA_ITEMS


R = TypeVar("R")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _new_id() -> str:
    """Return a random id that sorts by creation time, laid out as a UUID version 7.

    The first 48 bits are the Unix time in milliseconds, so new journal rows land at the end
    of the id index instead of at random places in it, which keeps inserts cheap on both SQL
    backends. The other bits are random (RFC 9562, section 5.7).
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return f"{value:032x}"


class Ledger:
    """Apply the credit rules to the state kept in a repository.

    ``clock`` returns the time stamped on transfers, ``id_factory`` their ids.
    ``max_attempts`` bounds how often one call runs when concurrent writers clash; after that
    it raises :class:`~coaching_credits.ConcurrencyConflict`.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        clock: Callable[[], datetime] = _utc_now,
        id_factory: Callable[[], str] = _new_id,
        max_attempts: int = 8,
        retry_delay: float = 0.005,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.repository = repository
        self._clock = clock
        self._new_id = id_factory
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._local = threading.local()

    @property
    def last_call_replayed(self) -> bool:
        """Whether this thread's last write call replayed a stored result for its key.

        A replay changes nothing and returns the result of the original call.
        """
        return bool(getattr(self._local, "replayed", False))

    # Workspaces and members ---------------------------------------------------------------

    def create_workspace(self, workspace_id: str, *, coaching_enabled: bool = True) -> Workspace:
        """Create a workspace with an empty pool.

        Raises :class:`~coaching_credits.WorkspaceAlreadyExists` if the id is taken.
        """
        _validation.check_id(workspace_id, "workspace id")
        if type(coaching_enabled) is not bool:
            raise InvalidRequest(
                f"invalid coaching_enabled {coaching_enabled!r}: expected True or False",
                value=coaching_enabled,
            )
        workspace = Workspace(id=workspace_id, coaching_enabled=coaching_enabled)

        def step(tx: Transaction) -> Workspace:
            tx.create_workspace(workspace, Pool(workspace_id=workspace_id, balance=0))
            return workspace

        return self._retrying(workspace_id, step)

    def add_member(
        self,
        workspace_id: str,
        member_id: str,
        *,
        role: Role = Role.MEMBER,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> Member:
        """Add a member with a balance of 0.

        ``actor`` is ``None`` when the host application itself adds the member, for example
        the first admins. When given, it must be an admin of the workspace.
        """
        plan = self._add_member_plan(workspace_id, member_id, role=role, actor=actor)
        return self._commit(plan, idempotency_key)

    def _add_member_plan(
        self,
        workspace_id: str,
        member_id: str,
        *,
        role: Role = Role.MEMBER,
        actor: str | None = None,
    ) -> _Plan[Member]:
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(member_id, "member id")
        if actor is not None:
            _validation.check_id(actor, "actor id")
        role = _validation.parse_role(role)
        request = {"op": "add_member", "member": member_id, "role": role.value, "actor": actor}

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> Member:
            actor_member = None
            if actor is not None:
                actor_member = tx.get_members(workspace_id, [actor]).get(actor)
                rules.require_admin(workspace, actor_member, "add members", actor)
            member = rules.add_member(workspace, member_id, role=role, actor=actor_member)
            tx.insert_member(member)
            return member

        return _Plan(workspace_id, request, step, _codec.member_to_dict, _codec.member_from_dict)

    def remove_member(
        self,
        workspace_id: str,
        member_id: str,
        *,
        actor: str,
        idempotency_key: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> MemberRemoval:
        """Remove a member and return their whole balance to the pool, with a transfer recorded."""
        plan = self._remove_member_plan(
            workspace_id, member_id, actor=actor, reason=reason, metadata=metadata
        )
        return self._commit(plan, idempotency_key)

    def _remove_member_plan(
        self,
        workspace_id: str,
        member_id: str,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[MemberRemoval]:
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(member_id, "member id")
        _validation.check_id(actor, "actor id")
        _validation.check_note(reason, metadata)
        request = {
            "op": "remove_member",
            "member": member_id,
            "actor": actor,
            **_validation.note_request(reason, metadata),
        }

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> MemberRemoval:
            found = tx.get_members(workspace_id, {actor, member_id})
            rules.require_admin(workspace, found.get(actor), "remove members", actor)
            member = _found(found, workspace_id, member_id)
            result = rules.remove_member(
                workspace, pool, member, actor=found[actor], reason=reason, metadata=metadata
            )
            tx.update_pool(result.pool)
            tx.delete_member(workspace_id, member_id)
            (transfer,) = self._append(tx, [result.transfer])
            return attrs.evolve(result, transfer=transfer)

        return _Plan(workspace_id, request, step, _replay.encode_removal, _replay.decode_removal)

    def set_coaching(
        self,
        workspace_id: str,
        enabled: bool,
        *,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Workspace:
        """Switch coaching on or off for a workspace; ``actor`` must be an admin."""
        plan = self._set_coaching_plan(workspace_id, enabled, actor=actor)
        return self._commit(plan, idempotency_key)

    def _set_coaching_plan(
        self, workspace_id: str, enabled: bool, *, actor: str
    ) -> _Plan[Workspace]:
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(actor, "actor id")
        if type(enabled) is not bool:
            raise InvalidRequest(
                f"invalid enabled flag {enabled!r}: expected True or False", value=enabled
            )
        request = {"op": "set_coaching", "enabled": enabled, "actor": actor}

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> Workspace:
            actor_member = tx.get_members(workspace_id, [actor]).get(actor)
            rules.require_admin(workspace, actor_member, "switch coaching on or off", actor)
            assert actor_member is not None
            updated = rules.set_coaching(workspace, enabled, actor=actor_member)
            tx.update_workspace(updated)
            return updated

        return _Plan(
            workspace_id, request, step, _codec.workspace_to_dict, _codec.workspace_from_dict
        )

    def set_low_pool_threshold(
        self,
        workspace_id: str,
        threshold: int,
        *,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Workspace:
        """Set the balance below which the pool counts as low; ``actor`` must be an admin.

        See :meth:`pool_status`. It works while coaching is disabled.
        """
        plan = self._set_low_pool_threshold_plan(workspace_id, threshold, actor=actor)
        return self._commit(plan, idempotency_key)

    def _set_low_pool_threshold_plan(
        self, workspace_id: str, threshold: int, *, actor: str
    ) -> _Plan[Workspace]:
        rules.check_balance(threshold, field="threshold")
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(actor, "actor id")
        request = {"op": "set_low_pool_threshold", "threshold": threshold, "actor": actor}

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> Workspace:
            action = "set the low-pool threshold"
            actor_member = tx.get_members(workspace_id, [actor]).get(actor)
            rules.require_admin(workspace, actor_member, action, actor)
            assert actor_member is not None
            updated = rules.set_low_pool_threshold(workspace, threshold, actor=actor_member)
            tx.update_workspace(updated)
            return updated

        return _Plan(
            workspace_id, request, step, _codec.workspace_to_dict, _codec.workspace_from_dict
        )

    # Credits ------------------------------------------------------------------------------

    def purchase(
        self,
        workspace_id: str,
        amount: int,
        *,
        idempotency_key: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PurchaseResult:
        """Add bought credits to the workspace's pool."""
        plan = self._purchase_plan(workspace_id, amount, reason=reason, metadata=metadata)
        return self._commit(plan, idempotency_key)

    def _purchase_plan(
        self,
        workspace_id: str,
        amount: int,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[PurchaseResult]:
        rules.check_amount(amount)
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_note(reason, metadata)
        request = {"op": "purchase", "amount": amount, **_validation.note_request(reason, metadata)}

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> PurchaseResult:
            # NOTE: summing every member costs one read of the member table per purchase.
            # Purchases are rare next to transfers and spends, so the cost is accepted.
            members_total = sum(m.balance for m in tx.list_members(workspace_id))
            result = rules.purchase(
                workspace,
                pool,
                amount,
                members_total=members_total,
                reason=reason,
                metadata=metadata,
            )
            tx.update_pool(result.pool)
            (transfer,) = self._append(tx, [result.transfer])
            return attrs.evolve(result, transfer=transfer)

        return _Plan(workspace_id, request, step, _replay.encode_purchase, _replay.decode_purchase)

    def transfer_to(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        actor: str,
        idempotency_key: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TransferResult:
        """Move credits from the pool to a member; ``actor`` is the acting admin's id."""
        plan = self._transfer_to_plan(
            workspace_id, member_id, amount, actor=actor, reason=reason, metadata=metadata
        )
        return self._commit(plan, idempotency_key)

    def preview_transfer_to(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Preview[TransferResult]:
        """Run :meth:`transfer_to` with every check, roll it back and return what it would do.

        It raises exactly the errors the real call would raise now. It takes no idempotency
        key because it stores nothing.
        """
        plan = self._transfer_to_plan(
            workspace_id, member_id, amount, actor=actor, reason=reason, metadata=metadata
        )
        return self._dry_run(plan)

    def _transfer_to_plan(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[TransferResult]:
        return self._move_plan(
            rules.transfer_to, "transfer_to", "transfer credits to a member",
            workspace_id, member_id, amount, actor, reason, metadata,
        )  # fmt: skip

    def transfer_from(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        actor: str,
        idempotency_key: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TransferResult:
        """Move credits from a member back to the pool; ``actor`` is the acting admin's id."""
        plan = self._transfer_from_plan(
            workspace_id, member_id, amount, actor=actor, reason=reason, metadata=metadata
        )
        return self._commit(plan, idempotency_key)

    def preview_transfer_from(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Preview[TransferResult]:
        """Run :meth:`transfer_from` with every check, roll it back and return what it would do.

        It raises exactly the errors the real call would raise now. It takes no idempotency
        key because it stores nothing.
        """
        plan = self._transfer_from_plan(
            workspace_id, member_id, amount, actor=actor, reason=reason, metadata=metadata
        )
        return self._dry_run(plan)

    def _transfer_from_plan(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[TransferResult]:
        return self._move_plan(
            rules.transfer_from, "transfer_from", "transfer credits from a member",
            workspace_id, member_id, amount, actor, reason, metadata,
        )  # fmt: skip

    def _move_plan(
        self,
        rule: Callable[..., TransferResult],
        op: str,
        action: str,
        workspace_id: str,
        member_id: str,
        amount: int,
        actor: str,
        reason: str | None,
        metadata: Mapping[str, str] | None,
    ) -> _Plan[TransferResult]:
        rules.check_amount(amount)
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(member_id, "member id")
        _validation.check_id(actor, "actor id")
        _validation.check_note(reason, metadata)
        request = {
            "op": op,
            "member": member_id,
            "amount": amount,
            "actor": actor,
            **_validation.note_request(reason, metadata),
        }

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> TransferResult:
            found = tx.get_members(workspace_id, {actor, member_id})
            rules.require_admin(workspace, found.get(actor), action, actor)
            rules.require_coaching(workspace, action)
            member = _found(found, workspace_id, member_id)
            result = rule(
                workspace,
                pool,
                member,
                amount,
                actor=found[actor],
                reason=reason,
                metadata=metadata,
            )
            tx.update_pool(result.pool)
            tx.update_members([result.member])
            (transfer,) = self._append(tx, [result.transfer])
            return TransferResult(pool=result.pool, member=result.member, transfer=transfer)

        return _Plan(
            workspace_id,
            request,
            step,
            _replay.encode_transfer,
            _replay.decode_transfer,
            unstamp=lambda r: attrs.evolve(r, transfer=_unstamped(r.transfer)),
            member_ids=(member_id,),
        )

    def set_balances(
        self,
        workspace_id: str,
        member_ids: Sequence[str],
        balance: int,
        *,
        actor: str,
        idempotency_key: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> SetBalancesResult:
        """Set each listed member's balance to ``balance``, all or nothing.

        The differences are computed from the balances read inside the committing
        transaction, never from values read earlier.
        """
        plan = self._set_balances_plan(
            workspace_id, member_ids, balance, actor=actor, reason=reason, metadata=metadata
        )
        return self._commit(plan, idempotency_key)

    def preview_set_balances(
        self,
        workspace_id: str,
        member_ids: Sequence[str],
        balance: int,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Preview[SetBalancesResult]:
        """Run :meth:`set_balances` with every check, roll it back and return what it would do.

        :attr:`Preview.net_change` is the number of credits that would leave the pool
        (positive) or return to it (negative). It raises exactly the errors the real call
        would raise now, and takes no idempotency key because it stores nothing.
        """
        plan = self._set_balances_plan(
            workspace_id, member_ids, balance, actor=actor, reason=reason, metadata=metadata
        )
        return self._dry_run(plan)

    def _set_balances_plan(
        self,
        workspace_id: str,
        member_ids: Sequence[str],
        balance: int,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[SetBalancesResult]:
        rules.check_balance(balance)
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(actor, "actor id")
        if isinstance(member_ids, str) or not isinstance(member_ids, Sequence):
            raise InvalidRequest(
                f"invalid member ids {_shown(member_ids)}: expected a list of ids",
                value=member_ids,
            )
        # Report the smallest invalid id (by repr), so the error does not depend on order.
        invalid = sorted((m for m in member_ids if not _validation.is_valid_id(m)), key=repr)
        if invalid:
            _validation.check_id(invalid[0], "member id")
        _validation.check_note(reason, metadata)
        ids = list(member_ids)
        request = {
            "op": "set_balances",
            "members": ids,
            "balance": balance,
            "actor": actor,
            **_validation.note_request(reason, metadata),
        }

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> SetBalancesResult:
            found = tx.get_members(workspace_id, {actor, *ids})
            action = "set member balances"
            rules.require_admin(workspace, found.get(actor), action, actor)
            rules.require_coaching(workspace, action)
            rules.check_distinct(ids)
            missing = sorted(i for i in ids if i not in found)
            if missing:
                raise MemberNotFound(workspace_id=workspace_id, member_id=missing[0])
            result = rules.set_balances(
                workspace,
                pool,
                [found[i] for i in ids],
                balance,
                actor=found[actor],
                reason=reason,
                metadata=metadata,
            )
            tx.update_pool(result.pool)
            tx.update_members(result.members)
            transfers = self._append(tx, result.transfers)
            return attrs.evolve(result, transfers=tuple(transfers))

        return _Plan(
            workspace_id,
            request,
            step,
            _replay.encode_set_balances,
            _replay.decode_set_balances,
            unstamp=lambda r: attrs.evolve(r, transfers=tuple(_unstamped(t) for t in r.transfers)),
            member_ids=tuple(ids),
        )

    def spend(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        idempotency_key: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> SpendResult:
        """Spend a member's credits on coaching; the credits leave the workspace."""
        plan = self._spend_plan(workspace_id, member_id, amount, reason=reason, metadata=metadata)
        return self._commit(plan, idempotency_key)

    def _spend_plan(
        self,
        workspace_id: str,
        member_id: str,
        amount: int,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[SpendResult]:
        rules.check_amount(amount)
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(member_id, "member id")
        _validation.check_note(reason, metadata)
        request = {
            "op": "spend",
            "member": member_id,
            "amount": amount,
            **_validation.note_request(reason, metadata),
        }

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> SpendResult:
            rules.require_coaching(workspace, "spend credits")
            member = _found(tx.get_members(workspace_id, [member_id]), workspace_id, member_id)
            result = rules.spend(workspace, member, amount, reason=reason, metadata=metadata)
            tx.update_members([result.member])
            # The pure spend rule takes no pool, but the journal still records the pool's balance.
            spent = attrs.evolve(result.transfer, pool_balance=pool.balance)
            (transfer,) = self._append(tx, [spent])
            return attrs.evolve(result, transfer=transfer)

        return _Plan(workspace_id, request, step, _replay.encode_spend, _replay.decode_spend)

    def reverse(
        self,
        workspace_id: str,
        transfer_id: str,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> ReversalResult:
        """Undo a transfer with the opposite one, linked to it through ``reverses``.

        Transfers to and from a member can be reversed while coaching is enabled, and
        purchases are reversed as refunds. Spends, member removals, refunds and reversals
        are final, so they raise :class:`~coaching_credits.NotReversible`. ``actor`` must be
        an admin.
        A transfer is reversed at most once: a second attempt raises
        :class:`~coaching_credits.AlreadyReversed` with the first reversal's id. When the
        member or the pool no longer holds the credits it raises
        :class:`~coaching_credits.InsufficientCredits` and changes nothing.
        """
        plan = self._reverse_plan(
            workspace_id, transfer_id, actor=actor, reason=reason, metadata=metadata
        )
        return self._commit(plan, idempotency_key)

    def _reverse_plan(
        self,
        workspace_id: str,
        transfer_id: str,
        *,
        actor: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> _Plan[ReversalResult]:
        _validation.check_id(workspace_id, "workspace id")
        _validation.check_id(transfer_id, "transfer id")
        _validation.check_id(actor, "actor id")
        _validation.check_note(reason, metadata)
        request = {
            "op": "reverse",
            "transfer": transfer_id,
            "actor": actor,
            **_validation.note_request(reason, metadata),
        }

        def step(tx: Transaction, workspace: Workspace, pool: Pool) -> ReversalResult:
            action = "reverse transfers"
            actor_member = tx.get_members(workspace_id, [actor]).get(actor)
            rules.require_admin(workspace, actor_member, action, actor)
            assert actor_member is not None
            original = tx.get_transfer(workspace_id, transfer_id)
            if original is None:
                raise TransferNotFound(workspace_id=workspace_id, transfer_id=transfer_id)

            member = None
            member_left = False
            if original.member_id is not None and original.kind in rules.REVERSIBLE_KINDS:
                member = tx.get_members(workspace_id, [original.member_id]).get(original.member_id)
                removals = tx.list_transfers(
                    workspace_id,
                    member_id=original.member_id,
                    kinds={TransferKind.MEMBER_REMOVED},
                    limit=1,
                )
                member_left = bool(removals) and (removals[0].sequence or 0) > (
                    original.sequence or 0
                )

            result = rules.reverse(
                workspace,
                pool,
                original,
                actor=actor_member,
                member=member,
                reversal=tx.find_reversal(workspace_id, transfer_id),
                member_left=member_left,
                reason=reason,
                metadata=metadata,
            )
            tx.update_pool(result.pool)
            if result.member is not None:
                tx.update_members([result.member])
            (transfer,) = self._append(tx, [result.transfer])
            return attrs.evolve(result, transfer=transfer)

        return _Plan(workspace_id, request, step, _replay.encode_reversal, _replay.decode_reversal)

    # Batches ------------------------------------------------------------------------------

    def apply_batch(self, operations: Iterable[Operation]) -> list[Outcome]:
        """Apply many write calls in one transaction and return one :class:`Outcome` each.

        Each :class:`Operation` runs the same checks, in the same order, as its single call,
        and sees the state the operations before it left. A rejected operation changes
        nothing and the batch goes on. Idempotency keys work as in single calls, also for a
        key used twice in one batch, and a keyed rejection is remembered in the same
        transaction. A storage error, a crash or running out of retries commits none of the
        batch, and a clash with a concurrent writer reruns the whole batch. Every workspace
        the batch names is locked in ascending id order before the first operation runs.
        :attr:`last_call_replayed` is left as it was, because each outcome says whether it
        replayed.
        """
        return _batch.apply_batch(self, list(operations))

    # Reads --------------------------------------------------------------------------------

    def workspace(self, workspace_id: str) -> Workspace:
        """Return a workspace's settings."""
        return self._read(workspace_id, lambda tx: tx.get_workspace(workspace_id)[0])

    def pool(self, workspace_id: str) -> Pool:
        """Return a workspace's pool."""
        return self._read(workspace_id, lambda tx: tx.get_workspace(workspace_id)[1])

    def pool_status(self, workspace_id: str) -> PoolStatus:
        """Return the pool's balance, the low-pool threshold and whether the pool is low."""
        return self._read(
            workspace_id, lambda tx: rules.pool_status(*tx.get_workspace(workspace_id))
        )

    def low_balances(self, workspace_id: str, threshold: int) -> list[Member]:
        """Return the members whose balance is at or below ``threshold``, by balance, then id."""
        rules.check_balance(threshold, field="threshold")

        def read(tx: Transaction) -> list[Member]:
            tx.get_workspace(workspace_id)
            # NOTE: this loads every member of the workspace; fine for thousands of members,
            # a backend query with the threshold would scale further.
            return rules.low_balances(tx.list_members(workspace_id), threshold)

        return self._read(workspace_id, read)

    def member(self, workspace_id: str, member_id: str) -> Member:
        """Return one member; raise :class:`~coaching_credits.MemberNotFound` if missing."""

        def read(tx: Transaction) -> Member:
            tx.get_workspace(workspace_id)
            return _found(tx.get_members(workspace_id, [member_id]), workspace_id, member_id)

        return self._read(workspace_id, read)

    def members(self, workspace_id: str) -> list[Member]:
        """Return every member of a workspace with their balance, sorted by id."""

        def read(tx: Transaction) -> list[Member]:
            tx.get_workspace(workspace_id)
            return tx.list_members(workspace_id)

        return self._read(workspace_id, read)

    def history(
        self,
        workspace_id: str,
        *,
        member_id: str | None = None,
        kinds: Collection[TransferKind | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: int | None = None,
        limit: int | None = 100,
    ) -> list[Transfer]:
        """Return journal entries of a workspace, or of one member, newest first.

        ``kinds`` keeps only entries of those kinds. ``since`` is inclusive and ``until``
        exclusive; both must carry a time zone. To page, pass the ``sequence`` of the last
        entry of one page as ``before`` for the next: entries committed meanwhile have higher
        sequences, so pages neither skip nor repeat entries. ``limit=None`` returns every
        entry. A removed member's history stays readable; an id that was never a member
        raises :class:`~coaching_credits.MemberNotFound`.
        """
        if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_AMOUNT):
            raise InvalidRequest(
                f"invalid limit {_shown(limit)}: expected an int from 1 to {MAX_AMOUNT}",
                value=limit,
            )
        if member_id is not None:
            _validation.check_id(member_id, "member id")
        wanted = _journal.check_kinds(kinds)
        if since is not None:
            _journal.check_moment(since, "since")
        if until is not None:
            _journal.check_moment(until, "until")
        _journal.check_cursor(before)

        def read(tx: Transaction) -> list[Transfer]:
            tx.get_workspace(workspace_id)
            if member_id is not None:
                _journal.require_known_member(tx, workspace_id, member_id)
            if wanted is not None and not wanted:
                return []
            return tx.list_transfers(
                workspace_id,
                member_id=member_id,
                kinds=wanted,
                since=since,
                until=until,
                before_sequence=before,
                limit=limit,
            )

        return self._read(workspace_id, read)

    def balance_at(self, workspace_id: str, at: datetime, *, member_id: str | None = None) -> int:
        """Return the pool's balance, or a member's, at time ``at``, read from the journal.

        Entries stamped exactly at ``at`` count. Before the first entry the balance is 0, and
        so is a removed member's after their removal. ``at`` must carry a time zone.
        """
        _journal.check_moment(at, "at")
        if member_id is not None:
            _validation.check_id(member_id, "member id")

        def read(tx: Transaction) -> int:
            tx.get_workspace(workspace_id)
            if member_id is not None:
                _journal.require_known_member(tx, workspace_id, member_id)
            return _journal.balance_at(tx, workspace_id, at, member_id)

        return self._read(workspace_id, read)

    def audit(self, workspace_id: str) -> AuditReport:
        """Rebuild every balance of a workspace from its journal and compare with the stored ones.

        The journal is summed per member and kind by the backend, so a long journal is not
        loaded row by row. The report lists each stored balance that disagrees with the
        journal's totals or with the balance recorded on its latest entry, and whether
        pool + members = purchased - refunded - spent holds.
        """

        def read(tx: Transaction) -> AuditReport:
            return _audit.audit_workspace(tx, workspace_id)

        return self._read(workspace_id, read)

    # Machinery ----------------------------------------------------------------------------

    def _append(self, tx: Transaction, transfers: Sequence[Transfer]) -> list[Transfer]:
        now = self._clock()
        return tx.append_transfers([_stamped(t, self._new_id(), now) for t in transfers])

    def _commit(self, plan: _Plan[R], idempotency_key: str | None) -> R:
        """Run ``plan`` in its own transaction, replaying or remembering keyed requests."""
        self._local.replayed = False
        key = _Key.of(plan, idempotency_key)

        def locked_step(tx: Transaction) -> R | _Replayed:
            workspace, pool = tx.lock_workspace(plan.workspace_id)
            return self._run_plan(tx, workspace, pool, plan, key)

        try:
            outcome = self._retrying(plan.workspace_id, locked_step)
        except _rejections.REMEMBERED as error:
            if key is not None and not _rejections.is_replayed(error):
                self._remember_rejection(plan.workspace_id, key, error)
            raise
        if isinstance(outcome, _Replayed):
            self._local.replayed = True
            return outcome.value  # type: ignore[return-value]  # _Replayed wraps an R
        self._local.replayed = False
        return outcome

    def _run_plan(
        self, tx: Transaction, workspace: Workspace, pool: Pool, plan: _Plan[R], key: _Key | None
    ) -> R | _Replayed:
        """Check the idempotency key, run the step and store the key's record.

        The caller has locked the workspace. A key already used with the same request
        returns the stored result wrapped in :class:`_Replayed` and changes nothing.
        """
        if key is not None:
            record = tx.get_idempotency(plan.workspace_id, key.key)
            if record is not None:
                if record.request != key.request_text:
                    raise IdempotencyConflict(
                        workspace_id=plan.workspace_id,
                        key=key.key,
                        original=_codec.loads(record.request),
                        request=plan.request,
                    )
                return _Replayed(plan.decode(_codec.loads(record.response)))
            rejection = tx.get_idempotency(plan.workspace_id, key.rejection_key)
            if rejection is not None:
                raise _rejections.decode(rejection.response)

        result = plan.step(tx, workspace, pool)

        if key is not None:
            tx.put_idempotency(
                IdempotencyRecord(
                    workspace_id=plan.workspace_id,
                    key=key.key,
                    request=key.request_text,
                    response=_codec.dumps(plan.encode(result)),
                    created_at=self._clock(),
                )
            )
        return result

    def _dry_run(self, plan: _Plan[R]) -> Preview[R]:
        """Run ``plan`` as :meth:`_commit` would, then roll the transaction back."""
        workspace_id = plan.workspace_id

        def locked_step(tx: Transaction) -> R:
            workspace, pool = tx.lock_workspace(workspace_id)
            before = tx.get_members(workspace_id, plan.member_ids)
            result = plan.step(tx, workspace, pool)

            # Read back what the transaction would commit, then leave by raising, which
            # makes every backend roll back.
            _, pool_after = tx.get_workspace(workspace_id)
            after = tx.get_members(workspace_id, plan.member_ids)
            raise _RolledBack(
                Preview(
                    result=plan.unstamp(result),
                    pool=BalanceChange(
                        member_id=None, before=pool.balance, after=pool_after.balance
                    ),
                    members=tuple(
                        BalanceChange(member_id=i, before=before[i].balance, after=after[i].balance)
                        for i in plan.member_ids
                    ),
                )
            )

        try:
            self._retrying(workspace_id, locked_step)
        except _RolledBack as rolled_back:
            return rolled_back.preview
        raise AssertionError("unreachable: the dry run always raises _RolledBack")

    def _read(self, workspace_id: str, read: Callable[[Transaction], R]) -> R:
        return self._retrying(workspace_id, read)

    def _rejection_record(
        self, workspace_id: str, key: _Key, error: CreditError
    ) -> IdempotencyRecord:
        """Return the record that makes an identical resend of a rejected request fail alike.

        The record lives under :attr:`_Key.rejection_key`, never under the key itself, so
        the key stays free: a corrected request with the same key runs normally.
        """
        return IdempotencyRecord(
            workspace_id=workspace_id,
            key=key.rejection_key,
            request=key.request_text,
            response=_rejections.encode(error),
            created_at=self._clock(),
        )

    def _remember_rejection(self, workspace_id: str, key: _Key, error: CreditError) -> None:
        """Store a rejected keyed request in a transaction of its own."""

        def step(tx: Transaction) -> None:
            tx.lock_workspace(workspace_id)
            if tx.get_idempotency(workspace_id, key.key) is not None:
                return  # a concurrent call with this key succeeded meanwhile
            if tx.get_idempotency(workspace_id, key.rejection_key) is not None:
                return
            tx.put_idempotency(self._rejection_record(workspace_id, key, error))

        try:
            self._retrying(workspace_id, step)
        except ConcurrencyConflict as conflict:
            # The call is still rejected, but its record is missing, so an identical resend
            # is checked again against the state at that time.
            logger.warning(
                "workspace %r: could not record the rejection of key %r: %s",
                workspace_id, key.key, conflict,
            )  # fmt: skip

    def _retrying(self, workspace_id: str, step: Callable[[Transaction], R]) -> R:
        delay = self._retry_delay
        for attempt in range(1, self._max_attempts + 1):
            try:
                with self.repository.transaction() as tx:
                    return step(tx)
            except RetryableConflict as conflict:
                if attempt == self._max_attempts:
                    logger.warning(
                        "workspace %r: giving up after %d conflicting attempts: %s",
                        workspace_id, attempt, conflict,
                    )  # fmt: skip
                    raise ConcurrencyConflict(
                        workspace_id=workspace_id, attempts=attempt, cause=str(conflict)
                    ) from conflict
                logger.info(
                    "workspace %r: attempt %d conflicted with a concurrent writer (%s); retrying",
                    workspace_id, attempt, conflict,
                )  # fmt: skip
                # Full jitter keeps clashing writers from retrying in lockstep.
                time.sleep(random.uniform(0, delay))
                delay *= 2
        raise AssertionError("unreachable: the loop returns or raises")


@attrs.frozen
class _Key:
    """An idempotency key with the canonical JSON text of the request made under it."""

    key: str
    request_text: str

    @classmethod
    def of(cls, plan: _Plan[Any], idempotency_key: str | None) -> _Key | None:
        """Check ``idempotency_key`` and pair it with ``plan``'s request; ``None`` if unkeyed.

        Unkeyed calls skip building the request text, which only keyed calls store.
        """
        if idempotency_key is None:
            return None
        _validation.check_id(idempotency_key, "idempotency key")
        return cls(idempotency_key, _codec.dumps(plan.request))

    @property
    def rejection_key(self) -> str:
        """The storage key of this request's remembered rejection.

        It is longer than any accepted idempotency key, so it never collides with one.
        """
        digest = hashlib.sha256(f"{self.key}\n{self.request_text}".encode()).hexdigest()
        return f"{'~' * MAX_KEY_LENGTH}rejected:{digest}"


@attrs.frozen
class _Replayed:
    value: object


def _keep(result: R) -> R:
    return result


@attrs.frozen
class _Plan(Generic[R]):
    """A write call's checked arguments and its step, shared by the call, its preview and
    :meth:`Ledger.apply_batch`.

    ``step`` runs inside a transaction that has locked the workspace; it raises before its
    first write whenever it rejects the request. ``encode`` and ``decode`` store and rebuild
    the result for replays. ``unstamp`` clears the ids and times that a preview's
    rolled-back transfers received, and ``member_ids`` names the members a preview reports,
    in order.
    """

    workspace_id: str
    request: dict[str, Any]
    step: Callable[[Transaction, Workspace, Pool], R]
    encode: Callable[[R], Any]
    decode: Callable[[Any], R]
    unstamp: Callable[[R], R] = _keep
    member_ids: tuple[str, ...] = ()


class _RolledBack(Exception):
    """Carries a preview out of its transaction so that the transaction rolls back."""

    def __init__(self, preview: Preview[Any]) -> None:
        super().__init__("preview rolled back")
        self.preview = preview


# _stamped copies these fields by name; a field added to Transfer must be added there too.
assert {field.name for field in attrs.fields(Transfer)} == {
    "workspace_id", "member_id", "kind", "amount", "actor_id", "pool_balance",
    "member_balance", "id", "created_at", "sequence", "reason", "metadata", "reverses",
}  # fmt: skip


def _stamped(transfer: Transfer, transfer_id: str, created_at: datetime) -> Transfer:
    """Return ``transfer`` with an id and a time, as ``attrs.evolve`` would.

    Every write call stamps its transfers, so the copy is written out: it saves about
    1 microsecond per transfer over ``attrs.evolve`` (measured on CPython 3.11 with attrs 26.1).
    That is about 7% of a ``transfer_to`` call's Python time on the in-memory backend.
    """
    return Transfer(
        workspace_id=transfer.workspace_id,
        member_id=transfer.member_id,
        kind=transfer.kind,
        amount=transfer.amount,
        actor_id=transfer.actor_id,
        pool_balance=transfer.pool_balance,
        member_balance=transfer.member_balance,
        id=transfer_id,
        created_at=created_at,
        sequence=transfer.sequence,
        reason=transfer.reason,
        metadata=transfer.metadata,
        reverses=transfer.reverses,
    )


def _unstamped(transfer: Transfer) -> Transfer:
    return attrs.evolve(transfer, id=None, created_at=None, sequence=None)


def _found(found: Mapping[str, Member], workspace_id: str, member_id: str) -> Member:
    member = found.get(member_id)
    if member is None:
        raise MemberNotFound(workspace_id=workspace_id, member_id=member_id)
    return member
