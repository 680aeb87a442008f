"""The OpenAPI document API Gateway imports, as exact documents built from small specs.

Each expected value is written out: a changed header, status, template or key of
the generated document fails here, whatever the story API's own document holds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components.api_definition import (
    ANY_METHOD,
    GATEWAY_RESPONSES_KEY,
    api_definition,
    method_not_allowed_body,
)

INVOKE_ARN = (
    "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
    "arn:aws:lambda:us-east-1:123456789012:function:writer:live/invocations"
)
POOL = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Readers1"
OTHER_POOL = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Readers2"
EXPOSED = "'Location, Retry-After, x-amzn-RequestId'"
TWO_ORIGINS = ["https://reader.example", "http://localhost:5173"]
VTL_TWO_ORIGINS = (
    "#set($origin = $input.params().header.get('Origin'))"
    "#if(!$origin)#set($origin = $input.params().header.get('origin'))#end"
    '#set($allowed = ["https://reader.example", "http://localhost:5173"])'
    "#if($allowed.contains($origin))"
    "#set($context.responseOverride.header.Access-Control-Allow-Origin = $origin)#end\n"
)
THROTTLED = {
    "statusCode": "429",
    "responseParameters": {"gatewayresponse.header.Content-Type": "'application/json'"},
    "responseTemplates": {"application/json": '{"error": {"code": "throttled"}}'},
}
VALIDATORS = {"params": {"validateRequestBody": False, "validateRequestParameters": True}}
AUTHORIZER = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "x-amazon-apigateway-authtype": "cognito_user_pools",
    "x-amazon-apigateway-authorizer": {"type": "cognito_user_pools", "providerARNs": [POOL]},
}


def _spec() -> dict[str, Any]:
    """A document shaped like the story API's: local servers, an error table, a
    default security requirement, an open route, and a path of two methods."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "local", "version": "1"},
        "servers": [{"url": "http://localhost:8787"}],
        "x-error-codes": {"throttled": {"status": 429}},
        "security": [{"readers": []}],
        "components": {"schemas": {"Story": {"type": "object"}}},
        "paths": {
            "/health": {"get": {"operationId": "getHealth", "security": []}},
            "/stories": {
                "post": {"operationId": "startStory"},
                "get": {"operationId": "listStories"},
            },
            "/nothing": {"parameters": []},
        },
        GATEWAY_RESPONSES_KEY: {"THROTTLED": copy.deepcopy(THROTTLED)},
    }


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"schema": {"type": "string"}} for name in names}


def _proxy() -> dict[str, Any]:
    return {
        "type": "aws_proxy",
        "httpMethod": "POST",
        "uri": INVOKE_ARN,
        "passthroughBehavior": "when_no_match",
        "timeoutInMillis": 29000,
    }


def _preflight(methods: str, template: str, allow_origin: str | None) -> dict[str, Any]:
    parameters = {
        "method.response.header.Access-Control-Allow-Methods": f"'{methods}'",
        "method.response.header.Access-Control-Allow-Headers": (
            "'Authorization, Content-Type, Idempotency-Key'"
        ),
        "method.response.header.Access-Control-Max-Age": "'600'",
        "method.response.header.Vary": "'Origin'",
    }
    if allow_origin is not None:
        parameters["method.response.header.Access-Control-Allow-Origin"] = allow_origin
    return {
        "summary": "CORS preflight, answered by API Gateway.",
        "security": [],
        "responses": {
            "204": {
                "description": "What a browser may send to this path, and from where.",
                "headers": _headers(
                    "Access-Control-Allow-Headers",
                    "Access-Control-Allow-Methods",
                    "Access-Control-Allow-Origin",
                    "Access-Control-Max-Age",
                    "Vary",
                ),
            }
        },
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": '{"statusCode": 204}'},
            "passthroughBehavior": "when_no_match",
            "responses": {
                "default": {
                    "statusCode": "204",
                    "responseParameters": parameters,
                    "responseTemplates": {"application/json": template},
                }
            },
        },
    }


