"""Open the repository that ``--db`` names: a SQLite file or a PostgreSQL server."""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from ..errors import StorageError
from ..repository import Repository, SQLiteRepository

__all__ = [
    "DATABASE_ENVIRONMENT_VARIABLE",
    "DEFAULT_DATABASE",
    "CommandError",
    "driver_errors",
    "is_postgres",
    "migrate_database",
    "one_line",
    "open_repository",
    "resolve_database",
]

#: The SQLite file used when neither ``--db`` nor the environment variable is set.
DEFAULT_DATABASE = "./coaching-credits.db"
#: The environment variable read when ``--db`` is not given.
DATABASE_ENVIRONMENT_VARIABLE = "COACHING_CREDITS_DB"

_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


class CommandError(Exception):
    """A failure the tool reports as one line on stderr, with exit status 1."""


def resolve_database(option: str | None) -> str:
    """Return the database named by ``--db``, else by the environment, else the default."""
    if option:
        return option
    return os.environ.get(DATABASE_ENVIRONMENT_VARIABLE) or DEFAULT_DATABASE


def is_postgres(database: str) -> bool:
    """Return whether ``database`` is a PostgreSQL connection URI rather than a SQLite path."""
    return database.startswith(_POSTGRES_PREFIXES)


#: The PostgreSQL schema used when ``--schema`` is not given.
DEFAULT_SCHEMA = "coaching_credits"


def _check_schema(database: str, schema: str | None) -> str:
    if schema is not None and not is_postgres(database):
        raise CommandError(
            f"--schema {schema!r} applies to PostgreSQL only, but {database!r} is a SQLite "
            f"path; drop --schema or pass a postgresql:// URL with --db"
        )
    return schema or DEFAULT_SCHEMA


def open_repository(database: str, *, create: bool, schema: str | None = None) -> Repository:
    """Open the repository at ``database``.

    A SQLite file that does not exist is created only when ``create`` is true; otherwise it is a
    :class:`CommandError`, so a mistyped path never yields a new, empty database. ``schema``
    names the PostgreSQL schema of the tables.
    """
    schema_name = _check_schema(database, schema)
    if is_postgres(database):
        postgres = _import_postgres()
        with _connection_failures():
            repository: Repository = postgres.PostgresRepository(database, schema=schema_name)
        return repository

    path = Path(database)
    if not create and not path.exists():
        raise CommandError(
            f"database not found: {database!r}; run create-workspace first, or pass --db "
            f"(or set {DATABASE_ENVIRONMENT_VARIABLE}) to name an existing database"
        )
    if path.is_dir():
        raise CommandError(f"database path {database!r} is a directory; name a file instead")
    try:
        return SQLiteRepository(path)
    except (sqlite3.DatabaseError, StorageError) as error:
        # The repository wraps the driver's error in StorageError; its cause names the fault.
        cause = error.__cause__ if isinstance(error.__cause__, sqlite3.Error) else error
        if not isinstance(cause, sqlite3.Error):
            raise  # a schema fault, such as a newer version, whose message names the fix
        raise CommandError(
            f"cannot open SQLite database {database!r}: {cause}; {_sqlite_next_step(cause, path)}"
        ) from error


def _sqlite_next_step(error: sqlite3.Error, path: Path) -> str:
    if isinstance(error, sqlite3.OperationalError):
        folder = path.resolve().parent
        return f"check that the folder {str(folder)!r} exists and that you may write to it"
    return "name a database this tool created, or a new file"


def migrate_database(database: str, schema: str | None = None) -> str:
    """Create or upgrade the schema at ``database``; return a sentence saying what ran."""
    schema_name = _check_schema(database, schema)
    if is_postgres(database):
        postgres = _import_postgres()
        with _connection_failures():
            version = postgres.migrate(database, schema=schema_name)
        return f"migrated the PostgreSQL schema {schema_name} to version {version}"
    open_repository(database, create=True).close()
    return f"migrated the SQLite database {database}"


def driver_errors() -> tuple[type[BaseException], ...]:
    """Return the storage drivers' base error classes, to report them as one line."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    # psycopg is imported only for a PostgreSQL database, so its errors exist only then.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)


def one_line(message: str) -> str:
    """Join a multi-line driver message, such as psycopg's hint lines, into one line.

    Runs of whitespace, such as the two spaces after PostgreSQL's ``FATAL:``, become one space.
    """
    return " ".join(message.split())


@contextmanager
def _connection_failures() -> Iterator[None]:
    """Report a failure to connect to PostgreSQL as such, with what to check next.

    Used only after :func:`_import_postgres`, so psycopg is importable.
    """
    try:
        yield
    except StorageError as error:
        psycopg = importlib.import_module("psycopg")
        cause = error.__cause__
        # psycopg raises OperationalError when it cannot connect: a wrong host or port, a
        # server that is down, or a database or user that does not exist.
        if not isinstance(cause, psycopg.OperationalError):
            raise
        raise CommandError(
            f"cannot connect to PostgreSQL: {one_line(str(cause))}; check the URL given with "
            f"--db or {DATABASE_ENVIRONMENT_VARIABLE}, that the server runs and accepts "
            f"connections, and that the database exists"
        ) from error


def _import_postgres() -> ModuleType:
    # Imported by name so the SQLite path never needs psycopg installed.
    try:
        return importlib.import_module("coaching_credits.repository.postgres")
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] in ("psycopg", "psycopg_pool"):
            raise CommandError(
                "PostgreSQL support needs psycopg; install coaching-credits[postgres]"
            ) from error
        raise CommandError(f"PostgreSQL support is not available: {error}") from error
