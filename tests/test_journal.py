"""The journal contract on every backend of the shared ``repository`` fixture."""

from coaching_credits.testing.journal import JournalContract


class TestJournalContract(JournalContract):
    pass
