"""The typed stack config: every stack file loads, and bad config fails early and clearly."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import (
    ConfigError,
    Environment,
    StackConfig,
    load_stack_config,
    parse_stack_config,
)
from components.offline import OfflineRun, run_stack, stack_config
from tests.components.conftest import STACKS

NS = "liminal-transit"


def _config(stack: str = "dev") -> StackConfig:
    return parse_stack_config(stack_config(stack))


def _providers(**change: Any) -> dict[str, Any]:
    provider = {"name": "mock", "kind": "mock", "model": "offline", "priority": 1}
    return {"providers": [{**provider, **change}]}


def _with(key: str, value: Any, stack: str = "dev") -> dict[str, Any]:
    raw: dict[str, Any] = dict(stack_config(stack))
    raw[key] = value
    return raw


def _without(key: str, stack: str = "dev") -> dict[str, Any]:
    raw: dict[str, Any] = dict(stack_config(stack))
    del raw[key]
    return raw


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_is_valid(stack: str) -> None:
    config = _config(stack)
    assert config.environment is Environment(stack)


def test_environments_differ_as_the_design_says() -> None:
    dev, staging, production = (_config(s) for s in STACKS)
    assert [c.generator.memory_mb for c in (dev, staging, production)] == [512, 1024, 1024]
    assert [c.log_retention_days for c in (dev, staging, production)] == [7, 30, 365]
    assert production.generator.reserved_concurrency == 1000
    assert dev.generator.reserved_concurrency is None
    assert production.generator.provisioned_concurrency > 0
    assert (production.api.throttle_rate_limit, production.api.throttle_burst_limit) == (2000, 5000)
    assert production.storage.deletion_protection and not dev.storage.deletion_protection


BAD_CONFIGS = [
    pytest.param(
        _with(f"{NS}:generator", {"memoryMB": 512}),
        [f"{NS}:generator.memoryMB", "unknown key", "memoryMb"],
        id="typo-in-nested-key",
    ),
    pytest.param(
        _with(f"{NS}:logRetentionDay", 7),
        [f"{NS}:logRetentionDay", "unknown key", f"{NS}:logRetentionDays"],
        id="typo-in-top-level-key",
    ),
    pytest.param(
        _with(f"{NS}:generator", {"memoryMb": "lots"}),
        [f"{NS}:generator.memoryMb", "'lots'", "integer"],
        id="wrong-type",
    ),
    pytest.param(
        _with(f"{NS}:generator", {"memoryMb": 20000}),
        [f"{NS}:generator.memoryMb", "20000", "10240"],
        id="memory-too-large",
    ),
    pytest.param(
        _with(f"{NS}:generator", {"memoryMb": 64}),
        [f"{NS}:generator.memoryMb", "64", "128"],
        id="memory-too-small",
    ),
    pytest.param(
        _with(f"{NS}:logRetentionDays", -7),
        [f"{NS}:logRetentionDays", "-7", "365"],
        id="negative-retention",
    ),
    pytest.param(
        _with(f"{NS}:logRetentionDays", 10),
        [f"{NS}:logRetentionDays", "10", "retention periods CloudWatch accepts"],
        id="retention-cloudwatch-does-not-offer",
    ),
    pytest.param(
        _with(f"{NS}:environment", "prod"),
        [f"{NS}:environment", "'prod'", "'dev', 'staging' or 'production'"],
        id="unknown-environment",
    ),
    pytest.param(
        _with("aws:region", "us-middle-1"),
        ["aws:region", "'us-middle-1'", "AWS region name"],
        id="bad-region-name",
    ),
    pytest.param(
        _with(f"{NS}:ai", {"providers": []}),
        [f"{NS}:ai.providers", "[]", "at least 1"],
        id="empty-provider-list",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(kind="gemini")),
        [f"{NS}:ai.providers[0].kind", "'gemini'", "'bedrock', 'openai', 'anthropic' or 'mock'"],
        id="unknown-provider-kind",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(temperature=3)),
        [f"{NS}:ai.providers[0].temperature", "3", "less than or equal to 2"],
        id="temperature-out-of-range",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(kind="anthropic", model="claude-3-haiku", temperature=1.5)),
        [f"{NS}:ai.providers[0]", "temperature 1.5", "Anthropic API accepts"],
        id="anthropic-temperature-above-its-limit",
    ),
    pytest.param(
        _with(
            f"{NS}:ai",
            {"providers": [*_providers()["providers"], *_providers(kind="openai")["providers"]]},
        ),
        [f"{NS}:ai", "must be unique", "'mock'"],
        id="duplicate-provider-names",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(kind="bedrock", model="gpt-4")),
        [f"{NS}:ai.providers[0]", "'gpt-4'", "not a Bedrock model id"],
        id="bedrock-model-that-is-not-a-bedrock-id",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(endpointUrl="http://api.example.com")),
        [f"{NS}:ai.providers[0].endpointUrl", "'http://api.example.com'", "https://"],
        id="plain-http-endpoint",
    ),
    pytest.param(
        _with(f"{NS}:ai", {**_providers(), "deadlineS": 30}),
        [f"{NS}:ai.deadlineS", "30", "less than 29"],
        id="deadline-beyond-api-gateway-limit",
    ),
    pytest.param(
        _with(f"{NS}:generator", {"timeoutS": 20}),
        [f"{NS}:ai.deadlineS = 25", f"{NS}:generator.timeoutS (20)"],
        id="deadline-beyond-lambda-timeout",
    ),
    pytest.param(
        _with(f"{NS}:generator", {"reservedConcurrency": 5, "provisionedConcurrency": 10}),
        [f"{NS}:generator", "provisionedConcurrency (10)", "reservedConcurrency (5)"],
        id="provisioned-above-reserved",
    ),
    pytest.param(
        _with(f"{NS}:api", {"stageName": "prod", "throttleRateLimit": 2000}),
        [f"{NS}:api.throttleBurstLimit", "required key is missing"],
        id="missing-nested-key",
    ),
    pytest.param(
        _without(f"{NS}:environment"),
        [f"{NS}:environment", "required key is missing"],
        id="missing-top-level-key",
    ),
    pytest.param(
        _with(
            f"{NS}:api",
            {"stageName": "prod stage", "throttleRateLimit": 1, "throttleBurstLimit": 1},
        ),
        [f"{NS}:api.stageName", "'prod stage'", "pattern"],
        id="stage-name-with-space",
    ),
    pytest.param(
        _with(f"{NS}:storage", {"kmsDeletionWindowDays": 3}),
        [f"{NS}:storage.kmsDeletionWindowDays", "3", "greater than or equal to 7"],
        id="kms-window-below-aws-minimum",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_CONFIGS)
def test_bad_config_names_key_value_and_what_is_allowed(
    raw: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_stack_config(raw)
    message = str(failure.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_every_problem_is_reported_at_once() -> None:
    raw = _with(f"{NS}:generator", {"memoryMb": 1, "logLevel": "LOUD"})
    raw[f"{NS}:environment"] = "qa"
    with pytest.raises(ConfigError) as failure:
        parse_stack_config(raw)
    lines = str(failure.value).splitlines()[1:]
    assert len(lines) == 3, lines


def test_keys_of_other_namespaces_are_left_to_their_owners() -> None:
    config = parse_stack_config(_with("aws:profile", "platform-admin"))
    assert config.region == "us-east-1"


def test_bad_config_fails_before_any_resource_is_declared() -> None:
    record = OfflineRun()
    with pytest.raises(ConfigError, match="memoryMb"):
        run_stack("dev", overrides={f"{NS}:generator": {"memoryMb": 1}}, record=record)
    assert record.resources == []


def test_load_reads_every_key_the_engine_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt key in the stack file reaches the validator even though no code asks for it."""
    import json

    raw = _with(f"{NS}:memorySize", 512)
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(raw))
    with pytest.raises(ConfigError, match=f"{NS}:memorySize"):
        load_stack_config()
