"""An in-memory backend for tests and for hosts that keep state elsewhere.

All transactions share one re-entrant lock, so writers run one at a time and the repository
is safe to share between threads. A failed transaction is rolled back from an undo log.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import attrs

from ..errors import MemberAlreadyExists, WorkspaceAlreadyExists, WorkspaceNotFound
from ..models import Member, Pool, Transfer, TransferKind, Workspace
from ._protocol import IdempotencyRecord

__all__ = ["InMemoryRepository"]

_V = TypeVar("_V")


class InMemoryRepository:
    """Keep all state in process memory; it is lost when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._workspaces: dict[str, Workspace] = {}
        self._pools: dict[str, Pool] = {}
        self._members: dict[str, dict[str, Member]] = {}
        self._transfers: dict[str, list[Transfer]] = {}
        self._idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self._sequence = itertools.count(1)

    @contextmanager
    def transaction(self) -> Iterator[_MemoryTransaction]:
        """Open a unit of work holding the repository's lock until it ends."""
        with self._lock:
            tx = _MemoryTransaction(self)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise

    def close(self) -> None:
        """Do nothing: there is no resource to release."""


class _MemoryTransaction:
    def __init__(self, repository: InMemoryRepository) -> None:
        self._repo = repository
        self._undo: list[Callable[[], object]] = []

    def rollback(self) -> None:
        for step in reversed(self._undo):
            step()
        self._undo.clear()

    def _workspace_members(self, workspace_id: str) -> dict[str, Member]:
        # A read must not create state: an unknown workspace has no members, and writes to it
        # go nowhere, as an UPDATE of missing rows does in SQL.
        return self._repo._members.get(workspace_id, {})

    def create_workspace(self, workspace: Workspace, pool: Pool) -> None:
        repo = self._repo
        if workspace.id in repo._workspaces:
            raise WorkspaceAlreadyExists(workspace.id)
        repo._workspaces[workspace.id] = workspace
        repo._pools[workspace.id] = pool
        repo._members[workspace.id] = {}
        repo._transfers[workspace.id] = []

        def undo() -> None:
            del repo._workspaces[workspace.id]
            del repo._pools[workspace.id]
            del repo._members[workspace.id]
            del repo._transfers[workspace.id]

        self._undo.append(undo)

    def lock_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        return self.get_workspace(workspace_id)

    def get_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        try:
            return self._repo._workspaces[workspace_id], self._repo._pools[workspace_id]
        except KeyError:
            raise WorkspaceNotFound(workspace_id) from None

    def get_members(self, workspace_id: str, member_ids: Collection[str]) -> dict[str, Member]:
        members = self._workspace_members(workspace_id)
        return {i: members[i] for i in member_ids if i in members}

    def list_members(self, workspace_id: str) -> list[Member]:
        members = self._workspace_members(workspace_id)
        return [members[i] for i in sorted(members)]

    def insert_member(self, member: Member) -> None:
        if member.workspace_id not in self._repo._workspaces:
            raise WorkspaceNotFound(member.workspace_id)
        members = self._workspace_members(member.workspace_id)
        if member.id in members:
            raise MemberAlreadyExists(workspace_id=member.workspace_id, member_id=member.id)
        members[member.id] = member
        self._undo.append(lambda: members.pop(member.id))

    def delete_member(self, workspace_id: str, member_id: str) -> None:
        members = self._workspace_members(workspace_id)
        old = members.pop(member_id)
        self._undo.append(lambda: members.__setitem__(member_id, old))

    def update_workspace(self, workspace: Workspace) -> None:
        self._set(self._repo._workspaces, workspace.id, workspace)

    def update_pool(self, pool: Pool) -> None:
        self._set(self._repo._pools, pool.workspace_id, pool)

    def update_members(self, members: Iterable[Member]) -> None:
        for member in members:
            self._set(self._workspace_members(member.workspace_id), member.id, member)

    def _set(self, table: dict[str, _V], key: str, value: _V) -> None:
        old = table[key]
        table[key] = value
        self._undo.append(lambda: table.__setitem__(key, old))

    def append_transfers(self, transfers: Sequence[Transfer]) -> list[Transfer]:
        stored = [attrs.evolve(t, sequence=next(self._repo._sequence)) for t in transfers]
        for transfer in stored:
            journal = self._repo._transfers.setdefault(transfer.workspace_id, [])
            journal.append(transfer)
            self._undo.append(journal.pop)
        return stored

    def list_transfers(
        self,
        workspace_id: str,
        *,
        member_id: str | None = None,
        kinds: Collection[TransferKind] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_sequence: int | None = None,
        limit: int | None = None,
    ) -> list[Transfer]:
        found: list[Transfer] = []
        for transfer in reversed(self._repo._transfers.get(workspace_id, [])):
            if limit is not None and len(found) >= limit:
                break
            if before_sequence is not None and (transfer.sequence or 0) >= before_sequence:
                continue
            if member_id is not None and transfer.member_id != member_id:
                continue
            if kinds is not None and transfer.kind not in kinds:
                continue
            created = transfer.created_at
            if since is not None and (created is None or created < since):
                continue
            if until is not None and (created is None or created >= until):
                continue
            found.append(transfer)
        return found

    def get_transfer(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        for transfer in self._repo._transfers.get(workspace_id, []):
            if transfer.id == transfer_id:
                return transfer
        return None

    def find_reversal(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        for transfer in self._repo._transfers.get(workspace_id, []):
            if transfer.reverses == transfer_id:
                return transfer
        return None

    def journal_totals(self, workspace_id: str) -> list[tuple[str | None, TransferKind, int]]:
        totals: dict[tuple[str | None, TransferKind], int] = {}
        for transfer in self._repo._transfers.get(workspace_id, []):
            slot = (transfer.member_id, transfer.kind)
            totals[slot] = totals.get(slot, 0) + transfer.amount
        return [(member_id, kind, total) for (member_id, kind), total in totals.items()]

    def get_idempotency(self, workspace_id: str, key: str) -> IdempotencyRecord | None:
        return self._repo._idempotency.get((workspace_id, key))

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        table = self._repo._idempotency
        slot = (record.workspace_id, record.key)
        table[slot] = record
        self._undo.append(lambda: table.pop(slot))
