"""api.py: the exact 400 bodies, and the request details, that other tests leave loose.

The JSON error body of a 4xx (code, message, field) is the API's contract. These
tests pin it down in full for a malformed session id (on both routes that take
one: its `field` is `session_id`), for a base64 body that does not decode, and
for an empty body. They also pin down that query parameters are read from
`multiValueQueryStringParameters` (the last value of each) when API Gateway sends
no `queryStringParameters`, and that `Headers` iterates over its lower-cased names
as a `Mapping` must.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from lambdas.story_generator.api import Headers
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.sessions import SESSION_ID_PATTERN
from lambdas.story_generator.settings import load_settings
from tests.lambdas.story_doubles import FakeRouter, invoke

START = {"genre": "liminal", "premise": "The 3:07 to nowhere"}

Event = Mapping[str, Any]
ProxyHandler = Callable[[Event, Any], Mapping[str, Any]]


@pytest.fixture
def handler() -> StoryHandler:
    """The handler with in-memory sessions and a router the test controls (no AWS)."""
    return build_handler(load_settings({}), generator=FakeRouter())


def rewriting(handler: StoryHandler, **fields: Any) -> ProxyHandler:
    """`handler`, called with each event's top-level `fields` replaced (as API Gateway
    may send them, where the dev server's events differ)."""

    def call(event: Event, context: Any) -> Mapping[str, Any]:
        return handler({**event, **fields}, context)

    return call


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/stories/not-a-uuid", None),
        ("POST", "/stories/12345/choices", {"beat": 0, "choice": 0}),
    ],
    ids=["get-story", "make-choice"],
)
def test_a_malformed_session_id_is_a_400_naming_the_session_id_field(
    handler: StoryHandler, method: str, path: str, body: object
) -> None:
    reply = invoke(handler, method, path, body)
    assert reply.status == 400
    assert reply.body == {
        "error": {
            "code": "invalid_session_id",
            "message": "`session_id` must be a session id as returned by POST /stories (a "
            f"lower-case UUID matching {SESSION_ID_PATTERN}).",
            "field": "session_id",
        }
    }


def test_a_body_that_is_not_base64_is_a_400_saying_so(handler: StoryHandler) -> None:
    encoded = rewriting(handler, body="***", isBase64Encoded=True)
    reply = invoke(encoded, "POST", "/stories", "ignored")
    assert reply.status == 400
    assert reply.body == {
        "error": {"code": "invalid_body", "message": "The request body is not valid base64."}
    }


@pytest.mark.parametrize("body", ["", "  \n\t "], ids=["empty", "blank"])
def test_an_empty_body_is_a_400_asking_for_a_json_object(handler: StoryHandler, body: str) -> None:
    reply = invoke(handler, "POST", "/stories", body)
    assert reply.status == 400
    assert reply.body == {
        "error": {
            "code": "missing_body",
            "message": "The request body is empty; send a JSON object.",
        }
    }


def test_query_parameters_are_read_from_multi_value_parameters_alone(
    handler: StoryHandler,
) -> None:
    for _ in range(2):
        assert invoke(handler, "POST", "/stories", START).status == 201
    only_multi_values = rewriting(
        handler,
        queryStringParameters=None,
        multiValueQueryStringParameters={"limit": ["5", "1"]},
    )
    reply = invoke(only_multi_values, "GET", "/stories")
    assert reply.status == 200, reply.body
    assert len(reply.body["stories"]) == 1, "the last listed value of `limit` counts"
    assert reply.body["next_cursor"] is not None


def test_headers_iterate_over_their_lower_cased_names() -> None:
    headers = Headers({"Idempotency-Key": "key-1", "ORIGIN": "https://reader.example.com"})
    assert list(headers) == ["idempotency-key", "origin"]
    assert dict(headers) == {"idempotency-key": "key-1", "origin": "https://reader.example.com"}
    assert len(headers) == 2
