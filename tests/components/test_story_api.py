"""StoryApi: the regional REST API built from the story API's OpenAPI document."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pulumi
import yaml

from components.api_definition import (
    ANY_METHOD,
    HTTP_METHODS,
    OPENAPI_PATH,
    method_not_allowed_body,
)
from components.naming import Naming
from components.offline import OfflineRun, run_program
from components.story_api import CustomDomain, StoryApi, StoryApiArgs

REST_API = "aws:apigateway/restApi:RestApi"
POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Readers1"
STAGE = "aws:apigateway/stage:Stage"


def _body(run: OfflineRun) -> dict[str, Any]:
    return dict(json.loads(run.one(REST_API)["body"]))


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The document's own operations (API Gateway answers OPTIONS with a mock)."""
    return [
        (path, method, item[method])
        for path, item in document["paths"].items()
        for method in HTTP_METHODS
        if method in item and method != "options"
    ]


def test_api_is_regional(run: OfflineRun) -> None:
    assert run.one(REST_API)["endpointConfiguration"]["types"] == "REGIONAL"
    assert "policy" not in run.one(REST_API).inputs, "a public API needs no resource policy"


def test_every_documented_operation_is_proxied_to_the_generator_alias(run: OfflineRun) -> None:
    spec = yaml.safe_load(OPENAPI_PATH.read_text())
    body = _body(run)
    assert [(p, m) for p, m, _ in _operations(body)] == [(p, m) for p, m, _ in _operations(spec)]
    alias_arn = run.outputs["alias_arn"]
    for path, method, operation in _operations(body):
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy", (path, method)
        assert integration["httpMethod"] == "POST"
        assert f"/functions/{alias_arn}/invocations" in integration["uri"]
        assert integration["timeoutInMillis"] <= 29_000


def test_local_server_urls_and_the_error_table_stay_out_of_the_imported_definition(
    run: OfflineRun,
) -> None:
    document = yaml.safe_load(OPENAPI_PATH.read_text())
    for key in ("servers", "x-error-codes"):
        assert key in document, f"the premise of this test: the document has {key}"
        assert key not in _body(run), key


def test_the_story_routes_and_health_are_served(run: OfflineRun) -> None:
    routes = {(p, m) for p, m, _ in _operations(_body(run))}
    assert {
        ("/stories", "post"),
        ("/stories/{session_id}/choices", "post"),
        ("/stories/{session_id}", "get"),
        ("/health", "get"),
    } <= routes


def test_gateway_checks_parameters_and_leaves_bodies_to_the_lambda(run: OfflineRun) -> None:
    """One body validator: API Gateway's draft-4 checks would answer the same bad body
    otherwise than the Lambda does locally."""
    body = _body(run)
    validators = body["x-amazon-apigateway-request-validators"]
    assert validators == {
        "params": {"validateRequestBody": False, "validateRequestParameters": True}
    }
    for path, method, operation in _operations(body):
        assert operation["x-amazon-apigateway-request-validator"] == "params", (path, method)
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["required"] is True


def test_every_other_method_gets_the_lambdas_405_from_a_mock(run: OfflineRun) -> None:
    """Without it API Gateway answers an undeclared method as an unknown route."""
    for path, item in _body(run)["paths"].items():
        declared = [m.upper() for m in HTTP_METHODS if m in item and m != "options"]
        any_method = item[ANY_METHOD]
        integration = any_method["x-amazon-apigateway-integration"]
        assert integration["type"] == "mock", path
        (response,) = integration["responses"].values()
        assert response["statusCode"] == "405"
        allowed = ", ".join(declared)
        assert response["responseParameters"]["method.response.header.Allow"] == f"'{allowed}'"
        # The body follows the VTL that picks the allowed origin, if any.
        template = response["responseTemplates"]["application/json"].rsplit("\n", 1)[-1]
        assert json.loads(template) == method_not_allowed_body(allowed), path
        assert set(any_method["responses"]["405"]["headers"]) == {
            "Allow",
            "Content-Type",
            "Vary",
            "Access-Control-Allow-Origin",
            "Access-Control-Expose-Headers",
        }, "a browser can read the 405 too"


