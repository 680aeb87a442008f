"""What the story generator's execution role may do: one statement per need,
each naming the resources it is for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from . import policies
from .aws_context import AwsContext
from .config import AiConfig, ProviderKind

EVENT_SOURCE = "liminal-transit"
# The router keeps per-provider circuit state in the session table under this prefix.
CIRCUIT_KEY_PREFIX = "circuit#"
# Bedrock cross-region inference profiles carry a geography prefix.
INFERENCE_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "jp.", "au.", "ca.", "us-gov.", "global.")


@dataclass(frozen=True)
class GrantedResources:
    """The resources the function works with."""

    table_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    log_group_arn: pulumi.Output[str]
    dlq_arn: pulumi.Output[str]
    event_bus_name: str
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
        for service in ("dynamodb", "sqs", "secretsmanager", "lambda")
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
                "dynamodb:BatchGetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:ConditionCheckItem",
            ],
            [granted.table_arn, pulumi.Output.concat(granted.table_arn, "/index/*")],
        ),
        # Sessions are never deleted by the function (TTL expires them); the
        # only deletes are of the router's shared circuit-breaker items.
        policies.statement(
            "ResetProviderCircuits",
            ["dynamodb:DeleteItem"],
            [granted.table_arn],
            {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{CIRCUIT_KEY_PREFIX}*"]}},
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
            [context.arn("events", f"event-bus/{granted.event_bus_name}")],
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
    models = bedrock_model_arns(ai, context)
    if models:
        statements.append(policies.statement("InvokeNamedModels", ["bedrock:InvokeModel"], models))
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


def bedrock_model_arns(ai: AiConfig, context: AwsContext) -> list[pulumi.Output[str]]:
    """The foundation models (and inference profiles) the Bedrock providers name.

    An inference profile (``us.anthropic...``) routes to the model in several
    regions, so the model is granted in any region, through that profile only.
    """
    arns: list[pulumi.Output[str]] = []
    for provider in ai.providers:
        if provider.kind is not ProviderKind.BEDROCK:
            continue
        model = provider.model
        prefix = next((p for p in INFERENCE_PROFILE_PREFIXES if model.startswith(p)), "")
        if prefix:
            arns.append(context.arn("bedrock", f"inference-profile/{model}"))
            arns.append(
                pulumi.Output.concat(
                    "arn:",
                    context.partition,
                    ":bedrock:*::foundation-model/",
                    model.removeprefix(prefix),
                )
            )
        else:
            arns.append(
                pulumi.Output.concat(
                    "arn:",
                    context.partition,
                    ":bedrock:",
                    context.region,
                    "::foundation-model/",
                    model,
                )
            )
    return arns
