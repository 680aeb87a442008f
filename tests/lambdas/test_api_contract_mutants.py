"""api.py: the parts of the proxy contract that other tests leave loose.

What the function returns to API Gateway is the API's contract, so these tests
pin it down exactly where the other API tests only sample it:
- the proxy result of a response without a body (a preflight's 204), and JSON
  bodies sent as UTF-8 text, not `\\u` escapes;
- the 500 of an unexpected failure: its exact body, its request id (API Gateway's,
  else the Lambda invocation's, else `unknown`), and the log line operators find
  by that id;
- `queryStringParameters` winning over `multiValueQueryStringParameters`;
- how `locate` finds the resource path and the client's prefix in the events
  API Gateway may send: no `resource`, a greedy `{proxy+}` resource, a root
  request on a custom domain, no `path`, a `requestContext.path` that is exactly
  the resource path or does not end with it, and no `httpMethod`;
- `RestApi` itself: a template segment is a parameter only when it is wholly in
  braces, and a route handler gets the request's method, resource path, request
  id and the rest as documented by `Request`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from lambdas.devserver import LocalContext, proxy_event
from lambdas.story_generator.api import Request, Response, RestApi, Route
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.settings import load_settings
from tests.lambdas.story_doubles import READER, READER_CLAIMS, FakeRouter, Reply, beat_reply, invoke
from tests.lambdas.test_api_mutants import START, rewriting

# The request id API Gateway puts in the events of `gateway_event`.
GATEWAY_REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
ROUTES = (
    "GET /stories, POST /stories, GET /stories/{session_id}, "
    "POST /stories/{session_id}/choices, GET /health"
)
INTERNAL_ERROR_MESSAGE = (
    "The story service failed unexpectedly; retry later, and report the request_id if it "
    "keeps failing."
)


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def story_handler(router: FakeRouter) -> StoryHandler:
    """The handler with in-memory sessions and `router` (no AWS)."""
    return build_handler(load_settings({}), generator=router)


def gateway_event(
    method: str,
    resource: str,
    path: str,
    client_path: str,
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The dev server's proxy event of the reader `READER`, made what API Gateway sends:
    `resource` the template, `path` what API Gateway leaves in `path`, `client_path` the
    path the client sent (`requestContext.path`), `GATEWAY_REQUEST_ID` its request id.

    test_api.py has a fuller `gateway_event`; importing it would have mypy check
    test_api.py, which does not pass `--strict` (its `settings_for(**environment)` calls).
    """
    data = b"" if body is None else body.encode()
    event = proxy_event(method, path, (headers or {}).items(), data, claims=READER_CLAIMS)
    event["resource"] = resource
    event["requestContext"].update(path=client_path, resourcePath=resource)
    event["requestContext"]["requestId"] = GATEWAY_REQUEST_ID
    return event


def send(handler: StoryHandler, event: Mapping[str, Any]) -> Reply:
    """`handler`'s result for `event`, decoded (a JSON body)."""
    result = handler(event, LocalContext())
    return Reply(result["statusCode"], result["headers"], json.loads(result["body"]))


def start_event(**context: Any) -> dict[str, Any]:
    """POST /stories on the execute-api host, with `requestContext` fields replaced."""
    event = gateway_event("POST", "/stories", "/stories", "/dev/stories", body=json.dumps(START))
    event["requestContext"].update(context)
    return event


def start(story_handler: StoryHandler) -> str:
    """A new story's session id."""
    reply = invoke(story_handler, "POST", "/stories", START)
    assert reply.status == 201, reply.body
    return str(reply.body["session_id"])


# --- the proxy result ---------------------------------------------------------------


def test_a_response_without_a_body_is_an_empty_unencoded_proxy_result(
    story_handler: StoryHandler,
) -> None:
    result = story_handler(proxy_event("OPTIONS", "/stories", [], b""), LocalContext())
    assert result == {
        "statusCode": 204,
        "headers": {"Allow": "GET, POST, OPTIONS"},
        "body": "",
        "isBase64Encoded": False,
    }


