"""The OpenAPI document API Gateway imports: the story API's own document with
every operation wired to the Lambda, and every other method of a path refused by
API Gateway itself in the API's error shape."""

from __future__ import annotations

import copy
import json
from typing import Any

from .lambda_code import LAMBDAS_DIR

OPENAPI_PATH = LAMBDAS_DIR / "story_generator" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ANY_METHOD = "x-amazon-apigateway-any-method"
GATEWAY_RESPONSES_KEY = "x-amazon-apigateway-gateway-responses"
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


def _method_not_allowed(allowed: str) -> dict[str, Any]:
    """A mock integration on every method the path does not declare.

    Without it API Gateway answers those with its unknown-route refusal (403
    "Missing Authentication Token"), where the Lambda, and so `make dev`, answer
    405 with ``Allow``; a mock also costs no Lambda invocation.
    """
    body = json.dumps(method_not_allowed_body(allowed), ensure_ascii=False)
    return {
        "summary": f"Any other method: 405, this path takes {allowed} only.",
        "responses": {
            "405": {
                "description": "The path does not serve this method.",
                "headers": {
                    "Allow": {"schema": {"type": "string"}},
                    "Content-Type": {"schema": {"type": "string"}},
                },
            }
        },
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": '{"statusCode": 405}'},
            "passthroughBehavior": "when_no_match",
            "responses": {
                "default": {
                    "statusCode": "405",
                    "responseParameters": {
                        "method.response.header.Allow": f"'{allowed}'",
                        "method.response.header.Content-Type": "'application/json'",
                    },
                    "responseTemplates": {"application/json": body},
                }
            },
        },
    }


def api_definition(spec: dict[str, Any], invoke_arn: str, title: str) -> dict[str, Any]:
    """The OpenAPI document API Gateway imports.

    ``spec`` with every operation proxied to the Lambda behind ``invoke_arn``
    (required parameters checked by API Gateway), every other method of each
    path answered 405 by API Gateway, and API Gateway's own refusals in the API's
    JSON error shape (the document's ``x-amazon-apigateway-gateway-responses``).
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
    for path_item in definition.get("paths", {}).values():
        methods = [method for method in HTTP_METHODS if method in path_item]
        for method in methods:
            operation = path_item[method]
            operation["x-amazon-apigateway-integration"] = _proxy_integration(invoke_arn)
            operation["x-amazon-apigateway-request-validator"] = _VALIDATOR
        if methods:
            allowed = ", ".join(method.upper() for method in methods)
            path_item[ANY_METHOD] = _method_not_allowed(allowed)
    definition["x-amazon-apigateway-request-validators"] = _VALIDATORS
    return definition
