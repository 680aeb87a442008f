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
    ``AI_ROUTER_CONFIG``. The function gets its own event bus, encrypted with
    ``key_arn``, unless ``event_bus_name`` names an existing custom bus (never
    the account's ``default`` bus, which every stack in the account shares).
    ``cors_allowed_origins`` are the web origins whose browsers may read its
    answers (the same list as the API's).
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
    event_bus_name: str | None = None
    cors_allowed_origins: Sequence[str] = ()
    vpc: VpcPlacement | None = None
    code_dir: Path = LAMBDAS_DIR / "story_generator"

    def __post_init__(self) -> None:
        if self.event_bus_name == "default":
            raise ValueError(
                "event_bus_name 'default' is shared by every stack in the account: "
                "leave it None for a bus of this stack's own"
            )


class StoryGenerator(pulumi.ComponentResource):
    """The story generator Lambda with everything it needs to run.

    Declares the function (arm64, Python runtime, X-Ray active tracing,
    Powertools layer), a published version behind the ``live`` alias (with
    provisioned concurrency when asked for), its log group, an encrypted SQS
    dead-letter queue, the provider-key secrets (values are put outside the
    program), the execution role with least-privilege inline policies, the
    stack's own event bus and the rule on it that hands story generation
    requests to the alias.

    Outputs:
        function_name, function_arn: the function.
        alias_name, alias_arn, alias_invoke_arn: what API Gateway and EventBridge invoke.
        role_arn, role_name: the execution role.
        log_group_name: where the function logs.
        dlq_arn, dlq_url: the dead-letter queue (failed invocations and undeliverable events).
        event_bus_name, event_bus_arn: the bus the function publishes to and listens on.
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
    event_bus_name: pulumi.Output[str]
    event_bus_arn: pulumi.Output[str]
    event_rule_arn: pulumi.Output[str]
    secret_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: StoryGeneratorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liminal:story_generator:StoryGenerator", name, None, opts)
        self._name = name
        self._args = args
        self._context = AwsContext.of(self)
        function_name = args.naming.physical("story-generator")

        # Lambda writes to /aws/lambda/<function name>.
        log_group = encrypted_log_group(
            f"{name}-logs",
            log_group_name=f"/aws/lambda/{function_name}",
            retention_days=args.log_retention_days,
            key_arn=args.key_arn,
            naming=args.naming,
            parent=self,
        )
        dlq = self._dead_letter_queue()
        bus_name, bus_arn = self._event_bus(dlq.arn)
        rule_name = args.naming.physical("story-requests")
        rule_arn = self._context.arn(
            "events", pulumi.Output.concat("rule/", bus_name, "/", rule_name)
        )
        self._dead_letter_queue_policy(dlq, bus_arn, rule_arn)
        secret_arns = self._provider_secrets()
        role, role_policy = self._role(log_group.arn, dlq.arn, bus_arn, secret_arns)
        function = self._function(
            function_name, role.arn, dlq.arn, bus_name, secret_arns, [role_policy, log_group]
        )
        alias = self._alias(function)
        rule = self._story_requests(rule_name, bus_name, alias, dlq.arn)

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
        self.event_bus_name = pulumi.Output.from_input(bus_name)
        self.event_bus_arn = pulumi.Output.from_input(bus_arn)
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
                "event_bus_name": self.event_bus_name,
                "event_bus_arn": self.event_bus_arn,
                "event_rule_arn": self.event_rule_arn,
                "secret_arns": self.secret_arns,
            }
        )

    @property
    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)

    def _dead_letter_queue(self) -> aws.sqs.Queue:
        naming = self._args.naming
        return aws.sqs.Queue(
            f"{self._name}-dlq",
            name=naming.physical("story-generator-dlq"),
            kms_master_key_id=self._args.key_arn,
            kms_data_key_reuse_period_seconds=300,
            message_retention_seconds=14 * 24 * 3600,
            tags=naming.tags,
            opts=self._child,
        )

    def _dead_letter_queue_policy(
        self,
        dlq: aws.sqs.Queue,
        bus_arn: pulumi.Input[str],
        rule_arn: pulumi.Input[str],
    ) -> None:
        """TLS only; EventBridge may dead-letter undeliverable requests (from the rule)
        and events it could not encrypt or decrypt (from the bus) here."""
        events_dead_letters = {
            "Sid": "EventBridgeDeadLetters",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": dlq.arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": [bus_arn, rule_arn]}},
        }
        aws.sqs.QueuePolicy(
            f"{self._name}-dlq-policy",
            queue_url=dlq.url,
            policy=policies.document(
                [policies.deny_insecure_transport("sqs:*", [dlq.arn]), events_dead_letters]
            ),
            opts=self._child,
        )

    def _event_bus(
        self, dlq_arn: pulumi.Output[str]
    ) -> tuple[pulumi.Input[str], pulumi.Input[str]]:
        """This stack's own bus (name, ARN): rules on the account's default bus would
        match every stack's events."""
        args = self._args
        if args.event_bus_name is not None:
            name = args.event_bus_name
            return name, self._context.arn("events", f"event-bus/{name}")
        bus = aws.cloudwatch.EventBus(
            f"{self._name}-events",
            name=args.naming.physical("events"),
            description="Story events of one Liminal Transit stack",
            kms_key_identifier=args.key_arn,
            # Events EventBridge cannot encrypt or decrypt (a key problem) land here.
            dead_letter_config=aws.cloudwatch.EventBusDeadLetterConfigArgs(arn=dlq_arn),
            tags=args.naming.tags,
            opts=self._child,
        )
        return bus.name, bus.arn

    def _provider_secrets(self) -> dict[str, pulumi.Output[str]]:
        args = self._args
        secrets = {
            kind.value: aws.secretsmanager.Secret(
                f"{self._name}-{kind.value}-key",
                name=args.naming.secret_name(f"{kind.value}-api-key"),
                description=f"{kind.value} API key of the story generator; "
                "the value is put outside Pulumi (see README, Deploy)",
                kms_key_id=args.key_arn,
                recovery_window_in_days=args.secret_recovery_window_days,
                tags=args.naming.tags,
                opts=self._child,
            )
            for kind in KEYED_PROVIDERS
            if any(p.kind is kind for p in args.ai.providers)
        }
        return {kind: secret.arn for kind, secret in secrets.items()}

    def _role(
        self,
        log_group_arn: pulumi.Output[str],
        dlq_arn: pulumi.Output[str],
        bus_arn: pulumi.Input[str],
        secret_arns: dict[str, pulumi.Output[str]],
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        args = self._args
        role = aws.iam.Role(
            f"{self._name}-role",
            name=args.naming.physical("story-generator-role"),
            assume_role_policy=policies.assume_role_policy("lambda.amazonaws.com"),
            tags=args.naming.tags,
            opts=self._child,
        )
        granted = GrantedResources(
            table_arn=args.table_arn,
            key_arn=args.key_arn,
            log_group_arn=log_group_arn,
            dlq_arn=dlq_arn,
            event_bus_arn=bus_arn,
            secret_arns=list(secret_arns.values()),
            in_vpc=args.vpc is not None,
        )
        role_policy = aws.iam.RolePolicy(
            f"{self._name}-role-policy",
            role=role.id,
            policy=policies.document(execution_statements(granted, args.ai, self._context)),
            opts=self._child,
        )
        return role, role_policy

    def _powertools_layer(self) -> pulumi.Output[str]:
        context = self._context
        return pulumi.Output.concat(
            "arn:",
            context.partition,
            ":lambda:",
            context.region,
            ":",
            POWERTOOLS_LAYER_ACCOUNT,
            ":layer:AWSLambdaPowertoolsPythonV3-",
            RUNTIME.replace(".", ""),
            f"-{ARCHITECTURE}:{self._args.powertools_layer_version}",
        )

    def _function(
        self,
        function_name: str,
        role_arn: pulumi.Output[str],
        dlq_arn: pulumi.Output[str],
        bus_name: pulumi.Input[str],
        secret_arns: dict[str, pulumi.Output[str]],
        created_first: list[pulumi.Resource],
    ) -> aws.lambda_.Function:
        args = self._args
        return aws.lambda_.Function(
            f"{self._name}-function",
            name=function_name,
            role=role_arn,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=HANDLER,
            code=package_archive(args.code_dir),
            layers=[self._powertools_layer()],
            memory_size=args.memory_mb,
            timeout=args.timeout_s,
            publish=True,
            reserved_concurrent_executions=args.reserved_concurrency,
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            dead_letter_config=aws.lambda_.FunctionDeadLetterConfigArgs(target_arn=dlq_arn),
            kms_key_arn=args.key_arn,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables=function_environment(
                    environment=args.naming.environment,
                    table_name=args.table_name,
                    session_ttl_days=args.session_ttl_days,
                    event_bus_name=bus_name,
                    log_level=args.log_level,
                    ai=args.ai,
                    secret_arns=secret_arns,
                    cors_allowed_origins=args.cors_allowed_origins,
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
            tags=args.naming.tags,
            # Lambda checks at creation that the role may send to the DLQ (and
            # manage ENIs in a VPC): the policy must exist first. The log group
            # must exist before Lambda creates one with no retention.
            opts=pulumi.ResourceOptions(parent=self, depends_on=created_first),
        )

    def _alias(self, function: aws.lambda_.Function) -> aws.lambda_.Alias:
        # Provisioned concurrency needs a published version: the alias points
        # at the version this deployment published.
        alias = aws.lambda_.Alias(
            f"{self._name}-alias",
            name=ALIAS_NAME,
            function_name=function.name,
            function_version=function.version,
            opts=self._child,
        )
        if self._args.provisioned_concurrency > 0:
            aws.lambda_.ProvisionedConcurrencyConfig(
                f"{self._name}-provisioned",
                function_name=function.name,
                qualifier=alias.name,
                provisioned_concurrent_executions=self._args.provisioned_concurrency,
                opts=self._child,
            )
        return alias

    def _story_requests(
        self,
        rule_name: str,
        bus_name: pulumi.Input[str],
        alias: aws.lambda_.Alias,
        dlq_arn: pulumi.Output[str],
    ) -> aws.cloudwatch.EventRule:
        """The rule on this stack's bus that hands story requests to the alias."""
        rule = aws.cloudwatch.EventRule(
            f"{self._name}-story-requests",
            name=rule_name,
            description="Story generation requests for the story generator",
            event_bus_name=bus_name,
            event_pattern=json.dumps(
                {"source": [EVENT_SOURCE], "detail-type": [REQUEST_DETAIL_TYPE]}
            ),
            tags=self._args.naming.tags,
            opts=self._child,
        )
        aws.cloudwatch.EventTarget(
            f"{self._name}-story-requests-target",
            rule=rule.name,
            event_bus_name=bus_name,
            target_id="StoryGenerator",
            arn=alias.arn,
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_retry_attempts=3, maximum_event_age_in_seconds=3600
            ),
            # A request that still cannot be delivered is kept, not dropped.
            dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(arn=dlq_arn),
            opts=self._child,
        )
        aws.lambda_.Permission(
            f"{self._name}-events-invoke",
            action="lambda:InvokeFunction",
            function=alias.function_name,
            qualifier=alias.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=self._child,
        )
        return rule
