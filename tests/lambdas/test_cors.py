"""CORS: CORS_ALLOWED_ORIGINS, the headers of every Lambda response, and preflights."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from lambdas.story_generator import cors
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.settings import ConfigurationError, load_settings
from tests.lambdas.aws_fixtures import Reader
from tests.lambdas.story_doubles import FakeRouter, Reply, invoke

READER_APP = "https://reader.example.com"
LOCAL_APP = "http://localhost:5173"
UNKNOWN_SESSION = "0badc0de-0000-4000-8000-00000000abcd"


def test_the_constants_api_gateway_builds_its_answers_from() -> None:
    assert cors.ALLOWED_HEADERS == "Authorization, Content-Type, Idempotency-Key"
    assert cors.EXPOSED_HEADERS == "Location, Retry-After, x-amzn-RequestId"
    assert cors.MAX_AGE_S == 600


@pytest.mark.parametrize(
    ("text", "origins"),
    [
        (None, ()),
        ("", ()),
        ("[]", ()),
        (f'["{READER_APP}"]', (READER_APP,)),
        (f'["{READER_APP}", "{LOCAL_APP}"]', (READER_APP, LOCAL_APP)),
        ('["https://[::1]:8443"]', ("https://[::1]:8443",)),
        ('["*"]', ("*",)),
    ],
)
def test_allowed_origins_are_parsed(text: str | None, origins: tuple[str, ...]) -> None:
    assert cors.parse_allowed_origins(text) == origins


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("https://reader.example.com", "not valid JSON"),
        ('"*"', "JSON list"),
        ('{"origin": "*"}', "JSON list"),
        ("[1]", "JSON list"),
        (f'["*", "{READER_APP}"]', "only entry"),
        ('["https://reader.example.com/"]', "not an origin"),
        ('["https://reader.example.com/app"]', "not an origin"),
        ('["https://Reader.example.com"]', "lower case"),
        ('["reader.example.com"]', "not an origin"),
        ('["ftp://reader.example.com"]', "not an origin"),
        ('["https://*.example.com"]', "not an origin"),
        (f'["{READER_APP}", "{READER_APP}"]', "twice"),
    ],
)
def test_anything_but_exact_origins_is_refused_naming_the_variable(text: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match="CORS_ALLOWED_ORIGINS") as caught:
        load_settings({"CORS_ALLOWED_ORIGINS": text})
    assert problem in str(caught.value)


def test_response_headers_echo_an_allowed_origin_only() -> None:
    allowed = (READER_APP, LOCAL_APP)
    assert cors.response_headers(LOCAL_APP, allowed) == {
        "Access-Control-Allow-Origin": LOCAL_APP,
        "Access-Control-Expose-Headers": cors.EXPOSED_HEADERS,
        "Vary": "Origin",
    }
    assert cors.response_headers("https://evil.example", allowed) == {"Vary": "Origin"}
    assert cors.response_headers(None, allowed) == {"Vary": "Origin"}
    assert cors.response_headers(READER_APP, ()) == {}, "CORS off: no headers at all"
    assert cors.response_headers("https://any.example", ("*",))["Access-Control-Allow-Origin"] == (
        "*"
    )


def test_preflight_headers_name_the_paths_methods_and_options() -> None:
    assert cors.preflight_headers(READER_APP, (READER_APP,), ["GET", "POST"]) == {
        "Access-Control-Allow-Origin": READER_APP,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": cors.ALLOWED_HEADERS,
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
    assert cors.preflight_headers("https://evil.example", (READER_APP,), ["GET"]) == {
        "Vary": "Origin"
    }
    assert cors.preflight_headers(READER_APP, (), ["GET"]) == {}


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def handler(session_table: str, router: FakeRouter) -> StoryHandler:
    settings = load_settings(
        {
            "SESSION_TABLE_NAME": session_table,
            "CORS_ALLOWED_ORIGINS": f'["{READER_APP}", "{LOCAL_APP}"]',
        }
    )
    return build_handler(settings, generator=router)


@pytest.fixture
def alice(sign_in: Callable[[str], Reader]) -> Reader:
    return sign_in("alice")


def responses(handler: StoryHandler, router: FakeRouter, alice: Reader, origin: str) -> list[Reply]:
    """One response of each kind, to a browser at `origin`."""
    headers = {"Origin": origin}

    def call(
        method: str, path: str, body: object = None, claims: Mapping[str, str] | None = None
    ) -> Reply:
        return invoke(handler, method, path, body, headers, claims=claims)

    started = call("POST", "/stories", {"genre": "horror"}, claims=alice.claims)
    replies = [
        started,
        call("GET", "/stories", claims=alice.claims),
        call("GET", "/health", claims=None),
        call("POST", "/stories", {"genre": "western"}, claims=alice.claims),
        call("GET", "/stories", claims=None),
        call("GET", f"/stories/{UNKNOWN_SESSION}", claims=alice.claims),
        call("GET", "/nowhere"),
        call("PUT", "/stories"),
    ]
    router.fail = RuntimeError("boom")
    replies.append(call("POST", "/stories", {"genre": "horror"}, claims=alice.claims))
    assert [reply.status for reply in replies] == [201, 200, 200, 400, 401, 404, 404, 405, 500]
    return replies


def test_every_response_carries_cors_headers_for_an_allowed_origin(
    handler: StoryHandler, router: FakeRouter, alice: Reader
) -> None:
    for reply in responses(handler, router, alice, LOCAL_APP):
        assert reply.headers["Access-Control-Allow-Origin"] == LOCAL_APP, reply.status
        assert reply.headers["Access-Control-Expose-Headers"] == cors.EXPOSED_HEADERS
        assert reply.headers["Vary"] == "Origin"


def test_no_response_lets_another_origin_read_it(
    handler: StoryHandler, router: FakeRouter, alice: Reader
) -> None:
    for reply in responses(handler, router, alice, "https://reader.example.com.evil.example"):
        assert "Access-Control-Allow-Origin" not in reply.headers, reply.status
        assert "Access-Control-Expose-Headers" not in reply.headers
        assert reply.headers["Vary"] == "Origin", "a cache must not serve it to an allowed origin"


def test_without_allowed_origins_there_are_no_cors_headers(
    session_table: str, alice: Reader
) -> None:
    handler = build_handler(load_settings({"SESSION_TABLE_NAME": session_table}))
    reply = invoke(handler, "GET", "/stories", None, {"Origin": READER_APP}, claims=alice.claims)
    assert not {name for name in reply.headers if name.startswith("Access-Control")}
    assert "Vary" not in reply.headers


def test_any_origin_when_the_list_is_a_star(session_table: str) -> None:
    settings = load_settings({"SESSION_TABLE_NAME": session_table, "CORS_ALLOWED_ORIGINS": '["*"]'})
    reply = invoke(build_handler(settings), "GET", "/stories", None, {"origin": LOCAL_APP})
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/stories", "GET, POST, OPTIONS"),
        (f"/stories/{UNKNOWN_SESSION}", "GET, OPTIONS"),
        (f"/stories/{UNKNOWN_SESSION}/choices", "POST, OPTIONS"),
        ("/health", "GET, OPTIONS"),
    ],
)
def test_a_preflight_on_a_known_path_is_a_204_without_a_token(
    handler: StoryHandler, path: str, methods: str
) -> None:
    headers = {"Origin": READER_APP, "Access-Control-Request-Method": "POST"}
    reply = invoke(handler, "OPTIONS", path, None, headers, claims=None)
    assert (reply.status, reply.body) == (204, None)
    assert reply.headers == {
        "Allow": methods,
        "Access-Control-Allow-Origin": READER_APP,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": cors.ALLOWED_HEADERS,
        "Access-Control-Max-Age": "600",
        "Access-Control-Expose-Headers": cors.EXPOSED_HEADERS,
        "Vary": "Origin",
    }


def test_a_preflight_from_another_origin_allows_nothing(handler: StoryHandler) -> None:
    reply = invoke(handler, "OPTIONS", "/stories", None, {"Origin": "https://evil.example"})
    assert reply.status == 204
    assert not {name for name in reply.headers if name.startswith("Access-Control")}


def test_a_preflight_on_an_unknown_path_is_a_404(handler: StoryHandler) -> None:
    reply = invoke(handler, "OPTIONS", "/nowhere", None, {"Origin": READER_APP})
    assert (reply.status, reply.body["error"]["code"]) == (404, "route_not_found")
    assert reply.headers["Access-Control-Allow-Origin"] == READER_APP