def test_json_bodies_carry_non_ascii_text_as_utf8_not_escapes(
    story_handler: StoryHandler, router: FakeRouter
) -> None:
    text = "Café at the terminus — 終点"
    router.reply = lambda request: beat_reply(text)
    result = story_handler(start_event(), LocalContext())
    assert result["statusCode"] == 201
    assert text in result["body"]
    assert "\\u" not in result["body"]
    assert json.loads(result["body"])["beat"]["text"] == text


# --- the 500 of an unexpected failure ------------------------------------------------


def test_an_unexpected_error_is_a_500_with_exactly_this_body(
    story_handler: StoryHandler, router: FakeRouter
) -> None:
    router.fail = RuntimeError("boom")
    reply = send(story_handler, start_event())
    assert reply.status == 500
    assert reply.body == {
        "error": {
            "code": "internal_error",
            "message": INTERNAL_ERROR_MESSAGE,
            "request_id": GATEWAY_REQUEST_ID,
        }
    }


def test_an_unexpected_error_is_logged_with_its_traceback_and_request_id(
    story_handler: StoryHandler, router: FakeRouter, caplog: pytest.LogCaptureFixture
) -> None:
    failure = RuntimeError("boom")
    router.fail = failure
    with caplog.at_level(logging.ERROR):
        assert send(story_handler, start_event()).status == 500
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "Unexpected error"
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is failure
    assert getattr(record, "request_id", None) == GATEWAY_REQUEST_ID


def test_without_api_gateway_request_id_the_500_reports_the_lambda_request_id(
    story_handler: StoryHandler, router: FakeRouter
) -> None:
    router.fail = RuntimeError("boom")
    event = start_event(requestId=None)
    result = story_handler(event, LocalContext(aws_request_id="lambda-invocation-1"))
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["error"]["request_id"] == "lambda-invocation-1"


@pytest.mark.parametrize("context", [None, object()], ids=["no-context", "context-without-id"])
def test_without_any_request_id_the_500_reports_unknown(
    story_handler: StoryHandler, router: FakeRouter, context: object
) -> None:
    router.fail = RuntimeError("boom")
    result = story_handler(start_event(requestId=None), context)
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["error"]["request_id"] == "unknown"


# --- query parameters ----------------------------------------------------------------


def test_query_string_parameters_win_over_multi_value_parameters(
    story_handler: StoryHandler,
) -> None:
    start(story_handler)
    start(story_handler)
    both = rewriting(
        story_handler,
        queryStringParameters={"limit": "1"},
        multiValueQueryStringParameters={"limit": ["5"]},
    )
    reply = invoke(both, "GET", "/stories")
    assert reply.status == 200, reply.body
    assert len(reply.body["stories"]) == 1, "queryStringParameters' `limit` counts"
    assert reply.body["next_cursor"] is not None


# --- where the resource path and the prefix come from ----------------------------------


def test_an_event_without_a_resource_is_routed_by_its_path(story_handler: StoryHandler) -> None:
    event = gateway_event("GET", "/health", "/health", "/dev/health")
    del event["resource"]
    reply = send(story_handler, event)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "ok"


def test_a_greedy_proxy_resource_leaves_the_whole_path_to_the_api(
    story_handler: StoryHandler,
) -> None:
    session_id = start(story_handler)
    path = f"/stories/{session_id}"
    reply = send(story_handler, gateway_event("GET", "/{proxy+}", path, f"/dev{path}"))
    assert (reply.status, reply.body.get("session_id")) == (200, session_id), reply.body


