"""The repository contract, run on every backend through the ``repository`` fixture."""

from coaching_credits.testing import RepositoryContract


class TestRepositoryContract(RepositoryContract):
    """Every backend in ``conftest.BACKENDS``: memory, SQLite and PostgreSQL."""
