"""Timing helpers and the report table shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs


def best_rate(run: Callable[[int], None], seconds: float, rounds: int = 3) -> float:
    """Return the best operations per second of ``run(count)`` over ``rounds`` timed rounds.

    The count is sized first so one round lasts about ``seconds``; taking the best round
    filters out moments when another process had the CPU.
    """
    count = 1
    while True:
        started = time.perf_counter()
        run(count)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 10:
            break
        count *= 4
    count = max(1, int(count * seconds / max(elapsed, 1e-9)))
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        run(count)
        best = max(best, count / (time.perf_counter() - started))
    return best


@attrs.define
class Figure:
    """One measured comparison and its target."""

    area: str
    measure: str
    result: str
    target: str
    met: bool | None
    note: str = ""


@attrs.define
class Report:
    """The figures of one run and the machine they were measured on."""

    machine: dict[str, str]
    figures: list[Figure] = attrs.Factory(list)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        status = _status(figure.met)
        print(f"[{status}] {figure.area}: {figure.result}", flush=True)

    def table(self) -> str:
        lines = [f"{'area':<22} {'status':<8} result"]
        for figure in self.figures:
            lines.append(f"{figure.area:<22} {_status(figure.met):<8} {figure.result}")
        return "\n".join(lines)

    def markdown(self, *, command: str, notes: str = "") -> str:
        facts = "\n".join(f"| {key} | {value} |" for key, value in self.machine.items())
        rows = "\n".join(
            f"| {f.area} | {f.measure} | {f.result} | {f.target} | {_status(f.met)} |"
            + (f" {f.note} |" if f.note else " |")
            for f in self.figures
        )
        return (
            "# Benchmarks\n\n"
            "Measured from a clean checkout at the repository root with\n\n"
            "```sh\n"
            "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && \\\n"
            f"  .venv/bin/{command}\n"
            "```\n\n"
            "which prints this table and rewrites this page. The PostgreSQL parts use the\n"
            "server named by `COACHING_CREDITS_BENCH_POSTGRES` (default\n"
            "`host=127.0.0.1 port=5432 user=postgres dbname=postgres`) and create and drop a\n"
            "throwaway database; `--no-postgres` skips them. Each comparison runs both of its\n"
            "sides in one process, so the ratio holds on a noisy machine; absolute figures\n"
            "move with the machine and its load.\n\n"
            "## Machine\n\n| fact | value |\n| --- | --- |\n"
            f"{facts}\n\n"
            "## Results\n\n"
            "| area | measure | result | target | status | note |\n"
            "| --- | --- | --- | --- | --- | --- |\n"
            f"{rows}\n" + (f"\n## Notes\n\n{notes}\n" if notes else "")
        )


def _status(met: bool | None) -> str:
    """Return the status word; ``None`` means no target applies or the part was skipped."""
    if met is None:
        return "n/a"
    return "met" if met else "missed"
