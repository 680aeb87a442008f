"""StoryApi: the regional REST API in front of the story generator."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import yaml

from . import policies
from .api_definition import OPENAPI_PATH, api_definition
from .aws_context import AwsContext
from .logs import encrypted_log_group
from .naming import Naming

_ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "status": "$context.status",
        "responseLength": "$context.responseLength",
        "integrationLatency": "$context.integrationLatency",
        "responseLatency": "$context.responseLatency",
        "integrationError": "$context.integration.error",
        "xrayTraceId": "$context.xrayTraceId",
    },
    separators=(",", ":"),
)


@dataclass(frozen=True)
class CustomDomain:
    """A regional custom domain (``api.example.com``) with its ACM certificate
    in the API's region."""

    domain_name: str
    certificate_arn: pulumi.Input[str]
    base_path: str = ""
    """The path the API is mapped under (``v1``: ``https://<domain>/v1/stories``); empty: root."""


@dataclass(frozen=True)
class StoryApiArgs:
    """Settings of :class:`StoryApi`.

    ``alias_invoke_arn`` is the Lambda alias API Gateway proxies to;
    ``function_name`` and ``alias_name`` scope the invoke permission to it.
    ``user_pool_arns`` are the Cognito user pools whose ID tokens the story
    routes accept (``GET /health`` stays open); ``cors_allowed_origins`` the web
    origins browsers may call the API from (none: no CORS).
    ``manage_account_log_role`` sets this region's API Gateway account-wide
    CloudWatch role, which stage logging needs: exactly one stack per account
    and region owns it (the others log through it); it is retained when that
    stack is destroyed.
    """

    naming: Naming
    function_name: pulumi.Input[str]
    alias_name: pulumi.Input[str]
    alias_invoke_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    stage_name: str
    throttle_rate_limit: float
    throttle_burst_limit: int
    user_pool_arns: Sequence[pulumi.Input[str]]
    cors_allowed_origins: Sequence[str] = ()
    log_retention_days: int = 30
    manage_account_log_role: bool = False
    custom_domain: CustomDomain | None = None
    openapi_path: Path = OPENAPI_PATH