def test_a_root_request_on_a_custom_domain_is_a_404_naming_the_root(
    story_handler: StoryHandler,
) -> None:
    event = gateway_event("GET", "/", "/v1", "/v1")
    reply = send(story_handler, event)
    assert reply.status == 404
    assert reply.body == {
        "error": {
            "code": "route_not_found",
            "message": f"No route GET /; the API has {ROUTES}.",
        }
    }


def test_an_event_without_a_path_is_a_request_for_the_root(story_handler: StoryHandler) -> None:
    event = gateway_event("GET", "/", "/", "/")
    event["path"] = None
    del event["resource"]
    del event["requestContext"]["path"]
    reply = send(story_handler, event)
    assert (reply.status, reply.body["error"]["code"]) == (404, "route_not_found")
    assert reply.body["error"]["message"] == f"No route GET /; the API has {ROUTES}."


def test_a_client_path_that_is_the_resource_path_means_no_prefix(
    story_handler: StoryHandler,
) -> None:
    event = start_event(path="/stories")
    event["path"] = "/v1/stories"
    reply = send(story_handler, event)
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == f"/stories/{reply.body['session_id']}"


def test_the_prefix_comes_from_path_when_the_client_path_does_not_end_with_the_resource(
    story_handler: StoryHandler,
) -> None:
    event = start_event(path="/v1/stories/")
    event["path"] = "/v1/stories"
    reply = send(story_handler, event)
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == f"/v1/stories/{reply.body['session_id']}"


def test_an_event_without_a_method_is_refused_without_inventing_one(
    story_handler: StoryHandler,
) -> None:
    event = gateway_event("GET", "/nowhere", "/nowhere", "/dev/nowhere")
    event["httpMethod"] = None
    reply = send(story_handler, event)
    assert (reply.status, reply.body["error"]["code"]) == (404, "route_not_found")
    assert reply.body["error"]["message"] == f"No route  /nowhere; the API has {ROUTES}."


# --- RestApi and its route handlers ----------------------------------------------------


def ok(request: Request) -> Response:
    return Response(200, {"params": dict(request.params)})


@pytest.mark.parametrize("segment", ["{name}.json", "v{version}"])
def test_a_template_segment_is_a_parameter_only_when_wholly_in_braces(segment: str) -> None:
    api = RestApi([Route("GET", f"/files/{segment}", ok, public=True)])

    def get(path: str) -> Mapping[str, Any]:
        return api.resolve(proxy_event("GET", path, [], b""), LocalContext())

    literal = get(f"/files/{segment}")
    assert literal["statusCode"] == 200, "the segment is matched as it is written"
    assert json.loads(literal["body"]) == {"params": {}}
    other = get("/files/report")
    assert other["statusCode"] == 404
    assert json.loads(other["body"])["error"]["code"] == "route_not_found"


def test_a_route_handler_gets_the_request_as_the_client_sent_it() -> None:
    seen: list[Request] = []

    def record(request: Request) -> Response:
        seen.append(request)
        return Response(200, {"ok": True})

    api = RestApi([Route("POST", "/items/{item_id}", record)])
    event = gateway_event(
        "POST",
        "/items/{item_id}",
        "/items/a%20b",
        "/dev/items/a%20b",
        body='{"size": 1}',
        headers={"Idempotency-Key": "key-1"},
    )
    event["queryStringParameters"] = {"q": "x"}
    result = api.resolve(event, LocalContext())
    reply = Reply(result["statusCode"], result["headers"], json.loads(result["body"]))
    assert (reply.status, reply.body) == (200, {"ok": True})
    (request,) = seen
    assert request.method == "POST"
    assert request.path == "/items/a%20b", "the resource path, still percent-encoded"
    assert request.params == {"item_id": "a b"}
    assert request.headers["idempotency-key"] == "key-1"
    assert request.query == {"q": "x"}
    assert request.reader == READER
    assert request.base_path == "/dev"
    assert request.request_id == GATEWAY_REQUEST_ID
    assert request.json() == {"size": 1}
    assert request.link("/items/c") == "/dev/items/c"
