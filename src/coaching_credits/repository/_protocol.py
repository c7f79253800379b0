"""The storage protocol that every backend implements.

A backend hands out :class:`Transaction` objects through :meth:`Repository.transaction`.
Everything done through one transaction commits together when the ``with`` block ends normally
and rolls back when it raises. The ledger runs one read-rule-commit step per transaction and
retries the whole step when the backend raises :class:`RetryableConflict`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from ..models import Member, Pool, Transfer, TransferKind, Workspace

__all__ = [
    "IdempotencyRecord",
    "Repository",
    "RetryableConflict",
    "Transaction",
]


class RetryableConflict(Exception):
    """A transient clash with a concurrent writer: the whole step may succeed if run again.

    Backends raise it for lock time-outs, serialization failures and deadlocks. It never
    reaches the ledger's callers: the ledger retries and, once out of attempts, raises
    :class:`~coaching_credits.ConcurrencyConflict`.
    """


@attrs.frozen
class IdempotencyRecord:
    """The stored outcome of a call made with an idempotency key.

    ``request`` and ``response`` are canonical JSON texts: the request's operation and
    arguments, and the result to return when the same request is replayed.
    """

    workspace_id: str
    key: str
    request: str
    response: str
    created_at: datetime


@runtime_checkable
class Transaction(Protocol):
    """Reads and writes of one atomic unit of work."""

    def create_workspace(self, workspace: Workspace, pool: Pool) -> None:
        """Insert a workspace and its pool; raise ``WorkspaceAlreadyExists`` if the id is taken."""

    def lock_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        """Load a workspace and its pool for writing; raise ``WorkspaceNotFound`` if missing.

        Backends where writers run concurrently lock the pool here, before any member, so
        every writer takes its locks in the same order.
        """
        ...

    def get_workspace(self, workspace_id: str) -> tuple[Workspace, Pool]:
        """Load a workspace and its pool for reading; raise ``WorkspaceNotFound`` if missing."""
        ...

    def get_members(self, workspace_id: str, member_ids: Collection[str]) -> dict[str, Member]:
        """Load the listed members of one workspace, keyed by id; missing ids are left out.

        Backends that lock rows lock them in ascending id order.
        """
        ...

    def list_members(self, workspace_id: str) -> list[Member]:
        """Load every member of a workspace, sorted by id."""
        ...

    def insert_member(self, member: Member) -> None:
        """Insert a member; raise ``MemberAlreadyExists`` if the workspace has the id."""

    def delete_member(self, workspace_id: str, member_id: str) -> None:
        """Delete a member row; the journal keeps its transfers."""

    def update_workspace(self, workspace: Workspace) -> None:
        """Store a workspace's settings."""

    def update_pool(self, pool: Pool) -> None:
        """Store a pool's balance."""

    def update_members(self, members: Iterable[Member]) -> None:
        """Store the balances and roles of existing members."""

    def append_transfers(self, transfers: Sequence[Transfer]) -> list[Transfer]:
        """Append journal entries and return them with ``sequence`` set.

        Sequences increase in commit order within a workspace and are never reused.
        """
        ...

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
        """Load journal entries newest first (descending ``sequence``).

        ``since`` is inclusive and ``until`` exclusive; ``before_sequence`` returns only
        entries older than that sequence, which makes a stable paging cursor.
        """
        ...

    def get_transfer(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        """Load one journal entry of a workspace by id, or ``None``."""
        ...

    def find_reversal(self, workspace_id: str, transfer_id: str) -> Transfer | None:
        """Load the entry whose ``reverses`` is ``transfer_id``, or ``None``."""
        ...

    def journal_totals(self, workspace_id: str) -> list[tuple[str | None, TransferKind, int]]:
        """Sum the journal's amounts per member and kind: ``(member_id, kind, total)`` rows.

        ``member_id`` is ``None`` for entries without a member (purchases). Backends
        compute this in the database, so auditing a long journal does not load every row.
        """
        ...

    def get_idempotency(self, workspace_id: str, key: str) -> IdempotencyRecord | None:
        """Load the record stored for a key in a workspace, or ``None``."""
        ...

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        """Store the record for a key; the ledger checks first that the key is unused."""


@runtime_checkable
class Repository(Protocol):
    """Storage for workspaces, members, the journal and idempotency records."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Open a unit of work that commits on success and rolls back on error."""
        ...

    def close(self) -> None:
        """Release connections and other resources."""
