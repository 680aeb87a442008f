"""StoryGenerator: what test_story_generator.py leaves unchecked.

The encryption of the function's environment, the secrets' recovery window, ENI
permissions only for a function in a VPC, and the settings that flow from the
stack config (or the component's args) into each resource.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.aws_context import AwsContext
from components.bedrock_models import BedrockModelType
from components.config import AiConfig, ProviderConfig, ProviderKind
from components.generator_permissions import GrantedResources, execution_statements
from components.offline import OfflineRun, run_program, run_stack, stack_config
from components.story_generator import StoryGenerator, VpcPlacement
from tests.components.conftest import (
    STANDALONE_KEY_ARN,
    run_standalone_generator,
    standalone_generator_args,
    statements,
)

FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SECRET = "aws:secretsmanager/secret:Secret"
QUEUE = "aws:sqs/queue:Queue"
PROVISIONED = "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig"
ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


def _stack(run: OfflineRun) -> str:
    return str(run.outputs["function_name"]).rsplit("-", 1)[1]


def _env(run: OfflineRun) -> dict[str, str]:
    return dict(run.one(FUNCTION)["environment"]["variables"])


def _sids(run: OfflineRun) -> set[str]:
    return {s["Sid"] for s in statements(run.one(ROLE_POLICY))}


NOVA = ProviderConfig(
    name="nova",
    kind=ProviderKind.BEDROCK,
    model="amazon.nova-lite-v1:0",
    model_type=BedrockModelType.FOUNDATION_MODEL,
    priority=1,
)


def _standalone(providers: list[ProviderConfig] | None = None, **args_change: Any) -> OfflineRun:
    return run_standalone_generator(providers or [NOVA], **args_change)


def _keyed(kind: ProviderKind, priority: int = 1) -> ProviderConfig:
    return ProviderConfig(name=kind.value, kind=kind, model="some-model", priority=priority)


def _generator_config(stack: str, **change: Any) -> dict[str, Any]:
    config = json.loads(stack_config(stack)["liminal-transit:generator"])
    return {**config, **change}


# Encryption -----------------------------------------------------------------------


def test_the_functions_environment_is_encrypted_with_the_stacks_key(run: OfflineRun) -> None:
    key_arn = run.outputs["key_arn"]
    assert key_arn.startswith("arn:aws:kms:us-east-1:123456789012:key/")
    assert run.one(FUNCTION)["kmsKeyArn"] == key_arn


def test_each_stack_encrypts_with_a_key_of_its_own(stack_runs: dict[str, OfflineRun]) -> None:
    keys = {stack: run.one(FUNCTION)["kmsKeyArn"] for stack, run in stack_runs.items()}
    assert len(set(keys.values())) == len(keys), keys


def test_a_standalone_generator_encrypts_with_the_key_it_is_given() -> None:
    run = _standalone()
    assert run.one(FUNCTION)["kmsKeyArn"] == STANDALONE_KEY_ARN
    assert run.one(QUEUE)["kmsMasterKeyId"] == STANDALONE_KEY_ARN
    assert run.one("aws:cloudwatch/logGroup:LogGroup")["kmsKeyId"] == STANDALONE_KEY_ARN


# Secrets --------------------------------------------------------------------------


def test_provider_secrets_keep_the_configured_recovery_window(
    stack_runs: dict[str, OfflineRun],
) -> None:
    windows = {
        stack: sorted({s["recoveryWindowInDays"] for s in run.of_type(SECRET)})
        for stack, run in stack_runs.items()
    }
    assert windows == {"dev": [7], "staging": [7], "production": [30]}


def test_no_secret_can_be_deleted_without_recovery(run: OfflineRun) -> None:
    for secret in run.of_type(SECRET):
        # 0 would delete a secret at once, with no way back; AWS allows 7 to 30 otherwise.
        assert 7 <= secret["recoveryWindowInDays"] <= 30, f"{secret.name}"


def test_the_recovery_window_follows_the_stack_config() -> None:
    run = run_stack(
        "dev",
        overrides={
            "liminal-transit:generator": _generator_config("dev", secretRecoveryWindowDays=21)
        },
    )
    assert {s["recoveryWindowInDays"] for s in run.of_type(SECRET)} == {21}


def test_a_standalone_generator_keeps_deleted_secrets_30_days_by_default() -> None:
    run = _standalone([_keyed(ProviderKind.OPENAI)])
    (secret,) = run.of_type(SECRET)
    assert secret["recoveryWindowInDays"] == 30


def test_secrets_are_named_per_stack_and_describe_their_provider(run: OfflineRun) -> None:
    stack = _stack(run)
    secrets = {s["name"]: s for s in run.of_type(SECRET)}
    assert set(secrets) == {
        f"liminal-transit/{stack}/openai-api-key",
        f"liminal-transit/{stack}/anthropic-api-key",
    }
    for kind in ("openai", "anthropic"):
        description = secrets[f"liminal-transit/{stack}/{kind}-api-key"]["description"]
        assert description.startswith(f"{kind} API key of the story generator")


@pytest.mark.parametrize("kind", [ProviderKind.OPENAI, ProviderKind.ANTHROPIC])
def test_only_the_configured_keyed_providers_get_a_secret(kind: ProviderKind) -> None:
    run = _standalone([_keyed(kind)])
    (secret,) = run.of_type(SECRET)
    assert secret["name"] == f"liminal-transit/qa/{kind.value}-api-key"
    assert secret["kmsKeyId"] == STANDALONE_KEY_ARN
    env = _env(run)
    variable = f"{kind.value.upper()}_API_KEY_SECRET_ARN"
    other = ({"OPENAI", "ANTHROPIC"} - {kind.value.upper()}).pop()
    assert env[variable].startswith("arn:aws:secretsmanager:eu-west-1:123456789012:secret:")
    assert f"{other}_API_KEY_SECRET_ARN" not in env
    read = next(s for s in statements(run.one(ROLE_POLICY)) if s["Sid"] == "ReadProviderKeys")
    assert read["Resource"] == [env[variable]]
    assert read["Action"] == ["secretsmanager:GetSecretValue"]


# ENI permissions ------------------------------------------------------------------


def test_a_function_outside_a_vpc_gets_no_eni_permissions(run: OfflineRun) -> None:
    """None of the stacks puts the function in a VPC (the config has no such key)."""
    function = run.one(FUNCTION)
    assert function.get("vpcConfig") is None
    assert "ManageVpcNetworkInterfaces" not in _sids(run)
    granted = {a for s in statements(run.one(ROLE_POLICY)) for a in s["Action"]}
    assert not {a for a in granted if a.startswith("ec2:")}, granted
    attachments = run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert not [a for a in attachments if "VPCAccess" in str(a.get("policyArn"))]


def test_eni_permissions_come_with_a_vpc_and_only_then() -> None:
    outside = _standalone()
    inside = _standalone(vpc=VpcPlacement(subnet_ids=["subnet-a"], security_group_ids=["sg-1"]))

    assert "ManageVpcNetworkInterfaces" not in _sids(outside)
    assert outside.one(FUNCTION).get("vpcConfig") is None
    eni = next(
        s for s in statements(inside.one(ROLE_POLICY)) if s["Sid"] == "ManageVpcNetworkInterfaces"
    )
    assert eni["Action"] == ENI_ACTIONS
    assert eni["Resource"] == ["*"]
    assert _sids(inside) - _sids(outside) == {"ManageVpcNetworkInterfaces"}


@pytest.mark.parametrize("in_vpc", [False, True])
def test_execution_statements_grant_enis_exactly_when_in_a_vpc(in_vpc: bool) -> None:
    found: list[list[dict[str, Any]]] = []
    ai = AiConfig(providers=[_keyed(ProviderKind.OPENAI)])

    def program() -> None:
        parent = pulumi.ComponentResource("test:index:Parent", "parent")
        granted = GrantedResources(
            table_arn="arn:table",
            key_arn="arn:key",
            log_group_arn=pulumi.Output.from_input("arn:logs"),
            dlq_arn=pulumi.Output.from_input("arn:dlq"),
            event_bus_arn="arn:bus",
            secret_arns=[],
            in_vpc=in_vpc,
        )
        found.append(execution_statements(granted, ai, AwsContext.of(parent)))

    run_program(program, config={}, region="eu-west-1", stack="qa")
    sids = [s["Sid"] for s in found[0]]
    assert ("ManageVpcNetworkInterfaces" in sids) is in_vpc
    assert "ReadProviderKeys" not in sids, "no secrets, no statement"


# Function settings ----------------------------------------------------------------


def test_function_name_timeout_and_role_per_stack(run: OfflineRun) -> None:
    stack = _stack(run)
    function = run.one(FUNCTION)
    assert function["name"] == f"liminal-transit-story-generator-{stack}"
    assert function["timeout"] == 29
    role = run.one(ROLE, "generator-role")
    assert role["name"] == f"liminal-transit-story-generator-role-{stack}"
    assert function["role"] == f"arn:aws:iam::123456789012:role/{role['name']}"
    trust = json.loads(role["assumeRolePolicy"])["Statement"]
    assert [(t["Effect"], t["Principal"], t["Action"]) for t in trust] == [
        ("Allow", {"Service": "lambda.amazonaws.com"}, "sts:AssumeRole")
    ]


def test_the_component_args_reach_the_function() -> None:
    run = _standalone(
        memory_mb=256,
        timeout_s=20,
        log_level="DEBUG",
        session_ttl_days=9,
        powertools_layer_version=40,
        reserved_concurrency=None,
        cors_allowed_origins=["https://reader.test"],
    )
    function = run.one(FUNCTION)
    assert (function["memorySize"], function["timeout"]) == (256, 20)
    assert function.get("reservedConcurrentExecutions") is None
    assert function["layers"] == [
        "arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python314-arm64:40"
    ]
    env = _env(run)
    assert env["POWERTOOLS_LOG_LEVEL"] == "DEBUG"
    assert env["SESSION_TTL_DAYS"] == "9"
    assert json.loads(env["CORS_ALLOWED_ORIGINS"]) == ["https://reader.test"]
    assert env["ENVIRONMENT"] == "qa"
    assert not run.of_type(PROVISIONED)


def test_the_component_defaults() -> None:
    run = _standalone()
    function = run.one(FUNCTION)
    assert (function["memorySize"], function["timeout"]) == (1024, 29)
    assert function["layers"][0].endswith(":36")
    assert run.one("aws:cloudwatch/logGroup:LogGroup")["retentionInDays"] == 30
    env = _env(run)
    assert (env["POWERTOOLS_LOG_LEVEL"], env["SESSION_TTL_DAYS"]) == ("INFO", "30")
    assert "CORS_ALLOWED_ORIGINS" not in env, "no origins: no CORS headers"
    assert not run.of_type(PROVISIONED)


def test_provisioned_concurrency_sits_on_the_alias_of_this_function() -> None:
    run = _standalone(provisioned_concurrency=2, reserved_concurrency=5)
    provisioned = run.one(PROVISIONED)
    assert provisioned["provisionedConcurrentExecutions"] == 2
    assert provisioned["functionName"] == "liminal-transit-story-generator-qa"
    assert provisioned["qualifier"] == "live"
    assert run.one(FUNCTION)["reservedConcurrentExecutions"] == 5


def test_the_environment_holds_the_whole_router_and_budget_config(
    stack_runs: dict[str, OfflineRun],
) -> None:
    routers = {s: json.loads(_env(r)["AI_ROUTER_CONFIG"]) for s, r in stack_runs.items()}
    base = {
        "deadline_s": 25.0,
        "circuit_failure_threshold": 3,
        "circuit_cooldown_s": 30,
        "misconfigured_cooldown_s": 300,
    }
    assert routers == {
        "dev": {**base, "hedge_delay_s": None},
        "staging": {**base, "hedge_delay_s": 8.0},
        "production": {**base, "hedge_delay_s": 8.0},
    }
    budgets = {s: json.loads(_env(r)["READER_BUDGET"]) for s, r in stack_runs.items()}
    assert budgets == {
        "dev": {"per_minute": 30, "per_day": 2000},
        "staging": {"per_minute": 10, "per_day": 500},
        "production": {"per_minute": 10, "per_day": 500},
    }


def test_the_environment_turns_events_on_and_names_the_service(run: OfflineRun) -> None:
    env = _env(run)
    assert env["EVENTS_ENABLED"] == "true"
    assert env["POWERTOOLS_SERVICE_NAME"] == "story-generator"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert env["SESSION_TTL_DAYS"] == "30"


def test_log_level_and_session_ttl_follow_the_stack_config() -> None:
    storage = json.loads(stack_config("dev")["liminal-transit:storage"])
    run = run_stack(
        "dev",
        overrides={
            "liminal-transit:generator": _generator_config("dev", logLevel="WARNING"),
            "liminal-transit:storage": {**storage, "sessionTtlDays": 90},
        },
    )
    env = _env(run)
    assert (env["POWERTOOLS_LOG_LEVEL"], env["SESSION_TTL_DAYS"]) == ("WARNING", "90")


# Dead-letter queue, alias, rule ----------------------------------------------------


def test_the_dead_letter_queue_keeps_messages_14_days(run: OfflineRun) -> None:
    queue = run.one(QUEUE)
    assert queue["name"] == f"liminal-transit-story-generator-dlq-{_stack(run)}"
    assert queue["messageRetentionSeconds"] == 14 * 24 * 3600
    assert queue["kmsDataKeyReusePeriodSeconds"] == 300
    policy = run.one("aws:sqs/queuePolicy:QueuePolicy")
    assert policy["queueUrl"].endswith(f"/123456789012/{queue['name']}")


def test_the_alias_and_its_permissions_name_this_function(run: OfflineRun) -> None:
    name = run.one(FUNCTION)["name"]
    assert run.one("aws:lambda/alias:Alias")["functionName"] == name
    permission = run.one("aws:lambda/permission:Permission", "events-invoke")
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["function"] == name


def test_undeliverable_requests_are_retried_for_an_hour_then_dead_lettered(
    run: OfflineRun,
) -> None:
    target = run.one("aws:cloudwatch/eventTarget:EventTarget")
    assert target["targetId"] == "StoryGenerator"
    assert target["retryPolicy"] == {"maximumRetryAttempts": 3, "maximumEventAgeInSeconds": 3600}
    assert target["rule"] == run.one("aws:cloudwatch/eventRule:EventRule")["name"]


def test_the_rule_and_bus_are_named_and_described_per_stack(run: OfflineRun) -> None:
    stack = _stack(run)
    rule = run.one("aws:cloudwatch/eventRule:EventRule")
    assert rule["name"] == f"liminal-transit-story-requests-{stack}"
    assert rule["description"] == "Story generation requests for the story generator"
    bus = run.one("aws:cloudwatch/eventBus:EventBus")
    assert bus["description"] == "Story events of one Liminal Transit stack"


def test_the_generators_resources_carry_the_stack_tags(run: OfflineRun) -> None:
    stack = _stack(run)
    expected = {"Project": "liminal-transit", "Stack": stack, "ManagedBy": "pulumi"}
    for type_ in (FUNCTION, QUEUE, SECRET, ROLE, "aws:cloudwatch/eventRule:EventRule"):
        for resource in run.of_type(type_):
            if type_ == ROLE and "generator" not in resource.name:
                continue
            assert expected.items() <= resource["tags"].items(), resource.name


def test_the_components_outputs_are_its_resources() -> None:
    outputs: dict[str, Any] = {}

    def program() -> None:
        generator = StoryGenerator(
            "writer",
            standalone_generator_args(AiConfig(providers=[_keyed(ProviderKind.OPENAI)])),
        )
        pulumi.Output.all(
            function=generator.function_name,
            alias=generator.alias_name,
            role=generator.role_name,
            logs=generator.log_group_name,
            bus=generator.event_bus_name,
            dlq=generator.dlq_url,
            secret=generator.secret_arns["openai"],
        ).apply(outputs.update)

    run_program(program, config={}, region="eu-west-1", stack="qa")
    assert outputs == {
        "function": "liminal-transit-story-generator-qa",
        "alias": "live",
        "role": "liminal-transit-story-generator-role-qa",
        "logs": "/aws/lambda/liminal-transit-story-generator-qa",
        "bus": "liminal-transit-events-qa",
        "dlq": "https://sqs.eu-west-1.amazonaws.com/123456789012/liminal-transit-story-generator-dlq-qa",
        "secret": outputs["secret"],
    }
    assert outputs["secret"].startswith(
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:liminal-transit/qa/openai-api-key-"
    )
