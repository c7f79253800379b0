"""The ``coaching-credits`` command-line tool, run in-process through ``main(argv)``.

Each test works on a SQLite file in its own temporary folder; the PostgreSQL test uses the
throwaway database from ``conftest.py``. One test runs ``python -m coaching_credits`` in a
subprocess.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from coaching_credits.cli import main

MEMBERS_CSV = """member_id,display_name,email,role,team
ad-1,Member 0001,member0001@example.com,admin,leadership
me-1,Member 0002,member0002@example.com,member,sales
me-2,Member 0003,member0003@example.com,member,sales
me-3,Member 0004,member0004@example.com,member,support
"""


class Cli:
    """Runs the tool in-process against one database and returns what it printed."""

    def __init__(self, database: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
        # A str keeps the "//" of a postgresql:// URI, which Path would collapse.
        self.database = str(database)
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main(["--db", str(self.database), *args])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--format", "json")
        assert code == 0, err
        return json.loads(out)

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        assert err == ""
        return out

    def fails(self, *args: str, code: int = 1) -> str:
        """Run a command that must fail; return its single error line."""
        actual, out, err = self(*args)
        assert actual == code, (out, err)
        assert "Traceback" not in err
        assert out == ""
        return err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The tool on a database path in a temporary folder, not created yet."""
    monkeypatch.delenv("COACHING_CREDITS_DB", raising=False)
    return Cli(tmp_path / "ledger.db", capsys)


@pytest.fixture
def team(cli: Cli, tmp_path: Path) -> Cli:
    """A workspace ``acme`` with one admin, three members and 100 credits in the pool."""
    cli.ok("create-workspace", "acme")
    members = tmp_path / "members.csv"
    members.write_text(MEMBERS_CSV, encoding="utf-8")
    cli.ok("import-members", "acme", str(members))
    cli.ok("purchase", "acme", "100")
    return cli


def balance_of(cli: Cli, member_id: str) -> int:
    balances = cli.json("balances", "acme")
    balance: int = next(m["balance"] for m in balances["members"] if m["id"] == member_id)
    return balance


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


# --db and the database file -----------------------------------------------------------------


def test_missing_database_is_an_error(cli: Cli) -> None:
    """A command other than create-workspace never creates the database file."""
    err = cli.fails("balances", "acme")
    assert err.startswith("coaching-credits: error: database not found")
    assert "run create-workspace first" in err
    assert len(err.splitlines()) == 1
    assert not Path(cli.database).exists()


@pytest.mark.parametrize(
    "command",
    [
        ["purchase", "acme", "5"],
        ["history", "acme"],
        ["spend", "acme", "me-1", "1"],
        ["import-members", "acme", "members.csv"],
    ],
)
def test_commands_need_existing_database(cli: Cli, command: list[str]) -> None:
    """Every reading or writing command rejects a database that does not exist."""
    assert "database not found" in cli.fails(*command)
    assert not Path(cli.database).exists()


