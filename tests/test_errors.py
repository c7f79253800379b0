"""The error tree: builtin bases, attributes, and messages that name the facts and a next step."""

from __future__ import annotations

import pytest

import coaching_credits
from coaching_credits import (
    CoachingDisabled,
    ConcurrencyConflict,
    CreditError,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberAlreadyExists,
    MemberNotFound,
    PermissionDenied,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
    errors,
)
from coaching_credits.errors import _shown

ALL_ERRORS = [
    CoachingDisabled,
    ConcurrencyConflict,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    MemberAlreadyExists,
    MemberNotFound,
    PermissionDenied,
    WorkspaceAlreadyExists,
    WorkspaceNotFound,
]


@pytest.mark.parametrize("error", ALL_ERRORS)
def test_every_error_is_credit_error(error: type[Exception]) -> None:
    """Every error the library raises on purpose derives from ``CreditError``."""
    assert issubclass(error, CreditError)
    assert error.__name__ in coaching_credits.__all__


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_module_exported(name: str) -> None:
    """Every error of the errors module is a ``CreditError`` exported by the package."""
    error = getattr(errors, name)
    assert issubclass(error, CreditError)
    assert getattr(coaching_credits, name) is error


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (InvalidAmount, ValueError),
        (InvalidRequest, ValueError),
        (WorkspaceNotFound, LookupError),
        (MemberNotFound, LookupError),
    ],
)
def test_builtin_bases(error: type[Exception], builtin: type[Exception]) -> None:
    """Callers can catch the fitting builtin."""
    assert issubclass(error, builtin)


@pytest.mark.parametrize(
    "error", [InsufficientCredits, PermissionDenied, CoachingDisabled, IdempotencyConflict]
)
def test_domain_errors_not_lookup_or_value(error: type[Exception]) -> None:
    """Business-rule failures are not mistaken for bad input or a missing record."""
    assert not issubclass(error, (LookupError, ValueError))


def test_invalid_amount() -> None:
    """``InvalidAmount`` keeps the value, the range and the field, and shows them."""
    error = InvalidAmount(2**63, minimum=1, maximum=2**63 - 1)
    assert error.value == 2**63
    assert error.minimum == 1
    assert error.maximum == 2**63 - 1
    assert error.field == "amount"
    message = str(error)
    assert "invalid amount" in message
    assert str(2**63) in message
    assert "expected an int from 1 to 9223372036854775807" in message


def test_invalid_amount_names_field() -> None:
    """The field name lets a caller tell an amount from a balance."""
    error = InvalidAmount(-1, minimum=0, maximum=10, field="balance")
    assert error.field == "balance"
    assert str(error).startswith("invalid balance -1")


def test_invalid_amount_shows_repr() -> None:
    """A str amount is shown quoted, so ``'5'`` is not mistaken for the int 5."""
    assert "'5'" in str(InvalidAmount("5", minimum=1, maximum=10))


def test_invalid_request() -> None:
    """``InvalidRequest`` keeps the offending value."""
    error = InvalidRequest("member 'ann' is listed more than once", value="ann")
    assert error.value == "ann"
    assert "ann" in str(error)


def test_insufficient_credits_pool() -> None:
    """A short pool's message gives the missing credits and names a purchase as the next step."""
    error = InsufficientCredits(workspace_id="ws", requested=30, available=12)
    assert error.workspace_id == "ws"
    assert error.member_id is None
    assert error.requested == 30
    assert error.available == 12
    message = str(error)
    assert "'ws'" in message
    assert "30 requested" in message
    assert "12 available" in message
    assert "purchase at least 18 more credits" in message


def test_insufficient_credits_member() -> None:
    """A short member balance names the member and the amounts."""
    error = InsufficientCredits(workspace_id="ws", member_id="ann", requested=7, available=2)
    assert error.member_id == "ann"
    message = str(error)
    assert "'ann'" in message
    assert "'ws'" in message
    assert "7 requested" in message
    assert "2 available" in message


def test_permission_denied() -> None:
    """``PermissionDenied`` names the actor, the workspace, the action and who can do it."""
    error = PermissionDenied(workspace_id="ws", actor_id="ann", action="set member balances")
    assert error.workspace_id == "ws"
    assert error.actor_id == "ann"
    assert error.action == "set member balances"
    message = str(error)
    assert "'ann' is not an admin of workspace 'ws'" in message
    assert "set member balances" in message
    assert "ask an admin" in message


def test_coaching_disabled() -> None:
    """``CoachingDisabled`` names the workspace and tells an admin to enable coaching."""
    error = CoachingDisabled(workspace_id="ws", action="spend credits")
    assert error.workspace_id == "ws"
    assert error.action == "spend credits"
    message = str(error)
    assert "'ws'" in message
    assert "spend credits" in message
    assert "enable coaching" in message


def test_workspace_not_found() -> None:
    """``WorkspaceNotFound`` names the id and suggests creating it."""
    error = WorkspaceNotFound("acme")
    assert error.workspace_id == "acme"
    assert "'acme' not found" in str(error)
    assert "create it first" in str(error)


def test_member_not_found() -> None:
    """``MemberNotFound`` names the member and the workspace and says to add the member."""
    error = MemberNotFound(workspace_id="ws", member_id="ann")
    assert error.workspace_id == "ws"
    assert error.member_id == "ann"
    message = str(error)
    assert "'ann' not found in workspace 'ws'" in message
    assert "add the member first" in message


def test_workspace_already_exists() -> None:
    """``WorkspaceAlreadyExists`` names the id and says to choose another."""
    error = WorkspaceAlreadyExists("acme")
    assert error.workspace_id == "acme"
    assert "'acme' already exists" in str(error)
    assert "choose another id" in str(error)


def test_member_already_exists() -> None:
    """``MemberAlreadyExists`` names the member and the workspace."""
    error = MemberAlreadyExists(workspace_id="ws", member_id="ann")
    assert error.workspace_id == "ws"
    assert error.member_id == "ann"
    assert "'ann' already exists in workspace 'ws'" in str(error)


def test_idempotency_conflict() -> None:
    """``IdempotencyConflict`` shows both requests and says to use a new key."""
    original = {"op": "purchase", "amount": 5}
    request = {"op": "purchase", "amount": 6}
    error = IdempotencyConflict(workspace_id="ws", key="k1", original=original, request=request)
    assert error.workspace_id == "ws"
    assert error.key == "k1"
    assert error.original == original
    assert error.request == request
    message = str(error)
    assert "'k1'" in message
    assert "'ws'" in message
    assert '"amount": 5' in message
    assert '"amount": 6' in message
    assert "with a new key" in message


def test_concurrency_conflict() -> None:
    """``ConcurrencyConflict`` gives the attempt count, the cause and says to retry later."""
    error = ConcurrencyConflict(workspace_id="ws", attempts=8, cause="database is locked")
    assert error.workspace_id == "ws"
    assert error.attempts == 8
    assert error.cause == "database is locked"
    message = str(error)
    assert "'ws'" in message
    assert "8 attempts" in message
    assert "database is locked" in message
    assert "retry the call later" in message


def test_concurrency_conflict_without_cause() -> None:
    """Without a cause the message has no dangling colon."""
    message = str(ConcurrencyConflict(workspace_id="ws", attempts=2))
    assert "writers; retry" in message


def test_long_values_cut_with_length() -> None:
    """A long value is cut in the message, which gives its real length."""
    assert _shown("x" * 501).endswith("... (501 characters)")
    assert _shown({str(i): "v" for i in range(30)}).endswith("... (30 items)")
    assert _shown("short") == "'short'"
