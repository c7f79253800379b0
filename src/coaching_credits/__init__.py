"""coaching-credits: a workspace's shared pool of prepaid coaching credits.

Domain values and pure rules, a pluggable repository protocol with in-memory, SQLite and
PostgreSQL backends, and a :class:`Ledger` service that commits each change atomically.
"""

from .errors import (
    CoachingDisabled,
    ConcurrencyConflict,
    CreditError,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberAlreadyExists,
    MemberNotFound,
    PermissionDenied,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
)
from .ledger import Ledger
from .models import MAX_AMOUNT, Member, Pool, Role, Transfer, TransferKind, Workspace
from .repository import (
    IdempotencyRecord,
    InMemoryRepository,
    Repository,
    RetryableConflict,
    SQLiteRepository,
    Transaction,
)
from .rules import (
    MemberRemoval,
    PurchaseResult,
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

__all__ = [
    "MAX_AMOUNT",
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
    "PermissionDenied",
    "Pool",
    "PurchaseResult",
    "Repository",
    "RetryableConflict",
    "Role",
    "SQLiteRepository",
    "SetBalancesResult",
    "SpendResult",
    "Transaction",
    "Transfer",
    "TransferKind",
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
