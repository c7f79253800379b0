"""Ledger.apply_batch on every backend, and ``apply --batch-size`` on the northwind sample.

A batch must give the same outcomes, balances and journal as one call per operation, commit
all or nothing at the storage level, and keep the idempotency rules within and across
batches.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coaching_credits import (
    CreditError,
    IdempotencyConflict,
    InMemoryRepository,
    InsufficientCredits,
    InvalidRequest,
    Ledger,
    Operation,
    Outcome,
    PermissionDenied,
    Repository,
    RetryableConflict,
    Role,
    StorageError,
    Transaction,
    WorkspaceNotFound,
)
from conftest import Backend, make_backend
from test_northwind import (
    ACTIONS,
    DATA,
    MEMBERS_CSV,
    WORKSPACE,
    Model,
    run_tool,
    summarise,
)

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def make_ledger(repository: Repository, prefix: str = "") -> Ledger:
    """Return a ledger with a fixed clock and transfer ids ``PREFIX1``, ``PREFIX2``, ..."""
    counter = itertools.count(1)
    return Ledger(repository, clock=lambda: T0, id_factory=lambda: f"{prefix}{next(counter)}")


def set_up(ledger: Ledger, workspace_id: str, *, pool: int = 0) -> None:
    """Create a workspace with admin ``boss`` and members ``ann``, ``bob``; fill the pool."""
    ledger.create_workspace(workspace_id)
    ledger.add_member(workspace_id, "boss", role=Role.ADMIN)
    ledger.add_member(workspace_id, "ann")
    ledger.add_member(workspace_id, "bob")
    if pool:
        ledger.purchase(workspace_id, pool)


def give(member: str, amount: object, key: str | None = None, workspace: str = "ws") -> Operation:
    """Return a transfer_to operation by admin ``boss``."""
    arguments = {"member_id": member, "amount": amount, "actor": "boss"}
    return Operation("transfer_to", workspace, arguments, key)


def balances(ledger: Ledger, workspace_id: str) -> dict[str | None, int]:
    """Return the pool (under ``None``) and every member's balance."""
    found: dict[str | None, int] = {None: ledger.pool(workspace_id).balance}
    found.update({m.id: m.balance for m in ledger.members(workspace_id)})
    return found


def journal(ledger: Ledger, workspace_id: str) -> list[tuple[Any, ...]]:
    """Return the journal oldest first, without the sequence numbers."""
    entries = reversed(ledger.history(workspace_id, limit=None))
    return [
        (t.id, t.kind, t.member_id, t.amount, t.pool_balance, t.member_balance) for t in entries
    ]


# Outcomes -----------------------------------------------------------------------------------


