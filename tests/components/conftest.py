"""Shared fixtures: each stack's program run once under the mock engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.offline import OfflineRun, RecordedResource, run_stack
from tests.mutation_calls import recorded_calls, replay_calls

STACKS = ("dev", "staging", "production")


@pytest.fixture(scope="session")
def stack_runs() -> dict[str, OfflineRun]:
    """What ``pulumi up`` would declare for every stack, keyed by stack name."""
    with recorded_calls("stack_runs"):
        return {stack: run_stack(stack) for stack in STACKS}


@pytest.fixture(autouse=True)
def _shared_runs_count_for_mutation_testing(request: pytest.FixtureRequest) -> None:
    replay_calls(request)


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    """Each stack name in turn."""
    return str(request.param)


@pytest.fixture
def run(stack_runs: dict[str, OfflineRun], stack: str) -> OfflineRun:
    """The run of the current stack."""
    return stack_runs[stack]


def policy_of(resource: RecordedResource, key: str = "policy") -> dict[str, Any]:
    """A policy input, parsed."""
    return dict(json.loads(resource[key]))


def statements(resource: RecordedResource, key: str = "policy") -> list[dict[str, Any]]:
    """The statements of a policy input, each with Action and Resource as lists."""
    result = []
    for item in policy_of(resource, key)["Statement"]:
        entry = dict(item)
        for field in ("Action", "Resource"):
            if field in entry and isinstance(entry[field], str):
                entry[field] = [entry[field]]
        result.append(entry)
    return result
