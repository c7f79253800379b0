"""Run the command-line tool: ``python -m coaching_credits``."""

from .cli import main

raise SystemExit(main())
