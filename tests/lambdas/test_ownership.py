"""Reader identity and ownership, through the handler, with ID tokens from moto's Cognito.

The reader is the `sub` claim API Gateway's authorizer passes
(`requestContext.authorizer.claims`), never anything the body says: a reader lists,
reads and continues their own stories only, another reader's session is answered
exactly as an unknown one, idempotency keys are each reader's own, and session ids
are random.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import boto3
import pytest

from lambdas.devserver import LocalContext, proxy_event
from lambdas.story_generator.api import create_app
from lambdas.story_generator.events import NoEvents
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.router import build_router
from lambdas.story_generator.sessions import DynamoDBSessionStore, StoryKey
from lambdas.story_generator.settings import load_settings
from lambdas.story_generator.story import StoryService, encode_cursor
from tests.lambdas.aws_fixtures import Reader, token_claims
from tests.lambdas.story_doubles import FakeRouter, Reply, invoke

START = {"genre": "mystery", "premise": "A lighthouse with no keeper"}
UNKNOWN_SESSION = "0badc0de-0000-4000-8000-00000000abcd"


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def handler(session_table: str, router: FakeRouter) -> StoryHandler:
    return build_handler(load_settings({"SESSION_TABLE_NAME": session_table}), generator=router)


@pytest.fixture
def alice(sign_in: Callable[[str], Reader]) -> Reader:
    return sign_in("alice")


@pytest.fixture
def bob(sign_in: Callable[[str], Reader]) -> Reader:
    return sign_in("bob")


def as_reader(
    handler: StoryHandler, reader: Reader | None, claims: Mapping[str, str] | None = None
) -> Callable[..., Reply]:
    """Requests with `reader`'s claims (or `claims` as given; None for neither)."""
    sent = reader.claims if reader is not None else claims
    return lambda method, path, body=None, headers=None: invoke(
        handler, method, path, body, headers, claims=sent
    )


def test_tokens_from_the_user_pool_name_distinct_readers(alice: Reader, bob: Reader) -> None:
    assert alice.claims["token_use"] == "id" and alice.claims["cognito:username"] == "alice"
    assert uuid.UUID(alice.sub) != uuid.UUID(bob.sub)


def test_another_readers_session_is_answered_exactly_as_an_unknown_one(
    handler: StoryHandler, alice: Reader, bob: Reader
) -> None:
    mine = as_reader(handler, alice)
    session_id = mine("POST", "/stories", START).body["session_id"]
    theirs = as_reader(handler, bob)
    for method, suffix, body in [("GET", "", None), ("POST", "/choices", {"beat": 0, "choice": 0})]:
        other = theirs(method, f"/stories/{session_id}{suffix}", body)
        unknown = theirs(method, f"/stories/{UNKNOWN_SESSION}{suffix}", body)
        assert (other.status, unknown.status) == (404, 404)
        assert other.body == json.loads(
            json.dumps(unknown.body).replace(UNKNOWN_SESSION, session_id)
        ), "the same answer, so that ids cannot be probed"
        assert other.headers == unknown.headers
    assert mine("GET", f"/stories/{session_id}").body["beats"][0]["choices"], (
        "bob's attempt to choose changed nothing"
    )
    assert len(mine("GET", f"/stories/{session_id}").body["beats"]) == 1


def test_the_reader_is_the_tokens_sub_and_the_session_records_it(
    handler: StoryHandler, alice: Reader
) -> None:
    call = as_reader(handler, alice)
    session_id = call("POST", "/stories", START).body["session_id"]
    assert call("GET", f"/stories/{session_id}").body["user_id"] == alice.sub


def test_a_body_naming_a_user_is_refused_like_any_unknown_field(
    handler: StoryHandler, alice: Reader, bob: Reader
) -> None:
    reply = as_reader(handler, alice)("POST", "/stories", {**START, "user_id": bob.sub})
    assert (reply.status, reply.body["error"]["code"], reply.body["error"]["field"]) == (
        400,
        "unknown_field",
        "user_id",
    )


