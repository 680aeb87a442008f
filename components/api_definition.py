"""The OpenAPI document API Gateway imports: the story API's own document with
every operation wired to the Lambda behind the readers' Cognito authorizer, CORS
preflights and every other method of a path answered by API Gateway itself, and
API Gateway's own refusals in the API's error shape, readable by the web reader."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from lambdas.story_generator.cors import ALLOWED_HEADERS, ANY_ORIGIN, EXPOSED_HEADERS, MAX_AGE_S

from .lambda_code import LAMBDAS_DIR

OPENAPI_PATH = LAMBDAS_DIR / "story_generator" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ANY_METHOD = "x-amazon-apigateway-any-method"
GATEWAY_RESPONSES_KEY = "x-amazon-apigateway-gateway-responses"
# The document's security scheme for readers: its operations require a token.
READERS_SCHEME = "readers"
# Lambda proxy integrations are invoked with POST whatever the client's method.
_INTEGRATION_METHOD = "POST"
# API Gateway stops waiting for an integration after 29 s.
_INTEGRATION_TIMEOUT_MS = 29_000
# API Gateway checks that required parameters are present. Bodies are validated by
# the Lambda alone: API Gateway's draft-4 validator would answer the same bad body
# differently from the Lambda (and from `make dev`), and less precisely.
_VALIDATOR = "params"
_VALIDATORS = {_VALIDATOR: {"validateRequestBody": False, "validateRequestParameters": True}}


def method_not_allowed_body(allowed: str) -> dict[str, Any]:
    """The 405 answer for a method a path does not serve: the Lambda's own answer."""
    return {
        "error": {
            "code": "method_not_allowed",
            "message": f"This path takes {allowed} only.",
            "allowed": allowed,
        }
    }


def _proxy_integration(invoke_arn: str) -> dict[str, Any]:
    return {
        "type": "aws_proxy",
        "httpMethod": _INTEGRATION_METHOD,
        "uri": invoke_arn,
        "passthroughBehavior": "when_no_match",
        "timeoutInMillis": _INTEGRATION_TIMEOUT_MS,
    }


def _cors_template(origins: Sequence[str]) -> str:
    """VTL that sets Access-Control-Allow-Origin to the request's Origin when it is allowed.

    A header value in a mapping is static; the response override picks one of
    several allowed origins per request. API Gateway passes header names as the
    client sent them (HTTP/2 clients send them lower-case).
    """
    if not origins or list(origins) == [ANY_ORIGIN]:
        return ""
    allowed = ", ".join(json.dumps(origin) for origin in origins)
    return (
        "#set($origin = $input.params().header.get('Origin'))"
        "#if(!$origin)#set($origin = $input.params().header.get('origin'))#end"
        f"#set($allowed = [{allowed}])"
        "#if($allowed.contains($origin))"
        "#set($context.responseOverride.header.Access-Control-Allow-Origin = $origin)#end\n"
    )


def _mock_operation(
    summary: str,
    status: int,
    description: str,
    headers: dict[str, str],
    body: str,
    origins: Sequence[str],
) -> dict[str, Any]:
    """An operation answered by API Gateway itself (a mock integration, no Lambda
    invocation, no token): ``status`` with ``headers`` (mapping values) and ``body``,
    plus the CORS headers for ``origins``."""
    headers = {**headers, "method.response.header.Vary": "'Origin'"}
    if list(origins) == [ANY_ORIGIN]:
        headers["method.response.header.Access-Control-Allow-Origin"] = "'*'"
    # The response override may set Access-Control-Allow-Origin too: declare it.
    declared = {h.removeprefix("method.response.header.") for h in headers}
    declared.add("Access-Control-Allow-Origin")
    return {
        "summary": summary,
        "security": [],
        "responses": {
            str(status): {
                "description": description,
                "headers": {name: {"schema": {"type": "string"}} for name in sorted(declared)},
            }
        },
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": json.dumps({"statusCode": status})},
            "passthroughBehavior": "when_no_match",
            "responses": {
                "default": {
                    "statusCode": str(status),
                    "responseParameters": headers,
                    "responseTemplates": {"application/json": _cors_template(origins) + body},
                }
            },
        },
    }


def _method_not_allowed(allowed: str, origins: Sequence[str]) -> dict[str, Any]:
    """A mock on every method the path does not declare.

    Without it API Gateway answers those with its unknown-route refusal (403
    "Missing Authentication Token"), where the Lambda, and so `make dev`, answer
    405 with ``Allow``; a mock also costs no Lambda invocation.
    """
    return _mock_operation(
        f"Any other method: 405, this path takes {allowed} only.",
        405,
        "The path does not serve this method.",
        {
            "method.response.header.Allow": f"'{allowed}'",
            "method.response.header.Content-Type": "'application/json'",
            "method.response.header.Access-Control-Expose-Headers": f"'{EXPOSED_HEADERS}'",
        },
        json.dumps(method_not_allowed_body(allowed), ensure_ascii=False),
        origins,
    )


