"""Placeholder replaced by the command-line tool."""


def main() -> int:
    return 0