def test_gateway_refusals_use_the_apis_json_error_shape(run: OfflineRun) -> None:
    responses = _body(run)["x-amazon-apigateway-gateway-responses"]
    written = yaml.safe_load(OPENAPI_PATH.read_text())["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == set(written)
    for kind, response in written.items():
        imported = responses[kind]
        assert imported["responseTemplates"] == response["responseTemplates"], kind
        assert imported.get("statusCode") == response.get("statusCode"), kind
        added = set(imported["responseParameters"]) - set(response["responseParameters"])
        assert all("Access-Control" in h or h.endswith(".Vary") for h in added), added
    assert "BAD_REQUEST_BODY" not in responses, "bodies are not validated by the gateway"
    for kind in (
        "BAD_REQUEST_PARAMETERS",
        "MISSING_AUTHENTICATION_TOKEN",
        "REQUEST_TOO_LARGE",
        "THROTTLED",
        "INTEGRATION_TIMEOUT",
    ):
        template = json.loads(responses[kind]["responseTemplates"]["application/json"])
        assert set(template["error"]) == {"code", "message"}, kind
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert responses["INTEGRATION_TIMEOUT"]["statusCode"] == "504"
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        assert "statusCode" not in responses[kind], f"{kind} would re-status every refusal"
        template = responses[kind]["responseTemplates"]["application/json"]
        # API Gateway substitutes its own message as a quoted JSON string.
        filled = template.replace("$context.error.messageString", json.dumps('Say "why"'))
        assert json.loads(filled)["error"]["message"] == 'Say "why"'


def test_stage_has_tracing_access_logs_and_throttling(stack_runs: dict[str, OfflineRun]) -> None:
    for stack, run in stack_runs.items():
        stage = run.one(STAGE)
        assert stage["xrayTracingEnabled"] is True
        access = run.one("aws:cloudwatch/logGroup:LogGroup", "access-logs")
        assert stage["accessLogSettings"]["destinationArn"].endswith(access["name"])
        assert json.loads(stage["accessLogSettings"]["format"])["requestId"] == "$context.requestId"
        settings = run.one("aws:apigateway/methodSettings:MethodSettings")["settings"]
        assert settings["dataTraceEnabled"] is False, stack
        assert settings["metricsEnabled"] is True
    production = stack_runs["production"].one("aws:apigateway/methodSettings:MethodSettings")
    assert production["methodPath"] == "*/*"
    assert production["settings"]["throttlingRateLimit"] == 2000
    assert production["settings"]["throttlingBurstLimit"] == 5000


def test_api_log_groups_have_the_stack_retention_and_the_key(
    stack_runs: dict[str, OfflineRun],
) -> None:
    expected = {"dev": 7, "staging": 30, "production": 365}
    for stack, run in stack_runs.items():
        for purpose in ("access-logs", "execution-logs"):
            group = run.one("aws:cloudwatch/logGroup:LogGroup", f"api-{purpose}")
            assert group["retentionInDays"] == expected[stack], (stack, purpose)
            assert group["kmsKeyId"] == run.outputs["key_arn"]
    execution = stack_runs["dev"].one("aws:cloudwatch/logGroup:LogGroup", "execution-logs")
    assert (
        execution["name"] == f"API-Gateway-Execution-Logs_{stack_runs['dev'].outputs['api_id']}/dev"
    )


def test_exactly_one_stack_owns_the_account_logging_role(
    stack_runs: dict[str, OfflineRun],
) -> None:
    """API Gateway's CloudWatch role is one setting per account and region."""
    owners = [s for s, r in stack_runs.items() if r.of_type("aws:apigateway/account:Account")]
    assert owners == ["production"]
    run = stack_runs["production"]
    account = run.one("aws:apigateway/account:Account")
    assert account.urn in run.one(STAGE).depends_on
    role = run.one("aws:iam/role:Role", "cloudwatch-role")
    trust = json.loads(role["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "cloudwatch")
    # Destroying the owner must not unset the role under the other stacks.
    assert account.retain_on_delete and role.retain_on_delete and attachment.retain_on_delete
    for stack in ("dev", "staging"):
        stage = stack_runs[stack].one(STAGE)
        assert stage["accessLogSettings"]["destinationArn"], "the others still log"
        roles = stack_runs[stack].of_type("aws:iam/role:Role")
        assert all("cloudwatch" not in r.name for r in roles), stack


def test_no_usage_plan_readers_are_limited_by_identity_and_the_stage(run: OfflineRun) -> None:
    """A usage plan throttles only requests carrying an API key, and a key shipped to
    browsers is no secret: the stage throttle and the per-reader budget do the work."""
    assert not run.of_type("aws:apigateway/usagePlan:UsagePlan")
    assert not run.of_type("aws:apigateway/apiKey:ApiKey")
    settings = run.one("aws:apigateway/methodSettings:MethodSettings")["settings"]
    assert settings["throttlingRateLimit"] > 0 and settings["throttlingBurstLimit"] > 0
    budget = json.loads(
        run.one("aws:lambda/function:Function")["environment"]["variables"]["READER_BUDGET"]
    )
    assert budget["per_minute"] >= 1 and budget["per_day"] >= budget["per_minute"]


def test_invoke_permission_is_scoped_to_this_api_stage_and_alias(run: OfflineRun) -> None:
    permission = run.one("aws:lambda/permission:Permission", "api-invoke")
    assert permission["principal"] == "apigateway.amazonaws.com"
    assert permission["qualifier"] == "live"
    stage = run.one(STAGE)["stageName"]
    api_id = run.outputs["api_id"]
    assert permission["sourceArn"] == (
        f"arn:aws:execute-api:us-east-1:123456789012:{api_id}/{stage}/*/*"
    )


def test_url_is_https(run: OfflineRun) -> None:
    assert run.outputs["api_url"].startswith("https://")


def _api_args(**change: Any) -> StoryApiArgs:
    """StoryApi args as another stack would write them, with ``change`` applied."""
    args = StoryApiArgs(
        naming=Naming("qa", "qa", "qa-team"),
        function_name="writer",
        alias_name="live",
        alias_invoke_arn="arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
        "arn:aws:lambda:us-east-1:123456789012:function:writer:live/invocations",
        key_arn="arn:aws:kms:us-east-1:123456789012:key/abc",
        stage_name="qa",
        throttle_rate_limit=10,
        throttle_burst_limit=20,
        user_pool_arns=[POOL_ARN],
    )
    return dataclasses.replace(args, **change)


def _standalone(spec_path: Any, custom_domain: CustomDomain | None = None) -> OfflineRun:
    def program() -> None:
        StoryApi("stories", _api_args(custom_domain=custom_domain, openapi_path=spec_path))

    return run_program(program, config={}, region="us-east-1", stack="qa")


def test_a_changed_definition_gets_a_new_deployment(tmp_path: Any) -> None:
    spec = yaml.safe_load(OPENAPI_PATH.read_text())
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(spec))
    spec["info"]["description"] = "changed"
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(spec))

    def trigger(path: Any) -> str:
        deployment = _standalone(path).one("aws:apigateway/deployment:Deployment")
        return str(deployment["triggers"]["definition"])

    assert trigger(first) == trigger(first)
    assert trigger(first) != trigger(second)


def test_api_builds_alone_without_the_account_role_and_with_a_custom_domain() -> None:
    run = _standalone(
        OPENAPI_PATH,
        CustomDomain(
            "stories.example.com", "arn:aws:acm:us-east-1:123456789012:certificate/abc", "v1"
        ),
    )
    assert not run.of_type("aws:apigateway/account:Account"), "not owned unless asked for"
    domain = run.one("aws:apigateway/domainName:DomainName")
    assert domain["securityPolicy"] == "TLS_1_2"
    assert domain["endpointConfiguration"]["types"] == "REGIONAL"
    mapping = run.one("aws:apigateway/basePathMapping:BasePathMapping")
    assert mapping["stageName"] == "qa"
    assert mapping["basePath"] == "v1"
    component = run.one("liminal:story_api:StoryApi")
    assert all(r.parent_urn == component.urn for r in run.resources if r.custom)


def test_outputs_are_plain_pulumi_outputs() -> None:
    captured: dict[str, str] = {}

    def program() -> None:
        api = StoryApi("stories", _api_args())
        pulumi.Output.all(api.url, api.stage_arn).apply(
            lambda v: captured.update(url=v[0], stage_arn=v[1])
        )

    run_program(program, config={}, region="us-east-1", stack="qa")
    assert captured["url"].endswith("/qa")
    assert captured["stage_arn"].endswith("/stages/qa")