def _preflight(methods: Sequence[str], origins: Sequence[str]) -> dict[str, Any]:
    """The CORS preflight of a path, answered by API Gateway."""
    return _mock_operation(
        "CORS preflight, answered by API Gateway.",
        204,
        "What a browser may send to this path, and from where.",
        {
            "method.response.header.Access-Control-Allow-Methods": f"'{', '.join(methods)}'",
            "method.response.header.Access-Control-Allow-Headers": f"'{ALLOWED_HEADERS}'",
            "method.response.header.Access-Control-Max-Age": f"'{MAX_AGE_S}'",
        },
        "",
        origins,
    )


def _gateway_responses(responses: dict[str, Any], origins: Sequence[str]) -> dict[str, Any]:
    """API Gateway's own refusals, with CORS headers so that a browser can read them.

    A gateway response's headers are static or copied from the request: with
    several allowed origins the request's Origin is echoed, which shares these
    error bodies (they hold no reader data) with any origin.
    """
    cors: dict[str, str] = {
        "gatewayresponse.header.Vary": "'Origin'",
        "gatewayresponse.header.Access-Control-Expose-Headers": f"'{EXPOSED_HEADERS}'",
    }
    if list(origins) == [ANY_ORIGIN]:
        cors["gatewayresponse.header.Access-Control-Allow-Origin"] = "'*'"
    elif len(origins) == 1:
        cors["gatewayresponse.header.Access-Control-Allow-Origin"] = f"'{origins[0]}'"
    elif origins:
        cors["gatewayresponse.header.Access-Control-Allow-Origin"] = "method.request.header.Origin"
    return {
        kind: {**response, "responseParameters": {**response["responseParameters"], **cors}}
        for kind, response in responses.items()
    }


def _authorizer(user_pool_arns: Sequence[str]) -> dict[str, Any]:
    """The Cognito user pool authorizer: API Gateway checks the ID token's signature,
    expiry and pool, and passes its claims to the Lambda."""
    return {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "x-amazon-apigateway-authtype": "cognito_user_pools",
        "x-amazon-apigateway-authorizer": {
            "type": "cognito_user_pools",
            "providerARNs": list(user_pool_arns),
        },
    }


def api_definition(
    spec: dict[str, Any],
    invoke_arn: str,
    title: str,
    *,
    user_pool_arns: Sequence[str],
    cors_allowed_origins: Sequence[str] = (),
) -> dict[str, Any]:
    """The OpenAPI document API Gateway imports.

    ``spec`` with every operation proxied to the Lambda behind ``invoke_arn``
    (required parameters checked by API Gateway); operations that require the
    ``readers`` scheme (all but ``GET /health``) behind a Cognito authorizer for
    ``user_pool_arns``; on every path an OPTIONS preflight for
    ``cors_allowed_origins`` and a 405 for any other method, both answered by
    API Gateway; and API Gateway's own refusals in the API's JSON error shape
    (the document's ``x-amazon-apigateway-gateway-responses``) with CORS headers.
    """
    definition = copy.deepcopy(spec)
    definition.setdefault("info", {})["title"] = title
    # The document's servers are for local runs; a server path could otherwise
    # become a base path prefixed to every route on import. The error table is
    # documentation, not an extension API Gateway knows.
    definition.pop("servers", None)
    definition.pop("x-error-codes", None)
    if GATEWAY_RESPONSES_KEY not in definition:
        raise ValueError(f"the API document has no {GATEWAY_RESPONSES_KEY} section")
    # Operation-level security is what API Gateway reads: apply the default there.
    default_security = definition.pop("security", [])
    definition.setdefault("components", {}).setdefault("securitySchemes", {})[READERS_SCHEME] = (
        _authorizer(user_pool_arns)
    )
    for path_item in definition.get("paths", {}).values():
        methods = [method for method in HTTP_METHODS if method in path_item and method != "options"]
        for method in methods:
            operation = path_item[method]
            operation.setdefault("security", default_security)
            operation["x-amazon-apigateway-integration"] = _proxy_integration(invoke_arn)
            operation["x-amazon-apigateway-request-validator"] = _VALIDATOR
        if methods:
            allowed = ", ".join(method.upper() for method in methods)
            path_item["options"] = _preflight(
                [*(m.upper() for m in methods), "OPTIONS"], cors_allowed_origins
            )
            path_item[ANY_METHOD] = _method_not_allowed(allowed, cors_allowed_origins)
    definition["x-amazon-apigateway-request-validators"] = _VALIDATORS
    definition[GATEWAY_RESPONSES_KEY] = _gateway_responses(
        definition[GATEWAY_RESPONSES_KEY], cors_allowed_origins
    )
    return definition
