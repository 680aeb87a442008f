"""The typed stack config: every stack file loads, and bad config fails early and clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.config import (
    ConfigError,
    Environment,
    StackConfig,
    load_stack_config,
    parse_stack_config,
)
from components.offline import PROJECT_ROOT, OfflineRun, run_program, run_stack, stack_config
from components.stack_file import read_stack_file
from tests.components.conftest import STACKS

NS = "liminal-transit"


def _config(stack: str = "dev") -> StackConfig:
    return parse_stack_config(stack_config(stack))


def _providers(**change: Any) -> dict[str, Any]:
    provider = {"name": "mock", "kind": "mock", "model": "offline", "priority": 1}
    return {"providers": [{**provider, **change}]}


def _bedrock(**change: Any) -> dict[str, Any]:
    """One Bedrock provider through a US inference profile, with ``change`` applied."""
    provider = {
        "name": "claude",
        "kind": "bedrock",
        "model": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "modelType": "inference-profile",
        "inferenceProfileRegions": ["us-east-1", "us-east-2", "us-west-2"],
        "priority": 1,
    }
    return {"providers": [{k: v for k, v in {**provider, **change}.items() if v is not None}]}


def _api(**change: Any) -> dict[str, Any]:
    return {"stageName": "dev", "throttleRateLimit": 10, "throttleBurstLimit": 20, **change}


CERTIFICATE = "arn:aws:acm:{}:123456789012:certificate/0f3c"


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
    assert [c.generator.reserved_concurrency for c in (dev, staging, production)] == [
        50,
        100,
        1000,
    ], "every stack caps its concurrency, so none can starve the others"
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
        ["aws:region", "'us-middle-1'", "is not an AWS region"],
        id="bad-region-name",
    ),
    pytest.param(
        # Shaped like a region, but AWS has none of that name.
        _with("aws:region", "eu-west-9"),
        ["aws:region", "'eu-west-9'", "is not an AWS region", "us-east-1"],
        id="unknown-region-of-the-right-shape",
    ),
    pytest.param(
        _with("aws:allowedAccountIds", '["12345"]'),
        ["aws:allowedAccountIds[0]", "'12345'", "pattern"],
        id="allowed-account-that-is-not-an-account-id",
    ),
    pytest.param(
        _with(f"{NS}:costCenter", False),
        [f"{NS}:costCenter", "False", "valid string", "quote the value"],
        id="yaml-boolean-where-a-string-is-meant",
    ),
    pytest.param(
        _with(
            f"{NS}:api",
            _api(
                customDomain={
                    "domainName": "api.example.com",
                    "certificateArn": CERTIFICATE.format("eu-west-1"),
                }
            ),
        ),
        [f"{NS}:api.customDomain.certificateArn", "eu-west-1", "us-east-1", "regional API"],
        id="certificate-outside-the-api-region",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(maxTokens=4096, contextWindow=2048)),
        [f"{NS}:ai.providers[0]", "contextWindow (2048)", "maxTokens (4096)"],
        id="context-window-smaller-than-max-tokens",
    ),
    pytest.param(
        _with(
            f"{NS}:ai",
            _bedrock(
                model="anthropic.claude-sonnet-4-5-20250929-v1:0",
                modelType="foundation-model",
                inferenceProfileRegions=None,
            ),
        ),
        [
            f"{NS}:ai.providers[0]",
            "'anthropic.claude-sonnet-4-5-20250929-v1:0'",
            "only through an inference profile",
            "us.anthropic.claude-sonnet-4-5",
        ],
        id="bare-model-id-that-bedrock-serves-only-through-a-profile",
    ),
    pytest.param(
        _with(f"{NS}:ai", _bedrock(modelType=None)),
        [f"{NS}:ai.providers[0]", "modelType is required", "inference-profile"],
        id="bedrock-without-model-type",
    ),
    pytest.param(
        _with(f"{NS}:ai", _bedrock(inferenceProfileRegions=None)),
        [f"{NS}:ai.providers[0]", "inferenceProfileRegions is required"],
        id="inference-profile-without-its-regions",
    ),
    pytest.param(
        _with(f"{NS}:ai", _bedrock(inferenceProfileRegions=["us-west-2"])),
        [
            f"{NS}:ai.providers[0].inferenceProfileRegions",
            "['us-west-2']",
            "must include us-east-1",
        ],
        id="inference-profile-not-served-from-the-stack-region",
    ),
    pytest.param(
        _with(f"{NS}:ai", _bedrock(inferenceProfileRegions=["us-east-1", "us-mars-1"])),
        [f"{NS}:ai.providers[0].inferenceProfileRegions[1]", "'us-mars-1'", "not an AWS region"],
        id="inference-profile-region-that-does-not-exist",
    ),
    pytest.param(
        _with(
            f"{NS}:ai",
            _bedrock(
                model="arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
            ),
        ),
        [f"{NS}:ai.providers[0]", "foundationModel is required", "application inference profile"],
        id="application-profile-without-its-model",
    ),
    pytest.param(
        _with(
            f"{NS}:ai",
            _bedrock(
                model="arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-haiku-4-5-20251001-v1:0",
                inferenceProfileRegions=["us-east-1", "eu-west-1"],
            ),
        ),
        [f"{NS}:ai.providers[0].model", "profile ARN is in eu-west-1", "us-east-1"],
        id="profile-arn-in-another-region",
    ),
    pytest.param(
        _with(
            f"{NS}:ai",
            _bedrock(
                modelType="inference-profile", model="anthropic.claude-haiku-4-5-20251001-v1:0"
            ),
        ),
        [f"{NS}:ai.providers[0]", "is not an inference profile id"],
        id="model-type-that-does-not-match-the-model",
    ),
    pytest.param(
        _with(
            f"{NS}:ai", _providers(kind="openai", model="gpt-5-mini", modelType="foundation-model")
        ),
        [f"{NS}:ai.providers[0]", "modelType", "Bedrock settings, not for openai"],
        id="bedrock-setting-on-another-provider",
    ),
    pytest.param(
        _with(
            f"{NS}:ai",
            _providers(kind="anthropic", model="claude-haiku-4-5", reasoningEffort="low"),
        ),
        [f"{NS}:ai.providers[0]", "reasoningEffort is an OpenAI setting"],
        id="reasoning-effort-on-a-provider-without-it",
    ),
    pytest.param(
        _with(f"{NS}:ai", _providers(kind="openai", model="gpt-5-mini", reasoningEffort="extreme")),
        [f"{NS}:ai.providers[0].reasoningEffort", "'extreme'", "'minimal'"],
        id="reasoning-effort-the-api-does-not-offer",
    ),
    pytest.param(
        _with(f"{NS}:generator", {"memoryMb": 512}),
        [f"{NS}:generator.reservedConcurrency", "required key is missing"],
        id="stack-without-a-concurrency-cap",
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
        _with(
            f"{NS}:ai",
            _bedrock(model="gpt-4", modelType="foundation-model", inferenceProfileRegions=None),
        ),
        [f"{NS}:ai.providers[0]", "'gpt-4'", "not a Bedrock foundation model id"],
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
        _with(f"{NS}:generator", {"timeoutS": 20, "reservedConcurrency": 5}),
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
    raw = _with(f"{NS}:generator", {"memoryMb": 1, "logLevel": "LOUD", "reservedConcurrency": 5})
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
    raw = _with(f"{NS}:memorySize", 512)
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(raw))
    with pytest.raises(ConfigError, match=f"{NS}:memorySize"):
        load_stack_config()


def _dev_stack_file(root: Path, stack: str, text: str | None = None) -> None:
    """A project root with ``__main__.py`` and a stack file (dev's, unless ``text``)."""
    (root / "__main__.py").write_text((PROJECT_ROOT / "__main__.py").read_text())
    source = text if text is not None else (PROJECT_ROOT / "Pulumi.dev.yaml").read_text()
    (root / f"Pulumi.{stack}.yaml").write_text(source)


# Names unique only within their parent resource, not in the account.
_NESTED_NAMES = {"aws:lambda/alias:Alias", "aws:cognito/userPoolClient:UserPoolClient"}


def _physical_names(run: OfflineRun) -> set[str]:
    return {
        str(r["name"])
        for r in run.resources
        if r.custom and r.type not in _NESTED_NAMES and isinstance(r.get("name"), str)
    }


def test_a_per_developer_stack_coexists_with_its_environments_stack(tmp_path: Path) -> None:
    """`dev-alice` (environment dev) gets names of its own, so both fit in one account."""
    _dev_stack_file(tmp_path, "dev-alice")
    alice = run_stack("dev-alice", root=tmp_path)
    dev = run_stack("dev")
    assert alice.outputs["function_name"] == "liminal-transit-story-generator-dev-alice"
    assert alice.one("aws:dynamodb/table:Table")["tags"]["Environment"] == "dev"
    assert alice.one("aws:dynamodb/table:Table")["tags"]["Stack"] == "dev-alice"
    clashes = _physical_names(alice) & _physical_names(dev)
    assert clashes == set(), f"names both stacks would create: {clashes}"
    secrets = {s["name"] for s in alice.of_type("aws:secretsmanager/secret:Secret")}
    assert secrets == {
        "liminal-transit/dev-alice/openai-api-key",
        "liminal-transit/dev-alice/anthropic-api-key",
    }


def test_placeholder_ids_differ_per_stack(stack_runs: dict[str, OfflineRun]) -> None:
    ids = {stack: run.outputs["api_id"] for stack, run in stack_runs.items()}
    assert len(set(ids.values())) == 3, ids


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ("prod", ["environment = 'production'", "does not match the stack 'prod'", "production-"]),
        ("staging", ["environment = 'production'", "'staging'"]),
        ("production-", ["stack name 'production-'", "lower-case letters, digits and hyphens"]),
        ("Production-EU", ["does not match the stack 'Production-EU'"]),
        (
            "production-" + "x" * 20,
            ["IAM role names allow at most 64 characters", "too long"],
        ),
    ],
)
def test_a_stack_name_must_belong_to_the_environment_and_fit_aws_names(
    stack: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_stack_config(stack_config("production"), stack)
    for fragment in expected:
        assert fragment in str(failure.value), f"{fragment!r} missing from: {failure.value}"


def test_a_mismatched_stack_fails_before_any_resource_is_declared(tmp_path: Path) -> None:
    _dev_stack_file(tmp_path, "prod", (PROJECT_ROOT / "Pulumi.production.yaml").read_text())
    record = OfflineRun()
    with pytest.raises(ConfigError, match="does not match the stack 'prod'"):
        run_stack("prod", root=tmp_path, record=record)
    assert record.resources == []


STACK_FILE_SLIPS = [
    pytest.param(
        "config:\n  aws:region: us-east-1\n  liminal-transit:costCenter: a\n"
        "  liminal-transit:costCenter: b\n",
        ["Pulumi.bad.yaml line 4", "liminal-transit:costCenter is set again", "first on line 3"],
        id="duplicate-top-level-key",
    ),
    pytest.param(
        "config:\n  liminal-transit:generator:\n    memoryMb: 512\n    memoryMb: 1024\n",
        ["line 4", "memoryMb is set again (first on line 3)"],
        id="duplicate-nested-key",
    ),
    pytest.param(
        "config:\n  liminal-transit:costCenter: no\n",
        ["line 2", "liminal-transit:costCenter = no", "'no' (quoted) for a string"],
        id="yaml-1-1-boolean-where-a-string-is-meant",
    ),
    pytest.param(
        "config:\n  liminal-transit:costCenter: false\n",
        ["Pulumi.bad.yaml", "liminal-transit:costCenter = False", "quote the value"],
        id="yaml-boolean-for-a-string-key",
    ),
    pytest.param(
        "config:\n  aws:region: us-east-1\n  liminal-transit:api:\n    stageName: [dev\n",
        ["Pulumi.bad.yaml:5:1", "expected"],
        id="yaml-syntax-error-names-file-and-line",
    ),
    pytest.param(
        "config:\n\tliminal-transit:costCenter: x\n",
        ["Pulumi.bad.yaml:2:1", "tab"],
        id="tab-indentation",
    ),
    pytest.param(
        "- just\n- a list\n",
        ["Pulumi.bad.yaml", "must be a mapping with a `config:` mapping"],
        id="not-a-stack-file",
    ),
]


@pytest.mark.parametrize(("text", "expected"), STACK_FILE_SLIPS)
def test_stack_file_slips_name_the_file_line_key_and_fix(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    (tmp_path / "Pulumi.bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as failure:
        stack_config("bad", tmp_path)
    message = str(failure.value)
    assert "Traceback" not in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_every_stack_file_reads_cleanly_and_strictly(stack: str) -> None:
    assert read_stack_file(PROJECT_ROOT / f"Pulumi.{stack}.yaml")


def test_exactly_one_stack_file_owns_the_account_logging_role() -> None:
    owners = [s for s in STACKS if _config(s).api.manage_account_log_role]
    assert owners == ["production"], "one API Gateway CloudWatch role per account and region"


def test_allowed_accounts_are_the_aws_providers_own_setting() -> None:
    """`aws:allowedAccountIds` is read by the default AWS provider itself: the program
    only validates it, and the provider's config reader sees exactly what was set."""
    import pulumi_aws

    accounts = ["123456789012"]
    seen: list[object] = []

    def program() -> None:
        seen.append(json.loads(pulumi_aws.config.allowed_account_ids or "null"))

    raw = dict(stack_config("production"), **{"aws:allowedAccountIds": json.dumps(accounts)})
    assert parse_stack_config(raw).allowed_account_ids == accounts
    run_program(program, config=raw, region="us-east-1", stack="production")
    assert seen == [accounts]


def test_load_checks_the_stack_file_and_the_stack_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pulumi

    raw = stack_config("production")
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(raw))
    monkeypatch.setattr(pulumi, "get_stack", lambda: "prod")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="does not match the stack 'prod'"):
        load_stack_config()
    (tmp_path / "Pulumi.prod.yaml").write_text("config:\n  liminal-transit:costCenter: off\n")
    with pytest.raises(ConfigError, match=r"Pulumi.prod.yaml line 2: liminal-transit:costCenter"):
        load_stack_config()


def test_at_least_25_bad_configs_are_tested() -> None:
    assert len(BAD_CONFIGS) + len(STACK_FILE_SLIPS) >= 25
