"""Under mutation testing, the tests of the mutated module run first.

mutmut runs, for each mutant, every test that reaches the mutated function and
stops at the first failure. The tests named after the module (``test_validation*``
for ``validation.py``) are the likeliest to fail, so running them first kills most
mutants after a few tests instead of after the whole API suite.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

MUTANT_MARK = "__mutmut_"


class HasPath(Protocol):
    """What the ordering reads of a pytest item."""

    @property
    def path(self) -> Path: ...


def mutated_module(mutant: str) -> str | None:
    """``lambdas.story_generator.validation.x_f__mutmut_3`` -> ``validation``; None if no mutant."""
    if MUTANT_MARK not in mutant:
        return None
    return mutant.rsplit(".", 1)[0].rsplit(".", 1)[-1]


Item = TypeVar("Item", bound=HasPath)


def module_tests_first(items: Sequence[Item], mutant: str) -> list[Item]:
    """``items`` with the tests whose file names contain the mutated module's name first."""
    module = mutated_module(mutant)
    if module is None:
        return list(items)
    return sorted(items, key=lambda item: module not in item.path.stem)


def reorder_for_mutant(items: list[HasPath]) -> None:
    """The ``pytest_collection_modifyitems`` body: reorder in place for ``MUTANT_UNDER_TEST``."""
    items[:] = module_tests_first(items, os.environ.get("MUTANT_UNDER_TEST", ""))
