"""StoryGenerator: packaging, configuration and permissions of the generator Lambda."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.bedrock_models import BedrockModelType
from components.config import AiConfig, ProviderConfig, ProviderKind
from components.lambda_code import LAMBDAS_DIR
from components.offline import OfflineRun, run_program
from components.story_generator import VpcPlacement
from tests.components.conftest import run_standalone_generator, statements

FUNCTION = "aws:lambda/function:Function"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
# The only actions AWS accepts solely on "*": X-Ray, and ENI management for VPC functions.
ACTIONS_WITHOUT_RESOURCE_SCOPE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


def _env(run: OfflineRun) -> dict[str, str]:
    return dict(run.one(FUNCTION)["environment"]["variables"])


def _statement(run: OfflineRun, sid: str) -> dict[str, Any]:
    return next(s for s in statements(run.one(ROLE_POLICY)) if s["Sid"] == sid)


def test_function_is_arm64_on_the_current_python_runtime(run: OfflineRun) -> None:
    function = run.one(FUNCTION)
    assert function["architectures"] == ["arm64"]
    assert function["runtime"] == "python3.14"
    assert function["handler"] == "story_generator.handler.lambda_handler"
    assert function["tracingConfig"] == {"mode": "Active"}
    assert function["publish"] is True


def test_code_asset_is_the_story_generator_package_and_nothing_else(run: OfflineRun) -> None:
    archive = run.one(FUNCTION)["code"]
    assert isinstance(archive, pulumi.AssetArchive)
    names = set(archive.assets)
    assert "story_generator/handler.py" in names
    assert "story_generator/__init__.py" in names
    assert all(n.startswith("story_generator/") and n.endswith(".py") for n in names), names
    assert not any("__pycache__" in n for n in names)


def test_powertools_comes_from_the_pinned_public_layer_for_this_runtime(run: OfflineRun) -> None:
    (layer,) = run.one(FUNCTION)["layers"]
    assert layer == (
        "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python314-arm64:36"
    )


def test_memory_and_log_retention_per_environment(stack_runs: dict[str, OfflineRun]) -> None:
    memory = {s: r.one(FUNCTION)["memorySize"] for s, r in stack_runs.items()}
    assert memory == {"dev": 512, "staging": 1024, "production": 1024}
    retention = {
        s: r.one("aws:cloudwatch/logGroup:LogGroup", "generator-logs")["retentionInDays"]
        for s, r in stack_runs.items()
    }
    assert retention == {"dev": 7, "staging": 30, "production": 365}


def test_log_group_is_the_one_lambda_writes_to_and_is_encrypted(run: OfflineRun) -> None:
    group = run.one("aws:cloudwatch/logGroup:LogGroup", "generator-logs")
    assert group["name"] == f"/aws/lambda/{run.outputs['function_name']}"
    assert group["kmsKeyId"] == run.outputs["key_arn"]
    function = run.one(FUNCTION)
    assert group.urn in function.depends_on, "the group must exist before Lambda makes its own"


def test_dead_letter_queue_is_encrypted_and_refuses_plain_http(run: OfflineRun) -> None:
    queue = run.one("aws:sqs/queue:Queue")
    assert queue["kmsMasterKeyId"] == run.outputs["key_arn"]
    function = run.one(FUNCTION)
    assert function["deadLetterConfig"]["targetArn"].endswith(queue["name"])
    deny, events = statements(run.one("aws:sqs/queuePolicy:QueuePolicy"))
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # EventBridge may dead-letter there only from this stack's bus and rule.
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Action"] == ["sqs:SendMessage"]
    rule = run.one("aws:cloudwatch/eventRule:EventRule")
    assert events["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        f"arn:aws:events:us-east-1:123456789012:event-bus/{rule['eventBusName']}",
        f"arn:aws:events:us-east-1:123456789012:rule/{rule['eventBusName']}/{rule['name']}",
    ]


def test_role_policy_exists_before_the_function(run: OfflineRun) -> None:
    """Lambda refuses a dead-letter queue the role cannot send to at creation time."""
    assert run.one(ROLE_POLICY).urn in run.one(FUNCTION).depends_on


def test_alias_points_at_the_published_version(run: OfflineRun) -> None:
    alias = run.one("aws:lambda/alias:Alias")
    assert alias["name"] == "live"
    assert alias["functionVersion"] == "1", "the version the function resource published"
    assert run.outputs["alias_arn"].endswith(":live")


def test_every_stack_caps_its_concurrency_and_only_production_provisions(
    stack_runs: dict[str, OfflineRun],
) -> None:
    """Uncapped, a runaway loop in dev could take the account's concurrency from production."""
    caps = {s: r.one(FUNCTION).get("reservedConcurrentExecutions") for s, r in stack_runs.items()}
    assert caps == {"dev": 50, "staging": 100, "production": 1000}
    production = stack_runs["production"]
    provisioned = production.one(
        "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig"
    )
    assert provisioned["qualifier"] == "live", "provisioned concurrency needs an alias"
    assert provisioned["provisionedConcurrentExecutions"] == 10
    for stack in ("dev", "staging"):
        assert not stack_runs[stack].of_type(
            "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig"
        )