def test_batch_mixed_outcomes(repository: Repository) -> None:
    """One batch applies, replays and rejects, and later operations see earlier ones."""
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=10)
    first = ledger.transfer_to("ws", "ann", 2, actor="boss", idempotency_key="old")

    outcomes = ledger.apply_batch(
        [
            give("ann", 2, key="old"),
            give("bob", 8, key="new"),
            give("ann", 1),
            Operation("spend", "ws", {"member_id": "bob", "amount": 3}),
            give("bob", 1, workspace="nowhere"),
            Operation("transfer_from", "ws", {"member_id": "bob", "amount": 5, "actor": "ann"}),
            give("ann", True),
        ]
    )

    assert [o.status for o in outcomes] == [
        "replayed",
        "applied",
        "rejected",
        "applied",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert outcomes[0].result == first
    assert outcomes[1].result.member.balance == 8
    assert outcomes[1].result.pool.balance == 0
    assert isinstance(outcomes[2].error, InsufficientCredits)
    assert outcomes[3].result.member.balance == 5
    assert isinstance(outcomes[4].error, WorkspaceNotFound)
    assert isinstance(outcomes[5].error, PermissionDenied)
    assert type(outcomes[6].error).__name__ == "InvalidAmount"
    assert balances(ledger, "ws") == {None: 0, "boss": 0, "ann": 2, "bob": 5}


def test_batch_spans_workspaces(repository: Repository) -> None:
    """Operations on several workspaces, in any order, apply in one batch."""
    ledger = make_ledger(repository)
    set_up(ledger, "w2", pool=5)
    set_up(ledger, "w1", pool=5)

    outcomes = ledger.apply_batch(
        [give("ann", 1, workspace="w2"), give("bob", 2, workspace="w1"), give("ann", 3, "k", "w2")]
    )

    assert [o.status for o in outcomes] == ["applied"] * 3
    assert balances(ledger, "w1") == {None: 3, "boss": 0, "ann": 0, "bob": 2}
    assert balances(ledger, "w2") == {None: 1, "boss": 0, "ann": 4, "bob": 0}


def test_empty_batch(repository: Repository) -> None:
    """An empty batch returns no outcomes."""
    assert make_ledger(repository).apply_batch([]) == []


def test_batch_of_invalid_arguments_only(repository: Repository) -> None:
    """Operations rejected for their arguments alone need no workspace."""
    outcomes = make_ledger(repository).apply_batch([give("", 1, workspace="nowhere")])
    assert outcomes[0].status == "rejected"
    assert isinstance(outcomes[0].error, InvalidRequest)


def test_operation_rejects_unknown_op() -> None:
    """An op that is not a ledger write method raises InvalidRequest at construction."""
    with pytest.raises(InvalidRequest, match="'create_workspace'"):
        Operation("create_workspace", "ws")


def test_operation_rejects_wrong_arguments() -> None:
    """A missing or unknown argument raises InvalidRequest naming the parameters."""
    with pytest.raises(InvalidRequest, match="member_id, amount, actor"):
        Operation("transfer_to", "ws", {"member": "ann", "amount": 1, "actor": "boss"})
    with pytest.raises(InvalidRequest, match="idempotency_key"):
        Operation("purchase", "ws", {"amount": 1, "idempotency_key": "k"})


# Idempotency --------------------------------------------------------------------------------


def test_key_used_twice_in_one_batch(repository: Repository) -> None:
    """A key's second use in the same batch replays the first, or conflicts with it."""
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=10)

    outcomes = ledger.apply_batch(
        [give("ann", 3, key="k"), give("ann", 3, key="k"), give("ann", 4, key="k")]
    )

    assert [o.status for o in outcomes] == ["applied", "replayed", "rejected"]
    assert outcomes[1].result == outcomes[0].result
    assert isinstance(outcomes[2].error, IdempotencyConflict)
    assert balances(ledger, "ws")["ann"] == 3


def test_key_replays_across_batches_and_calls(repository: Repository) -> None:
    """A key applied in a batch replays in a later batch and in a single call."""
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=10)
    (applied,) = ledger.apply_batch([give("ann", 3, key="k")])

    (again,) = ledger.apply_batch([give("ann", 3, key="k")])
    single = ledger.transfer_to("ws", "ann", 3, actor="boss", idempotency_key="k")

    assert again.status == "replayed"
    assert again.result == applied.result
    assert single == applied.result
    assert ledger.last_call_replayed
    assert balances(ledger, "ws")["ann"] == 3


def test_rejection_remembered_in_batch(repository: Repository) -> None:
    """A keyed rejection in a batch is remembered; a corrected request with the key applies."""
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=2)

    (rejected,) = ledger.apply_batch([give("ann", 5, key="k")])
    ledger.purchase("ws", 10)
    (resent,) = ledger.apply_batch([give("ann", 5, key="k")])
    with pytest.raises(InsufficientCredits):
        ledger.transfer_to("ws", "ann", 5, actor="boss", idempotency_key="k")
    (corrected,) = ledger.apply_batch([give("ann", 4, key="k")])

    assert isinstance(rejected.error, InsufficientCredits)
    assert resent.status == "rejected"
    assert isinstance(resent.error, InsufficientCredits)
    assert str(resent.error) == str(rejected.error)
    assert corrected.status == "applied"
    assert balances(ledger, "ws")["ann"] == 4


def test_rejection_remembered_within_one_batch(repository: Repository) -> None:
    """An identical resend later in the same batch is rejected as the first was."""
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=2)

    outcomes = ledger.apply_batch(
        [
            give("ann", 5, key="k"),
            Operation("purchase", "ws", {"amount": 10}),
            give("ann", 5, key="k"),
        ]
    )

    assert [o.status for o in outcomes] == ["rejected", "applied", "rejected"]
    assert isinstance(outcomes[2].error, InsufficientCredits)
    assert balances(ledger, "ws")["ann"] == 0


