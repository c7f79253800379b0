"""The command-line tool's journal commands, run in-process through ``main(argv)``.

Covers ``audit``, ``reverse``, ``--preview``, ``balance-at``, ``low-balances``, ``pool-status``,
``set-low-pool-threshold``, the time filters of ``history`` and ``--metadata``. Each test works
on a SQLite file in its own temporary folder; one test runs ``python -m coaching_credits`` in a
subprocess.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from coaching_credits.cli import main


class Cli:
    """Runs the tool in-process against one SQLite file and returns what it printed."""

    def __init__(self, database: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.database = database
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main(["--db", str(self.database), *args])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        assert err == ""
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json"))

    def fails(self, *args: str, code: int = 1) -> str:
        """Run a command that must fail without output; return its error text."""
        actual, out, err = self(*args)
        assert actual == code, (out, err)
        assert out == ""
        assert "Traceback" not in err
        return err

    def balances(self) -> dict[str, int]:
        """Return the pool (under ``"pool"``) and every member's balance."""
        data = self.json("balances", "acme")
        return {"pool": data["pool"], **{m["id"]: m["balance"] for m in data["members"]}}

    def sql(self, statement: str, *params: object) -> None:
        """Change the SQLite file directly, behind the library's back."""
        connection = sqlite3.connect(self.database)
        try:
            with connection:
                connection.execute(statement, params)
        finally:
            connection.close()


