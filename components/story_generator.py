"""StoryGenerator: the Lambda that serves the story API and routes generations to AI providers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from . import policies
from .aws_context import AwsContext
from .config import AiConfig, ProviderKind
from .generator_environment import function_environment
from .generator_permissions import EVENT_SOURCE, GrantedResources, execution_statements
from .lambda_code import LAMBDAS_DIR, package_archive
from .logs import encrypted_log_group
from .naming import Naming

RUNTIME = "python3.14"
ARCHITECTURE = "arm64"
HANDLER = "story_generator.handler.lambda_handler"
ALIAS_NAME = "live"
# The rule hands only requests to the function. Everything the function
# publishes (beat generated, choice made, story completed) is for other
# consumers: matching it here would invoke the function on its own output.
REQUEST_DETAIL_TYPE = "Story Generation Requested"
# Account that publishes the Powertools for AWS Lambda (Python) public layers.
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
# Providers reached over the internet with an API key kept in Secrets Manager.
KEYED_PROVIDERS = (ProviderKind.OPENAI, ProviderKind.ANTHROPIC)


@dataclass(frozen=True)
class VpcPlacement:
    """Private subnets and security groups to run the function in.

    The subnets need a route to DynamoDB, Bedrock, Secrets Manager, EventBridge
    and SQS (VPC endpoints) and, for OpenAI and Anthropic, a NAT gateway.
    """

    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    security_group_ids: pulumi.Input[Sequence[pulumi.Input[str]]]


@dataclass(frozen=True)
class StoryGeneratorArgs:
    """Settings of :class:`StoryGenerator`.

    ``table_name``/``table_arn`` and ``key_arn`` usually come from
    :class:`~components.storage.Storage`; ``ai`` is the provider router's
    settings, handed to the function as ``AI_PROVIDER_CONFIG`` and
    ``AI_ROUTER_CONFIG``.
    """

    naming: Naming
    table_name: pulumi.Input[str]
    table_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    ai: AiConfig
    memory_mb: int = 1024
    timeout_s: int = 29
    log_retention_days: int = 30
    log_level: str = "INFO"
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    session_ttl_days: int = 30
    powertools_layer_version: int = 36
    secret_recovery_window_days: int = 30
    event_bus_name: str = "default"
    vpc: VpcPlacement | None = None
    code_dir: Path = LAMBDAS_DIR / "story_generator"


class StoryGenerator(pulumi.ComponentResource):
    """The story generator Lambda with everything it needs to run.

    Declares the function (arm64, Python runtime, X-Ray active tracing,
    Powertools layer), a published version behind the ``live`` alias (with
    provisioned concurrency when asked for), its log group, an encrypted SQS
    dead-letter queue for failed asynchronous invocations, the provider-key
    secrets (values are put outside the program), the execution role with
    least-privilege inline policies, and the EventBridge rule that hands story
    generation requests to the alias.

    Outputs:
        function_name, function_arn: the function.
        alias_name, alias_arn, alias_invoke_arn: what API Gateway and EventBridge invoke.
        role_arn, role_name: the execution role.
        log_group_name: where the function logs.
        dlq_arn, dlq_url: the dead-letter queue.
        event_rule_arn: the EventBridge rule.
        secret_arns: provider kind (``openai``, ``anthropic``) -> secret ARN.
    """

    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    alias_name: pulumi.Output[str]
    alias_arn: pulumi.Output[str]
    alias_invoke_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    role_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    dlq_arn: pulumi.Output[str]
    dlq_url: pulumi.Output[str]
    event_rule_arn: pulumi.Output[str]
    secret_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: StoryGeneratorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liminal:story_generator:StoryGenerator", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        naming = args.naming
        context = AwsContext.of(self)
        function_name = naming.physical("story-generator")

        # Lambda writes to /aws/lambda/<function name>.
        log_group = encrypted_log_group(
            f"{name}-logs",
            log_group_name=f"/aws/lambda/{function_name}",
            retention_days=args.log_retention_days,
            key_arn=args.key_arn,
            naming=naming,
            parent=self,
        )
        dlq = aws.sqs.Queue(
            f"{name}-dlq",
            name=naming.physical("story-generator-dlq"),
            kms_master_key_id=args.key_arn,
            kms_data_key_reuse_period_seconds=300,
            message_retention_seconds=14 * 24 * 3600,
            tags=naming.tags,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-dlq-policy",
            queue_url=dlq.url,
            policy=policies.document([policies.deny_insecure_transport("sqs:*", [dlq.arn])]),
            opts=child,
        )
        secrets = {
            kind.value: aws.secretsmanager.Secret(
                f"{name}-{kind.value}-key",
                name=f"{naming.project}/{naming.environment}/{kind.value}-api-key",
                description=f"{kind.value} API key of the story generator; "
                "the value is put outside Pulumi (see README, Deploy)",
                kms_key_id=args.key_arn,
                recovery_window_in_days=args.secret_recovery_window_days,
                tags=naming.tags,
                opts=child,
            )
            for kind in KEYED_PROVIDERS
            if any(p.kind is kind for p in args.ai.providers)
        }
        secret_arns = {kind: secret.arn for kind, secret in secrets.items()}
        role = aws.iam.Role(
            f"{name}-role",
            name=naming.physical("story-generator-role"),
            assume_role_policy=policies.assume_role_policy("lambda.amazonaws.com"),
            tags=naming.tags,
            opts=child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=role.id,
            policy=policies.document(
                execution_statements(
                    GrantedResources(
                        table_arn=args.table_arn,
                        key_arn=args.key_arn,
                        log_group_arn=log_group.arn,
                        dlq_arn=dlq.arn,
                        event_bus_name=args.event_bus_name,
                        secret_arns=list(secret_arns.values()),
                        in_vpc=args.vpc is not None,
                    ),
                    args.ai,
                    context,
                )
            ),
            opts=child,
        )

        layer = pulumi.Output.concat(
            "arn:",
            context.partition,
            ":lambda:",
            context.region,
            ":",
            POWERTOOLS_LAYER_ACCOUNT,
            ":layer:AWSLambdaPowertoolsPythonV3-",
            RUNTIME.replace(".", ""),
            f"-{ARCHITECTURE}:{args.powertools_layer_version}",
        )
        function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            role=role.arn,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=HANDLER,
            code=package_archive(args.code_dir),
            layers=[layer],
            memory_size=args.memory_mb,
            timeout=args.timeout_s,
            publish=True,
            reserved_concurrent_executions=args.reserved_concurrency,
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            dead_letter_config=aws.lambda_.FunctionDeadLetterConfigArgs(target_arn=dlq.arn),
            kms_key_arn=args.key_arn,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables=function_environment(
                    environment=naming.environment,
                    table_name=args.table_name,
                    session_ttl_days=args.session_ttl_days,
                    event_bus_name=args.event_bus_name,
                    log_level=args.log_level,
                    ai=args.ai,
                    secret_arns=secret_arns,
                )
            ),
            vpc_config=(
                aws.lambda_.FunctionVpcConfigArgs(
                    subnet_ids=args.vpc.subnet_ids,
                    security_group_ids=args.vpc.security_group_ids,
                )
                if args.vpc
                else None
            ),
            tags=naming.tags,
            # Lambda checks at creation that the role may send to the DLQ (and
            # manage ENIs in a VPC): the policy must exist first. The log group
            # must exist before Lambda creates one with no retention.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role_policy, log_group]),
        )
        # Provisioned concurrency needs a published version: the alias points
        # at the version this deployment published.
        alias = aws.lambda_.Alias(
            f"{name}-alias",
            name=ALIAS_NAME,
            function_name=function.name,
            function_version=function.version,
            opts=child,
        )
        if args.provisioned_concurrency > 0:
            aws.lambda_.ProvisionedConcurrencyConfig(
                f"{name}-provisioned",
                function_name=function.name,
                qualifier=alias.name,
                provisioned_concurrent_executions=args.provisioned_concurrency,
                opts=child,
            )

        rule = aws.cloudwatch.EventRule(
            f"{name}-story-events",
            name=naming.physical("story-events"),
            description="Story generation requests for the story generator",
            event_bus_name=args.event_bus_name,
            event_pattern=json.dumps(
                {"source": [EVENT_SOURCE], "detail-type": [REQUEST_DETAIL_TYPE]}
            ),
            tags=naming.tags,
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-story-events-target",
            rule=rule.name,
            event_bus_name=args.event_bus_name,
            target_id="StoryGenerator",
            arn=alias.arn,
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_retry_attempts=3, maximum_event_age_in_seconds=3600
            ),
            opts=child,
        )
        aws.lambda_.Permission(
            f"{name}-events-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            qualifier=alias.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )

        self.function_name = function.name
        self.function_arn = function.arn
        self.alias_name = alias.name
        self.alias_arn = alias.arn
        self.alias_invoke_arn = alias.invoke_arn
        self.role_arn = role.arn
        self.role_name = role.name
        self.log_group_name = log_group.name
        self.dlq_arn = dlq.arn
        self.dlq_url = dlq.url
        self.event_rule_arn = rule.arn
        self.secret_arns = secret_arns
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "alias_name": self.alias_name,
                "alias_arn": self.alias_arn,
                "alias_invoke_arn": self.alias_invoke_arn,
                "role_arn": self.role_arn,
                "log_group_name": self.log_group_name,
                "dlq_arn": self.dlq_arn,
                "event_rule_arn": self.event_rule_arn,
                "secret_arns": self.secret_arns,
            }
        )