def test_single_call_rejection_remembered_by_batch(repository: Repository) -> None:
    """A rejection remembered by a single call is repeated inside a batch."""
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=2)
    with pytest.raises(InsufficientCredits):
        ledger.transfer_to("ws", "ann", 5, actor="boss", idempotency_key="k")
    ledger.purchase("ws", 10)

    (outcome,) = ledger.apply_batch([give("ann", 5, key="k")])

    assert isinstance(outcome.error, InsufficientCredits)


# All or nothing -----------------------------------------------------------------------------


class FailingRepository:
    """A real repository whose transactions fail at the ``fail_at``-th journal append.

    A storage failure in the middle of a batch cannot be produced on demand with the real
    database, so this wrapper raises ``error`` from ``append_transfers`` after the real
    backend stored the earlier appends of the same transaction.
    """

    def __init__(self, inner: Repository, fail_at: int, error: BaseException) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.error = error

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.inner.transaction() as tx:
            yield _FailingTransaction(tx, self)

    def close(self) -> None:
        self.inner.close()


class _FailingTransaction:
    def __init__(self, tx: Transaction, owner: FailingRepository) -> None:
        self._tx = tx
        self._owner = owner
        self._appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def append_transfers(self, transfers: Any) -> Any:
        self._appends += 1
        if self._appends == self._owner.fail_at:
            raise self._owner.error
        return self._tx.append_transfers(transfers)


@pytest.mark.parametrize(
    "error", [StorageError("disk full (simulated)"), RuntimeError("process killed (simulated)")]
)
def test_failure_mid_batch_commits_nothing(backend: Backend, error: BaseException) -> None:
    """A failure at the third operation rolls back the two before it, keys included."""
    repository = backend.open()
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=10)
    before = (balances(ledger, "ws"), journal(ledger, "ws"))
    failing = make_ledger(FailingRepository(repository, 3, error), prefix="f")
    operations = [give("ann", 1, key="a"), give("bob", 2, key="b"), give("ann", 3, key="c")]

    with pytest.raises(type(error)):
        failing.apply_batch(operations)

    assert (balances(ledger, "ws"), journal(ledger, "ws")) == before
    # The keys were not used up: the same batch now applies in full.
    assert [o.status for o in ledger.apply_batch(operations)] == ["applied"] * 3


class ClashingRepository:
    """An in-memory repository whose first ``failures`` transactions clash at the end.

    A clash with a concurrent writer cannot be produced on demand, so this wrapper raises
    :class:`RetryableConflict` after the step ran, inside the transaction, which rolls back
    what the attempt wrote as a real backend would.
    """

    def __init__(self, failures: int) -> None:
        self.inner = InMemoryRepository()
        self.failures = failures
        self.transactions = 0

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        self.transactions += 1
        with self.inner.transaction() as tx:
            yield tx
            if self.failures > 0:
                self.failures -= 1
                raise RetryableConflict("could not serialize access (simulated)")

    def close(self) -> None:
        self.inner.close()


def test_clash_reruns_whole_batch() -> None:
    """A clash reruns the whole batch, which then applies each operation once."""
    repository = ClashingRepository(0)
    ledger = make_ledger(repository)
    set_up(ledger, "ws", pool=10)
    repository.failures = 2
    started = repository.transactions

    outcomes = ledger.apply_batch([give("ann", 3, key="k"), give("bob", 20, key="j")])

    assert repository.transactions - started == 3
    assert [o.status for o in outcomes] == ["applied", "rejected"]
    assert balances(ledger, "ws") == {None: 7, "boss": 0, "ann": 3, "bob": 0}
    assert len(journal(ledger, "ws")) == 2


