"""Lets mutation testing see which tests depend on a shared fixture's code.

mutmut chooses the tests to run against a mutant by the functions each test
called while it collected its stats. A session- or module-scoped fixture runs
the code once, inside the first test that asks for it, so every later test
that reads its result would never be run against mutants of that code, and
those mutants would survive whatever the tests assert. `recorded_calls` keeps
what a shared fixture called, and `replay_calls` counts it again for each test
that uses the fixture. Outside mutmut's stats run both do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

_CALLS_BY_FIXTURE: dict[str, frozenset[str]] = {}


def _collecting_stats() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def _hits() -> set[str]:
    from mutmut.state import state  # installed only for mutation testing

    return state()._stats


@contextmanager
def recorded_calls(fixture_name: str) -> Iterator[None]:
    """Record the mutated functions called inside the block as `fixture_name`'s."""
    if not _collecting_stats():
        yield
        return
    before = set(_hits())
    yield
    _CALLS_BY_FIXTURE[fixture_name] = frozenset(_hits() - before)


def replay_calls(request: pytest.FixtureRequest) -> None:
    """Count the recorded calls of every shared fixture the current test uses."""
    if not _collecting_stats():
        return
    # The first test to use a fixture builds it and so records its calls itself.
    for name in request.fixturenames:
        _hits().update(_CALLS_BY_FIXTURE.get(name, ()))