def test_database_from_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db the tool uses COACHING_CREDITS_DB."""
    database = tmp_path / "from-env.db"
    monkeypatch.setenv("COACHING_CREDITS_DB", str(database))
    assert main(["create-workspace", "acme"]) == 0
    assert database.exists()
    assert main(["balances", "acme", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["workspace"] == "acme"


def test_default_database_in_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db or the environment variable the tool uses ./coaching-credits.db."""
    monkeypatch.delenv("COACHING_CREDITS_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["create-workspace", "acme"]) == 0
    assert (tmp_path / "coaching-credits.db").exists()


def test_database_path_is_directory(cli: Cli, tmp_path: Path) -> None:
    """A directory given as the database is reported, not opened."""
    cli.database = str(tmp_path)
    assert "is a directory" in cli.fails("create-workspace", "acme")


def test_database_folder_missing(cli: Cli, tmp_path: Path) -> None:
    """A SQLite path in a folder that does not exist names the folder to check."""
    cli.database = str(tmp_path / "missing" / "ledger.db")
    err = cli.fails("create-workspace", "acme")
    assert err == (
        f"coaching-credits: error: cannot open SQLite database {cli.database!r}: unable to "
        f"open database file; check that the folder {str(tmp_path / 'missing')!r} exists and "
        f"that you may write to it\n"
    )


def test_database_not_sqlite(cli: Cli, tmp_path: Path) -> None:
    """A file that is not a SQLite database is reported with what to name instead."""
    Path(cli.database).write_text("not a database\n" * 100, encoding="utf-8")
    err = cli.fails("balances", "acme")
    assert "cannot open SQLite database" in err
    assert "file is not a database; name a database this tool created, or a new file" in err
    assert len(err.splitlines()) == 1


def _closed_loopback_port() -> int:
    """Return a loopback port that was just free, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["balances", "acme"], ["migrate"]])
def test_postgres_connection_refused(cli: Cli, command: list[str]) -> None:
    """A refused connection is reported on one line with what to check."""
    cli.database = f"postgresql://postgres@127.0.0.1:{_closed_loopback_port()}/postgres"
    err = cli.fails(*command)
    assert err.startswith("coaching-credits: error: cannot connect to PostgreSQL: ")
    assert "Connection refused" in err
    assert "check the URL given with --db or COACHING_CREDITS_DB, that the server runs" in err
    assert len(err.splitlines()) == 1


@pytest.mark.postgres
def test_postgres_database_missing(postgres_database: str, cli: Cli) -> None:
    """A database name that does not exist on the server is a connection failure."""
    missing = f"missing_{uuid.uuid4().hex[:12]}"
    cli.database = f"postgresql://postgres@127.0.0.1:5432/{missing}"
    err = cli.fails("balances", "acme")
    assert err.startswith("coaching-credits: error: cannot connect to PostgreSQL: ")
    assert f'FATAL: database "{missing}" does not exist' in err
    assert "and that the database exists" in err
    assert len(err.splitlines()) == 1


def test_missing_psycopg_names_extra(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A postgresql:// database without psycopg names the extra to install."""
    # None in sys.modules makes the import raise ImportError, as when psycopg is missing.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "coaching_credits.repository.postgres", raising=False)
    cli.database = "postgresql://postgres@127.0.0.1:5432/postgres"
    err = cli.fails("balances", "acme")
    assert "install coaching-credits[postgres]" in err
    assert len(err.splitlines()) == 1


# create-workspace, migrate --------------------------------------------------------------------


def test_create_workspace(cli: Cli) -> None:
    """create-workspace makes the file and an empty workspace with coaching enabled."""
    out = cli.ok("create-workspace", "acme")
    assert "created workspace acme" in out
    balances = cli.json("balances", "acme")
    assert balances == {"workspace": "acme", "coaching_enabled": True, "pool": 0, "members": []}


def test_create_workspace_coaching_disabled(cli: Cli) -> None:
    """--coaching-disabled creates the workspace with coaching off."""
    cli.ok("create-workspace", "acme", "--coaching-disabled")
    assert cli.json("balances", "acme")["coaching_enabled"] is False


def test_create_workspace_twice(cli: Cli) -> None:
    """A taken workspace id is a one-line error with exit status 1."""
    cli.ok("create-workspace", "acme")
    err = cli.fails("create-workspace", "acme")
    assert "workspace 'acme' already exists" in err


def test_migrate_sqlite(cli: Cli) -> None:
    """migrate creates the SQLite schema ahead of time, and again changes nothing."""
    assert "migrated the SQLite database" in cli.ok("migrate")
    assert Path(cli.database).exists()
    cli.ok("migrate")
    cli.ok("create-workspace", "acme")


@pytest.mark.postgres
def test_postgres_database(
    postgres_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A postgresql:// URI runs migrate and the commands on PostgreSQL."""
    from psycopg.conninfo import conninfo_to_dict

    dbname = conninfo_to_dict(postgres_database)["dbname"]
    cli = Cli(f"postgresql://postgres@127.0.0.1:5432/{dbname}", capsys)
    workspace = f"pg-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("COACHING_CREDITS_DB", raising=False)

    assert "migrated the PostgreSQL schema" in cli.ok("migrate")
    cli.ok("create-workspace", workspace)
    cli.ok("add-member", workspace, "ad-1", "--role", "admin")
    cli.ok("add-member", workspace, "me-1")
    cli.ok("purchase", workspace, "10")
    cli.ok("transfer-to", workspace, "me-1", "4", "--actor", "ad-1")
    balances = cli.json("balances", workspace)
    assert balances["pool"] == 6
    assert balances["members"] == [
        {"id": "ad-1", "role": "admin", "balance": 0},
        {"id": "me-1", "role": "member", "balance": 4},
    ]
    assert "workspace 'nope' not found" in cli.fails("balances", "nope")


@pytest.mark.postgres
def test_postgres_schema_option(postgres_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--schema keeps the tables in the named PostgreSQL schema, apart from the default one."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dbname = conninfo_to_dict(postgres_database)["dbname"]
    url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    schema = f"cli_{uuid.uuid4().hex[:8]}"
    cli = Cli(url, capsys)

    assert f"migrated the PostgreSQL schema {schema} to version" in cli.ok(
        "--schema", schema, "migrate"
    )
    assert main(["--db", url, "--schema", schema, "create-workspace", "acme"]) == 0
    capsys.readouterr()
    assert main(["--db", url, "--schema", schema, "balances", "acme", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["workspace"] == "acme"

    with psycopg.connect(postgres_database) as connection:
        found = connection.execute(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
            (schema, "workspaces"),
        ).fetchone()
    assert found == (1,)


def test_schema_option_rejected_for_sqlite(cli: Cli) -> None:
    """--schema with a SQLite path is an error that names both options."""
    line = cli.fails("--schema", "s", "create-workspace", "acme")
    assert "--schema 's' applies to PostgreSQL only" in line
    assert "--db" in line


# import-members -------------------------------------------------------------------------------


def test_import_members(team: Cli, tmp_path: Path) -> None:
    """import-members adds each listed member with a balance of 0 and the listed role."""
    members = team.json("balances", "acme")["members"]
    assert members == [
        {"id": "ad-1", "role": "admin", "balance": 0},
        {"id": "me-1", "role": "member", "balance": 0},
        {"id": "me-2", "role": "member", "balance": 0},
        {"id": "me-3", "role": "member", "balance": 0},
    ]


def test_reimport_adds_nothing(team: Cli, tmp_path: Path) -> None:
    """Importing an unchanged file again adds no member and reports how many were present."""
    out = team.ok("import-members", "acme", str(tmp_path / "members.csv"))
    assert "imported 0 members" in out
    assert "4 were already present" in out
    result = team.json("import-members", "acme", str(tmp_path / "members.csv"))
    assert result == {"workspace": "acme", "added": 0, "already_present": 4}


def test_import_adds_only_new_members(team: Cli, tmp_path: Path) -> None:
    """A file with one new row adds that member only."""
    bigger = tmp_path / "bigger.csv"
    bigger.write_text(MEMBERS_CSV + "me-4,Member 0005,member0005@example.com,member,sales\n")
    result = team.json("import-members", "acme", str(bigger))
    assert result == {"workspace": "acme", "added": 1, "already_present": 4}


def test_import_bad_rows_adds_nothing(cli: Cli, tmp_path: Path) -> None:
    """Every bad row is reported with its line number before anything is added."""
    cli.ok("create-workspace", "acme")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "member_id,display_name,email,role,team\n"
        "ok-1,Member 1,m1@example.com,member,sales\n"
        "ok-2,Member 2,m2@example.com,owner,sales\n"
        ",Member 3,m3@example.com,member,sales\n"
        "ok-1,Member 4,m4@example.com,member,sales\n"
        "ok-5,Member 5,not-an-email,member,sales\n"
        "ok-6,Member 6\n",
        encoding="utf-8",
    )
    err = cli.fails("import-members", "acme", str(bad))
    assert "line 3: invalid role 'owner'" in err
    assert "line 4: member_id is empty" in err
    assert "line 5: member_id 'ok-1' is listed again (first on line 2)" in err
    assert "line 6: invalid email 'not-an-email'" in err
    assert "line 7: 2 fields, but the header has 5" in err
    assert "5 invalid rows" in err
    assert all(line.startswith("coaching-credits: error: ") for line in err.splitlines())
    assert cli.json("balances", "acme")["members"] == []


def test_import_missing_column(cli: Cli, tmp_path: Path) -> None:
    """A file without a role column is rejected with the expected columns."""
    cli.ok("create-workspace", "acme")
    bad = tmp_path / "bad.csv"
    bad.write_text("member_id,email\nx,x@example.com\n", encoding="utf-8")
    assert "missing column 'role'" in cli.fails("import-members", "acme", str(bad))


def test_import_role_change_rejected(team: Cli, tmp_path: Path) -> None:
    """A listed member whose role differs from the stored one stops the import."""
    changed = tmp_path / "changed.csv"
    changed.write_text(
        MEMBERS_CSV.replace("me-1,Member 0002,member0002@example.com,member", "me-1,M,m@x.io,admin")
        + "me-9,Member 9,m9@example.com,member,sales\n"
    )
    err = team.fails("import-members", "acme", str(changed))
    assert (
        "line 3: 'me-1' is already a member of workspace 'acme', but the file makes them "
        "an admin; remove the member first" in err
    )
    assert err.splitlines()[-1].endswith(
        "1 invalid row in " + str(changed) + "; nothing imported, fix it and rerun"
    )
    assert "me-9" not in [m["id"] for m in team.json("balances", "acme")["members"]]


def test_import_lists_role_conflicts_with_bad_rows(team: Cli, tmp_path: Path) -> None:
    """Role conflicts with current members are listed in the same run as other bad rows."""
    changed = tmp_path / "changed.csv"
    changed.write_text(
        "member_id,display_name,email,role,team\n"
        "ad-1,Member 1,m1@example.com,member,sales\n"
        "me-9,Member 9,m9@example.com,owner,sales\n"
        "me-2,Member 2,m2@example.com,admin,sales\n"
        "me-8,Member 8,m8@example.com,member,sales\n",
        encoding="utf-8",
    )
    err = team.fails("import-members", "acme", str(changed))
    lines = err.splitlines()
    assert (
        "line 2: 'ad-1' is already an admin of workspace 'acme', but the file makes them "
        "a member" in lines[0]
    )
    assert "line 3: invalid role 'owner'" in lines[1]
    assert "line 4: 'me-2' is already a member" in lines[2]
    assert lines[3].endswith(
        "3 invalid rows in " + str(changed) + "; nothing imported, fix them and rerun"
    )
    assert len(lines) == 4
    assert len(team.json("balances", "acme")["members"]) == 4


def test_reimport_adds_removed_members(team: Cli, tmp_path: Path) -> None:
    """Importing the same file again adds back a member who was removed meanwhile."""
    team.ok("remove-member", "acme", "me-2", "--actor", "ad-1")
    out = team.ok("import-members", "acme", str(tmp_path / "members.csv"))
    assert out == "imported 1 member into workspace acme; 3 were already present\n"
    assert "me-2" in [m["id"] for m in team.json("balances", "acme")["members"]]


def test_import_text_singular(cli: Cli, tmp_path: Path) -> None:
    """The text summary uses the singular for 1: "1 member" and "1 was"."""
    cli.ok("create-workspace", "acme")
    one = tmp_path / "one.csv"
    one.write_text("member_id,role\nad-1,admin\n", encoding="utf-8")
    assert cli.ok("import-members", "acme", str(one)) == (
        "imported 1 member into workspace acme; 0 were already present\n"
    )
    assert cli.ok("import-members", "acme", str(one)) == (
        "imported 0 members into workspace acme; 1 was already present\n"
    )


def test_import_unknown_workspace(cli: Cli, tmp_path: Path) -> None:
    """Importing into a missing workspace is WorkspaceNotFound."""
    cli.ok("create-workspace", "acme")
    members = tmp_path / "members.csv"
    members.write_text(MEMBERS_CSV, encoding="utf-8")
    assert "workspace 'other' not found" in cli.fails("import-members", "other", str(members))


def test_import_missing_file(cli: Cli, tmp_path: Path) -> None:
    """A CSV path that does not exist is a one-line error."""
    cli.ok("create-workspace", "acme")
    err = cli.fails("import-members", "acme", str(tmp_path / "nope.csv"))
    assert "cannot read" in err
    assert len(err.splitlines()) == 1


# balances, history --------------------------------------------------------------------------


def test_balances_text(team: Cli) -> None:
    """Text balances show the workspace line and one aligned row per member."""
    team.ok("transfer-to", "acme", "me-1", "7", "--actor", "ad-1")
    lines = team.ok("balances", "acme").splitlines()
    assert lines[0] == "workspace acme: coaching enabled, pool 93, 4 members holding 7"
    assert lines[1].split() == ["member", "role", "balance"]
    assert lines[3].split() == ["me-1", "member", "7"]
    assert len(lines) == 6


def test_balances_unknown_workspace(team: Cli) -> None:
    """An unknown workspace is a one-line error with exit status 1."""
    err = team.fails("balances", "nope")
    assert err == (
        "coaching-credits: error: workspace 'nope' not found; create it first or check the id\n"
    )


def test_history(team: Cli) -> None:
    """history lists journal entries newest first, filtered and paged."""
    team.ok("transfer-to", "acme", "me-1", "7", "--actor", "ad-1")
    team.ok("spend", "acme", "me-1", "2")
    team.ok("transfer-to", "acme", "me-2", "3", "--actor", "ad-1")

    everything = team.json("history", "acme")
    assert [t["kind"] for t in everything["transfers"]] == [
        "transfer_to",
        "spend",
        "transfer_to",
        "purchase",
    ]
    assert everything["next_before"] is None

    of_member = team.json("history", "acme", "--member", "me-1")
    assert [t["kind"] for t in of_member["transfers"]] == ["spend", "transfer_to"]

    kinds = team.json("history", "acme", "--kind", "purchase", "--kind", "spend")
    assert [t["kind"] for t in kinds["transfers"]] == ["spend", "purchase"]

    first_page = team.json("history", "acme", "--limit", "2")
    assert len(first_page["transfers"]) == 2
    cursor = first_page["next_before"]
    assert cursor == first_page["transfers"][-1]["sequence"]
    second_page = team.json("history", "acme", "--limit", "2", "--before", str(cursor))
    assert [t["kind"] for t in second_page["transfers"]] == ["transfer_to", "purchase"]

    text = team.ok("history", "acme", "--limit", "2")
    assert "spend  amount 2  member me-1" in text
    assert f"more entries: add --before {cursor}" in text


def test_history_bad_limit_is_usage_error(team: Cli) -> None:
    """A limit below 1 is a usage error with exit status 2."""
    err = team.fails("history", "acme", "--limit", "0", code=2)
    assert "invalid number 0" in err


# One-operation commands -----------------------------------------------------------------------


def test_purchase(team: Cli) -> None:
    """purchase adds to the pool; JSON shows the replay flag and the result."""
    assert "purchased 5 credits for workspace acme; pool 105" in team.ok("purchase", "acme", "5")
    result = team.json("purchase", "acme", "10", "--key", "p-1", "--reason", "invoice 12")
    assert result["op"] == "purchase"
    assert result["replayed"] is False
    assert result["result"]["pool"] == 115
    assert result["result"]["transfers"][0]["reason"] == "invoice 12"


def test_transfer_to_and_from(team: Cli) -> None:
    """transfer-to and transfer-from move credits between the pool and a member."""
    out = team.ok("transfer-to", "acme", "me-1", "10", "--actor", "ad-1")
    assert out == "transferred 10 credits from the pool to me-1; pool 90, me-1 10\n"
    result = team.json("transfer-from", "acme", "me-1", "4", "--actor", "ad-1")
    assert result["result"]["pool"] == 94
    assert result["result"]["member"]["balance"] == 6
    assert balance_of(team, "me-1") == 6


def test_key_replays(team: Cli) -> None:
    """Repeating a command with the same key changes nothing and reports the replay."""
    team.ok("transfer-to", "acme", "me-1", "10", "--actor", "ad-1", "--key", "k-1")
    out = team.ok("transfer-to", "acme", "me-1", "10", "--actor", "ad-1", "--key", "k-1")
    assert out.startswith("replayed key 'k-1', nothing changed: ")
    replay = team.json("transfer-to", "acme", "me-1", "10", "--actor", "ad-1", "--key", "k-1")
    assert replay["replayed"] is True
    assert balance_of(team, "me-1") == 10


def test_key_conflict(team: Cli) -> None:
    """The same key with different arguments is IdempotencyConflict, exit status 1."""
    team.ok("transfer-to", "acme", "me-1", "10", "--actor", "ad-1", "--key", "k-1")
    err = team.fails("transfer-to", "acme", "me-1", "11", "--actor", "ad-1", "--key", "k-1")
    assert "idempotency key 'k-1'" in err


def test_set_balances(team: Cli) -> None:
    """set-balances sets every listed member to one number."""
    team.ok("transfer-to", "acme", "me-1", "9", "--actor", "ad-1")
    out = team.ok("set-balances", "acme", "5", "me-1", "me-2", "me-3", "--actor", "ad-1")
    assert out == "set 3 members to 5 (3 changed, net +6 from the pool); pool 85\n"
    result = team.json("set-balances", "acme", "0", "me-3", "--actor", "ad-1")
    assert result["result"]["pool"] == 90
    assert [m["balance"] for m in result["result"]["members"]] == [0]


def test_spend(team: Cli) -> None:
    """spend takes credits from a member; they leave the workspace."""
    team.ok("transfer-to", "acme", "me-1", "3", "--actor", "ad-1")
    assert team.ok("spend", "acme", "me-1", "1") == "me-1 spent 1 credit; me-1 2\n"
    result = team.json("spend", "acme", "me-1", "2", "--key", "s-1")
    assert result["result"]["member"]["balance"] == 0
    assert team.json("balances", "acme")["pool"] == 97


def test_spend_insufficient(team: Cli) -> None:
    """Spending more than the balance is InsufficientCredits with the amounts."""
    err = team.fails("spend", "acme", "me-1", "1")
    assert "insufficient credits for member 'me-1'" in err
    assert "1 requested, 0 available" in err


def test_add_and_remove_member(team: Cli) -> None:
    """add-member adds with a balance of 0; remove-member returns the balance to the pool."""
    assert "added admin ad-2" in team.ok("add-member", "acme", "ad-2", "--role", "admin")
    added = team.json("add-member", "acme", "me-9", "--actor", "ad-2", "--key", "a-1")
    assert added["result"]["member"] == {
        "workspace_id": "acme",
        "id": "me-9",
        "role": "member",
        "balance": 0,
    }
    team.ok("transfer-to", "acme", "me-9", "8", "--actor", "ad-1")
    out = team.ok("remove-member", "acme", "me-9", "--actor", "ad-2")
    assert out == "removed me-9 from workspace acme; returned 8 credits to the pool; pool 100\n"
    removed = team.json("remove-member", "acme", "me-3", "--actor", "ad-1")
    assert removed["result"]["pool"] == 100
    ids = [m["id"] for m in team.json("balances", "acme")["members"]]
    assert ids == ["ad-1", "ad-2", "me-1", "me-2"]


def test_add_member_twice(team: Cli) -> None:
    """Adding an existing member is MemberAlreadyExists."""
    assert "member 'me-1' already exists" in team.fails("add-member", "acme", "me-1")


def test_set_coaching(team: Cli) -> None:
    """set-coaching off stops moves and spends until it is switched on again."""
    out = team.ok("set-coaching", "acme", "off", "--actor", "ad-1")
    assert out == "coaching is disabled for workspace acme\n"
    err = team.fails("transfer-to", "acme", "me-1", "1", "--actor", "ad-1")
    assert "coaching is disabled for workspace 'acme'" in err
    result = team.json("set-coaching", "acme", "on", "--actor", "ad-1")
    assert result["result"]["workspace"]["coaching_enabled"] is True
    team.ok("transfer-to", "acme", "me-1", "1", "--actor", "ad-1")


def test_set_coaching_bad_state_is_usage_error(team: Cli) -> None:
    """A state other than on or off is a usage error."""
    team.fails("set-coaching", "acme", "maybe", "--actor", "ad-1", code=2)


# Error paths of the one-operation commands ----------------------------------------------------


def test_unknown_member(team: Cli) -> None:
    """An unknown member id is MemberNotFound, exit status 1."""
    err = team.fails("transfer-to", "acme", "ghost", "1", "--actor", "ad-1")
    assert err.startswith("coaching-credits: error: member 'ghost' not found in workspace 'acme'")


def test_unknown_workspace(team: Cli) -> None:
    """An unknown workspace id is WorkspaceNotFound, exit status 1."""
    err = team.fails("purchase", "nope", "5")
    assert "workspace 'nope' not found" in err


def test_non_admin_actor(team: Cli) -> None:
    """A member who is not an admin cannot move credits and nothing changes."""
    err = team.fails("transfer-to", "acme", "me-2", "5", "--actor", "me-1")
    assert "permission denied: 'me-1' is not an admin of workspace 'acme'" in err
    assert team.json("balances", "acme")["pool"] == 100


@pytest.mark.parametrize("amount", ["0", "-3", "2.5", "abc", "1e3", str(2**63)])
def test_bad_amount(team: Cli, amount: str) -> None:
    """An amount that is not a whole number from 1 to 2**63-1 is InvalidAmount."""
    err = team.fails("transfer-to", "acme", "me-1", amount, "--actor", "ad-1")
    assert f"invalid amount {amount!r}" in err or f"invalid amount {amount}" in err
    assert len(err.splitlines()) == 1
    assert team.json("balances", "acme")["pool"] == 100


@pytest.mark.parametrize("command", ["purchase", "spend", "transfer-to", "set-balances"])
def test_amount_with_5000_digits(team: Cli, command: str) -> None:
    """An amount beyond Python's 4300-digit conversion limit is InvalidAmount on one line."""
    digits = "1" * 5000
    arguments = {
        "purchase": ["acme", digits],
        "spend": ["acme", "me-1", digits],
        "transfer-to": ["acme", "me-1", digits, "--actor", "ad-1"],
        "set-balances": ["acme", digits, "me-1", "--actor", "ad-1"],
    }[command]
    err = team.fails(command, *arguments)
    assert err.startswith("coaching-credits: error: invalid ")
    assert "(5000 characters)" in err
    assert len(err.splitlines()) == 1
    assert team.json("balances", "acme")["pool"] == 100


def test_amount_leading_zeros(team: Cli) -> None:
    """Leading zeros do not count towards the digit limit of an amount."""
    team.ok("purchase", "acme", "0" * 30 + "7")
    assert team.json("balances", "acme")["pool"] == 107


def test_limit_with_5000_digits_is_usage_error(team: Cli) -> None:
    """A page size beyond Python's conversion limit is a short usage error."""
    err = team.fails("history", "acme", "--limit", "9" * 5000, code=2)
    message = err.splitlines()[-1]
    assert "argument --limit: invalid number (5000 characters)" in message
    assert len(message) < 200


def test_bad_balance(team: Cli) -> None:
    """set-balances accepts 0 but not a negative balance."""
    team.ok("set-balances", "acme", "0", "me-1", "--actor", "ad-1")
    assert "invalid balance -1" in team.fails(
        "set-balances", "acme", "-1", "me-1", "--actor", "ad-1"
    )


def test_missing_actor_is_usage_error(team: Cli) -> None:
    """transfer-to without --actor is a usage error, exit status 2."""
    err = team.fails("transfer-to", "acme", "me-1", "5", code=2)
    assert "--actor" in err


def test_usage_errors(cli: Cli) -> None:
    """No command, or an unknown one, exits with status 2."""
    cli.fails(code=2)
    cli.fails("frobnicate", code=2)


def test_help_exits_zero(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the commands and returns 0."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("create-workspace", "import-members", "apply", "set-balances", "demo"):
        assert command in out


# apply --------------------------------------------------------------------------------------


def test_apply_counts(team: Cli, tmp_path: Path) -> None:
    """apply runs each line and counts applied, replayed and rejected lines by error name."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            {"op": "transfer_to", "workspace": "acme", "actor": "ad-1", "member": "me-1",
             "amount": 10, "key": "k1", "at": "2026-01-01T09:00:00+01:00"},
            {"op": "transfer_to", "workspace": "acme", "actor": "ad-1", "member": "me-1",
             "amount": 10, "key": "k1", "at": "2026-01-01T09:00:05+01:00"},
            {"op": "transfer_to", "workspace": "acme", "actor": "ad-1", "member": "me-1",
             "amount": 11, "key": "k1"},
            {"op": "spend", "workspace": "acme", "member": "me-1", "amount": 3, "key": "k2"},
            {"op": "spend", "workspace": "acme", "member": "me-2", "amount": 3, "key": "k3"},
            {"op": "transfer_from", "workspace": "acme", "actor": "me-1", "member": "me-1",
             "amount": 1, "key": "k4"},
            {"op": "set_balances", "workspace": "acme", "actor": "ad-1",
             "members": ["me-2", "me-3"], "balance": 4, "key": "k5"},
            {"op": "purchase", "workspace": "nope", "amount": 1, "key": "k6"},
            {"op": "add_member", "workspace": "acme", "actor": "ad-1", "member": "me-7",
             "role": "member", "key": "k7"},
            {"op": "remove_member", "workspace": "acme", "actor": "ad-1", "member": "me-7",
             "key": "k8"},
            {"op": "set_coaching", "workspace": "acme", "actor": "ad-1", "enabled": False,
             "key": "k9"},
            {"op": "spend", "workspace": "acme", "member": "me-2", "amount": 1, "key": "k10"},
        ],
    )  # fmt: skip
    summary = team.json("apply", str(actions))
    assert summary == {
        "applied": 6,
        "replayed": 1,
        "rejected": {
            "CoachingDisabled": 1,
            "IdempotencyConflict": 1,
            "InsufficientCredits": 1,
            "PermissionDenied": 1,
            "WorkspaceNotFound": 1,
        },
    }
    balances = team.json("balances", "acme")
    assert balances["coaching_enabled"] is False
    assert balances["pool"] == 82
    assert [m["balance"] for m in balances["members"]] == [0, 7, 4, 4]


def test_apply_text_summary(team: Cli, tmp_path: Path) -> None:
    """The text summary gives the line count, the outcomes and each error's count."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            {"op": "purchase", "workspace": "acme", "amount": 5, "key": "p1"},
            {"op": "purchase", "workspace": "acme", "amount": 0, "key": "p2"},
            "",
        ],
    )
    out = team.ok("apply", str(actions))
    assert out == "2 lines: 1 applied, 0 replayed, 1 rejected\n  InvalidAmount: 1\n"


@pytest.mark.parametrize("amount", [True, 2.5, "3", 0, -1, 2**63, None])
def test_apply_passes_amounts_to_library(team: Cli, tmp_path: Path, amount: object) -> None:
    """Amounts reach the library unchanged, which rejects non-ints as InvalidAmount."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [{"op": "transfer_to", "workspace": "acme", "actor": "ad-1", "member": "me-1",
          "amount": amount, "key": "k1"}],
    )  # fmt: skip
    assert team.json("apply", str(actions))["rejected"] == {"InvalidAmount": 1}
    assert balance_of(team, "me-1") == 0


def test_apply_malformed_lines(team: Cli, tmp_path: Path) -> None:
    """Malformed lines are reported with their line numbers and the file goes on."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            "{not json",
            "[1, 2]",
            {"workspace": "acme", "amount": 1},
            {"op": "refund_all", "workspace": "acme"},
            {"op": "purchase", "workspace": "acme"},
            {"op": "spend", "workspace": "acme", "member": 7, "amount": 1},
            {"op": "set_balances", "workspace": "acme", "actor": "ad-1", "members": "me-1",
             "balance": 1},
            {"op": "purchase", "workspace": "acme", "amount": 1, "key": 5},
            {"op": "purchase", "workspace": "acme", "amount": 1, "colour": "red"},
            {"op": "set_coaching", "workspace": "acme", "actor": "ad-1", "enabled": "no"},
            {"op": "purchase", "workspace": "acme", "amount": 1, "key": "good"},
        ],
    )  # fmt: skip
    code, out, err = team("apply", str(actions), "--format", "json")
    assert code == 0
    assert json.loads(out) == {"applied": 1, "replayed": 0, "rejected": {"MalformedLine": 10}}
    messages = err.splitlines()
    assert len(messages) == 10
    expected = [
        "line 1: malformed line skipped: invalid JSON",
        "line 2: malformed line skipped: expected a JSON object, got list",
        "line 3: malformed line skipped: missing or invalid field 'op'",
        "line 4: malformed line skipped: unknown op 'refund_all'",
        "line 5: malformed line skipped: purchase: missing field 'amount'",
        "line 6: malformed line skipped: spend: field 'member' is 7, expected a string",
        "line 7: malformed line skipped: set_balances: field 'members' is 'me-1'",
        "line 8: malformed line skipped: purchase: field 'key' is 5",
        "line 9: malformed line skipped: purchase: unexpected field 'colour'",
        "line 10: malformed line skipped: set_coaching: field 'enabled' is 'no'",
    ]
    for message, start in zip(messages, expected, strict=True):
        assert message.startswith(f"coaching-credits: {start}"), message
    assert team.json("balances", "acme")["pool"] == 101


def test_apply_integers_with_5000_digits(team: Cli, tmp_path: Path) -> None:
    """A huge amount is InvalidAmount, a huge id is malformed, and the file goes on."""
    digits = "1" * 5000
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            f'{{"op": "purchase", "workspace": "acme", "amount": {digits}, "key": "p1"}}',
            f'{{"op": "purchase", "workspace": "acme", "amount": -{digits}}}',
            f'{{"op": "set_balances", "workspace": "acme", "actor": "ad-1", '
            f'"members": ["me-1"], "balance": {digits}}}',
            f'{{"op": "spend", "workspace": "acme", "member": {digits}, "amount": 1}}',
            {"op": "purchase", "workspace": "acme", "amount": 5, "key": "p1"},
        ],
    )
    for batch_size in ("1", "10"):
        code, out, err = team("apply", str(actions), "--format", "json", "--batch-size", batch_size)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["rejected"] == {"InvalidAmount": 3, "MalformedLine": 1}
        assert summary["applied"] + summary["replayed"] == 1
        assert (
            "line 4: malformed line skipped: spend: field 'member' is 1111111111...(5000 "
            "digits), expected a string" in err
        )
        assert len(err) < 500
    assert team.json("balances", "acme")["pool"] == 105


