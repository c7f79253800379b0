"""The northwind sample quarter, run end to end through the command-line tool.

The four commands of the sample data's README run in a subprocess on a temporary SQLite file.
Their results are checked against a reference model written here in plain Python (dicts and
ints, no library code) that applies the same lines with the same rules and the same check
order: amount, workspace, idempotency key, admin, coaching, members, balances.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MEMBERS_CSV = "northwind.members.csv"
ACTIONS = "northwind.actions.jsonl"
WORKSPACE = "northwind"

MAX_AMOUNT = 2**63 - 1
MAX_ID_LENGTH = 200

if not (DATA / MEMBERS_CSV).is_file() or not (DATA / ACTIONS).is_file():
    pytest.skip(
        f"northwind sample data not found in {DATA}; it lives in the shared/data folder "
        f"beside the repository checkout",
        allow_module_level=True,
    )


# The reference model ------------------------------------------------------------------------


class Rejected(Exception):
    """A line the model rejects; the message is the library error's class name."""


@dataclass
class ModelWorkspace:
    coaching_enabled: bool = True
    pool: int = 0
    # member id -> [role, balance]
    members: dict[str, list[Any]] = field(default_factory=dict)
    # idempotency key -> the line's fields without "key" and "at"
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (idempotency key, canonical JSON of the fields) -> the error that rejected them
    rejections: dict[tuple[str, str], str] = field(default_factory=dict)
    purchased: int = 0
    spent: int = 0


def _is_amount(value: object, minimum: int) -> bool:
    return type(value) is int and minimum <= value <= MAX_AMOUNT


def _is_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH


