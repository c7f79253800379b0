"""Input the drivers cannot store is rejected as InvalidRequest before any transaction.

Every backend must behave alike, so these run on each one.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from coaching_credits import (
    MAX_AMOUNT,
    InsufficientCredits,
    InvalidRequest,
    Ledger,
    Role,
)
from conftest import Backend

UNSTORABLE = ["a\x00b", "\ud800", "k\udc80"]


@pytest.fixture
def ledger(backend: Backend) -> Ledger:
    ledger = Ledger(backend.open())
    ledger.create_workspace("ws")
    ledger.add_member("ws", "boss", role=Role.ADMIN)
    ledger.purchase("ws", 10)
    return ledger


@pytest.mark.parametrize("text", UNSTORABLE, ids=["nul", "surrogate", "low-surrogate"])
def test_unstorable_text_rejected(ledger: Ledger, text: str) -> None:
    """NUL characters and lone surrogates in ids, keys, reasons or metadata are rejected."""
    with pytest.raises(InvalidRequest, match="NUL characters or lone surrogates"):
        ledger.add_member("ws", text)
    with pytest.raises(InvalidRequest, match="NUL characters or lone surrogates"):
        ledger.purchase("ws", 1, idempotency_key=text)
    with pytest.raises(InvalidRequest, match="NUL characters or lone surrogates"):
        ledger.purchase("ws", 1, reason=text)
    with pytest.raises(InvalidRequest, match="NUL characters or lone surrogates"):
        ledger.purchase("ws", 1, metadata={"note": text})
    assert ledger.pool("ws").balance == 10


def test_history_bounds_rejected(ledger: Ledger) -> None:
    """Cursors, limits and times outside what the backends store are InvalidRequest."""
    with pytest.raises(InvalidRequest, match="invalid limit"):
        ledger.history("ws", limit=MAX_AMOUNT + 1)
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        ledger.history("ws", before=MAX_AMOUNT + 1)
    far_past = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(InvalidRequest, match="cannot be converted to UTC"):
        ledger.history("ws", since=far_past)
    with pytest.raises(InvalidRequest, match="cannot be converted to UTC"):
        ledger.balance_at("ws", far_past)
    assert len(ledger.history("ws", limit=MAX_AMOUNT, before=MAX_AMOUNT)) == 1


def test_set_balances_invalid_id_order_independent(ledger: Ledger) -> None:
    """The invalid member id reported does not depend on the order of the list."""
    messages = set()
    for ids in (["", 5], [5, ""]):
        with pytest.raises(InvalidRequest) as raised:
            ledger.set_balances("ws", ids, 1, actor="boss")  # type: ignore[arg-type]  # invalid on purpose
        messages.add(str(raised.value))
    assert len(messages) == 1


def test_replayed_flag_resets_on_error(ledger: Ledger) -> None:
    """A call that raises after a replay leaves ``last_call_replayed`` false."""
    ledger.purchase("ws", 5, idempotency_key="p1")
    ledger.purchase("ws", 5, idempotency_key="p1")
    assert ledger.last_call_replayed is True

    with pytest.raises(InsufficientCredits):
        ledger.transfer_to("ws", "boss", 1000, actor="boss")
    assert ledger.last_call_replayed is False


def test_star_import_without_psycopg() -> None:
    """``from coaching_credits import *`` works when psycopg is not installed."""
    script = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "from coaching_credits import *\n"
        "import coaching_credits\n"
        "try:\n"
        "    coaching_credits.PostgresRepository\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert "install coaching-credits[postgres]" in completed.stdout
