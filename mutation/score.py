"""The mutation score of every module, from mutmut's results in ``mutants/``.

A module's score is the share of its mutants that the tests kill, leaving out
the mutants listed in ``mutation/equivalent.toml`` (each with the reason it
behaves exactly like the original). Mutants that no test runs count as
survivors. With ``--fail-under`` the exit status is 1 when any module named in
the file's ``required`` list scores below it.

    python mutation/score.py [--fail-under 90] [--only GLOB] [--mutants mutants] [--equivalent FILE]

``--only`` keeps the mutants whose names match GLOB (what ``mutmut run GLOB`` ran), so
a run of one module is judged on that module alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT_FILE = ROOT / "mutation" / "equivalent.toml"

# mutmut's exit codes, as its own `status_by_exit_code` reads them.
KILLED_CODES = frozenset({1, 3, 24, -24, 36, 152, 255})
SURVIVED_CODES = frozenset({0, 5, 33})
NOT_CHECKED = None


@dataclass
class ModuleScore:
    """The mutants of one module, by outcome."""

    module: str
    killed: int = 0
    survived: int = 0
    equivalent: int = 0
    not_checked: int = 0
    other: int = 0  # mutmut could not judge them: suspicious, segfault, interrupted
    survivors: list[str] = field(default_factory=list)

    @property
    def counted(self) -> int:
        """The mutants that count towards the score."""
        return self.killed + self.survived

    @property
    def score(self) -> float | None:
        """Killed over counted, in percent; None when nothing was checked."""
        return 100.0 * self.killed / self.counted if self.counted else None


@dataclass(frozen=True)
class Equivalents:
    """The equivalent mutants and the modules that must reach the threshold."""

    reasons: Mapping[str, str]
    required: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> Equivalents:
        """Read ``path``; every entry must give a reason."""
        data = tomllib.loads(path.read_text()) if path.exists() else {}
        reasons = dict(data.get("equivalent", {}))
        blank = sorted(name for name, reason in reasons.items() if not str(reason).strip())
        if blank:
            raise ValueError(f"{path}: equivalent mutants without a reason: {blank}")
        return cls(reasons=reasons, required=tuple(data.get("required", ())))

    def within(self, pattern: str | None) -> Equivalents:
        """Only the equivalents whose names match the glob ``pattern`` (all when None)."""
        if pattern is None:
            return self
        reasons = {name: why for name, why in self.reasons.items() if fnmatch(name, pattern)}
        return Equivalents(reasons=reasons, required=self.required)


def module_of(mutant: str) -> str:
    """``lambdas.story_generator.router.xǁRouterǁrun__mutmut_3`` -> its module."""
    return mutant.rsplit(".", 1)[0]


def results(mutants_dir: Path) -> dict[str, int | None]:
    """Every mutant's exit code (None when not yet checked), from mutmut's .meta files."""
    outcome: dict[str, int | None] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        outcome.update(json.loads(meta.read_text())["exit_code_by_key"])
    return outcome


def selected(outcome: Mapping[str, int | None], pattern: str | None) -> dict[str, int | None]:
    """The mutants of ``outcome`` whose names match the glob ``pattern`` (all when None)."""
    return {
        name: code for name, code in outcome.items() if pattern is None or fnmatch(name, pattern)
    }


def scores(outcome: Mapping[str, int | None], equivalent: Iterable[str]) -> list[ModuleScore]:
    """The per-module tally of ``outcome``."""
    equivalent = set(equivalent)
    by_module: dict[str, ModuleScore] = {}
    for mutant, code in sorted(outcome.items()):
        tally = by_module.setdefault(module_of(mutant), ModuleScore(module_of(mutant)))
        if mutant in equivalent:
            tally.equivalent += 1
        elif code is NOT_CHECKED:
            tally.not_checked += 1
        elif code in KILLED_CODES:
            tally.killed += 1
        elif code in SURVIVED_CODES:
            tally.survived += 1
            tally.survivors.append(mutant)
        else:
            tally.other += 1
    return sorted(by_module.values(), key=lambda s: s.module)


def stale(outcome: Mapping[str, int | None], equivalents: Equivalents) -> list[str]:
    """Listed equivalents that no longer exist, or that the tests kill (so are not equivalent)."""
    problems = []
    for name in sorted(equivalents.reasons):
        code = outcome.get(name, "missing")
        if code == "missing":
            problems.append(f"{name}: no such mutant any more")
        elif code in KILLED_CODES:
            problems.append(f"{name}: listed as equivalent but the tests kill it")
    return problems


def below(table: Iterable[ModuleScore], required: Iterable[str], threshold: float) -> list[str]:
    """The required modules (glob patterns) whose score is under ``threshold`` or unknown."""
    failing = []
    for tally in table:
        if not any(fnmatch(tally.module, pattern) for pattern in required):
            continue
        if tally.not_checked or tally.score is None or tally.score < threshold:
            failing.append(tally.module)
    return failing


def render(table: Iterable[ModuleScore]) -> str:
    """The table as text, one module per line."""
    lines = [
        f"{'module':<48} {'killed':>7} {'survived':>8} {'equiv':>5} {'unchecked':>9} "
        f"{'other':>5} {'score':>7}"
    ]
    total = ModuleScore("total")
    for tally in table:
        score = "-" if tally.score is None else f"{tally.score:.1f}%"
        lines.append(
            f"{tally.module:<48} {tally.killed:>7} {tally.survived:>8} {tally.equivalent:>5} "
            f"{tally.not_checked:>9} {tally.other:>5} {score:>7}"
        )
        for name in ("killed", "survived", "equivalent", "not_checked", "other"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
    score = "-" if total.score is None else f"{total.score:.1f}%"
    lines.append(
        f"{'total':<48} {total.killed:>7} {total.survived:>8} {total.equivalent:>5} "
        f"{total.not_checked:>9} {total.other:>5} {score:>7}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the scores; 1 when a required module is under --fail-under."""
    parser = argparse.ArgumentParser(description="Mutation score per module.")
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT_FILE)
    parser.add_argument("--fail-under", type=float, default=None)
    parser.add_argument("--only", default=None, help="judge only the mutants matching this glob")
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    args = parser.parse_args(argv)

    if not args.mutants.is_dir():
        print(f"no {args.mutants}/: run `make mutation` first", file=sys.stderr)
        return 2
    only = args.only or None
    equivalents = Equivalents.load(args.equivalent).within(only)
    outcome = selected(results(args.mutants), only)
    table = scores(outcome, equivalents.reasons)
    print(render(table))
    if args.survivors:
        for tally in table:
            for name in tally.survivors:
                print(f"survived: {name}")
    problems = stale(outcome, equivalents)
    for problem in problems:
        print(f"equivalent.toml: {problem}", file=sys.stderr)
    if args.fail_under is None:
        return 1 if problems else 0
    failing = below(table, equivalents.required, args.fail_under)
    for module in failing:
        print(f"under {args.fail_under:g}% (or not fully checked): {module}", file=sys.stderr)
    return 1 if failing or problems else 0


if __name__ == "__main__":
    sys.exit(main())