class Model:
    """The credit rules on dicts and ints, one method per check in the library's order."""

    def __init__(self, members: dict[str, str]) -> None:
        self.workspaces = {
            WORKSPACE: ModelWorkspace(members={m: [role, 0] for m, role in members.items()})
        }

    def apply(self, line: dict[str, Any]) -> str:
        """Apply one line; return "applied", "replayed" or the rejecting error's name."""
        try:
            return self._apply(line)
        except Rejected as rejection:
            return str(rejection)

    def _apply(self, line: dict[str, Any]) -> str:
        op = line["op"]
        for name in ("workspace", "member", "actor"):
            if name in line and line[name] is not None and not _is_id(line[name]):
                raise Rejected("InvalidRequest")
        if op == "set_balances" and not all(_is_id(m) for m in line["members"]):
            raise Rejected("InvalidRequest")
        moves = ("purchase", "transfer_to", "transfer_from", "spend")
        if op in moves and not _is_amount(line["amount"], 1):
            raise Rejected("InvalidAmount")
        if op == "set_balances" and not _is_amount(line["balance"], 0):
            raise Rejected("InvalidAmount")
        if op == "add_member" and line.get("role", "member") not in ("admin", "member"):
            raise Rejected("InvalidRequest")

        ws = self.workspaces.get(line["workspace"])
        if ws is None:
            raise Rejected("WorkspaceNotFound")

        request = {k: v for k, v in line.items() if k not in ("key", "at")}
        if op == "add_member":
            request.setdefault("role", "member")
            request.setdefault("actor", None)
        key = line.get("key")
        if key is not None and key in ws.keys:
            if ws.keys[key] != request:
                raise Rejected("IdempotencyConflict")
            return "replayed"

        # A rejected keyed request is remembered: resending it unchanged is rejected the
        # same way, while a corrected request with the same key is checked afresh.
        fields = json.dumps(request, sort_keys=True)
        if key is not None and (key, fields) in ws.rejections:
            raise Rejected(ws.rejections[key, fields])
        try:
            getattr(self, f"_{op}")(ws, line)
        except Rejected as rejection:
            if key is not None:
                ws.rejections[key, fields] = str(rejection)
            raise
        if key is not None:
            ws.keys[key] = request
        return "applied"

    # Checks, in the order the library runs them after the key.

    @staticmethod
    def _require_admin(ws: ModelWorkspace, actor: str) -> None:
        if ws.members.get(actor, [None])[0] != "admin":
            raise Rejected("PermissionDenied")

    @staticmethod
    def _require_coaching(ws: ModelWorkspace) -> None:
        if not ws.coaching_enabled:
            raise Rejected("CoachingDisabled")

    @staticmethod
    def _require_member(ws: ModelWorkspace, member: str) -> list[Any]:
        if member not in ws.members:
            raise Rejected("MemberNotFound")
        return ws.members[member]

    # Operations.

    def _purchase(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        if ws.pool + line["amount"] > MAX_AMOUNT:
            raise Rejected("InvalidAmount")
        ws.pool += line["amount"]
        ws.purchased += line["amount"]

    def _transfer_to(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        self._require_admin(ws, line["actor"])
        self._require_coaching(ws)
        member = self._require_member(ws, line["member"])
        if ws.pool < line["amount"]:
            raise Rejected("InsufficientCredits")
        if member[1] + line["amount"] > MAX_AMOUNT:
            raise Rejected("InvalidAmount")
        ws.pool -= line["amount"]
        member[1] += line["amount"]

    def _transfer_from(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        self._require_admin(ws, line["actor"])
        self._require_coaching(ws)
        member = self._require_member(ws, line["member"])
        if member[1] < line["amount"]:
            raise Rejected("InsufficientCredits")
        if ws.pool + line["amount"] > MAX_AMOUNT:
            raise Rejected("InvalidAmount")
        ws.pool += line["amount"]
        member[1] -= line["amount"]

    def _set_balances(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        self._require_admin(ws, line["actor"])
        self._require_coaching(ws)
        ids = line["members"]
        if len(set(ids)) != len(ids):
            raise Rejected("InvalidRequest")
        for member_id in sorted(ids):
            self._require_member(ws, member_id)
        need = sum(line["balance"] - ws.members[m][1] for m in ids)
        if need > ws.pool:
            raise Rejected("InsufficientCredits")
        ws.pool -= need
        for member_id in ids:
            ws.members[member_id][1] = line["balance"]

    def _spend(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        self._require_coaching(ws)
        member = self._require_member(ws, line["member"])
        if member[1] < line["amount"]:
            raise Rejected("InsufficientCredits")
        member[1] -= line["amount"]
        ws.spent += line["amount"]

    def _add_member(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        if line.get("actor") is not None:
            self._require_admin(ws, line["actor"])
        if line["member"] in ws.members:
            raise Rejected("MemberAlreadyExists")
        ws.members[line["member"]] = [line.get("role", "member"), 0]

    def _remove_member(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        self._require_admin(ws, line["actor"])
        member = self._require_member(ws, line["member"])
        ws.pool += member[1]
        del ws.members[line["member"]]

    def _set_coaching(self, ws: ModelWorkspace, line: dict[str, Any]) -> None:
        self._require_admin(ws, line["actor"])
        if type(line["enabled"]) is not bool:
            raise Rejected("InvalidRequest")
        ws.coaching_enabled = line["enabled"]

    def balances(self) -> dict[str, Any]:
        """Return the state in the shape of ``balances --format json``."""
        ws = self.workspaces[WORKSPACE]
        return {
            "workspace": WORKSPACE,
            "coaching_enabled": ws.coaching_enabled,
            "pool": ws.pool,
            "members": [
                {"id": m, "role": role, "balance": balance}
                for m, (role, balance) in sorted(ws.members.items())
            ],
        }


def summarise(outcomes: list[str]) -> dict[str, Any]:
    """Return outcome names in the shape of ``apply --format json``."""
    rejected = Counter(o for o in outcomes if o not in ("applied", "replayed"))
    return {
        "applied": outcomes.count("applied"),
        "replayed": outcomes.count("replayed"),
        "rejected": dict(sorted(rejected.items())),
    }


# Running the tool ---------------------------------------------------------------------------


def run_tool(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m coaching_credits --db DATABASE ARGS`` and require exit status 0."""
    return run_tool_at(str(database), *args)


def run_tool_at(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the tool on a SQLite path or a ``postgresql://`` URL; require exit status 0."""
    completed = subprocess.run(
        [sys.executable, "-m", "coaching_credits", "--db", database, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert completed.returncode == 0, f"{args} exited {completed.returncode}: {completed.stderr}"
    return completed


def parse_verbose(stderr: str) -> dict[int, str]:
    """Map line numbers to outcomes from ``apply --verbose`` output on stderr."""
    outcomes = {}
    for text in stderr.splitlines():
        if not text.startswith("line "):
            continue
        number, _, rest = text[len("line ") :].partition(": ")
        # "OP key 'K': applied", "...: replayed" or "...: rejected NAME: message"
        outcome = rest.split(": ", 2)[1]
        outcomes[int(number)] = outcome.removeprefix("rejected ")
    return outcomes


@dataclass
class Run:
    """What the tool printed, and what the model predicts, for two applies of the file."""

    lines: list[dict[str, Any]]
    first_summary: dict[str, Any]
    first_balances: dict[str, Any]
    second_summary: dict[str, Any]
    second_outcomes: dict[int, str]
    second_balances: dict[str, Any]
    journal: list[dict[str, Any]]
    model: Model
    model_first: list[str]
    model_first_balances: dict[str, Any]
    model_second: list[str]
    seconds: float


@pytest.fixture(scope="module")
def northwind(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Run the sample data's commands once, then apply the file a second time."""
    folder = tmp_path_factory.mktemp("northwind")
    for name in (MEMBERS_CSV, ACTIONS):
        shutil.copy(DATA / name, folder / name)
    database = folder / "northwind.db"

    run_tool(database, "create-workspace", WORKSPACE)
    run_tool(database, "import-members", WORKSPACE, str(folder / MEMBERS_CSV))
    started = time.perf_counter()
    first = run_tool(database, "apply", str(folder / ACTIONS), "--format", "json")
    seconds = time.perf_counter() - started
    first_balances = run_tool(database, "balances", WORKSPACE, "--format", "json")

    second = run_tool(database, "apply", str(folder / ACTIONS), "--format", "json", "--verbose")
    second_balances = run_tool(database, "balances", WORKSPACE, "--format", "json")
    history = run_tool(
        database, "history", WORKSPACE, "--kind", "purchase", "spend", "--limit", "1000000",
        "--format", "json",
    )  # fmt: skip

    with (folder / MEMBERS_CSV).open(newline="", encoding="utf-8") as source:
        roles = {row["member_id"]: row["role"] for row in csv.DictReader(source)}
    lines = [json.loads(text) for text in (folder / ACTIONS).read_text("utf-8").splitlines()]
    model = Model(roles)
    model_first = [model.apply(line) for line in lines]
    model_first_balances = model.balances()
    model_second = [model.apply(line) for line in lines]

    print(f"\nnorthwind: one apply of {len(lines)} lines took {seconds:.2f} s (SQLite, subprocess)")
    return Run(
        lines=lines,
        first_summary=json.loads(first.stdout),
        first_balances=json.loads(first_balances.stdout),
        second_summary=json.loads(second.stdout),
        second_outcomes=parse_verbose(second.stderr),
        second_balances=json.loads(second_balances.stdout),
        journal=json.loads(history.stdout)["transfers"],
        model=model,
        model_first=model_first,
        model_first_balances=model_first_balances,
        model_second=model_second,
        seconds=seconds,
    )


# The checks ---------------------------------------------------------------------------------


def test_outcome_counts_match_model(northwind: Run) -> None:
    """(a) The first apply's counts by outcome equal the reference model's."""
    assert northwind.first_summary == summarise(northwind.model_first)


def test_sample_exercises_every_outcome(northwind: Run) -> None:
    """The sample data hits replays and each kind of rejection the rules describe."""
    rejected = northwind.first_summary["rejected"]
    assert northwind.first_summary["applied"] > 0
    assert northwind.first_summary["replayed"] > 0
    for name in (
        "InvalidAmount",
        "IdempotencyConflict",
        "PermissionDenied",
        "CoachingDisabled",
        "MemberNotFound",
        "InsufficientCredits",
    ):
        assert rejected.get(name, 0) > 0, name


def test_final_balances_match_model(northwind: Run) -> None:
    """(b) After each apply, the pool and every balance equal the model's."""
    assert northwind.first_balances == northwind.model_first_balances
    assert northwind.second_balances == northwind.model.balances()


def test_conservation(northwind: Run) -> None:
    """(c) Pool plus member balances equals purchases minus spends, by journal and by model."""
    balances = northwind.second_balances
    in_workspace = balances["pool"] + sum(m["balance"] for m in balances["members"])

    purchased = sum(t["amount"] for t in northwind.journal if t["kind"] == "purchase")
    spent = sum(t["amount"] for t in northwind.journal if t["kind"] == "spend")
    assert in_workspace == purchased - spent

    ws = northwind.model.workspaces[WORKSPACE]
    assert purchased == ws.purchased
    assert spent == ws.spent


def test_balances_never_negative(northwind: Run) -> None:
    """(d) The pool and every member balance are at least 0."""
    for balances in (northwind.first_balances, northwind.second_balances):
        assert balances["pool"] >= 0
        assert all(m["balance"] >= 0 for m in balances["members"])


def test_second_apply_matches_model(northwind: Run) -> None:
    """The second apply's counts and each line's outcome equal the model's."""
    assert northwind.second_summary == summarise(northwind.model_second)
    expected = dict(enumerate(northwind.model_second, start=1))
    assert northwind.second_outcomes == expected


def test_second_apply_replays_applied_lines(northwind: Run) -> None:
    """(e) Every line applied the first time replays the second time, changing nothing."""
    for number, first in enumerate(northwind.model_first, start=1):
        if first == "applied":
            assert northwind.second_outcomes[number] == "replayed", number


def test_second_apply_repeats_stateless_rejections(northwind: Run) -> None:
    """(e) A line rejected for its own content is rejected again with the same error."""
    for number, first in enumerate(northwind.model_first, start=1):
        if first in ("InvalidAmount", "IdempotencyConflict", "InvalidRequest"):
            assert northwind.second_outcomes[number] == first, number


def test_second_apply_changes_nothing(northwind: Run) -> None:
    """(e) The second apply applies nothing and leaves every balance as it was."""
    assert northwind.second_summary["applied"] == 0
    assert northwind.second_balances == northwind.first_balances
    for number, first in enumerate(northwind.model_first, start=1):
        expected = "replayed" if first == "applied" else first
        assert northwind.second_outcomes[number] == expected, number


def test_postgres_matches_sqlite(northwind: Run, postgres_database: str, tmp_path: Path) -> None:
    """The sample applied through ``--db postgresql://...`` gives SQLite's counts and balances."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(postgres_database)
    url = (
        f"postgresql://{parts.get('user', 'postgres')}@{parts.get('host', '127.0.0.1')}:"
        f"{parts.get('port', '5432')}/{parts['dbname']}"
    )
    for name in (MEMBERS_CSV, ACTIONS):
        shutil.copy(DATA / name, tmp_path / name)

    run_tool_at(url, "create-workspace", WORKSPACE)
    run_tool_at(url, "import-members", WORKSPACE, str(tmp_path / MEMBERS_CSV))
    first = run_tool_at(url, "apply", str(tmp_path / ACTIONS), "--format", "json")
    balances = run_tool_at(url, "balances", WORKSPACE, "--format", "json")
    second = run_tool_at(url, "apply", str(tmp_path / ACTIONS), "--format", "json")
    second_balances = run_tool_at(url, "balances", WORKSPACE, "--format", "json")

    assert json.loads(first.stdout) == northwind.first_summary
    assert json.loads(balances.stdout) == northwind.first_balances
    assert json.loads(second.stdout) == northwind.second_summary
    assert json.loads(second_balances.stdout) == northwind.first_balances