class StoryApi(pulumi.ComponentResource):
    """A regional REST API built from the story API's OpenAPI document.

    Every operation is a Lambda proxy to the generator alias, every story route
    behind a Cognito authorizer, with CORS preflights and other methods answered
    by API Gateway; the stage has throttling, JSON access logs and execution logs
    (errors only, no bodies) in log groups with retention and X-Ray tracing. There
    is no usage plan: it would throttle only requests carrying an API key, and a
    key in a browser is no secret; readers are limited by identity (the
    generator's reader budget) and the stage's throttle. A change to the API
    definition deploys a new deployment.

    Outputs:
        rest_api_id, execution_arn: the API.
        stage_name, stage_arn: the stage (what a WAF web ACL attaches to).
        url: the stage's invoke URL.
        custom_domain_target, custom_domain_zone_id: where to point DNS for a custom domain.
    """

    rest_api_id: pulumi.Output[str]
    execution_arn: pulumi.Output[str]
    stage_name: pulumi.Output[str]
    stage_arn: pulumi.Output[str]
    url: pulumi.Output[str]
    custom_domain_target: pulumi.Output[str] | None
    custom_domain_zone_id: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: StoryApiArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liminal:story_api:StoryApi", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        naming = args.naming
        api_name = naming.physical("api")
        spec = yaml.safe_load(args.openapi_path.read_text())
        body = pulumi.Output.all(args.alias_invoke_arn, *args.user_pool_arns).apply(
            lambda values: json.dumps(
                api_definition(
                    spec,
                    values[0],
                    api_name,
                    user_pool_arns=values[1:],
                    cors_allowed_origins=args.cors_allowed_origins,
                ),
                sort_keys=True,
            )
        )

        api = aws.apigateway.RestApi(
            f"{name}-rest-api",
            name=api_name,
            description="Liminal Transit story API",
            body=body,
            endpoint_configuration=aws.apigateway.RestApiEndpointConfigurationArgs(
                types="REGIONAL"
            ),
            tags=naming.tags,
            opts=child,
        )
        deployment = aws.apigateway.Deployment(
            f"{name}-deployment",
            rest_api=api.id,
            description="Story API",
            # Deployments snapshot the API: a new definition needs a new one.
            triggers={"definition": body.apply(lambda b: hashlib.sha256(b.encode()).hexdigest())},
            opts=child,
        )

        access_logs = encrypted_log_group(
            f"{name}-access-logs",
            log_group_name=f"/aws/apigateway/{api_name}/{args.stage_name}/access",
            retention_days=args.log_retention_days,
            key_arn=args.key_arn,
            naming=naming,
            parent=self,
        )
        # API Gateway's execution logs go to a group named after the API's id.
        execution_logs = encrypted_log_group(
            f"{name}-execution-logs",
            log_group_name=pulumi.Output.concat(
                "API-Gateway-Execution-Logs_", api.id, "/", args.stage_name
            ),
            retention_days=args.log_retention_days,
            key_arn=args.key_arn,
            naming=naming,
            parent=self,
        )
        stage_dependencies: list[pulumi.Resource] = [execution_logs]
        if args.manage_account_log_role:
            stage_dependencies.append(self._account_log_role(name, naming))

        stage = aws.apigateway.Stage(
            f"{name}-stage",
            rest_api=api.id,
            deployment=deployment.id,
            stage_name=args.stage_name,
            xray_tracing_enabled=True,
            access_log_settings=aws.apigateway.StageAccessLogSettingsArgs(
                destination_arn=access_logs.arn, format=_ACCESS_LOG_FORMAT
            ),
            tags=naming.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=stage_dependencies),
        )
        aws.apigateway.MethodSettings(
            f"{name}-method-settings",
            rest_api=api.id,
            stage_name=stage.stage_name,
            method_path="*/*",
            settings=aws.apigateway.MethodSettingsSettingsArgs(
                metrics_enabled=True,
                # Errors only, and never request or response bodies: stories
                # are readers' data.
                logging_level="ERROR",
                data_trace_enabled=False,
                throttling_rate_limit=args.throttle_rate_limit,
                throttling_burst_limit=args.throttle_burst_limit,
            ),
            opts=child,
        )
        aws.lambda_.Permission(
            f"{name}-invoke",
            action="lambda:InvokeFunction",
            function=args.function_name,
            qualifier=args.alias_name,
            principal="apigateway.amazonaws.com",
            # This API's stage only: <execution arn>/<stage>/<method>/<path>.
            source_arn=pulumi.Output.concat(api.execution_arn, "/", stage.stage_name, "/*/*"),
            opts=child,
        )

        self.custom_domain_target = None
        self.custom_domain_zone_id = None
        if args.custom_domain:
            domain = aws.apigateway.DomainName(
                f"{name}-domain",
                domain_name=args.custom_domain.domain_name,
                regional_certificate_arn=args.custom_domain.certificate_arn,
                endpoint_configuration=aws.apigateway.DomainNameEndpointConfigurationArgs(
                    types="REGIONAL"
                ),
                security_policy="TLS_1_2",
                tags=naming.tags,
                opts=child,
            )
            aws.apigateway.BasePathMapping(
                f"{name}-base-path",
                rest_api=api.id,
                stage_name=stage.stage_name,
                domain_name=domain.domain_name,
                base_path=args.custom_domain.base_path or None,
                opts=child,
            )
            self.custom_domain_target = domain.regional_domain_name
            self.custom_domain_zone_id = domain.regional_zone_id

        self.rest_api_id = api.id
        self.execution_arn = api.execution_arn
        self.stage_name = stage.stage_name
        self.stage_arn = stage.arn
        self.url = stage.invoke_url
        self.register_outputs(
            {
                "rest_api_id": self.rest_api_id,
                "execution_arn": self.execution_arn,
                "stage_name": self.stage_name,
                "stage_arn": self.stage_arn,
                "url": self.url,
                "custom_domain_target": self.custom_domain_target,
            }
        )

    def _account_log_role(self, name: str, naming: Naming) -> pulumi.Resource:
        """The account-wide role API Gateway logs to CloudWatch with.

        One setting per account and region, which every stack's stage logging
        relies on: destroying the owning stack must not unset it under the
        others, so the role, its policy and the setting are retained on delete.
        """
        retained = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        role = aws.iam.Role(
            f"{name}-cloudwatch-role",
            name=naming.physical("apigateway-cloudwatch"),
            description="API Gateway's account-wide CloudWatch Logs role (owned by one stack)",
            assume_role_policy=policies.assume_role_policy("apigateway.amazonaws.com"),
            tags=naming.tags,
            opts=retained,
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-cloudwatch-role-policy",
            role=role.name,
            policy_arn=pulumi.Output.concat(
                "arn:",
                AwsContext.of(self).partition,
                ":iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
            ),
            opts=retained,
        )
        return aws.apigateway.Account(
            f"{name}-account",
            cloudwatch_role_arn=role.arn,
            opts=pulumi.ResourceOptions.merge(
                retained, pulumi.ResourceOptions(depends_on=[attachment])
            ),
        )
