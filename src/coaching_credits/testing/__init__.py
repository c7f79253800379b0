"""Test helpers for code that builds on coaching-credits.

:class:`RepositoryContract` is the suite every storage backend must pass. It imports pytest,
so import this package from test code only.
"""

from .contract import RepositoryContract

__all__ = ["RepositoryContract"]