def test_apply_long_integer_verbose(team: Cli, tmp_path: Path) -> None:
    """The verbose line of a huge amount shows its digit count, not its digits."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [f'{{"op": "purchase", "workspace": "acme", "amount": {"9" * 5000}}}'],
    )
    code, _, err = team("apply", str(actions), "--verbose")
    assert code == 0
    assert err == (
        "line 1: purchase: rejected InvalidAmount: invalid amount 9999999999...(5000 digits): "
        "expected an int from 1 to 9223372036854775807\n"
    )


def test_apply_invalid_utf8_line(team: Cli, tmp_path: Path) -> None:
    """A line that is not UTF-8 is malformed; the lines after it still apply."""
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(
        b'{"op": "purchase", "workspace": "acme", "amount": 1, "key": "\xff"}\n'
        b'{"op": "purchase", "workspace": "acme", "amount": 2, "key": "ok"}\n'
    )
    code, out, err = team("apply", str(actions))
    assert code == 0
    assert "line 1: malformed line skipped: not UTF-8 text" in err
    assert out.startswith("2 lines: 1 applied")


def test_apply_verbose(team: Cli, tmp_path: Path) -> None:
    """--verbose prints each line's number, op, key and outcome on stderr."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            {"op": "purchase", "workspace": "acme", "amount": 1, "key": "p1"},
            {"op": "purchase", "workspace": "acme", "amount": 1, "key": "p1"},
            {"op": "spend", "workspace": "acme", "member": "me-1", "amount": 1, "key": "s1"},
        ],
    )
    code, out, err = team("apply", str(actions), "--verbose")
    assert code == 0
    assert err.splitlines() == [
        "line 1: purchase key 'p1': applied",
        "line 2: purchase key 'p1': replayed",
        "line 3: spend key 's1': rejected InsufficientCredits: insufficient credits for member "
        "'me-1' of workspace 'acme': 1 requested, 0 available; an admin must transfer at least "
        "1 more credits to the member first",
    ]
    assert out == ("3 lines: 1 applied, 1 replayed, 1 rejected\n  InsufficientCredits: 1\n")