def test_no_role_statement_allows_a_wildcard_action(run: OfflineRun) -> None:
    for statement in statements(run.one(ROLE_POLICY)):
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            assert "*" not in action, f"{statement['Sid']} allows {action}"


def test_only_unscopable_actions_are_granted_on_every_resource(run: OfflineRun) -> None:
    for statement in statements(run.one(ROLE_POLICY)):
        if "*" in statement["Resource"]:
            assert set(statement["Action"]) <= ACTIONS_WITHOUT_RESOURCE_SCOPE, statement["Sid"]


def test_table_access_is_scoped_to_the_table_and_its_indexes(run: OfflineRun) -> None:
    statement = _statement(run, "ReadWriteSessionTable")
    table = f"arn:aws:dynamodb:us-east-1:123456789012:table/{run.outputs['table_name']}"
    assert statement["Resource"] == [table, f"{table}/index/*"]
    assert "dynamodb:Scan" not in statement["Action"]
    assert "dynamodb:DeleteItem" not in statement["Action"]


def test_only_circuit_items_and_idempotency_claims_can_be_deleted(run: OfflineRun) -> None:
    """Sessions are never deleted by the function: TTL expires them."""
    from lambdas.story_generator.sessions import IDEMPOTENCY_PREFIX

    statement = _statement(run, "DeleteCircuitsAndReleasedClaims")
    assert statement["Action"] == ["dynamodb:DeleteItem"]
    condition = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    assert condition == ["circuit#*", f"{IDEMPOTENCY_PREFIX}*"]
    circuit_source = (LAMBDAS_DIR / "story_generator" / "circuit.py").read_text()
    assert '"circuit#' in circuit_source, "the circuit store's key prefix moved"


def test_table_actions_cover_every_call_the_function_makes(run: OfflineRun) -> None:
    """Each DynamoDB call in the Lambda source maps to an action the role grants."""
    import re

    from components.lambda_code import LAMBDAS_DIR

    granted = {
        action.removeprefix("dynamodb:")
        for sid in ("ReadWriteSessionTable", "DeleteCircuitsAndReleasedClaims")
        for action in _statement(run, sid)["Action"]
    }
    # TransactWriteItems is authorised per item as PutItem/UpdateItem/ConditionCheckItem.
    needed_by_call = {
        "transact_write_items": {"PutItem", "UpdateItem", "ConditionCheckItem"},
        "get_paginator": {"Query"},
        "query": {"Query"},
        "batch_get_item": {"BatchGetItem"},
        "update_item": {"UpdateItem"},
        "put_item": {"PutItem"},
        "delete_item": {"DeleteItem"},
        "get_item": {"GetItem"},
    }
    source = "\n".join(p.read_text() for p in (LAMBDAS_DIR / "story_generator").glob("*.py"))
    calls = set(re.findall(r"\.(" + "|".join(needed_by_call) + r")\(", source))
    assert calls, "no DynamoDB calls found: the pattern is stale"
    for call in calls:
        assert needed_by_call[call] <= granted, f"{call} needs {needed_by_call[call] - granted}"


def test_logs_are_written_only_to_the_functions_own_group(run: OfflineRun) -> None:
    group = f"/aws/lambda/{run.outputs['function_name']}"
    for resource in _statement(run, "WriteOwnLogs")["Resource"]:
        assert f"log-group:{group}" in resource
    assert "logs:CreateLogGroup" not in _statement(run, "WriteOwnLogs")["Action"]


def test_key_is_usable_only_through_the_services_that_hold_data(run: OfflineRun) -> None:
    statement = _statement(run, "UseKeyThroughServices")
    assert statement["Resource"] == [run.outputs["key_arn"]]
    services = statement["Condition"]["StringEquals"]["kms:ViaService"]
    assert "dynamodb.us-east-1.amazonaws.com" in services
    assert "secretsmanager.us-east-1.amazonaws.com" in services


def test_bedrock_access_is_the_profile_and_its_model_in_every_region_it_routes_to(
    run: OfflineRun,
) -> None:
    """Through a cross-region profile, IAM checks the profile in the calling region and
    the foundation model in whichever region serves the request."""
    profile = "us.anthropic.claude-sonnet-4-6"
    profile_arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{profile}"
    assert _statement(run, "InvokeNamedInferenceProfiles")["Resource"] == [profile_arn]
    routed = _statement(run, "InvokeModelsThroughNamedProfiles")
    assert routed["Action"] == ["bedrock:InvokeModel"]
    assert routed["Resource"] == [
        f"arn:aws:bedrock:{region}::foundation-model/anthropic.claude-sonnet-4-6"
        for region in ("us-east-1", "us-east-2", "us-west-1", "us-west-2")
    ]
    assert routed["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": [profile_arn]}}
    assert "InvokeNamedModels" not in {s["Sid"] for s in statements(run.one(ROLE_POLICY))}


