"""Reader identity: the user pool, the authorizer on every story route, and CORS.

Tokens are checked by API Gateway's Cognito authorizer before the Lambda runs, so
a missing, expired or forged token, or one from another pool, is refused at the
authorizer's configuration: exactly this stack's pool, on every story method.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.config import ConfigError, parse_stack_config
from components.identity import OidcFederation, ReaderIdentity, ReaderIdentityArgs
from components.naming import Naming
from components.offline import OfflineRun, run_program, run_stack, stack_config
from lambdas.story_generator.cors import ALLOWED_HEADERS, EXPOSED_HEADERS, MAX_AGE_S

NS = "liminal-transit"
POOL = "aws:cognito/userPool:UserPool"
CLIENT = "aws:cognito/userPoolClient:UserPoolClient"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head")


def _body(run: OfflineRun) -> dict[str, Any]:
    return dict(json.loads(run.one("aws:apigateway/restApi:RestApi")["body"]))


def _operations(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in body["paths"].items()
        for method in HTTP_METHODS
        if method in item
    ]


def test_every_story_operation_requires_a_token_of_this_stacks_pool(run: OfflineRun) -> None:
    body = _body(run)
    scheme = body["components"]["securitySchemes"]["readers"]
    assert scheme["x-amazon-apigateway-authtype"] == "cognito_user_pools"
    assert (scheme["in"], scheme["name"]) == ("header", "Authorization")
    # Exactly this stack's pool: a token of any other pool fails the authorizer.
    (pool_arn,) = scheme["x-amazon-apigateway-authorizer"]["providerARNs"]
    assert scheme["x-amazon-apigateway-authorizer"]["type"] == "cognito_user_pools"
    assert pool_arn.startswith("arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_")
    assert run.outputs["user_pool_id"] == pool_arn.rsplit("/", 1)[1]
    operations = _operations(body)
    assert len(operations) >= 4
    for path, method, operation in operations:
        expected = [] if path == "/health" else [{"readers": []}]
        assert operation["security"] == expected, (path, method)
    assert "security" not in body, "API Gateway reads security per operation"


def test_a_refused_token_gets_401_json_a_browser_can_read(run: OfflineRun) -> None:
    responses = _body(run)["x-amazon-apigateway-gateway-responses"]
    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["statusCode"] == "401"
    body = json.loads(unauthorized["responseTemplates"]["application/json"])
    assert body["error"]["code"] == "unauthorized"
    assert (
        "gatewayresponse.header.Access-Control-Allow-Origin" in unauthorized["responseParameters"]
    )


@pytest.mark.parametrize("kind", ["DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "THROTTLED"])
def test_gateway_responses_carry_cors_headers(stack_runs: dict[str, OfflineRun], kind: str) -> None:
    for stack, run in stack_runs.items():
        headers = _body(run)["x-amazon-apigateway-gateway-responses"][kind]["responseParameters"]
        assert headers["gatewayresponse.header.Vary"] == "'Origin'", (stack, kind)
        assert headers["gatewayresponse.header.Access-Control-Expose-Headers"] == (
            f"'{EXPOSED_HEADERS}'"
        )
    production = _body(stack_runs["production"])["x-amazon-apigateway-gateway-responses"][kind]
    assert (
        production["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
        == "'https://reader.example'"
    ), "one origin: named, never '*'"
    dev = _body(stack_runs["dev"])["x-amazon-apigateway-gateway-responses"][kind]
    assert dev["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == (
        "method.request.header.Origin"
    ), "several origins: the request's, as a static value cannot name them all"


def test_api_gateway_answers_every_preflight_itself(run: OfflineRun) -> None:
    """OPTIONS on every path is a mock: no Lambda invocation, no token needed."""
    for path, item in _body(run)["paths"].items():
        preflight = item["options"]
        assert preflight["security"] == [], path
        integration = preflight["x-amazon-apigateway-integration"]
        assert integration["type"] == "mock"
        (response,) = integration["responses"].values()
        assert response["statusCode"] == "204"
        headers = response["responseParameters"]
        declared = [m.upper() for m in HTTP_METHODS if m in item]
        methods = headers["method.response.header.Access-Control-Allow-Methods"]
        assert methods == f"'{', '.join([*declared, 'OPTIONS'])}'", path
        assert headers["method.response.header.Access-Control-Allow-Headers"] == (
            f"'{ALLOWED_HEADERS}'"
        )
        assert headers["method.response.header.Access-Control-Max-Age"] == f"'{MAX_AGE_S}'"
        assert set(preflight["responses"]["204"]["headers"]) >= {
            "Access-Control-Allow-Origin",
            "Access-Control-Allow-Methods",
            "Access-Control-Allow-Headers",
        }


def test_preflights_allow_exactly_the_configured_origins(stack_runs: dict[str, OfflineRun]) -> None:
    for stack, run in stack_runs.items():
        origins = parse_stack_config(stack_config(stack)).api.cors_allowed_origins
        for item in _body(run)["paths"].values():
            template = item["options"]["x-amazon-apigateway-integration"]["responses"]["default"][
                "responseTemplates"
            ]["application/json"]
            allowed = template.split("#set($allowed = [", 1)[1].split("])", 1)[0]
            assert json.loads(f"[{allowed}]") == origins, stack
            assert "responseOverride.header.Access-Control-Allow-Origin = $origin" in template


def test_staging_and_production_allow_no_wildcard_origin(stack_runs: dict[str, OfflineRun]) -> None:
    for stack in ("staging", "production"):
        origins = parse_stack_config(stack_config(stack)).api.cors_allowed_origins
        assert origins and "*" not in origins, stack
        assert all(o.startswith("https://") for o in origins), stack
        body = json.dumps(_body(stack_runs[stack]))
        assert "\"'*'\"" not in body, f"{stack} allows every origin somewhere"


def test_the_function_knows_the_same_origins(stack_runs: dict[str, OfflineRun]) -> None:
    for stack, run in stack_runs.items():
        env = run.one("aws:lambda/function:Function")["environment"]["variables"]
        origins = parse_stack_config(stack_config(stack)).api.cors_allowed_origins
        assert json.loads(env["CORS_ALLOWED_ORIGINS"]) == origins, stack


def test_the_user_pool_verifies_email_and_enforces_a_password_policy(run: OfflineRun) -> None:
    pool = run.one(POOL)
    assert pool["usernameAttributes"] == ["email"]
    assert pool["autoVerifiedAttributes"] == ["email"]
    policy = pool["passwordPolicy"]
    assert policy["minimumLength"] >= 12
    assert all(policy[k] for k in ("requireLowercase", "requireUppercase", "requireNumbers"))
    assert pool["name"].startswith("liminal-transit-readers-")


def test_only_production_protects_its_pool_from_deletion(stack_runs: dict[str, OfflineRun]) -> None:
    protection = {s: r.one(POOL)["deletionProtection"] for s, r in stack_runs.items()}
    assert protection == {"dev": "INACTIVE", "staging": "INACTIVE", "production": "ACTIVE"}


def test_the_web_client_keeps_no_secret_and_never_sends_passwords(run: OfflineRun) -> None:
    client = run.one(CLIENT)
    assert client["generateSecret"] is False, "a browser cannot keep a secret"
    flows = set(client["explicitAuthFlows"])
    assert flows == {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    assert not flows & {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_ADMIN_USER_PASSWORD_AUTH"}
    assert client["preventUserExistenceErrors"] == "ENABLED"
    assert "allowedOauthFlows" not in client.inputs, "no hosted pages without callback URLs"


def test_the_stack_exports_what_the_web_reader_needs(run: OfflineRun) -> None:
    assert {"user_pool_id", "user_pool_client_id", "token_issuer"} <= set(run.outputs)
    assert run.outputs["token_issuer"].startswith("https://cognito-idp.us-east-1.amazonaws.com/")


EXISTING_POOL = "arn:aws:cognito-idp:us-east-1:210987654321:userpool/us-east-1_Shared42"


def test_an_existing_user_pool_is_trusted_instead_of_a_new_one() -> None:
    run = run_stack("staging", overrides={f"{NS}:identity": {"existingUserPoolArn": EXISTING_POOL}})
    assert not run.of_type(POOL)
    scheme = _body(run)["components"]["securitySchemes"]["readers"]
    assert scheme["x-amazon-apigateway-authorizer"]["providerARNs"] == [EXISTING_POOL]
    assert "user_pool_id" not in run.outputs


def test_an_organisations_oidc_issuer_is_federated_into_the_pool() -> None:
    def program() -> None:
        ReaderIdentity(
            "readers",
            ReaderIdentityArgs(
                naming=Naming("qa", "qa", "qa-team"),
                domain_prefix="liminal-qa-readers",
                callback_urls=["https://reader.example/signed-in"],
                logout_urls=["https://reader.example/"],
                oidc=OidcFederation(
                    issuer="https://login.example.org", client_id="liminal", client_secret="s3"
                ),
            ),
        )

    run = run_program(program, config={}, region="us-east-1", stack="qa")
    provider = run.one("aws:cognito/identityProvider:IdentityProvider")
    assert provider["providerType"] == "OIDC"
    assert provider["providerDetails"]["oidc_issuer"] == "https://login.example.org"
    client = run.one(CLIENT)
    assert client["allowedOauthFlows"] == ["code"], "code flow (with PKCE), never implicit"
    assert client["supportedIdentityProviders"] == ["COGNITO", "organisation"]
    assert run.one("aws:cognito/userPoolDomain:UserPoolDomain")["domain"] == "liminal-qa-readers"


def _production_with(key: str, value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = dict(stack_config("production"))
    section = json.loads(raw.get(f"{NS}:{key.split('.')[0]}", "{}"))
    section[key.split(".", 1)[1]] = value
    raw[f"{NS}:{key.split('.')[0]}"] = json.dumps(section)
    return raw


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("api.corsAllowedOrigins", ["*"], ["corsAllowedOrigins", "['*']", "production"]),
        (
            "api.corsAllowedOrigins",
            ["http://reader.example"],
            ["corsAllowedOrigins", "http://reader.example", "pattern"],
        ),
        (
            "api.corsAllowedOrigins",
            ["http://localhost:5173"],
            ["corsAllowedOrigins", "may not be allowed in production"],
        ),
        ("api.corsAllowedOrigins", ["*", "https://a.example"], ["'*' allows every origin"]),
        # Refused by the function's own parser, so it would fail every invocation.
        ("api.corsAllowedOrigins", ["https://reader..example"], ["is not an origin"]),
        (
            "api.corsAllowedOrigins",
            ["https://reader.example", "https://reader.example"],
            ["lists an origin twice"],
        ),
        (
            "identity.existingUserPoolArn",
            "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_Abc",
            ["existingUserPoolArn", "eu-west-1", "us-east-1"],
        ),
        ("identity.domainPrefix", "aws-readers", ["domainPrefix", "aws, amazon or cognito"]),
        ("identity.callbackUrls", ["https://reader.example/in"], ["set domainPrefix"]),
    ],
)
def test_bad_identity_and_cors_config_fails_naming_key_and_value(
    key: str, value: Any, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_stack_config(_production_with(key, value))
    for fragment in expected:
        assert fragment in str(failure.value), f"{fragment!r} missing from: {failure.value}"