def test_idempotency_keys_are_each_readers_own(
    handler: StoryHandler, router: FakeRouter, alice: Reader, bob: Reader
) -> None:
    key = {"Idempotency-Key": "shared-key-1"}
    first = as_reader(handler, alice)("POST", "/stories", START, key)
    second = as_reader(handler, bob)("POST", "/stories", START, key)
    assert first.status == second.status == 201
    ids = [first.body["session_id"], second.body["session_id"]]
    assert ids[0] != ids[1], "two readers' equal keys start two sessions"
    for session_id in ids:
        assert uuid.UUID(session_id).version == 4, "random, never derived from the key"
    assert as_reader(handler, alice)("POST", "/stories", START, key).body == first.body
    assert len(router.requests) == 2
    assert as_reader(handler, bob)("GET", f"/stories/{ids[0]}").status == 404


def test_session_ids_are_random_for_identical_requests(
    handler: StoryHandler, alice: Reader
) -> None:
    call = as_reader(handler, alice)
    ids = {call("POST", "/stories", START).body["session_id"] for _ in range(5)}
    assert len(ids) == 5 and all(uuid.UUID(value).version == 4 for value in ids)


def without(claims: Mapping[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in claims.items() if key != name}


def forged_token_without_sub(reader: Reader) -> dict[str, str]:
    """The claims of `reader`'s real token with `sub` taken out of its payload."""
    header, payload, signature = reader.id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    del claims["sub"]
    reencoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return token_claims(f"{header}.{reencoded}.{signature}")


CLAIMS_WITHOUT_A_READER: dict[str, Callable[[Reader], Any]] = {
    "a token without sub": forged_token_without_sub,
    "an empty sub": lambda reader: {**reader.claims, "sub": ""},
    "a sub that is no reader id": lambda reader: {**reader.claims, "sub": "idem#1"},
    "a sub that is not a string": lambda reader: {**reader.claims, "sub": ["x"]},
    "no claims": lambda reader: {},
}


@pytest.mark.parametrize("case", CLAIMS_WITHOUT_A_READER)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/stories", None),
        ("POST", "/stories", START),
        ("GET", f"/stories/{UNKNOWN_SESSION}", None),
        ("POST", f"/stories/{UNKNOWN_SESSION}/choices", {"beat": 0, "choice": 0}),
    ],
)
def test_a_story_request_without_a_reader_is_a_401_json(
    handler: StoryHandler,
    router: FakeRouter,
    alice: Reader,
    case: str,
    method: str,
    path: str,
    body: Any,
) -> None:
    reply = invoke(handler, method, path, body, claims=CLAIMS_WITHOUT_A_READER[case](alice))
    assert reply.status == 401, (case, reply.body)
    assert reply.body["error"]["code"] == "unauthorized" and reply.body["error"]["message"]
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.headers["Content-Type"] == "application/json"
    assert router.requests == [], "nothing is generated for nobody"