def test_apply_verbose_unkeyed_and_malformed(team: Cli, tmp_path: Path) -> None:
    """--verbose names no key for an unkeyed line and reports a malformed line once."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            {"op": "purchase", "workspace": "acme", "amount": 1},
            {"op": "purchase", "workspace": "acme", "amount": 1, "key": None},
            "{not json",
        ],
    )
    for batch_size in ("1", "5"):
        code, _, err = team("apply", str(actions), "--verbose", "--batch-size", batch_size)
        assert code == 0
        assert err.splitlines() == [
            "line 1: purchase: applied",
            "line 2: purchase: applied",
            "line 3: rejected MalformedLine: invalid JSON: Expecting property name enclosed in "
            "double quotes at column 2",
        ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_apply_progress_bar_only_on_terminal(
    team: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A progress bar is drawn on a terminal's stderr and never on a pipe or file."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [{"op": "purchase", "workspace": "acme", "amount": 1, "key": f"p{i}"} for i in range(5)],
    )
    code, _, err = team("apply", str(actions))
    assert code == 0
    assert err == ""

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--db", str(team.database), "apply", str(actions)]) == 0
    drawn = terminal.getvalue()
    assert "[" + "#" * 30 + "] 100% 5 lines" in drawn
    # The bar is wiped at the end, so the summary on stdout starts on a clean line.
    assert drawn.endswith("\r")


def test_apply_missing_file(team: Cli, tmp_path: Path) -> None:
    """A missing actions file is a one-line error."""
    err = team.fails("apply", str(tmp_path / "nope.jsonl"))
    assert "cannot read" in err


def test_apply_standard_input(team: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """apply - reads the lines from standard input."""
    line = json.dumps({"op": "purchase", "workspace": "acme", "amount": 3, "key": "p"}) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line.encode())))
    assert team.json("apply", "-") == {"applied": 1, "replayed": 0, "rejected": {}}
    assert team.json("balances", "acme")["pool"] == 103


# demo ---------------------------------------------------------------------------------------


def test_demo_temporary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db, demo runs on a temporary database and leaves no file behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COACHING_CREDITS_DB", str(tmp_path / "from-env.db"))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "step 7: member-cleo spends 1 credit" in out
    assert "now deleted" in out
    assert list(tmp_path.iterdir()) == []


def test_demo_json_steps(capsys: pytest.CaptureFixture[str]) -> None:
    """demo --format json prints the balances after each of its seven steps."""
    assert main(["demo", "--format", "json"]) == 0
    steps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6, 7]
    assert [s["pool"] for s in steps] == [0, 0, 100, 80, 88, 80, 80]
    last = {m["id"]: m["balance"] for m in steps[-1]["members"]}
    assert last == {
        "admin-ada": 0,
        "member-ben": 5,
        "member-cleo": 4,
        "member-dev": 5,
        "member-eli": 5,
    }


def test_demo_twice_names_workspace_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second demo in the same database names --workspace and --db, and changes nothing."""
    database = tmp_path / "demo.db"
    assert main(["demo", "--db", str(database)]) == 0
    capsys.readouterr()
    assert main(["demo", "--db", str(database)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "coaching-credits: error: workspace 'demo' already exists in this database; pass "
        "--workspace with another id, or --db with a new file\n"
    )
    assert main(["demo", "--db", str(database), "--workspace", "demo-2", "--format", "json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7


def test_demo_kept_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """demo --db keeps the walk-through in that database."""
    database = tmp_path / "demo.db"
    assert main(["demo", "--db", str(database), "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["--db", str(database), "balances", "demo", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["pool"] == 80


# python -m ----------------------------------------------------------------------------------


def _run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the tool with stdout on a pipe whose reader has already gone, as after ``head``."""
    read_end, write_end = os.pipe()
    # Closing the read end first makes the tool's first write fail with EPIPE, every time.
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "coaching_credits", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "arguments",
    [["demo", "--format", "json"], ["demo"], ["balances", "acme"], ["history", "acme"]],
)
def test_closed_pipe_exits_quietly(team: Cli, arguments: list[str]) -> None:
    """A reader that closed the pipe early ends the tool with status 141 and no traceback."""
    for _ in range(3):
        team.ok("transfer-to", "acme", "me-1", "1", "--actor", "ad-1")
    result = _run_into_closed_pipe("--db", team.database, *arguments)
    assert result.stderr == ""
    assert result.returncode == 141


def test_head_reads_first_lines(team: Cli) -> None:
    """A real pipe into head prints the first lines, and the tool exits without a message."""
    command = (
        f"{shlex.quote(sys.executable)} -m coaching_credits "
        f"--db {shlex.quote(team.database)} balances acme | head -2"
    )
    result = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith("workspace acme: ")
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""


def test_python_m_subprocess(tmp_path: Path) -> None:
    """python -m coaching_credits runs the tool with real exit statuses and no traceback."""
    database = tmp_path / "ledger.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coaching_credits", "--db", str(database), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    missing = run("balances", "acme")
    assert missing.returncode == 1
    assert missing.stderr.startswith("coaching-credits: error: database not found")

    assert run("create-workspace", "acme").returncode == 0
    assert run("purchase", "acme", "12").returncode == 0
    balances = run("balances", "acme", "--format", "json")
    assert balances.returncode == 0
    assert json.loads(balances.stdout)["pool"] == 12

    usage = run("purchase")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


def test_apply_line_metadata(team: Cli, tmp_path: Path) -> None:
    """A line's reason and metadata reach the journal; a non-object metadata is malformed."""
    actions = write_lines(
        tmp_path / "actions.jsonl",
        [
            {
                "op": "purchase",
                "workspace": "acme",
                "amount": 7,
                "key": "p1",
                "reason": "invoice",
                "metadata": {"invoice": "2026-10"},
            },
            {"op": "purchase", "workspace": "acme", "amount": 1, "metadata": ["not", "an object"]},
            {"op": "purchase", "workspace": "acme", "amount": 1, "metadata": {"n": 5}},
        ],
    )
    summary = team.json("apply", str(actions))
    assert summary["applied"] == 1
    assert summary["rejected"] == {"InvalidRequest": 1, "MalformedLine": 1}

    entry = team.json("history", "acme", "--limit", "1")["transfers"][0]
    assert entry["kind"] == "purchase"
    assert entry["reason"] == "invoice"
    assert entry["metadata"] == {"invoice": "2026-10"}