def _not_allowed(allowed: str, template: str, allow_origin: str | None) -> dict[str, Any]:
    parameters = {
        "method.response.header.Allow": f"'{allowed}'",
        "method.response.header.Content-Type": "'application/json'",
        "method.response.header.Access-Control-Expose-Headers": EXPOSED,
        "method.response.header.Vary": "'Origin'",
    }
    if allow_origin is not None:
        parameters["method.response.header.Access-Control-Allow-Origin"] = allow_origin
    body = (
        '{"error": {"code": "method_not_allowed", '
        f'"message": "This path takes {allowed} only.", "allowed": "{allowed}"}}}}'
    )
    return {
        "summary": f"Any other method: 405, this path takes {allowed} only.",
        "security": [],
        "responses": {
            "405": {
                "description": "The path does not serve this method.",
                "headers": _headers(
                    "Access-Control-Allow-Origin",
                    "Access-Control-Expose-Headers",
                    "Allow",
                    "Content-Type",
                    "Vary",
                ),
            }
        },
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": '{"statusCode": 405}'},
            "passthroughBehavior": "when_no_match",
            "responses": {
                "default": {
                    "statusCode": "405",
                    "responseParameters": parameters,
                    "responseTemplates": {"application/json": template + body},
                }
            },
        },
    }


def _expected(vtl: str, allow_origin: str | None, gateway_origin: str | None) -> dict[str, Any]:
    """The whole imported document for ``_spec()``."""
    throttled = copy.deepcopy(THROTTLED)
    throttled["responseParameters"].update(
        {
            "gatewayresponse.header.Vary": "'Origin'",
            "gatewayresponse.header.Access-Control-Expose-Headers": EXPOSED,
        }
    )
    if gateway_origin is not None:
        throttled["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] = (
            gateway_origin
        )
    return {
        "openapi": "3.0.3",
        "info": {"title": "liminal-transit-api-qa", "version": "1"},
        "components": {
            "schemas": {"Story": {"type": "object"}},
            "securitySchemes": {"readers": AUTHORIZER},
        },
        "paths": {
            "/health": {
                "get": {
                    "operationId": "getHealth",
                    "security": [],
                    "x-amazon-apigateway-integration": _proxy(),
                    "x-amazon-apigateway-request-validator": "params",
                },
                "options": _preflight("GET, OPTIONS", vtl, allow_origin),
                ANY_METHOD: _not_allowed("GET", vtl, allow_origin),
            },
            "/stories": {
                "post": {
                    "operationId": "startStory",
                    "security": [{"readers": []}],
                    "x-amazon-apigateway-integration": _proxy(),
                    "x-amazon-apigateway-request-validator": "params",
                },
                "get": {
                    "operationId": "listStories",
                    "security": [{"readers": []}],
                    "x-amazon-apigateway-integration": _proxy(),
                    "x-amazon-apigateway-request-validator": "params",
                },
                "options": _preflight("GET, POST, OPTIONS", vtl, allow_origin),
                ANY_METHOD: _not_allowed("GET, POST", vtl, allow_origin),
            },
            "/nothing": {"parameters": []},
        },
        "x-amazon-apigateway-request-validators": VALIDATORS,
        GATEWAY_RESPONSES_KEY: {"THROTTLED": throttled},
    }


