"""Shared fixtures: one storage backend per parameter, so a test written once runs on each.

PostgreSQL tests run against the server named by ``COACHING_CREDITS_TEST_POSTGRES`` (a libpq
conninfo of a database the tests may create databases from; default
``host=127.0.0.1 port=5432 user=postgres dbname=postgres``). Each test session creates one
throwaway database and drops it at the end; each test gets its own schema in it. Without a
reachable server those tests skip, unless ``COACHING_CREDITS_REQUIRE_POSTGRES=1`` is set, as
in CI, where a missing server is an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from coaching_credits import InMemoryRepository, Repository, SQLiteRepository

ADMIN_CONNINFO = os.environ.get(
    "COACHING_CREDITS_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
REQUIRE_POSTGRES = os.environ.get("COACHING_CREDITS_REQUIRE_POSTGRES") == "1"

BACKENDS = ["memory", "sqlite", "postgres"]
PERSISTENT_BACKENDS = ["sqlite", "postgres"]


def _unavailable(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"PostgreSQL is required (COACHING_CREDITS_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """Create a throwaway PostgreSQL database for the test session; yield its conninfo."""
    try:
        import psycopg
        from psycopg.conninfo import make_conninfo
    except ImportError as error:
        _unavailable(f"psycopg is not installed ({error}); install coaching-credits[postgres]")
        raise  # unreachable: the line above skips or fails

    name = f"coaching_credits_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_CONNINFO, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        _unavailable(f"cannot connect with {ADMIN_CONNINFO!r}: {error}")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(ADMIN_CONNINFO, dbname=name)
    finally:
        with psycopg.connect(ADMIN_CONNINFO, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@attrs.define
class Backend:
    """One storage location of one backend kind; ``open()`` returns a new repository on it.

    ``location`` is what a separate process needs to open the same storage: a file path for
    SQLite, or a conninfo and a schema name for PostgreSQL. Opening the in-memory backend
    always returns the same repository object, because its state lives in that object.
    """

    name: str
    location: dict[str, Any]
    _open: Callable[[], Repository]
    _opened: list[Repository] = attrs.Factory(list)

    def open(self) -> Repository:
        repository = self._open()
        self._opened.append(repository)
        return repository

    def close_all(self) -> None:
        for repository in self._opened:
            repository.close()


def open_location(name: str, location: dict[str, Any]) -> Repository:
    """Open a repository on a storage location from :attr:`Backend.location`."""
    if name == "sqlite":
        return SQLiteRepository(location["path"])
    if name == "postgres":
        from coaching_credits.repository.postgres import PostgresRepository

        return PostgresRepository(location["conninfo"], schema=location["schema"])
    raise ValueError(f"backend {name!r} has no location to open")


def make_backend(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    """Return a fresh, empty storage location of backend ``name``."""
    if name == "memory":
        shared = InMemoryRepository()
        return Backend(name, {}, lambda: shared)
    if name == "sqlite":
        location = {"path": str(tmp_path / f"ledger-{uuid.uuid4().hex[:8]}.db")}
        return Backend(name, location, lambda: open_location(name, location))
    if name == "postgres":
        conninfo = request.getfixturevalue("postgres_database")
        location = {"conninfo": conninfo, "schema": f"t_{uuid.uuid4().hex[:12]}"}
        return Backend(name, location, lambda: open_location(name, location))
    raise ValueError(f"unknown backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn: memory, SQLite and PostgreSQL."""
    made = make_backend(request.param, tmp_path, request)
    yield made
    made.close_all()


@pytest.fixture(params=PERSISTENT_BACKENDS)
def persistent_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend that several processes can share: SQLite and PostgreSQL."""
    made = make_backend(request.param, tmp_path, request)
    yield made
    made.close_all()


@pytest.fixture
def repository(backend: Backend) -> Repository:
    """A fresh repository on each backend."""
    return backend.open()