@pytest.fixture
def team(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    """A workspace ``acme``: admin ``ada``, members ``bob`` and ``cy``, and a pool of 100."""
    monkeypatch.delenv("COACHING_CREDITS_DB", raising=False)
    cli = Cli(tmp_path / "ledger.db", capsys)
    cli.ok("create-workspace", "acme")
    cli.ok("add-member", "acme", "ada", "--role", "admin")
    cli.ok("add-member", "acme", "bob", "--actor", "ada")
    cli.ok("add-member", "acme", "cy", "--actor", "ada")
    cli.ok("purchase", "acme", "100")
    return cli


def single_line(err: str) -> str:
    """Return the only line of ``err``, which must be a tool error."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("coaching-credits: error: ")
    return lines[0]


def moved_id(cli: Cli, *args: str) -> str:
    """Run a one-transfer command and return the id of its journal entry."""
    result = cli.json(*args)["result"]
    transfer_id: str = result["transfers"][0]["id"]
    return transfer_id


# audit --------------------------------------------------------------------------------------


def test_audit_clean(team: Cli) -> None:
    """A workspace changed only through the tool passes the audit, in both formats."""
    team.ok("transfer-to", "acme", "bob", "30", "--actor", "ada")
    team.ok("spend", "acme", "bob", "5")

    report = team.json("audit", "acme")
    assert report["workspace"] == "acme"
    assert report["ok"] is True
    assert report["mismatches"] == []
    assert report["totals"] == {
        "purchased": 100,
        "refunded": 0,
        "spent": 5,
        "in_circulation": 95,
        "expected_pool": 70,
        "stored_pool": 70,
        "stored_members_total": 25,
        "members_checked": 3,
    }

    text = team.ok("audit", "acme")
    assert text.splitlines()[0] == (
        "workspace acme: audit passed; the pool and 3 members agree with the journal"
    )
    assert "purchased 100, refunded 0, spent 5, in circulation 95, pool 70" in text
    assert "stored: pool 70, 3 members holding 25" in text


def test_audit_clean_then_dirty(team: Cli) -> None:
    """A balance changed with raw SQL fails the audit with status 1 and lists the mismatch."""
    team.ok("transfer-to", "acme", "bob", "30", "--actor", "ada")
    assert team.json("audit", "acme")["ok"] is True

    team.sql("UPDATE members SET balance = 45 WHERE workspace_id = 'acme' AND id = 'bob'")

    code, out, err = team("audit", "acme", "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["mismatches"] == [
        {"check": "member", "member_id": "bob", "expected": 30, "stored": 45},
        {"check": "member_snapshot", "member_id": "bob", "expected": 30, "stored": 45},
        {"check": "conservation", "member_id": None, "expected": 100, "stored": 115},
    ]
    assert report["totals"]["stored_members_total"] == 45
    line = single_line(err)
    assert "audit of workspace 'acme' found 3 mismatches" in line

    code, out, err = team("audit", "acme")
    assert code == 1
    assert out.splitlines()[0] == (
        "workspace acme: audit failed with 3 mismatches between the stored balances and the journal"
    )
    assert out.splitlines()[1:4] == [
        "  member bob: journal 30, stored 45",
        "  member bob: journal 30, stored 45 (balance recorded on the latest entry)",
        "  conservation: journal 100, stored 115 (pool + members against purchased - refunded "
        "- spent)",
    ]
    single_line(err)


def test_audit_pool_mismatch(team: Cli) -> None:
    """A pool changed with raw SQL is reported as a pool mismatch without a member id."""
    team.sql("UPDATE workspaces SET pool_balance = 60 WHERE id = 'acme'")

    code, out, _ = team("audit", "acme", "--format", "json")
    assert code == 1
    mismatches = json.loads(out)["mismatches"]
    assert {"check": "pool", "member_id": None, "expected": 100, "stored": 60} in mismatches

    code, out, _ = team("audit", "acme")
    assert code == 1
    assert "  pool: journal 100, stored 60" in out.splitlines()
    assert "  pool: journal 100, stored 60 (balance recorded on the latest entry)" in out


def test_audit_unknown_workspace(team: Cli) -> None:
    """Auditing a workspace that does not exist is a one-line error with status 1."""
    line = single_line(team.fails("audit", "nowhere"))
    assert "nowhere" in line


# reverse ------------------------------------------------------------------------------------


def test_reverse_transfer(team: Cli) -> None:
    """reverse records the opposite transfer, linked to the original, in JSON."""
    original = moved_id(team, "transfer-to", "acme", "bob", "30", "--actor", "ada")

    output = team.json("reverse", "acme", original, "--actor", "ada", "--reason", "wrong member")
    assert output["op"] == "reverse"
    assert output["replayed"] is False
    entry = output["result"]["transfers"][0]
    assert entry["kind"] == "transfer_from"
    assert entry["amount"] == 30
    assert entry["reverses"] == original
    assert entry["reason"] == "wrong member"
    assert output["result"]["pool"] == 100
    assert output["result"]["member"]["balance"] == 0
    assert team.balances() == {"pool": 100, "ada": 0, "bob": 0, "cy": 0}


def test_reverse_text(team: Cli) -> None:
    """The text output names the original, the new entry and the balances after."""
    original = moved_id(team, "transfer-to", "acme", "bob", "30", "--actor", "ada")

    text = team.ok("reverse", "acme", original, "--actor", "ada")
    assert text.startswith(f"reversed transfer {original}: recorded transfer_from ")
    assert text.rstrip().endswith("of 30 credits; pool 100, bob 0")


def test_reverse_purchase_is_refund(team: Cli) -> None:
    """A purchase is reversed as a refund, which the audit subtracts."""
    purchase = team.json("history", "acme", "--kind", "purchase")["transfers"][0]["id"]

    entry = team.json("reverse", "acme", purchase, "--actor", "ada")["result"]["transfers"][0]
    assert entry["kind"] == "refund"
    assert team.balances()["pool"] == 0
    totals = team.json("audit", "acme")["totals"]
    assert totals["refunded"] == 100
    assert totals["in_circulation"] == 0


def test_reverse_key_replays(team: Cli) -> None:
    """A repeated reverse with the same key replays instead of failing."""
    original = moved_id(team, "transfer-to", "acme", "bob", "30", "--actor", "ada")
    first = team.json("reverse", "acme", original, "--actor", "ada", "--key", "undo-1")

    again = team.json("reverse", "acme", original, "--actor", "ada", "--key", "undo-1")
    assert again["replayed"] is True
    assert again["result"]["transfers"][0]["id"] == first["result"]["transfers"][0]["id"]
    assert team.balances()["pool"] == 100


def test_reverse_errors(team: Cli) -> None:
    """Rejected reversals print one error line, exit with 1 and change nothing."""
    original = moved_id(team, "transfer-to", "acme", "bob", "30", "--actor", "ada")
    spent = moved_id(team, "spend", "acme", "bob", "5")
    before = team.balances()

    assert "not found" in single_line(team.fails("reverse", "acme", "no-such-id", "--actor", "ada"))
    assert "admin" in single_line(team.fails("reverse", "acme", original, "--actor", "bob"))
    single_line(team.fails("reverse", "acme", spent, "--actor", "ada"))
    # bob spent 5 of the 30 credits, so the transfer cannot be pulled back in full.
    single_line(team.fails("reverse", "acme", original, "--actor", "ada"))
    assert team.balances() == before

    team.ok("transfer-to", "acme", "bob", "5", "--actor", "ada")
    team.ok("reverse", "acme", original, "--actor", "ada")
    line = single_line(team.fails("reverse", "acme", original, "--actor", "ada"))
    assert "already reversed" in line


def test_reverse_usage_errors(team: Cli) -> None:
    """A missing --actor or transfer id is a usage error with status 2."""
    assert "--actor" in team.fails("reverse", "acme", "some-id", code=2)
    assert "TRANSFER_ID" in team.fails("reverse", "acme", "--actor", "ada", code=2)


# --preview ----------------------------------------------------------------------------------


def test_preview_transfer_to(team: Cli) -> None:
    """transfer-to --preview prints the From/To lines and changes nothing."""
    text = team.ok("transfer-to", "acme", "bob", "30", "--actor", "ada", "--preview")
    assert text.splitlines() == [
        "preview of transfer-to in workspace acme; nothing changed:",
        "  from pool: 100 -> 70 (-30)",
        "  to member 'bob': 0 -> 30 (+30)",
        "  net: 30 credits leave the pool",
        "run the same command without --preview to apply it",
    ]
    assert team.balances() == {"pool": 100, "ada": 0, "bob": 0, "cy": 0}
    assert len(team.json("history", "acme")["transfers"]) == 1


def test_preview_transfer_from_json(team: Cli) -> None:
    """transfer-from --preview in JSON has the balances before and after and no stored entry."""
    team.ok("transfer-to", "acme", "bob", "30", "--actor", "ada")

    preview = team.json("transfer-from", "acme", "bob", "12", "--actor", "ada", "--preview")
    assert preview["op"] == "transfer-from"
    assert preview["preview"] is True
    assert preview["key_used"] is False
    assert preview["net_change"] == -12
    assert preview["pool"] == {"before": 70, "after": 82, "delta": 12}
    assert preview["members"] == [{"id": "bob", "before": 30, "after": 18, "delta": -12}]
    assert preview["summary"][-1] == "net: 12 credits return to the pool"
    (entry,) = preview["transfers"]
    assert (entry["kind"], entry["amount"], entry["id"]) == ("transfer_from", 12, None)
    assert team.balances()["bob"] == 30


def test_preview_set_balances_net(team: Cli) -> None:
    """set-balances --preview shows the net credits leaving or returning to the pool."""
    team.ok("transfer-to", "acme", "bob", "25", "--actor", "ada")

    text = team.ok("set-balances", "acme", "20", "bob", "cy", "--actor", "ada", "--preview")
    assert "  from member 'bob': 25 -> 20 (-5)" in text
    assert "  to member 'cy': 0 -> 20 (+20)" in text
    assert "  net: 15 credits leave the pool" in text

    lowering = team.json("set-balances", "acme", "0", "bob", "cy", "--actor", "ada", "--preview")
    assert lowering["net_change"] == -25
    assert lowering["summary"][-1] == "net: 25 credits return to the pool"
    assert [m["delta"] for m in lowering["members"]] == [-25, 0]
    assert team.balances() == {"pool": 75, "ada": 0, "bob": 25, "cy": 0}


def test_preview_rejected_like_real_call(team: Cli) -> None:
    """A preview that the real call would reject fails the same way and changes nothing."""
    line = single_line(
        team.fails("transfer-to", "acme", "bob", "101", "--actor", "ada", "--preview")
    )
    assert "101" in line
    single_line(team.fails("set-balances", "acme", "5", "bob", "--actor", "cy", "--preview"))
    assert team.balances() == {"pool": 100, "ada": 0, "bob": 0, "cy": 0}


def test_preview_with_used_key(team: Cli) -> None:
    """A preview with a key that is already used warns that the real call would replay."""
    team.ok("transfer-to", "acme", "bob", "10", "--actor", "ada", "--key", "k-1")

    text = team.ok(
        "transfer-to", "acme", "bob", "10", "--actor", "ada", "--key", "k-1", "--preview"
    )
    assert "key 'k-1' is already used" in text
    assert "run the same command" not in text
    preview = team.json(
        "transfer-to", "acme", "bob", "10", "--actor", "ada", "--key", "k-1", "--preview"
    )
    assert preview["key_used"] is True
    fresh = team.json(
        "transfer-to", "acme", "bob", "10", "--actor", "ada", "--key", "k-2", "--preview"
    )
    assert fresh["key_used"] is False
    assert team.balances()["bob"] == 10


# low balances and the pool's threshold -------------------------------------------------------


def test_low_balances(team: Cli) -> None:
    """low-balances lists members at or below the threshold, lowest first, in both formats."""
    team.ok("transfer-to", "acme", "bob", "5", "--actor", "ada")
    team.ok("transfer-to", "acme", "cy", "9", "--actor", "ada")

    low = team.json("low-balances", "acme", "--threshold", "5")
    assert low["workspace"] == "acme"
    assert low["threshold"] == 5
    assert low["members"] == [
        {"id": "ada", "role": "admin", "balance": 0},
        {"id": "bob", "role": "member", "balance": 5},
    ]

    text = team.ok("low-balances", "acme", "--threshold", "5")
    lines = text.splitlines()
    assert lines[0] == "workspace acme: 2 members at or below 5 credits"
    assert lines[1].split() == ["member", "role", "balance"]
    assert lines[3].split() == ["bob", "member", "5"]

    only_admin = team.ok("low-balances", "acme", "--threshold", "0").splitlines()
    assert only_admin[0] == "workspace acme: 1 member at or below 0 credits"
    assert [line.split() for line in only_admin[1:]] == [
        ["member", "role", "balance"],
        ["ada", "admin", "0"],
    ]


def test_low_balances_errors(team: Cli) -> None:
    """A bad threshold is rejected by the library (1); a missing one is a usage error (2)."""
    assert "threshold" in single_line(team.fails("low-balances", "acme", "--threshold", "-1"))
    assert "'many'" in single_line(team.fails("low-balances", "acme", "--threshold", "many"))
    assert "--threshold" in team.fails("low-balances", "acme", code=2)
    single_line(team.fails("low-balances", "nowhere", "--threshold", "1"))


def test_pool_status_and_threshold(team: Cli) -> None:
    """pool-status reports the threshold that set-low-pool-threshold stores."""
    status = team.json("pool-status", "acme")
    assert status == {"workspace": "acme", "balance": 100, "threshold": 0, "is_low": False}
    assert team.ok("pool-status", "acme") == "workspace acme: pool 100, low below 0: not low\n"

    output = team.json("set-low-pool-threshold", "acme", "101", "--actor", "ada")
    assert output["op"] == "set-low-pool-threshold"
    assert output["result"]["workspace"]["low_pool_threshold"] == 101

    status = team.json("pool-status", "acme")
    assert (status["threshold"], status["is_low"]) == (101, True)
    text = team.ok("pool-status", "acme")
    assert text.startswith("workspace acme: pool 100, low below 101: low")

    text = team.ok("set-low-pool-threshold", "acme", "1", "--actor", "ada")
    assert text == "the pool of workspace acme now counts as low below 1 credit\n"
    assert team.json("pool-status", "acme")["is_low"] is False


def test_set_low_pool_threshold_errors(team: Cli) -> None:
    """Only an admin sets the threshold, to a whole number from 0; nothing changes otherwise."""
    single_line(team.fails("set-low-pool-threshold", "acme", "10", "--actor", "bob"))
    single_line(team.fails("set-low-pool-threshold", "acme", "-3", "--actor", "ada"))
    single_line(team.fails("set-low-pool-threshold", "acme", "2.5", "--actor", "ada"))
    assert "--actor" in team.fails("set-low-pool-threshold", "acme", "10", code=2)
    assert team.json("pool-status", "acme")["threshold"] == 0


# history time filters and balance-at ---------------------------------------------------------


def entry_times(cli: Cli) -> list[datetime]:
    """Return the created_at of every journal entry of ``acme``, oldest first."""
    transfers = cli.json("history", "acme", "--limit", "1000")["transfers"]
    return [datetime.fromisoformat(t["created_at"]) for t in reversed(transfers)]


def test_history_since_until(team: Cli) -> None:
    """--since is inclusive and --until exclusive, and they combine with the page cursor."""
    team.ok("transfer-to", "acme", "bob", "10", "--actor", "ada")
    team.ok("transfer-to", "acme", "cy", "20", "--actor", "ada")
    team.ok("spend", "acme", "bob", "1")
    purchased, to_bob, to_cy, spent = entry_times(team)
    assert purchased < to_bob < to_cy < spent

    since = team.json("history", "acme", "--since", to_bob.isoformat())
    assert [t["kind"] for t in since["transfers"]] == ["spend", "transfer_to", "transfer_to"]

    until = team.json("history", "acme", "--until", to_cy.isoformat())
    assert [t["amount"] for t in until["transfers"]] == [10, 100]

    window = team.json(
        "history", "acme", "--since", to_bob.isoformat(), "--until", spent.isoformat()
    )
    assert [t["amount"] for t in window["transfers"]] == [20, 10]

    page = team.json("history", "acme", "--since", to_bob.isoformat(), "--limit", "2")
    assert [t["amount"] for t in page["transfers"]] == [1, 20]
    cursor = page["next_before"]
    rest = team.json(
        "history", "acme", "--since", to_bob.isoformat(), "--limit", "2", "--before", str(cursor)
    )
    assert [t["amount"] for t in rest["transfers"]] == [10]
    assert rest["next_before"] is None

    text = team.ok(
        "history", "acme", "--kind", "transfer_to", "--since", to_bob.isoformat(), "--limit", "1"
    )
    assert "member cy" in text
    assert text.splitlines()[-1].startswith("more entries: add --before ")


def test_history_time_zones(team: Cli) -> None:
    """A time with Z or another offset means the same moment; a time without one is rejected."""
    (purchased,) = entry_times(team)
    later = purchased + timedelta(microseconds=1)
    india = later.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert team.json("history", "acme", "--since", india)["transfers"] == []
    assert len(team.json("history", "acme", "--until", india)["transfers"]) == 1
    zulu = later.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    assert team.json("history", "acme", "--since", zulu)["transfers"] == []
    assert len(team.json("history", "acme", "--until", zulu)["transfers"]) == 1

    err = team.fails("history", "acme", "--since", "2026-01-31T18:00:00", code=2)
    assert "no UTC offset" in err
    err = team.fails("history", "acme", "--until", "last tuesday", code=2)
    assert "invalid time 'last tuesday'" in err


def test_balance_at(team: Cli) -> None:
    """balance-at reads the pool's or a member's balance at a past time, in both formats."""
    team.ok("transfer-to", "acme", "bob", "30", "--actor", "ada")
    team.ok("transfer-to", "acme", "bob", "5", "--actor", "ada")
    purchased, first, second = entry_times(team)

    at_first = team.json("balance-at", "acme", first.isoformat())
    assert at_first == {"workspace": "acme", "member": None, "at": first.isoformat(), "balance": 70}
    of_bob = team.json("balance-at", "acme", first.isoformat(), "--member", "bob")
    assert (of_bob["member"], of_bob["balance"]) == ("bob", 30)
    assert team.json("balance-at", "acme", second.isoformat(), "--member", "bob")["balance"] == 35

    before_anything = (purchased - timedelta(days=1)).isoformat()
    assert team.json("balance-at", "acme", before_anything)["balance"] == 0

    text = team.ok("balance-at", "acme", first.isoformat(), "--member", "bob")
    assert text == f"workspace acme: member bob balance at {first.isoformat()}: 30\n"
    text = team.ok("balance-at", "acme", purchased.isoformat())
    assert text == f"workspace acme: pool balance at {purchased.isoformat()}: 100\n"


def test_balance_at_errors(team: Cli) -> None:
    """An unknown member or workspace fails with 1; a time without an offset is a usage error."""
    now = "2030-01-01T00:00:00+00:00"
    assert "zed" in single_line(team.fails("balance-at", "acme", now, "--member", "zed"))
    single_line(team.fails("balance-at", "nowhere", now))
    assert "no UTC offset" in team.fails("balance-at", "acme", "2030-01-01T00:00:00", code=2)
    assert "TIME" in team.fails("balance-at", "acme", code=2)


# --reason and --metadata --------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["purchase", "acme", "7"],
        ["transfer-to", "acme", "bob", "3", "--actor", "ada"],
        ["set-balances", "acme", "4", "bob", "--actor", "ada"],
        ["remove-member", "acme", "cy", "--actor", "ada"],
    ],
)
def test_metadata_stored_on_entry(team: Cli, command: list[str]) -> None:
    """Every write command stores --reason and each --metadata pair on its journal entry."""
    output = team.json(
        *command, "--reason", "quarter close", "--metadata", "ticket=T-9", "--metadata", "note=a=b"
    )
    entry = output["result"]["transfers"][-1]
    assert entry["reason"] == "quarter close"
    assert entry["metadata"] == {"note": "a=b", "ticket": "T-9"}

    stored = team.json("history", "acme", "--limit", "1")["transfers"][0]
    assert stored["metadata"] == {"note": "a=b", "ticket": "T-9"}
    assert "metadata note=a=b,ticket=T-9" in team.ok("history", "acme", "--limit", "1")


def test_metadata_on_remaining_commands(team: Cli) -> None:
    """transfer-from, spend and reverse take --metadata too."""
    team.ok("transfer-to", "acme", "bob", "10", "--actor", "ada")
    back = team.json(
        "transfer-from", "acme", "bob", "2", "--actor", "ada", "--metadata", "step=from"
    )
    assert back["result"]["transfers"][0]["metadata"] == {"step": "from"}
    spent = team.json("spend", "acme", "bob", "1", "--metadata", "step=spend")
    assert spent["result"]["transfers"][0]["metadata"] == {"step": "spend"}
    undo = team.json(
        "reverse", "acme", back["result"]["transfers"][0]["id"], "--actor", "ada",
        "--metadata", "step=undo",
    )  # fmt: skip
    assert undo["result"]["transfers"][0]["metadata"] == {"step": "undo"}


def test_metadata_errors(team: Cli) -> None:
    """A malformed or repeated pair is a usage error; too many pairs fail in the library."""
    err = team.fails("purchase", "acme", "1", "--metadata", "no-separator", code=2)
    assert "expected KEY=VALUE" in err
    assert "expected KEY=VALUE" in team.fails("purchase", "acme", "1", "--metadata", "=v", code=2)
    err = team.fails("purchase", "acme", "1", "--metadata", "a=1", "--metadata", "a=2", code=2)
    assert "key 'a' is given twice" in err
    # The subcommand's usage line, which lists --metadata, not the top-level one.
    assert err.startswith("usage: coaching-credits purchase ")
    assert "--metadata KEY=VALUE" in err

    too_many = [arg for i in range(21) for arg in ("--metadata", f"k{i}=v")]
    assert "metadata" in single_line(team.fails("purchase", "acme", "1", *too_many))
    assert "reason" in single_line(team.fails("purchase", "acme", "1", "--reason", "x" * 501))
    assert team.balances()["pool"] == 100


def test_metadata_part_of_key_request(team: Cli) -> None:
    """The same key with other metadata is an idempotency conflict, not a replay."""
    team.ok("purchase", "acme", "5", "--key", "p-1", "--metadata", "order=A")
    assert "replayed" in team.ok("purchase", "acme", "5", "--key", "p-1", "--metadata", "order=A")
    single_line(team.fails("purchase", "acme", "5", "--key", "p-1", "--metadata", "order=B"))
    assert team.balances()["pool"] == 105


# python -m ----------------------------------------------------------------------------------


def test_audit_subprocess(tmp_path: Path) -> None:
    """python -m coaching_credits audit exits with 0 when clean and 1 after a raw SQL change."""
    database = tmp_path / "ledger.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coaching_credits", "--db", str(database), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    assert run("create-workspace", "acme").returncode == 0
    assert run("purchase", "acme", "40").returncode == 0
    clean = run("audit", "acme", "--format", "json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["ok"] is True

    connection = sqlite3.connect(database)
    with connection:
        connection.execute("UPDATE workspaces SET pool_balance = 41 WHERE id = 'acme'")
    connection.close()

    dirty = run("audit", "acme", "--format", "json")
    assert dirty.returncode == 1
    assert json.loads(dirty.stdout)["mismatches"][0] == {
        "check": "pool",
        "member_id": None,
        "expected": 40,
        "stored": 41,
    }
    assert dirty.stderr.startswith("coaching-credits: error: audit of workspace 'acme' found")
    assert "Traceback" not in dirty.stderr
