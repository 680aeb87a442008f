"""Pytest plugins shared by the whole suite (pytest reads ``pytest_plugins`` only here)."""

from __future__ import annotations

import pytest

from tests.mutation_order import reorder_for_mutant

pytest_plugins = [
    "tests.lambdas.fake_providers",
    "tests.lambdas.aws_fixtures",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutation testing, the mutated module's own tests first (tests/mutation_order.py)."""
    reorder_for_mutant(items)  # type: ignore[arg-type]
