"""The OpenAPI document API Gateway imports: the story API's own document with
every operation wired to the Lambda and validated at the gateway."""

from __future__ import annotations

import copy
import json
from typing import Any

from .lambda_code import LAMBDAS_DIR

OPENAPI_PATH = LAMBDAS_DIR / "story_generator" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# Lambda proxy integrations are invoked with POST whatever the client's method.
_INTEGRATION_METHOD = "POST"
# API Gateway stops waiting for an integration after 29 s.
_INTEGRATION_TIMEOUT_MS = 29_000
_VALIDATORS = {
    "body-and-params": {"validateRequestBody": True, "validateRequestParameters": True},
    "params-only": {"validateRequestBody": False, "validateRequestParameters": True},
}


def _error_response(status: str | None, code: str, message: str) -> dict[str, Any]:
    """A gateway response in the API's own error shape, so that clients parse one format.

    ``message`` is JSON text: a quoted string, or ``$context.error.messageString``
    (API Gateway's own message, which it quotes). ``status`` None keeps the
    status of the refusal.
    """
    body = f'{{"error": {{"code": "{code}", "message": {message}}}}}'
    response: dict[str, Any] = {
        "responseTemplates": {"application/json": body},
        "responseParameters": {"gatewayresponse.header.Content-Type": "'application/json'"},
    }
    if status is not None:
        response["statusCode"] = status
    return response


# API Gateway's own refusals: the story API's error shape instead of {"message": ...}.
GATEWAY_RESPONSES = {
    "BAD_REQUEST_BODY": _error_response(
        "400",
        "invalid_body",
        json.dumps(
            "The request body does not match this operation's schema: check field names, "
            "types and lengths against the API's OpenAPI document."
        ),
    ),
    "BAD_REQUEST_PARAMETERS": _error_response(
        "400",
        "invalid_parameters",
        json.dumps("A required path or query parameter is missing or malformed."),
    ),
    # A REST API answers an unknown route with 403 "Missing Authentication Token".
    "MISSING_AUTHENTICATION_TOKEN": _error_response(
        "404",
        "route_not_found",
        json.dumps("No such route: see the API's OpenAPI document for the routes."),
    ),
    "REQUEST_TOO_LARGE": _error_response(
        "413", "payload_too_large", json.dumps("The request is too large: send a smaller body.")
    ),
    "THROTTLED": _error_response(
        "429", "throttled", json.dumps("Too many requests: retry later, with backoff.")
    ),
    "INTEGRATION_TIMEOUT": _error_response(
        "504",
        "timeout",
        json.dumps("The story took too long to write: retry the same request."),
    ),
    # A status on the DEFAULT_* responses would replace the status of every
    # refusal of that class, so these keep API Gateway's.
    "DEFAULT_4XX": _error_response(None, "gateway_refused", "$context.error.messageString"),
    "DEFAULT_5XX": _error_response(None, "gateway_error", "$context.error.messageString"),
}


def api_definition(spec: dict[str, Any], invoke_arn: str, title: str) -> dict[str, Any]:
    """The OpenAPI document API Gateway imports: ``spec`` with every operation
    proxied to the Lambda behind ``invoke_arn``, validated by API Gateway
    (bodies against their schemas, required parameters), and gateway errors in
    the API's JSON error shape."""
    definition = copy.deepcopy(spec)
    definition.setdefault("info", {})["title"] = title
    # The document's servers are for local runs; a server path could otherwise
    # become a base path prefixed to every route on import.
    definition.pop("servers", None)
    for path_item in definition.get("paths", {}).values():
        for method in HTTP_METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            operation["x-amazon-apigateway-integration"] = {
                "type": "aws_proxy",
                "httpMethod": _INTEGRATION_METHOD,
                "uri": invoke_arn,
                "passthroughBehavior": "when_no_match",
                "timeoutInMillis": _INTEGRATION_TIMEOUT_MS,
            }
            operation["x-amazon-apigateway-request-validator"] = (
                "body-and-params" if "requestBody" in operation else "params-only"
            )
    definition["x-amazon-apigateway-request-validators"] = _VALIDATORS
    definition["x-amazon-apigateway-gateway-responses"] = GATEWAY_RESPONSES
    return definition
