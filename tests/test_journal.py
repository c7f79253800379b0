"""The journal contract on every backend of the shared ``repository`` fixture."""

import re
from pathlib import Path

import pytest

from coaching_credits.testing.journal import JournalContract

GUIDE = Path(__file__).parents[1] / "docs" / "journal.md"


class TestJournalContract(JournalContract):
    pass


def test_journal_guide_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The Python blocks of docs/journal.md run in order as one script; its asserts check."""
    script = "\n".join(re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S))
    assert script.count("assert") >= 10
    exec(compile(script, str(GUIDE), "exec"), {})
    assert "cannot be reversed" in capsys.readouterr().out
