"""What the story generator's execution role may do: one statement per need,
each naming the resources it is for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from . import policies
from .aws_context import AwsContext
from .bedrock_models import BedrockModelType, profile_geography
from .config import AiConfig

EVENT_SOURCE = "liminal-transit"
# The router keeps per-provider circuit state in the session table under this prefix,
# and the story service its idempotency records of keyed starts under the other
# (lambdas/story_generator/circuit.py and sessions.py; a test ties them together).
CIRCUIT_KEY_PREFIX = "circuit#"
IDEMPOTENCY_KEY_PREFIX = "idem#"


@dataclass(frozen=True)
class GrantedResources:
    """The resources the function works with."""

    table_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    log_group_arn: pulumi.Output[str]
    dlq_arn: pulumi.Output[str]
    event_bus_arn: pulumi.Input[str]
    secret_arns: Sequence[pulumi.Output[str]]
    in_vpc: bool


def execution_statements(
    granted: GrantedResources, ai: AiConfig, context: AwsContext
) -> list[dict[str, Any]]:
    """What the function may do, each statement scoped to the resources it needs."""
    # kms:ViaService names the endpoint the key is used through, such as
    # dynamodb.us-east-1.amazonaws.com; the same shape as a regional principal.
    via = [
        context.service_principal(service)
        for service in ("dynamodb", "sqs", "secretsmanager", "lambda", "events")
    ]
    statements = [
        policies.statement(
            "WriteOwnLogs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [granted.log_group_arn, pulumi.Output.concat(granted.log_group_arn, ":log-stream:*")],
        ),
        policies.statement(
            "ReadWriteSessionTable",
            [
                "dynamodb:Query",
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:ConditionCheckItem",
            ],
            [granted.table_arn, pulumi.Output.concat(granted.table_arn, "/index/*")],
        ),
        # Sessions are never deleted by the function (TTL expires them); the only
        # deletes are of the router's circuit items and of an idempotency claim
        # released after a failed generation.
        policies.statement(
            "DeleteCircuitsAndReleasedClaims",
            ["dynamodb:DeleteItem"],
            [granted.table_arn],
            {
                "ForAllValues:StringLike": {
                    "dynamodb:LeadingKeys": [f"{CIRCUIT_KEY_PREFIX}*", f"{IDEMPOTENCY_KEY_PREFIX}*"]
                }
            },
        ),
        policies.statement(
            "UseKeyThroughServices",
            ["kms:Decrypt", "kms:GenerateDataKey"],
            [granted.key_arn],
            {"StringEquals": {"kms:ViaService": via}},
        ),
        policies.statement("SendToDeadLetterQueue", ["sqs:SendMessage"], [granted.dlq_arn]),
        policies.statement(
            "PublishStoryEvents",
            ["events:PutEvents"],
            [granted.event_bus_arn],
            {"StringEquals": {"events:source": EVENT_SOURCE}},
        ),
        # X-Ray has no resource-level permissions: "*" is the only resource it accepts.
        policies.statement(
            "WriteTraces", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"]
        ),
    ]
    if granted.secret_arns:
        statements.append(
            policies.statement(
                "ReadProviderKeys", ["secretsmanager:GetSecretValue"], granted.secret_arns
            )
        )
    statements += bedrock_statements(ai, context)
    if granted.in_vpc:
        # ENI management has no resource-level scoping for Describe; Lambda
        # needs these to attach the function to the subnets.
        statements.append(
            policies.statement(
                "ManageVpcNetworkInterfaces",
                [
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                ["*"],
            )
        )
    return statements


def bedrock_statements(ai: AiConfig, context: AwsContext) -> list[dict[str, Any]]:
    """Invoke permissions for exactly the models and inference profiles the config names.

    A cross-region inference profile is invoked in the stack's region and served
    by the foundation model in any of its destination regions; IAM checks the
    profile and the model in the region that serves the request, so the model is
    granted in each destination region, and only through the configured profiles.
    """
    on_demand: list[pulumi.Input[str]] = []
    profiles: list[pulumi.Input[str]] = []
    routed_models: list[pulumi.Input[str]] = []
    for provider in ai.providers:
        model = provider.invoked_foundation_model
        if model is None:
            continue
        if provider.model_type is BedrockModelType.FOUNDATION_MODEL:
            on_demand.append(_foundation_model_arn(context, context.region, model))
            continue
        profiles.append(
            provider.model
            if provider.model.startswith("arn:")
            else context.arn("bedrock", f"inference-profile/{provider.model}")
        )
        for region in provider.inference_profile_regions or ():
            routed_models.append(_foundation_model_arn(context, region, model))
        if profile_geography(provider.model) == "global":
            # A global profile may route to any commercial region; IAM names the
            # model there without a region.
            routed_models.append(_foundation_model_arn(context, "", model))
    statements = []
    if on_demand:
        statements.append(
            policies.statement("InvokeNamedModels", ["bedrock:InvokeModel"], on_demand)
        )
    if profiles:
        statements.append(
            policies.statement("InvokeNamedInferenceProfiles", ["bedrock:InvokeModel"], profiles)
        )
        statements.append(
            policies.statement(
                "InvokeModelsThroughNamedProfiles",
                ["bedrock:InvokeModel"],
                routed_models,
                {"StringEquals": {"bedrock:InferenceProfileArn": profiles}},
            )
        )
    return statements


def _foundation_model_arn(
    context: AwsContext, region: pulumi.Input[str], model: str
) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "arn:", context.partition, ":bedrock:", region, "::foundation-model/", model
    )
