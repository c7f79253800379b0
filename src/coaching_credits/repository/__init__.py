"""Storage backends behind one :class:`Repository` protocol."""

from ._protocol import IdempotencyRecord, Repository, RetryableConflict, Transaction
from .memory import InMemoryRepository
from .sqlite import SQLiteRepository

__all__ = [
    "IdempotencyRecord",
    "InMemoryRepository",
    "Repository",
    "RetryableConflict",
    "SQLiteRepository",
    "Transaction",
]