def test_provider_keys_are_secrets_encrypted_with_the_key_never_environment_values(
    run: OfflineRun,
) -> None:
    secrets = run.of_type("aws:secretsmanager/secret:Secret")
    assert sorted(s["name"].rsplit("/", 1)[1] for s in secrets) == [
        "anthropic-api-key",
        "openai-api-key",
    ]
    assert all(s["kmsKeyId"] == run.outputs["key_arn"] for s in secrets)
    env = _env(run)
    assert env["OPENAI_API_KEY_SECRET_ARN"].startswith("arn:aws:secretsmanager:")
    assert "OPENAI_API_KEY" not in env and "ANTHROPIC_API_KEY" not in env
    read = _statement(run, "ReadProviderKeys")
    assert sorted(read["Resource"]) == sorted(
        [env["OPENAI_API_KEY_SECRET_ARN"], env["ANTHROPIC_API_KEY_SECRET_ARN"]]
    )


def test_events_are_published_only_to_the_stacks_own_bus_with_this_source(
    run: OfflineRun,
) -> None:
    bus = run.one("aws:cloudwatch/eventBus:EventBus")
    assert bus["name"] == f"liminal-transit-events-{_stack(run)}"
    assert bus["kmsKeyIdentifier"] == run.outputs["key_arn"]
    assert bus["deadLetterConfig"]["arn"].endswith(run.one("aws:sqs/queue:Queue")["name"])
    statement = _statement(run, "PublishStoryEvents")
    assert statement["Resource"] == [
        f"arn:aws:events:us-east-1:123456789012:event-bus/{bus['name']}"
    ]
    assert statement["Condition"] == {"StringEquals": {"events:source": "liminal-transit"}}
    assert _env(run)["EVENT_BUS_NAME"] == bus["name"]
    rule = run.one("aws:cloudwatch/eventRule:EventRule")
    assert rule["eventBusName"] == bus["name"], "a rule on the default bus sees every stack"
    assert run.one("aws:cloudwatch/eventTarget:EventTarget")["eventBusName"] == bus["name"]


def test_event_rule_matches_requests_only_so_published_events_never_loop(
    run: OfflineRun,
) -> None:
    pattern = json.loads(run.one("aws:cloudwatch/eventRule:EventRule")["eventPattern"])
    assert pattern == {"source": ["liminal-transit"], "detail-type": ["Story Generation Requested"]}
    target = run.one("aws:cloudwatch/eventTarget:EventTarget")
    assert target["arn"] == run.outputs["alias_arn"]
    assert target["deadLetterConfig"]["arn"].endswith(run.one("aws:sqs/queue:Queue")["name"])
    permission = run.one("aws:lambda/permission:Permission", "events-invoke")
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["qualifier"] == "live"
    stack = _stack(run)
    assert permission["sourceArn"].endswith(
        f"rule/liminal-transit-events-{stack}/liminal-transit-story-requests-{stack}"
    )


def _stack(run: OfflineRun) -> str:
    return run.outputs["function_name"].rsplit("-", 1)[1]


def test_provider_settings_reach_the_function_as_its_documented_contract(
    run: OfflineRun,
) -> None:
    env = _env(run)
    providers = json.loads(env["AI_PROVIDER_CONFIG"])
    assert [p["name"] for p in providers] == ["bedrock-claude", "openai", "anthropic"]
    assert providers[0] == {
        "name": "bedrock-claude",
        "kind": "bedrock",
        "model": "us.anthropic.claude-sonnet-4-6",
        "priority": 1,
        "max_tokens": 1024,
        "temperature": 0.7,
        "timeout_s": 12.0,
        "input_price_per_1k": 0.0033,
        "output_price_per_1k": 0.0165,
        "context_window": 200000,
    }, "the Bedrock profile's regions are for IAM; unset fields are left out"
    assert "temperature" not in providers[1], "the OpenAI reasoning model refuses temperature"
    assert providers[1]["reasoning_effort"] == "none"
    assert "temperature" not in providers[2], "Claude Haiku 5.5 refuses temperature"
    assert json.loads(env["AI_ROUTER_CONFIG"])["deadline_s"] == 25
    assert env["SESSION_TABLE_NAME"] == run.outputs["table_name"]
    assert env["ENVIRONMENT"] == _stack(run)
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "LiminalTransit/AIProviders"


