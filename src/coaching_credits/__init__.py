"""coaching-credits: a workspace's shared pool of prepaid coaching credits.

Domain values and pure rules, a pluggable repository protocol with in-memory, SQLite and
PostgreSQL backends, and a :class:`Ledger` service that commits each change atomically.
"""

from typing import TYPE_CHECKING, Any

from ._batch import Operation, Outcome
from .errors import (
    AlreadyReversed,
    CoachingDisabled,
    ConcurrencyConflict,
    CreditError,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberAlreadyExists,
    MemberNotFound,
    NotReversible,
    PermissionDenied,
    StorageError,
    TransferNotFound,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
)
from .ledger import Ledger
from .models import (
    MAX_AMOUNT,
    AuditCheck,
    AuditMismatch,
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
from .repository import (
    IdempotencyRecord,
    InMemoryRepository,
    Repository,
    RetryableConflict,
    SQLiteRepository,
    Transaction,
)
from .rules import (
    REVERSIBLE_KINDS,
    MemberRemoval,
    PurchaseResult,
    ReversalResult,
    SetBalancesResult,
    SpendResult,
    TransferResult,
    add_member,
    purchase,
    remove_member,
    set_balances,
    set_coaching,
    spend,
    transfer_from,
    transfer_to,
)

if TYPE_CHECKING:
    from .repository.postgres import PostgresRepository as PostgresRepository


def __getattr__(name: str) -> Any:
    # PostgresRepository is imported on first use, so psycopg stays an optional dependency. It is
    # left out of __all__ so that "from coaching_credits import *" works without psycopg.
    if name == "PostgresRepository":
        try:
            from .repository.postgres import PostgresRepository
        except ImportError as error:
            raise ImportError(
                f"PostgresRepository needs psycopg, which is missing ({error}); "
                f"install coaching-credits[postgres]"
            ) from error
        return PostgresRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_AMOUNT",
    "REVERSIBLE_KINDS",
    "AlreadyReversed",
    "AuditCheck",
    "AuditMismatch",
    "AuditReport",
    "BalanceChange",
    "CoachingDisabled",
    "ConcurrencyConflict",
    "CreditError",
    "IdempotencyConflict",
    "IdempotencyRecord",
    "InMemoryRepository",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidRequest",
    "Ledger",
    "Member",
    "MemberAlreadyExists",
    "MemberNotFound",
    "MemberRemoval",
    "NotReversible",
    "Operation",
    "Outcome",
    "PermissionDenied",
    "Pool",
    "PoolStatus",
    "Preview",
    "PurchaseResult",
    "Repository",
    "RetryableConflict",
    "ReversalResult",
    "Role",
    "SQLiteRepository",
    "SetBalancesResult",
    "SpendResult",
    "StorageError",
    "Transaction",
    "Transfer",
    "TransferKind",
    "TransferNotFound",
    "TransferResult",
    "Workspace",
    "WorkspaceAlreadyExists",
    "WorkspaceNotFound",
    "add_member",
    "purchase",
    "remove_member",
    "set_balances",
    "set_coaching",
    "spend",
    "transfer_from",
    "transfer_to",
]