def test_no_authorizer_at_all_is_a_401_and_the_body_is_never_read(handler: StoryHandler) -> None:
    reply = invoke(handler, "POST", "/stories", "{not json", claims=None)
    assert (reply.status, reply.body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("authorizer", [None, "sub=x", {"claims": "sub=x"}, {"claims": None}])
def test_a_malformed_authorizer_context_is_a_401_not_a_500(
    handler: StoryHandler, authorizer: object
) -> None:
    event = proxy_event("GET", "/stories", [], b"")
    event["requestContext"]["authorizer"] = authorizer
    result = handler(event, LocalContext())
    assert result["statusCode"] == 401
    assert json.loads(result["body"])["error"]["code"] == "unauthorized"


def test_health_needs_no_token(handler: StoryHandler) -> None:
    assert invoke(handler, "GET", "/health", claims=None).status == 200


def test_routes_and_methods_are_checked_before_the_reader(handler: StoryHandler) -> None:
    assert invoke(handler, "GET", "/nowhere", claims=None).status == 404
    assert invoke(handler, "DELETE", "/stories", claims=None).status == 405


# --- my stories ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def ticking(session_table: str, router: FakeRouter) -> StoryHandler:
    """The handler with a clock that moves on a second at each reading (distinct start times)."""
    clock = Clock()
    store = DynamoDBSessionStore(boto3.client("dynamodb"), session_table, clock=clock)
    service = StoryService(store, router, NoEvents(), ttl_days=30, clock=clock)
    return StoryHandler(service, create_app(service, build_router(load_settings({})), "dev"))


def test_my_stories_lists_only_mine_newest_first_a_page_at_a_time(
    ticking: StoryHandler, alice: Reader, bob: Reader
) -> None:
    mine, theirs = as_reader(ticking, alice), as_reader(ticking, bob)
    started = [mine("POST", "/stories", {"genre": genre}).body for genre in ("horror", "comedy")]
    started.append(mine("POST", "/stories", {**START, "max_beats": 3}).body)
    theirs("POST", "/stories", START)
    ended = started[2]["session_id"]
    for beat in (0, 1):
        mine("POST", f"/stories/{ended}/choices", {"beat": beat, "choice": 0})
    pages, cursor = [], None
    while True:
        reply = mine("GET", "/stories?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply.body
        pages.append(reply.body["stories"])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    listed = [story for page in pages for story in page]
    assert [len(page) for page in pages] == [2, 1]
    assert [story["session_id"] for story in listed] == [
        body["session_id"] for body in reversed(started)
    ], "newest first, each session once, none of bob's"
    newest = listed[0]
    assert newest["genre"] == "mystery" and newest["premise"] == START["premise"]
    assert newest["session_id"] == ended and newest["status"] == "completed"
    assert newest["created_at"] < newest["expires_at"]
    assert [story["status"] for story in listed[1:]] == ["active", "active"]
    assert "premise" not in listed[1]
    assert theirs("GET", "/stories").body["next_cursor"] is None
    assert len(theirs("GET", "/stories").body["stories"]) == 1


def test_a_new_reader_has_no_stories(handler: StoryHandler, alice: Reader) -> None:
    assert as_reader(handler, alice)("GET", "/stories").body == {
        "stories": [],
        "next_cursor": None,
    }


def test_the_default_page_is_20(handler: StoryHandler, alice: Reader) -> None:
    call = as_reader(handler, alice)
    for _ in range(21):
        call("POST", "/stories", {"genre": "comedy"})
    first = call("GET", "/stories").body
    assert len(first["stories"]) == 20 and first["next_cursor"]
    rest = call("GET", f"/stories?cursor={first['next_cursor']}&limit=50").body
    assert len(rest["stories"]) == 1 and rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "out_of_range"),
        ("limit=51", "out_of_range"),
        ("limit=ten", "invalid_type"),
        ("limit=1.5", "invalid_type"),
        ("limit=", "invalid_type"),
        ("cursor=", "invalid_cursor"),
        ("cursor=not%20base64", "invalid_cursor"),
        ("cursor=e30", "invalid_cursor"),  # {}
        ("cursor=" + "A" * 2000, "invalid_cursor"),
    ],
)
def test_bad_limits_and_cursors_are_400(
    handler: StoryHandler, alice: Reader, query: str, code: str
) -> None:
    reply = as_reader(handler, alice)("GET", f"/stories?{query}")
    assert (reply.status, reply.body["error"]["code"]) == (400, code), reply.body
    assert reply.body["error"]["field"] == query.split("=")[0]


def test_another_readers_cursor_is_refused(
    handler: StoryHandler, alice: Reader, bob: Reader
) -> None:
    for _ in range(2):
        as_reader(handler, bob)("POST", "/stories", START)
    cursor = as_reader(handler, bob)("GET", "/stories?limit=1").body["next_cursor"]
    reply = as_reader(handler, alice)("GET", f"/stories?cursor={cursor}")
    assert (reply.status, reply.body["error"]["code"]) == (400, "invalid_cursor")
    forged = encode_cursor(alice.sub, StoryKey(1, "not-a-session"))
    reply = as_reader(handler, alice)("GET", f"/stories?cursor={forged}")
    assert (reply.status, reply.body["error"]["code"]) == (400, "invalid_cursor")
