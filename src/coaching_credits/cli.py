"""The ``coaching-credits`` command-line tool; run ``coaching-credits --help`` for its commands."""

from ._cli import main

__all__ = ["main"]