def test_the_function_accepts_the_environment_the_component_gives_it(run: OfflineRun) -> None:
    """The Lambda's own settings parser takes what the component sets, unchanged."""
    from lambdas.story_generator.settings import load_settings

    settings = load_settings(_env(run))
    assert [p.name for p in settings.providers] == ["bedrock-claude", "openai", "anthropic"]


BEDROCK_PROVIDERS = [
    ProviderConfig(
        name="claude-eu",
        kind=ProviderKind.BEDROCK,
        model="eu.anthropic.claude-haiku-4-5-20251001-v1:0",
        model_type=BedrockModelType.INFERENCE_PROFILE,
        inference_profile_regions=["eu-west-1", "eu-central-1"],
        priority=1,
    ),
    ProviderConfig(
        name="nova",
        kind=ProviderKind.BEDROCK,
        model="amazon.nova-lite-v1:0",
        model_type=BedrockModelType.FOUNDATION_MODEL,
        priority=2,
    ),
]


def _standalone(args_change: dict[str, Any]) -> OfflineRun:
    return run_standalone_generator(BEDROCK_PROVIDERS, **args_change)


def test_generator_builds_alone_with_an_inference_profile_and_no_keyed_providers() -> None:
    run = _standalone({})
    component = run.one("liminal:story_generator:StoryGenerator")
    assert run.one(FUNCTION).parent_urn == component.urn
    assert not run.of_type("aws:secretsmanager/secret:Secret")
    names = {s["Sid"] for s in statements(run.one(ROLE_POLICY))}
    assert "ReadProviderKeys" not in names
    by_sid = {s["Sid"]: s for s in statements(run.one(ROLE_POLICY))}
    profile_arn = (
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/"
        "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
    )
    assert by_sid["InvokeNamedInferenceProfiles"]["Resource"] == [profile_arn]
    assert by_sid["InvokeModelsThroughNamedProfiles"]["Resource"] == [
        "arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0",
        "arn:aws:bedrock:eu-central-1::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0",
    ]
    # The on-demand model is granted in the stack's region only, and never through "*".
    assert by_sid["InvokeNamedModels"]["Resource"] == [
        "arn:aws:bedrock:eu-west-1::foundation-model/amazon.nova-lite-v1:0"
    ]


def test_a_named_existing_bus_is_used_and_no_bus_is_created() -> None:
    run = _standalone({"event_bus_name": "platform-events"})
    assert not run.of_type("aws:cloudwatch/eventBus:EventBus")
    assert run.one("aws:cloudwatch/eventRule:EventRule")["eventBusName"] == "platform-events"
    publish = next(s for s in statements(run.one(ROLE_POLICY)) if s["Sid"] == "PublishStoryEvents")
    assert publish["Resource"] == [
        "arn:aws:events:eu-west-1:123456789012:event-bus/platform-events"
    ]


def test_the_accounts_default_bus_is_refused() -> None:
    with pytest.raises(ValueError, match="shared by every stack"):
        _standalone({"event_bus_name": "default"})


def test_vpc_placement_adds_subnets_and_only_the_eni_permissions() -> None:
    run = _standalone(
        {"vpc": VpcPlacement(subnet_ids=["subnet-a", "subnet-b"], security_group_ids=["sg-1"])}
    )
    assert run.one(FUNCTION)["vpcConfig"] == {
        "subnetIds": ["subnet-a", "subnet-b"],
        "securityGroupIds": ["sg-1"],
    }
    eni = next(
        s for s in statements(run.one(ROLE_POLICY)) if s["Sid"] == "ManageVpcNetworkInterfaces"
    )
    assert all(a.startswith("ec2:") for a in eni["Action"])


def test_a_global_profile_named_by_arn_gets_the_regionless_model_grant_too() -> None:
    """A global profile may route to any commercial region, whichever way it is named."""
    from components.generator_permissions import bedrock_statements

    arn = (
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
        "global.anthropic.claude-sonnet-4-6"
    )
    ai = AiConfig(
        providers=[
            ProviderConfig(
                name="claude",
                kind=ProviderKind.BEDROCK,
                model=arn,
                model_type=BedrockModelType.INFERENCE_PROFILE,
                inference_profile_regions=["us-east-1"],
                priority=1,
            )
        ]
    )
    granted: list[Any] = []

    def program() -> None:
        from components.aws_context import AwsContext

        parent = pulumi.ComponentResource("test:index:Parent", "parent")
        statements_ = bedrock_statements(ai, AwsContext.of(parent))
        pulumi.Output.from_input(statements_[-1]["Resource"]).apply(granted.extend)

    run_program(program, config={}, region="us-east-1", stack="qa")
    assert "arn:aws:bedrock:::foundation-model/anthropic.claude-sonnet-4-6" in granted
    assert "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6" in granted
