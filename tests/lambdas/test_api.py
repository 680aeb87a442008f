"""The story API through the handler, on moto DynamoDB, with the real router and mock provider.

Most requests are the dev server's proxy events, from a reader signed in to moto's
Cognito (the claims of their ID token, as API Gateway's authorizer passes them); the
routing tests at the end send events shaped as API Gateway sends them, on the
execute-api host and on custom domains.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
import yaml

from components.api_definition import (
    ANY_METHOD,
    OPENAPI_PATH,
    api_definition,
    method_not_allowed_body,
)
from lambdas.devserver import LocalContext
from lambdas.story_generator.errors import NoProviderAvailable
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.settings import load_settings
from tests.lambdas.aws_fixtures import Reader
from tests.lambdas.fake_providers import FakeProvider, settings_for
from tests.lambdas.story_doubles import (
    READER_CLAIMS,
    USER_POOL_ARN,
    FakeRouter,
    Reply,
    beat_reply,
    invoke,
)

START = {"genre": "liminal", "premise": "The 3:07 to nowhere"}
UNKNOWN_SESSION = "0badc0de-0000-4000-8000-00000000abcd"


@pytest.fixture
def environment(session_table: str) -> dict[str, str]:
    return {"ENVIRONMENT": "dev", "SESSION_TABLE_NAME": session_table, "SESSION_TTL_DAYS": "7"}


@pytest.fixture
def handler(environment: dict[str, str]) -> StoryHandler:
    return build_handler(load_settings(environment))


@pytest.fixture
def fake_router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def faked(environment: dict[str, str], fake_router: FakeRouter) -> StoryHandler:
    """The handler with a router the test controls."""
    return build_handler(load_settings(environment), generator=fake_router)


Call = Callable[..., Reply]


@pytest.fixture
def reader(sign_in: Callable[[str], Reader]) -> Reader:
    return sign_in("alice")


@pytest.fixture
def call(handler: StoryHandler, reader: Reader) -> Call:
    """A request of the signed-in `reader`."""
    return lambda method, path, body=None, headers=None: invoke(
        handler, method, path, body, headers, claims=reader.claims
    )


def start(call: Call, **fields: Any) -> Reply:
    reply = call("POST", "/stories", {**START, **fields})
    assert reply.status == 201, reply.body
    return reply


def test_full_story_over_the_api(call: Call) -> None:
    started = start(call, max_beats=3)
    session_id = started.body["session_id"]
    assert started.headers["Location"] == f"/stories/{session_id}"
    assert started.body["beat"]["index"] == 0 and not started.body["beat"]["ending"]
    assert 2 <= len(started.body["beat"]["choices"]) <= 4
    beat = started.body["beat"]
    while not beat["ending"]:
        reply = call("POST", f"/stories/{session_id}/choices", {"beat": beat["index"], "choice": 1})
        assert reply.status == 200, reply.body
        assert reply.body["session_id"] == session_id
        beat = reply.body["beat"]
    assert beat["index"] == 2 and beat["choices"] == [], "the story ends at max_beats"
    session = call("GET", f"/stories/{session_id}")
    assert session.status == 200
    assert session.body["status"] == "completed" and session.body["genre"] == "liminal"
    assert [b.get("chosen") for b in session.body["beats"]] == [1, 1, None]
    assert session.body["beats"][0] == {**started.body["beat"], "chosen": 1}
    ended = call("POST", f"/stories/{session_id}/choices", {"beat": 2, "choice": 0})
    assert (ended.status, ended.body["error"]["code"]) == (409, "story_completed")


def test_session_expiry_follows_session_ttl_days(call: Call) -> None:
    session_id = start(call).body["session_id"]
    session = call("GET", f"/stories/{session_id}").body
    assert session["expires_at"][:10] > session["created_at"][:10]
    item = boto3.client("dynamodb").query(
        TableName=next(iter(boto3.client("dynamodb").list_tables()["TableNames"])),
        KeyConditionExpression="session_id = :id",
        ExpressionAttributeValues={":id": {"S": session_id}},
    )["Items"][0]
    created_s = int(item["created_at"]["N"]) // 1000
    assert int(item["expires_at"]["N"]) == created_s + 7 * 86_400


def test_retried_start_with_idempotency_key_returns_the_same_session(call: Call) -> None:
    headers = {"Idempotency-Key": "01HZX3-start-1"}
    first = call("POST", "/stories", START, headers)
    again = call("POST", "/stories", START, headers)
    assert first.status == again.status == 201
    assert again.body == first.body
    other = call("POST", "/stories", START, {"Idempotency-Key": "01HZX3-start-2"})
    assert other.body["session_id"] != first.body["session_id"]


def test_idempotency_key_reused_for_another_story_is_a_409(call: Call) -> None:
    headers = {"idempotency-key": "key-1"}
    assert call("POST", "/stories", START, headers).status == 201
    reply = call("POST", "/stories", {**START, "genre": "horror"}, headers)
    assert (reply.status, reply.body["error"]["code"]) == (409, "idempotency_key_reused")


def test_retried_choice_returns_the_stored_beat(call: Call) -> None:
    session_id = start(call).body["session_id"]
    first = call("POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    again = call("POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    assert first.status == again.status == 200 and again.body == first.body
    assert len(call("GET", f"/stories/{session_id}").body["beats"]) == 2


def test_other_choice_on_an_answered_beat_is_a_409(call: Call) -> None:
    session_id = start(call).body["session_id"]
    call("POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    reply = call("POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 1})
    assert reply.status == 409
    assert reply.body["error"] | {"message": ""} == {
        "code": "choice_already_made",
        "message": "",
        "beat": 0,
        "chosen": 0,
        "current_beat": 1,
    }


def test_no_provider_gives_503_with_retry_after_and_leaves_the_session(
    faked: StoryHandler, fake_router: FakeRouter
) -> None:
    session_id = invoke(faked, "POST", "/stories", START).body["session_id"]
    before = invoke(faked, "GET", f"/stories/{session_id}").body
    fake_router.fail = NoProviderAvailable(
        {"bedrock-claude": "circuit_open", "openai": "timeout"}, retry_after_s=12.3
    )
    reply = invoke(faked, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 1})
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "13", "whole seconds, rounded up"
    assert reply.body["error"]["code"] == "no_provider_available"
    assert reply.body["error"]["providers"] == {
        "bedrock-claude": "circuit_open",
        "openai": "timeout",
    }
    assert invoke(faked, "GET", f"/stories/{session_id}").body == before
    fake_router.fail = None
    retried = invoke(faked, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 1})
    assert retried.status == 200 and retried.body["beat"]["index"] == 1


def test_a_malformed_reply_falls_back_to_the_next_provider(
    environment: dict[str, str], fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    fake_openai.reply("Once upon a time, in prose rather than JSON.")
    fake_anthropic.reply(beat_reply("The platform is empty.", choices=2))
    handler = build_handler(
        settings_for(fake_openai.entry(), fake_anthropic.entry(priority=2), **environment)
    )
    reply = invoke(handler, "POST", "/stories", START)
    assert reply.status == 201, reply.body
    assert reply.body["beat"]["text"] == "The platform is empty."
    assert len(fake_openai.requests) == 1 and len(fake_anthropic.requests) == 1
    prompt = fake_anthropic.requests[0].body
    assert "The 3:07 to nowhere" in json.dumps(prompt), "the premise reaches the provider"


def test_real_router_with_every_provider_down_gives_503(
    environment: dict[str, str], fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    fake_openai.fail(500, "server_error")
    fake_anthropic.fail(529, "overloaded_error")
    handler = build_handler(
        settings_for(fake_openai.entry(), fake_anthropic.entry(priority=2), **environment)
    )
    session_id = invoke(build_handler(load_settings(environment)), "POST", "/stories", START).body[
        "session_id"
    ]
    reply = invoke(handler, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    assert reply.status == 503 and int(reply.headers["Retry-After"]) >= 1
    assert reply.body["error"]["providers"] == {"openai": "unavailable", "anthropic": "unavailable"}
    assert len(invoke(handler, "GET", f"/stories/{session_id}").body["beats"]) == 1


def test_health_never_calls_a_provider(
    environment: dict[str, str], fake_openai: FakeProvider
) -> None:
    handler = build_handler(settings_for(fake_openai.entry(), **environment))
    reply = invoke(handler, "GET", "/health")
    assert reply.body["providers"][0] | {"circuit": "closed"} == reply.body["providers"][0]
    assert fake_openai.requests == []


def test_unexpected_error_is_a_500_without_internals(
    faked: StoryHandler, fake_router: FakeRouter
) -> None:
    fake_router.fail = RuntimeError("password=hunter2 in /var/task/story.py")
    reply = invoke(faked, "POST", "/stories", START)
    assert reply.status == 500
    assert reply.body["error"]["code"] == "internal_error"
    assert "hunter2" not in json.dumps(reply.body) and "story.py" not in json.dumps(reply.body)
    assert reply.body["error"]["request_id"], "the request id lets operators find the log"


def test_model_ending_completes_the_story(faked: StoryHandler, fake_router: FakeRouter) -> None:
    session_id = invoke(faked, "POST", "/stories", START).body["session_id"]
    fake_router.reply = lambda request: beat_reply("The end of the line.", choices=0)
    reply = invoke(faked, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    assert reply.body["beat"] == {
        "index": 1,
        "text": "The end of the line.",
        "choices": [],
        "ending": True,
    }
    assert invoke(faked, "GET", f"/stories/{session_id}").body["status"] == "completed"


def test_health_reports_each_provider_circuit(call: Call, session_table: str) -> None:
    reply = call("GET", "/health")
    assert reply.status == 200
    assert reply.body == {
        "status": "ok",
        "environment": "dev",
        "providers": [
            {"name": "mock", "kind": "mock", "model": "mock", "priority": 1, "circuit": "closed"}
        ],
    }


def test_health_is_degraded_when_every_circuit_is_open(
    environment: dict[str, str], session_table: str
) -> None:
    boto3.client("dynamodb").put_item(
        TableName=session_table,
        Item={
            "session_id": {"S": "circuit#mock"},
            "timestamp": {"N": "0"},
            "failures": {"N": "3"},
            "open_until": {"N": "99999999999"},
        },
    )
    handler = build_handler(load_settings(environment))
    reply = invoke(handler, "GET", "/health")
    assert reply.status == 200 and reply.body["status"] == "degraded"
    assert reply.body["providers"][0]["circuit"] == "open"


# --- every validation error -------------------------------------------------------------

LONG = "x" * 1001


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"premise": "A ferry"}, "missing_field", "genre"),
        ({**START, "mood": "dark"}, "unknown_field", "mood"),
        ({**START, "user_id": "someone-else"}, "unknown_field", "user_id"),
        ({**START, "genre": "western"}, "invalid_value", "genre"),
        ({**START, "genre": ["liminal"]}, "invalid_type", "genre"),
        ({**START, "premise": ""}, "invalid_length", "premise"),
        ({**START, "premise": LONG}, "invalid_length", "premise"),
        ({**START, "max_beats": 2}, "out_of_range", "max_beats"),
        ({**START, "max_beats": 31}, "out_of_range", "max_beats"),
        ({**START, "max_beats": 5.5}, "invalid_type", "max_beats"),
        ({**START, "max_beats": "5"}, "invalid_type", "max_beats"),
        ({**START, "max_beats": True}, "invalid_type", "max_beats"),
        ([START], "invalid_type", "body"),
        ("null", "invalid_type", "body"),
        ('"text"', "invalid_type", "body"),
        ("{", "invalid_json", None),
        ('{"genre": "liminal", "max_beats": NaN}', "invalid_json", None),
        ("", "missing_body", None),
        ("   ", "missing_body", None),
        (b"\xff\xfe{", "invalid_json", None),
    ],
)
def test_invalid_start_bodies_are_400(call: Call, body: Any, code: str, field: str | None) -> None:
    reply = call("POST", "/stories", body)
    assert reply.status == 400, reply.body
    assert reply.body["error"]["code"] == code
    assert reply.body["error"].get("field") == field
    assert reply.body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"beat": 0}, "missing_field", "choice"),
        ({"choice": 0}, "missing_field", "beat"),
        ({"beat": 0, "choice": 0, "extra": 1}, "unknown_field", "extra"),
        ({"beat": -1, "choice": 0}, "out_of_range", "beat"),
        ({"beat": 30, "choice": 0}, "out_of_range", "beat"),
        ({"beat": 0, "choice": 4}, "out_of_range", "choice"),
        ({"beat": 0, "choice": "1"}, "invalid_type", "choice"),
        ({"beat": 0, "choice": 1.0}, "invalid_type", "choice"),
        ({"beat": 5, "choice": 0}, "beat_out_of_range", "beat"),
        ({"beat": 0, "choice": 3}, "choice_out_of_range", "choice"),
    ],
)
def test_invalid_choices_are_400(
    faked: StoryHandler, body: Any, code: str, field: str | None
) -> None:
    session_id = invoke(faked, "POST", "/stories", START).body["session_id"]  # 3 choices
    reply = invoke(faked, "POST", f"/stories/{session_id}/choices", body)
    assert (reply.status, reply.body["error"]["code"]) == (400, code), reply.body
    assert reply.body["error"].get("field") == field


@pytest.mark.parametrize(
    "key",
    ["", "k" * 129, "has space", "tab\tkey", "caf\u00e9"],
    ids=["empty", "long", "space", "tab", "non-ascii"],
)
def test_invalid_idempotency_keys_are_400(call: Call, key: str) -> None:
    reply = call("POST", "/stories", START, {"Idempotency-Key": key})
    assert reply.status == 400, reply.body
    assert reply.body["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/stories/not-a-uuid"),
        ("GET", f"/stories/{UNKNOWN_SESSION.upper()}"),
        ("GET", "/stories/circuit%23mock"),
        ("POST", "/stories/12345/choices"),
    ],
)
def test_malformed_session_ids_are_400(call: Call, method: str, path: str) -> None:
    reply = call(method, path, {"beat": 0, "choice": 0} if method == "POST" else None)
    assert (reply.status, reply.body["error"]["code"]) == (400, "invalid_session_id")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", f"/stories/{UNKNOWN_SESSION}"), ("POST", f"/stories/{UNKNOWN_SESSION}/choices")],
)
def test_unknown_sessions_are_404(call: Call, method: str, path: str) -> None:
    reply = call(method, path, {"beat": 0, "choice": 0} if method == "POST" else None)
    assert (reply.status, reply.body["error"]["code"]) == (404, "session_not_found")


def test_body_over_8_kib_is_413_before_parsing(call: Call) -> None:
    reply = call("POST", "/stories", "{" * (8 * 1024 + 1))
    assert reply.status == 413, "the size is checked before the (invalid) JSON is parsed"
    assert reply.body["error"] == {
        "code": "payload_too_large",
        "message": "The request body is 8193 bytes; send at most 8192 bytes.",
        "limit_bytes": 8192,
    }


def test_body_of_exactly_8_kib_is_accepted(call: Call) -> None:
    text = json.dumps(START)
    assert call("POST", "/stories", text + " " * (8 * 1024 - len(text))).status == 201


def test_base64_encoded_bodies_are_decoded(handler: StoryHandler) -> None:
    event_body = base64.b64encode(json.dumps(START).encode()).decode()
    reply = invoke(
        lambda event, context: handler(
            {**event, "body": event_body, "isBase64Encoded": True}, context
        ),
        "POST",
        "/stories",
        "ignored",
    )
    assert reply.status == 201
    broken = invoke(
        lambda event, context: handler({**event, "body": "***", "isBase64Encoded": True}, context),
        "POST",
        "/stories",
        "ignored",
    )
    assert (broken.status, broken.body["error"]["code"]) == (400, "invalid_body")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/stories", "GET, POST"),
        ("DELETE", f"/stories/{UNKNOWN_SESSION}", "GET"),
        ("PUT", f"/stories/{UNKNOWN_SESSION}/choices", "POST"),
        ("POST", "/health", "GET"),
    ],
)
def test_wrong_methods_are_405_with_allow(call: Call, method: str, path: str, allowed: str) -> None:
    reply = call(method, path)
    assert (reply.status, reply.body["error"]["code"]) == (405, "method_not_allowed")
    assert reply.headers["Allow"] == allowed


@pytest.mark.parametrize("path", ["/", "/story", "/stories/x/y/z", "/healthz"])
def test_unknown_routes_are_404_json(call: Call, path: str) -> None:
    reply = call("GET", path)
    assert (reply.status, reply.body["error"]["code"]) == (404, "route_not_found")
    assert reply.headers["Content-Type"] == "application/json"


def test_every_response_is_json(call: Call) -> None:
    for reply in (call("GET", "/health"), call("GET", "/nope"), call("POST", "/stories", "{")):
        assert reply.headers["Content-Type"] == "application/json"


def test_unused_session_id_is_valid_uuid() -> None:
    assert str(uuid.UUID(UNKNOWN_SESSION)) == UNKNOWN_SESSION


# --- routing, as API Gateway's REST proxy integration calls the function ------------------

ALLOWED_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS")
OTHER_METHODS = ("TRACE", "CONNECT", "QUERY", "PROPFIND", "BREW")
API_ID = "abc123defg"
EXECUTE_API_HOST = f"{API_ID}.execute-api.us-east-1.amazonaws.com"


def gateway_event(
    method: str,
    resource: str,
    path: str,
    client_path: str,
    host: str = EXECUTE_API_HOST,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    claims: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A REST API proxy event as API Gateway sends it (the shape of AWS's documented example).

    `path` is what API Gateway puts in `path`; `client_path` the path the client sent
    (`requestContext.path`): with the stage on the execute-api host, with the base path
    on a custom domain. `claims`: the Cognito authorizer's (default `READER_CLAIMS`).
    """
    template = resource.split("/")[1:]
    values = {
        part[1:-1]: unquote(value)
        for part, value in zip(template, path.split("/")[-len(template) :], strict=True)
        if part.startswith("{")
    }
    all_headers = {
        "Host": host,
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": "curl/8.5.0",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": values or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": API_ID,
            "authorizer": {"claims": dict(READER_CLAIMS if claims is None else claims)},
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "extendedRequestId": "c3R5bGUtZXh0ZW5kZWQ=",
            "httpMethod": method,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
            "path": client_path,
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": "09/Apr/2026:12:34:56 +0000",
            "requestTimeEpoch": 1775738096000,
            "resourceId": "a1b2c3",
            "resourcePath": resource,
            "stage": "dev",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def send(handler: StoryHandler, event: dict[str, Any]) -> Reply:
    result = handler(event, LocalContext())
    return Reply(result["statusCode"], result["headers"], json.loads(result["body"]))


# (host, the client's prefix, whether API Gateway also leaves the prefix in `path`)
DEPLOYMENTS = {
    # https://abc123defg.execute-api.us-east-1.amazonaws.com/dev/stories
    "execute-api stage": (EXECUTE_API_HOST, "/dev", False),
    # https://api.example.com/v1/stories, base path mapping `v1`: API Gateway keeps the
    # base path in `path` as well (as reported for REST proxy events)...
    "custom domain base path": ("api.example.com", "/v1", True),
    # ...and the prefix is found the same way if it does not.
    "custom domain base path, bare path": ("api.example.com", "/v1", False),
    "custom domain two-level base path": ("api.example.com", "/story/v1", True),
    # https://api.example.com/stories, an empty base path mapping.
    "custom domain root": ("api.example.com", "", False),
}


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_location_is_the_path_the_client_addresses_the_session_by(
    handler: StoryHandler, deployment: str
) -> None:
    host, prefix, prefix_in_path = DEPLOYMENTS[deployment]

    def event(method: str, resource: str, path: str, body: str | None = None) -> dict[str, Any]:
        seen = prefix + path if prefix_in_path else path
        return gateway_event(method, resource, seen, prefix + path, host, body)

    started = send(handler, event("POST", "/stories", "/stories", json.dumps(START)))
    assert started.status == 201, started.body
    session_id = started.body["session_id"]
    location = started.headers["Location"]
    assert location == f"{prefix}/stories/{session_id}", "the stage or base path is kept"
    assert location.startswith(prefix + "/")
    resource_path = location.removeprefix(prefix)
    fetched = send(handler, event("GET", "/stories/{session_id}", resource_path))
    assert (fetched.status, fetched.body["session_id"]) == (200, session_id), (
        "following Location reaches the session"
    )
    chose = send(
        handler,
        event(
            "POST",
            "/stories/{session_id}/choices",
            f"{resource_path}/choices",
            json.dumps({"beat": 0, "choice": 0}),
        ),
    )
    assert chose.status == 200, chose.body


def test_location_has_no_prefix_without_a_client_path(handler: StoryHandler) -> None:
    event = gateway_event("POST", "/stories", "/stories", "/dev/stories", body=json.dumps(START))
    del event["requestContext"]["path"]
    reply = send(handler, event)
    assert reply.headers["Location"] == f"/stories/{reply.body['session_id']}"


def test_location_under_the_dev_server_has_no_prefix(call: Call) -> None:
    reply = start(call)
    assert reply.headers["Location"] == f"/stories/{reply.body['session_id']}"


def api_document() -> dict[str, Any]:
    spec = yaml.safe_load(OPENAPI_PATH.read_text())
    return api_definition(spec, "arn:aws:apigateway:test", "test", user_pool_arns=[USER_POOL_ARN])


def gateway_mock_405(path: str) -> tuple[str, dict[str, Any]]:
    """API Gateway's own answer to a method `path` does not declare: (Allow, body)."""
    mock = api_document()["paths"][path][ANY_METHOD]["x-amazon-apigateway-integration"]
    answer = mock["responses"]["default"]
    allow = answer["responseParameters"]["method.response.header.Allow"].strip("'")
    return allow, json.loads(answer["responseTemplates"]["application/json"])


@pytest.mark.parametrize("path", yaml.safe_load(OPENAPI_PATH.read_text())["paths"])
def test_every_other_method_is_the_405_api_gateway_answers(
    handler: StoryHandler, path: str
) -> None:
    served = {method.upper() for method in api_document()["paths"][path] if method != ANY_METHOD}
    allow, gateway_body = gateway_mock_405(path)
    assert gateway_body == method_not_allowed_body(allow)
    concrete = path.replace("{session_id}", UNKNOWN_SESSION)
    for method in [*ALLOWED_METHODS, *OTHER_METHODS]:
        if method in served:
            continue
        reply = send(handler, gateway_event(method, path, concrete, f"/dev{concrete}"))
        assert reply.status == 405, (method, path)
        assert reply.headers["Allow"] == allow, (method, path)
        assert reply.body == method_not_allowed_body(allow), (
            f"{method} {path}: the Lambda's 405 must be API Gateway's, so make dev matches"
        )


def test_405_comes_before_the_session_id_and_the_body_are_read(call: Call) -> None:
    reply = call("DELETE", "/stories/not-a-session", "{")
    assert (reply.status, reply.headers["Allow"]) == (405, "GET")


def test_unknown_route_lists_the_routes(call: Call) -> None:
    reply = call("GET", "/stories/x/y/z")
    assert reply.body["error"]["message"] == (
        "No route GET /stories/x/y/z; the API has GET /stories, POST /stories, "
        "GET /stories/{session_id}, POST /stories/{session_id}/choices, GET /health."
    )


@pytest.mark.parametrize("path", ["/stories/", "//stories", "/stories//choices", "/health/"])
def test_empty_segments_do_not_match_a_route(call: Call, path: str) -> None:
    reply = call("GET", path)
    assert (reply.status, reply.body["error"]["code"]) == (404, "route_not_found")


def test_path_parameters_are_percent_decoded(call: Call) -> None:
    session_id = start(call).body["session_id"]
    encoded = "".join(f"%{ord(char):02X}" for char in session_id)
    reply = call("GET", f"/stories/{encoded}")
    assert (reply.status, reply.body["session_id"]) == (200, session_id)


@pytest.mark.parametrize("name", ["Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"])
def test_header_names_are_case_insensitive(call: Call, name: str) -> None:
    first = call("POST", "/stories", START, {"Idempotency-Key": "same-key"})
    again = call("POST", "/stories", START, {name: "same-key"})
    assert again.body["session_id"] == first.body["session_id"], name


def test_headers_are_read_from_multi_value_headers_alone(handler: StoryHandler) -> None:
    body = json.dumps(START)
    first = send(
        handler,
        gateway_event(
            "POST",
            "/stories",
            "/stories",
            "/dev/stories",
            body=body,
            headers={"Idempotency-Key": "k-1"},
        ),
    )
    event = gateway_event("POST", "/stories", "/stories", "/dev/stories", body=body)
    event["headers"] = None
    event["multiValueHeaders"]["idempotency-key"] = ["k-0", "k-1"]
    again = send(handler, event)
    assert again.body["session_id"] == first.body["session_id"], "the last value counts"


def test_errors_carry_api_gateway_request_id(faked: StoryHandler, fake_router: FakeRouter) -> None:
    fake_router.fail = RuntimeError("boom")
    event = gateway_event("POST", "/stories", "/stories", "/dev/stories", body=json.dumps(START))
    reply = send(faked, event)
    assert reply.status == 500
    assert reply.body["error"]["request_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_the_result_is_a_lambda_proxy_result(handler: StoryHandler) -> None:
    result = handler(gateway_event("GET", "/health", "/health", "/dev/health"), LocalContext())
    assert set(result) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert result["isBase64Encoded"] is False and isinstance(result["body"], str)
    assert result["headers"] == {"Content-Type": "application/json"}
