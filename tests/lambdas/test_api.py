"""The story API through the handler, on moto DynamoDB, with the real router and mock provider."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from lambdas.story_generator.errors import NoProviderAvailable
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.settings import load_settings
from tests.lambdas.fake_providers import FakeProvider, settings_for
from tests.lambdas.story_doubles import FakeRouter, Reply, beat_reply, invoke

START = {"user_id": "reader-1", "genre": "liminal", "premise": "The 3:07 to nowhere"}
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
def call(handler: StoryHandler) -> Call:
    return lambda method, path, body=None, headers=None: invoke(
        handler, method, path, body, headers
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
        ({"genre": "liminal"}, "missing_field", "user_id"),
        ({"user_id": "reader-1"}, "missing_field", "genre"),
        ({**START, "mood": "dark"}, "unknown_field", "mood"),
        ({**START, "user_id": 42}, "invalid_type", "user_id"),
        ({**START, "user_id": ""}, "invalid_length", "user_id"),
        ({**START, "user_id": "u" * 129}, "invalid_length", "user_id"),
        ({**START, "user_id": "reader 1"}, "invalid_format", "user_id"),
        ({**START, "user_id": "reader-1\n"}, "invalid_format", "user_id"),
        ({**START, "user_id": None}, "invalid_type", "user_id"),
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
        ('{"user_id": "a", "genre": "liminal", "max_beats": NaN}', "invalid_json", None),
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
        ("GET", "/stories", "POST"),
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
