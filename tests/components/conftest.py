"""Shared fixtures: each stack's program run once under the mock engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.config import AiConfig, ProviderConfig
from components.naming import Naming
from components.offline import OfflineRun, RecordedResource, run_program, run_stack
from components.story_generator import StoryGenerator, StoryGeneratorArgs
from tests.mutation_calls import recorded_calls, replay_calls

STACKS = ("dev", "staging", "production")
STANDALONE_KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/abc"


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


def standalone_generator_args(ai: AiConfig, **args_change: Any) -> StoryGeneratorArgs:
    """`StoryGenerator` args as another stack passes them, outside the platform."""
    return StoryGeneratorArgs(
        naming=Naming("qa", "qa", "qa-team"),
        table_name="sessions",
        table_arn="arn:aws:dynamodb:eu-west-1:123456789012:table/sessions",
        key_arn=STANDALONE_KEY_ARN,
        ai=ai,
        **args_change,
    )


def run_standalone_generator(providers: list[ProviderConfig], **args_change: Any) -> OfflineRun:
    """A program holding one `StoryGenerator` for `providers`, run offline."""
    ai = AiConfig(providers=providers)

    def program() -> None:
        StoryGenerator("writer", standalone_generator_args(ai, **args_change))

    return run_program(program, config={}, region="eu-west-1", stack="qa")