def test_batches_in_opposite_order_do_not_deadlock(persistent_backend: Backend) -> None:
    """Two threads running batches over two workspaces in opposite orders both finish."""
    ledger = make_ledger(persistent_backend.open())
    set_up(ledger, "w1", pool=1000)
    set_up(ledger, "w2", pool=1000)
    errors: list[BaseException] = []

    def run(order: list[str], prefix: str) -> None:
        worker = make_ledger(persistent_backend.open(), prefix=prefix)
        try:
            for _ in range(20):
                outcomes = worker.apply_batch([give("ann", 1, workspace=w) for w in order])
                assert [o.status for o in outcomes] == ["applied", "applied"]
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(["w1", "w2"], "x")),
        threading.Thread(target=run, args=(["w2", "w1"], "y")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert balances(ledger, "w1")["ann"] == 40
    assert balances(ledger, "w2")["ann"] == 40


# Equivalence with single calls --------------------------------------------------------------

MEMBERS = ["boss", "ann", "bob", "dan"]
ACTORS = ["boss", "ann", "ghost"]
AMOUNTS = st.one_of(st.integers(0, 12), st.sampled_from([True, -1]))
KEYS = st.sampled_from([None, None, "k1", "k2", "k3"])


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    """Draw one write operation on workspace ``w1`` or ``w2`` (or a missing ``w3``)."""
    op = draw(
        st.sampled_from(
            [
                "purchase", "transfer_to", "transfer_from", "spend", "set_balances",
                "set_coaching", "add_member", "remove_member", "reverse",
                "set_low_pool_threshold",
            ]
        )
    )  # fmt: skip
    workspace = draw(st.sampled_from(["w1", "w1", "w2", "w3"]))
    member = draw(st.sampled_from(MEMBERS))
    actor = draw(st.sampled_from(ACTORS))
    amount = draw(AMOUNTS)
    arguments: dict[str, Any]
    if op == "purchase":
        arguments = {"amount": amount}
    elif op in ("transfer_to", "transfer_from"):
        arguments = {"member_id": member, "amount": amount, "actor": actor}
    elif op == "spend":
        arguments = {"member_id": member, "amount": amount}
    elif op == "set_balances":
        ids = draw(st.lists(st.sampled_from(MEMBERS), max_size=3))
        arguments = {"member_ids": ids, "balance": amount, "actor": actor}
    elif op == "set_coaching":
        arguments = {"enabled": draw(st.booleans()), "actor": actor}
    elif op == "add_member":
        arguments = {"member_id": member, "actor": draw(st.sampled_from([None, *ACTORS]))}
    elif op == "remove_member":
        arguments = {"member_id": member, "actor": actor}
    elif op == "reverse":
        arguments = {"transfer_id": f"t{draw(st.integers(1, 12))}", "actor": actor}
    else:
        arguments = {"threshold": amount, "actor": actor}
    return Operation(op, workspace, arguments, draw(KEYS))


def call_one(ledger: Ledger, operation: Operation) -> tuple[str, Any]:
    """Run ``operation`` as a single call; return its status and result or error."""
    method = getattr(ledger, operation.op)
    try:
        result = method(
            operation.workspace_id,
            **operation.arguments,
            idempotency_key=operation.idempotency_key,
        )
    except CreditError as error:
        return "rejected", (type(error), str(error))
    return ("replayed" if ledger.last_call_replayed else "applied"), comparable(result)


def comparable(value: Any) -> Any:
    """Return ``value`` as plain data without journal sequence numbers."""
    data = attrs.asdict(value, recurse=True) if attrs.has(type(value)) else value
    return json.loads(json.dumps(data, default=str), object_hook=_drop_sequence)


def _drop_sequence(data: dict[str, Any]) -> dict[str, Any]:
    data.pop("sequence", None)
    return data


def summary(outcome: Outcome) -> tuple[str, Any]:
    """Return an outcome in the shape of :func:`call_one`."""
    if outcome.status == "rejected":
        return "rejected", (type(outcome.error), str(outcome.error))
    return outcome.status, comparable(outcome.result)


def test_batch_matches_single_calls(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Random operations give the same outcomes, balances and journal either way."""
    singles = backend.open()
    batches = make_backend(backend.name, tmp_path, request).open()
    examples = 10 if backend.name == "postgres" else 25

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.lists(operations(), min_size=1, max_size=12))
    def check(batch: list[Operation]) -> None:
        # Fresh workspaces per example, with the same ids on both sides.
        suffix = uuid.uuid4().hex[:8]
        renamed = [attrs.evolve(o, workspace_id=f"{o.workspace_id}-{suffix}") for o in batch]
        renamed = [
            attrs.evolve(
                o,
                arguments={**o.arguments, "transfer_id": f"{suffix}-{o.arguments['transfer_id']}"},
            )
            if o.op == "reverse"
            else o
            for o in renamed
        ]
        one, many = make_ledger(singles, f"{suffix}-t"), make_ledger(batches, f"{suffix}-t")
        for ledger in (one, many):
            set_up(ledger, f"w1-{suffix}", pool=10)
            set_up(ledger, f"w2-{suffix}")

        expected = [call_one(one, o) for o in renamed]
        outcomes = many.apply_batch(renamed)

        assert [summary(o) for o in outcomes] == expected
        assert [o.operation for o in outcomes] == renamed
        for workspace in (f"w1-{suffix}", f"w2-{suffix}"):
            assert balances(many, workspace) == balances(one, workspace)
            assert journal(many, workspace) == journal(one, workspace)
            assert one.workspace(workspace) == many.workspace(workspace)

    check()


# The command-line tool ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def northwind_batched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Apply the northwind sample twice with ``--batch-size 500``; return what was printed."""
    folder = tmp_path_factory.mktemp("northwind-batched")
    for name in (MEMBERS_CSV, ACTIONS):
        shutil.copy(DATA / name, folder / name)
    database = folder / "northwind.db"
    actions = str(folder / ACTIONS)

    run_tool(database, "create-workspace", WORKSPACE)
    run_tool(database, "import-members", WORKSPACE, str(folder / MEMBERS_CSV))
    first = run_tool(database, "apply", actions, "--format", "json", "--batch-size", "500")
    first_balances = run_tool(database, "balances", WORKSPACE, "--format", "json")
    second = run_tool(database, "apply", actions, "--format", "json", "--batch-size", "500")
    second_balances = run_tool(database, "balances", WORKSPACE, "--format", "json")
    return {
        "first": json.loads(first.stdout),
        "first_balances": json.loads(first_balances.stdout),
        "second": json.loads(second.stdout),
        "second_balances": json.loads(second_balances.stdout),
        "folder": folder,
    }


def test_northwind_batched_matches_model(northwind_batched: dict[str, Any]) -> None:
    """With --batch-size 500 the counts and balances equal the reference model's."""
    with (northwind_batched["folder"] / MEMBERS_CSV).open(encoding="utf-8") as source:
        roles = {row["member_id"]: row["role"] for row in csv.DictReader(source)}
    lines = [
        json.loads(text)
        for text in (northwind_batched["folder"] / ACTIONS).read_text("utf-8").splitlines()
    ]
    model = Model(roles)
    model_first = [model.apply(line) for line in lines]
    first_balances = model.balances()
    model_second = [model.apply(line) for line in lines]

    assert northwind_batched["first"] == summarise(model_first)
    assert northwind_batched["first_balances"] == first_balances
    assert northwind_batched["second"] == summarise(model_second)
    assert northwind_batched["second_balances"] == model.balances()
    assert northwind_batched["second"]["applied"] == 0


def test_cli_batch_reports_malformed_line(tmp_path: Path) -> None:
    """A malformed line in a batch is reported with its number; the others still apply."""
    database = tmp_path / "ledger.db"
    run_tool(database, "create-workspace", "acme")
    lines = [
        {"op": "add_member", "workspace": "acme", "member": "boss", "role": "admin"},
        {"op": "purchase", "workspace": "acme", "amount": 10, "key": "p"},
        "{not json",
        {"op": "transfer_to", "workspace": "acme", "actor": "boss", "member": "boss",
         "amount": 4, "key": "t"},
        {"op": "transfer_to", "workspace": "acme", "actor": "boss", "member": "boss",
         "amount": 40, "key": "u"},
    ]  # fmt: skip
    actions = tmp_path / "actions.jsonl"
    actions.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )

    completed = run_tool(
        database, "apply", str(actions), "--batch-size", "10", "--format", "json", "--verbose"
    )

    assert json.loads(completed.stdout) == {
        "applied": 3,
        "replayed": 0,
        "rejected": {"InsufficientCredits": 1, "MalformedLine": 1},
    }
    assert "line 3: rejected MalformedLine: invalid JSON" in completed.stderr
    outcomes = [text for text in completed.stderr.splitlines() if text.startswith("line ")]
    assert [text.split(":")[0] for text in outcomes if "malformed" not in text] == [
        f"line {n}" for n in (1, 2, 3, 4, 5)
    ]
    balances_out = json.loads(run_tool(database, "balances", "acme", "--format", "json").stdout)
    assert balances_out["pool"] == 6


def test_batching_guide_example_runs() -> None:
    """The Python example in docs/batching.md runs as written; its asserts are the checks."""
    guide = Path(__file__).parents[1] / "docs" / "batching.md"
    (example,) = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.S)
    exec(compile(example, str(guide), "exec"), {})
