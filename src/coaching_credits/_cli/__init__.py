"""The ``coaching-credits`` command-line tool, split by concept.

``app`` builds the argument parser and runs a command, and ``database`` opens the repository
named by ``--db``. ``operations`` contains the one-operation commands and ``preview`` prints
their ``--preview`` output. ``journal`` contains the commands that read the journal and the pool
(audits, past balances, low balances). ``apply`` replays a JSON lines file, ``members_csv``
imports a member list, ``output`` prints values as text or JSON, and ``demo`` walks through an
admin's day. The public entry point is :func:`coaching_credits.cli.main`.
"""

from .app import main

__all__ = ["main"]
