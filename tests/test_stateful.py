"""A Hypothesis state machine that drives the Ledger on each backend beside a plain model.

The model is dicts and ints. Every rule computes the outcome the model expects (a new state or
the error the ledger must raise, in the ledger's check order), calls the ledger and compares.
After every step the invariants check conservation, non-negative balances, that the ledger's
balances equal the model's, and that the journal rebuilds every balance.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from coaching_credits import (
    CoachingDisabled,
    CreditError,
    IdempotencyConflict,
    InsufficientCredits,
    Ledger,
    MemberAlreadyExists,
    MemberNotFound,
    PermissionDenied,
    Repository,
    Role,
    TransferKind,
)
from conftest import Backend

MEMBER_IDS = ["boss", "ann", "bob", "cat"]
#: Mostly the admin, so most calls pass the permission check and reach the balances.
ACTORS = ["boss", "boss", "boss", "ann", "cat"]
KEYS = ["k1", "k2", "k3"]

member_ids = st.sampled_from(MEMBER_IDS)
actors = st.sampled_from(ACTORS)
amounts = st.integers(min_value=1, max_value=20)

_workspace_numbers = itertools.count(1)

#: Examples and steps per backend: PostgreSQL round trips cost the most, so it runs fewer.
BUDGETS = {
    "memory": settings(max_examples=60, stateful_step_count=40),
    "sqlite": settings(max_examples=30, stateful_step_count=30),
    "postgres": settings(max_examples=15, stateful_step_count=25),
}


@attrs.define
class Model:
    """The expected state of one workspace, as plain values."""

    pool: int = 0
    balances: dict[str, int] = attrs.Factory(dict)
    roles: dict[str, Role] = attrs.Factory(dict)
    coaching: bool = True
    purchased: int = 0
    spent: int = 0
    #: Idempotency key -> (request, result of the original call).
    keys: dict[str, tuple[tuple[Any, ...], Any]] = attrs.Factory(dict)
    #: (key, request) of a rejected keyed call -> the error it raised, which a resend repeats.
    rejections: dict[tuple[str, tuple[Any, ...]], type[CreditError]] = attrs.Factory(dict)

    def permission_error(self, actor: str) -> type[CreditError] | None:
        if self.roles.get(actor) is not Role.ADMIN:
            return PermissionDenied
        if not self.coaching:
            return CoachingDisabled
        return None


def build_machine(repository: Repository) -> type[RuleBasedStateMachine]:
    """Return a state machine class whose every run uses a new workspace in ``repository``."""

    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ledger = Ledger(repository, retry_delay=0)
            self.ws = f"ws{next(_workspace_numbers)}"
            self.ledger.create_workspace(self.ws)
            self.ledger.add_member(self.ws, "boss", role=Role.ADMIN)
            self.ledger.add_member(self.ws, "ann")
            self.ledger.add_member(self.ws, "bob")
            self.model = Model(
                balances={"boss": 0, "ann": 0, "bob": 0},
                roles={"boss": Role.ADMIN, "ann": Role.MEMBER, "bob": Role.MEMBER},
            )

        def expect(self, error: type[CreditError] | None, call: Any) -> Any:
            """Run ``call`` and check it raises ``error``, or succeeds when ``error`` is None."""
            if error is None:
                return call()
            with pytest.raises(error):
                call()
            return None

        # Membership and settings ----------------------------------------------------------

        @rule(member_id=member_ids, role=st.sampled_from(Role))
        def add_member(self, member_id: str, role: Role) -> None:
            model = self.model
            error = MemberAlreadyExists if member_id in model.balances else None
            added = self.expect(
                error, lambda: self.ledger.add_member(self.ws, member_id, role=role)
            )
            if added is not None:
                assert added.balance == 0
                model.balances[member_id] = 0
                model.roles[member_id] = role

        @rule(member_id=st.sampled_from(MEMBER_IDS[1:]), actor=actors)
        def remove_member(self, member_id: str, actor: str) -> None:
            model = self.model
            error: type[CreditError] | None = None
            if model.roles.get(actor) is not Role.ADMIN:
                error = PermissionDenied
            elif member_id not in model.balances:
                error = MemberNotFound
            removal = self.expect(
                error, lambda: self.ledger.remove_member(self.ws, member_id, actor=actor)
            )
            if removal is not None:
                model.pool += model.balances.pop(member_id)
                del model.roles[member_id]
                assert removal.pool.balance == model.pool

        @rule(enabled=st.booleans(), actor=actors)
        def set_coaching(self, enabled: bool, actor: str) -> None:
            model = self.model
            error = PermissionDenied if model.roles.get(actor) is not Role.ADMIN else None
            updated = self.expect(
                error, lambda: self.ledger.set_coaching(self.ws, enabled, actor=actor)
            )
            if updated is not None:
                model.coaching = enabled
                assert updated.coaching_enabled is enabled

        # Credits --------------------------------------------------------------------------

        @rule(amount=amounts)
        def purchase(self, amount: int) -> None:
            result = self.ledger.purchase(self.ws, amount)
            self.model.pool += amount
            self.model.purchased += amount
            assert result.pool.balance == self.model.pool

        @rule(member_id=member_ids, amount=amounts, actor=actors)
        def transfer_to(self, member_id: str, amount: int, actor: str) -> None:
            model = self.model
            error = model.permission_error(actor)
            if error is None and member_id not in model.balances:
                error = MemberNotFound
            if error is None and model.pool < amount:
                error = InsufficientCredits
            result = self.expect(
                error,
                lambda: self.ledger.transfer_to(self.ws, member_id, amount, actor=actor),
            )
            if result is not None:
                model.pool -= amount
                model.balances[member_id] += amount
                assert result.pool.balance == model.pool
                assert result.member.balance == model.balances[member_id]

        @rule(member_id=member_ids, amount=amounts, actor=actors)
        def transfer_from(self, member_id: str, amount: int, actor: str) -> None:
            model = self.model
            error = model.permission_error(actor)
            if error is None and member_id not in model.balances:
                error = MemberNotFound
            if error is None and model.balances[member_id] < amount:
                error = InsufficientCredits
            result = self.expect(
                error,
                lambda: self.ledger.transfer_from(self.ws, member_id, amount, actor=actor),
            )
            if result is not None:
                model.pool += amount
                model.balances[member_id] -= amount
                assert result.pool.balance == model.pool
                assert result.member.balance == model.balances[member_id]

        @rule(
            chosen=st.lists(member_ids, unique=True, max_size=4),
            balance=st.integers(min_value=0, max_value=40),
            actor=actors,
        )
        def set_balances(self, chosen: list[str], balance: int, actor: str) -> None:
            model = self.model
            error = model.permission_error(actor)
            missing = sorted(m for m in chosen if m not in model.balances)
            if error is None and missing:
                error = MemberNotFound
            need = sum(balance - model.balances.get(m, 0) for m in chosen)
            if error is None and need > model.pool:
                error = InsufficientCredits
            result = self.expect(
                error,
                lambda: self.ledger.set_balances(self.ws, chosen, balance, actor=actor),
            )
            if result is not None:
                model.pool -= need
                for member_id in chosen:
                    model.balances[member_id] = balance
                assert result.pool.balance == model.pool
                assert [m.id for m in result.members] == chosen

        @rule(member_id=member_ids, amount=amounts)
        def spend(self, member_id: str, amount: int) -> None:
            model = self.model
            error: type[CreditError] | None = None
            if not model.coaching:
                error = CoachingDisabled
            elif member_id not in model.balances:
                error = MemberNotFound
            elif model.balances[member_id] < amount:
                error = InsufficientCredits
            result = self.expect(error, lambda: self.ledger.spend(self.ws, member_id, amount))
            if result is not None:
                model.balances[member_id] -= amount
                model.spent += amount
                assert result.member.balance == model.balances[member_id]

        # Keyed calls ------------------------------------------------------------------------

        @rule(
            key=st.sampled_from(KEYS),
            op=st.sampled_from(["purchase", "transfer_to", "spend"]),
            member_id=member_ids,
            amount=st.integers(min_value=1, max_value=5),
        )
        def keyed_call(self, key: str, op: str, member_id: str, amount: int) -> None:
            """Check that a key replays its call and conflicts on other arguments.

            A rejected request does not take the key, but resending it repeats the rejection.
            """
            model = self.model
            request: tuple[Any, ...] = (op, amount) if op == "purchase" else (op, member_id, amount)

            def call() -> Any:
                if op == "purchase":
                    return self.ledger.purchase(self.ws, amount, idempotency_key=key)
                if op == "transfer_to":
                    return self.ledger.transfer_to(
                        self.ws, member_id, amount, actor="boss", idempotency_key=key
                    )
                return self.ledger.spend(self.ws, member_id, amount, idempotency_key=key)

            if key in model.keys:
                original_request, original_result = model.keys[key]
                if original_request != request:
                    with pytest.raises(IdempotencyConflict):
                        call()
                    return
                assert call() == original_result
                assert self.ledger.last_call_replayed is True
                return

            remembered = model.rejections.get((key, request))
            if remembered is not None:
                with pytest.raises(remembered):
                    call()
                return

            error: type[CreditError] | None = None
            if op == "transfer_to":
                error = model.permission_error("boss")
                if error is None and member_id not in model.balances:
                    error = MemberNotFound
                if error is None and model.pool < amount:
                    error = InsufficientCredits
            elif op == "spend":
                if not model.coaching:
                    error = CoachingDisabled
                elif member_id not in model.balances:
                    error = MemberNotFound
                elif model.balances[member_id] < amount:
                    error = InsufficientCredits

            result = self.expect(error, call)
            if error is not None:
                model.rejections[(key, request)] = error
                return
            assert self.ledger.last_call_replayed is False
            model.keys[key] = (request, result)
            if op == "purchase":
                model.pool += amount
                model.purchased += amount
            elif op == "transfer_to":
                model.pool -= amount
                model.balances[member_id] += amount
            else:
                model.balances[member_id] -= amount
                model.spent += amount

        # Invariants -----------------------------------------------------------------------

        @invariant()
        def balances_match_model(self) -> None:
            model = self.model
            pool = self.ledger.pool(self.ws).balance
            members = self.ledger.members(self.ws)
            balances = {m.id: m.balance for m in members}

            assert pool == model.pool
            assert balances == model.balances
            assert {m.id: m.role for m in members} == model.roles
            assert self.ledger.workspace(self.ws).coaching_enabled is model.coaching

            assert pool >= 0
            assert all(balance >= 0 for balance in balances.values())
            assert pool + sum(balances.values()) == model.purchased - model.spent

        @invariant()
        def journal_rebuilds_balances(self) -> None:
            with repository.transaction() as tx:
                totals = tx.journal_totals(self.ws)
            pool = 0
            members: dict[str, int] = {}
            for member_id, kind, total in totals:
                key = member_id or ""
                if kind is TransferKind.PURCHASE:
                    pool += total
                elif kind is TransferKind.TRANSFER_TO:
                    pool -= total
                    members[key] = members.get(key, 0) + total
                elif kind in (TransferKind.TRANSFER_FROM, TransferKind.MEMBER_REMOVED):
                    pool += total
                    members[key] = members.get(key, 0) - total
                else:
                    assert kind is TransferKind.SPEND
                    members[key] = members.get(key, 0) - total

            assert pool == self.model.pool
            for member_id, balance in members.items():
                # A removed member's entries net to 0: the removal returned their balance.
                assert balance == self.model.balances.get(member_id, 0)
            for member_id, balance in self.model.balances.items():
                assert members.get(member_id, 0) == balance

    return LedgerMachine


def test_ledger_state_machine(backend: Backend) -> None:
    """Random sequences of ledger calls keep the backend in step with the plain model."""
    repository = backend.open()
    budget = BUDGETS[backend.name]
    run_state_machine_as_test(
        build_machine(repository),
        settings=settings(budget, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
    )