def _define(origins: list[str], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return api_definition(
        spec if spec is not None else _spec(),
        INVOKE_ARN,
        "liminal-transit-api-qa",
        user_pool_arns=[POOL],
        cors_allowed_origins=origins,
    )


@pytest.mark.parametrize(
    ("origins", "vtl", "allow_origin", "gateway_origin"),
    [
        pytest.param([], "", None, None, id="no-cors"),
        pytest.param(["*"], "", "'*'", "'*'", id="any-origin"),
        pytest.param(
            ["https://reader.example"],
            "#set($origin = $input.params().header.get('Origin'))"
            "#if(!$origin)#set($origin = $input.params().header.get('origin'))#end"
            '#set($allowed = ["https://reader.example"])'
            "#if($allowed.contains($origin))"
            "#set($context.responseOverride.header.Access-Control-Allow-Origin = $origin)#end\n",
            None,
            "'https://reader.example'",
            id="one-origin",
        ),
        pytest.param(
            TWO_ORIGINS, VTL_TWO_ORIGINS, None, "method.request.header.Origin", id="two-origins"
        ),
    ],
)
def test_the_imported_document_is_exactly_the_spec_wired_to_api_gateway(
    origins: list[str], vtl: str, allow_origin: str | None, gateway_origin: str | None
) -> None:
    assert _define(origins) == _expected(vtl, allow_origin, gateway_origin)


def test_the_spec_it_is_given_is_left_unchanged() -> None:
    spec = _spec()
    _define(TWO_ORIGINS, spec)
    assert spec == _spec()


def test_a_bare_document_gets_a_title_the_authorizer_and_the_validators() -> None:
    """No info, servers, error table, security, components or paths: all optional."""
    assert _define(["*"], {GATEWAY_RESPONSES_KEY: {}}) == {
        "info": {"title": "liminal-transit-api-qa"},
        "components": {"securitySchemes": {"readers": AUTHORIZER}},
        "x-amazon-apigateway-request-validators": VALIDATORS,
        GATEWAY_RESPONSES_KEY: {},
    }


def test_without_a_default_requirement_an_operation_without_security_is_open() -> None:
    spec = {"paths": {"/open": {"put": {}}}, GATEWAY_RESPONSES_KEY: {}}
    operation = _define([], spec)["paths"]["/open"]["put"]
    assert operation == {
        "security": [],
        "x-amazon-apigateway-integration": _proxy(),
        "x-amazon-apigateway-request-validator": "params",
    }


def test_a_document_without_gateway_responses_is_refused() -> None:
    with pytest.raises(ValueError) as failure:
        _define([], {"paths": {}})
    assert str(failure.value) == (
        "the API document has no x-amazon-apigateway-gateway-responses section"
    )


def test_every_pool_given_is_trusted_in_order() -> None:
    document = api_definition(
        {GATEWAY_RESPONSES_KEY: {}}, INVOKE_ARN, "t", user_pool_arns=(OTHER_POOL, POOL)
    )
    authorizer = document["components"]["securitySchemes"]["readers"]
    assert authorizer["x-amazon-apigateway-authorizer"]["providerARNs"] == [OTHER_POOL, POOL]


def test_options_is_answered_by_the_gateway_even_when_the_spec_declares_it() -> None:
    spec = {
        "paths": {
            "/only-options": {"options": {"operationId": "own"}},
            "/all": {method: {} for method in ("delete", "patch", "head", "options", "put")},
        },
        GATEWAY_RESPONSES_KEY: {},
    }
    paths = _define([], spec)["paths"]
    assert paths["/only-options"] == {"options": {"operationId": "own"}}, "no method: no mocks"
    assert set(paths["/all"]) == {"put", "delete", "patch", "head", "options", ANY_METHOD}
    assert paths["/all"]["put"] == {
        "security": [],
        "x-amazon-apigateway-integration": _proxy(),
        "x-amazon-apigateway-request-validator": "params",
    }
    allow = paths["/all"][ANY_METHOD]["x-amazon-apigateway-integration"]["responses"]["default"]
    assert allow["responseParameters"]["method.response.header.Allow"] == (
        "'PUT, DELETE, PATCH, HEAD'"
    )
    methods = paths["/all"]["options"]["x-amazon-apigateway-integration"]["responses"]["default"]
    assert methods["responseParameters"]["method.response.header.Access-Control-Allow-Methods"] == (
        "'PUT, DELETE, PATCH, HEAD, OPTIONS'"
    )


def test_the_405_body_is_the_lambdas_own() -> None:
    assert method_not_allowed_body("GET, POST") == {
        "error": {
            "code": "method_not_allowed",
            "message": "This path takes GET, POST only.",
            "allowed": "GET, POST",
        }
    }


def test_the_gateway_echoes_the_origin_for_every_kind_of_refusal() -> None:
    spec = _spec()
    spec[GATEWAY_RESPONSES_KEY]["DEFAULT_4XX"] = {
        "responseParameters": {},
        "responseTemplates": {"application/json": "{}"},
    }
    responses = _define(TWO_ORIGINS, spec)[GATEWAY_RESPONSES_KEY]
    assert responses["DEFAULT_4XX"] == {
        "responseParameters": {
            "gatewayresponse.header.Vary": "'Origin'",
            "gatewayresponse.header.Access-Control-Expose-Headers": EXPOSED,
            "gatewayresponse.header.Access-Control-Allow-Origin": "method.request.header.Origin",
        },
        "responseTemplates": {"application/json": "{}"},
    }
    assert json.loads(responses["THROTTLED"]["responseTemplates"]["application/json"]) == {
        "error": {"code": "throttled"}
    }
