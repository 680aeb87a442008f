"""The story API: its routes, API Gateway's REST proxy events in and results out, and
the one place errors become responses.

Routes (documented in `openapi.yaml`):
- `GET /stories` -> 200 `{"stories", "next_cursor"}`: the reader's stories, newest
  first (query `limit` 1-50, `cursor`)
- `POST /stories` -> 201 `{"session_id", "beat"}` with `Location` (optional
  `Idempotency-Key` header)
- `GET /stories/{session_id}` -> 200 the session with its beats
- `POST /stories/{session_id}/choices` -> 200 `{"session_id", "beat"}`
- `GET /health` -> 200 liveness and each provider's circuit state

Every route but `GET /health` is a reader's: API Gateway's Cognito authorizer has
verified the token, and the reader is its `sub` claim
(`requestContext.authorizer.claims.sub`), never anything in the body; a request
without one is a 401 `unauthorized`.

The routing is this module's own (`RestApi`): five path templates need no
framework, and Powertools' event handler costs the cold start tens of
milliseconds of resolvers and asyncio the function never uses. An unknown path is
a 404 `route_not_found`. A known path with any method it does not serve, whatever
the method's name, is a 405 with `Allow` and the same body as API Gateway's mock
for that path (components/api_definition.py), so the deployed API and `make dev`
answer alike; OPTIONS is the CORS preflight (204), which API Gateway answers
itself when deployed. Every response carries the CORS headers of `cors.py`. Header
names are matched in any case, path parameters are percent-decoded, base64 bodies
are decoded.

Links (`Location`) are written the way the client addressed the API: with the
stage on the execute-api host (`/dev/stories/<id>`), with the base path on a
custom domain (`/v1/stories/<id>`), without a prefix under an empty base path
mapping or `make dev` (see `locate`).

Every error is JSON `{"error": {"code", "message", ...}}` with the status of its
`ApiError` class; anything unexpected is logged and becomes a 500 without internals.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger

from . import cors
from .errors import (
    ApiError,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from .router import Router
from .sessions import SESSION_ID_PATTERN, is_session_id
from .story import (
    DEFAULT_PAGE,
    IDEMPOTENCY_KEY_SCHEMA,
    LIST_LIMIT_SCHEMA,
    READER_ID_SCHEMA,
    ChoiceRequest,
    StartStory,
    StoryService,
    beat_json,
    session_json,
    summary_json,
)
from .validation import parse_json_body, validate

logger = Logger(child=True)

MAX_BODY_BYTES = 8 * 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"
_DIGITS = re.compile(r"[0-9]{1,9}")


class Headers(Mapping[str, str]):
    """Request headers, looked up by name in any case (`Idempotency-Key`, `idempotency-key`)."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._values = {name.lower(): value for name, value in headers.items()}

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True, slots=True)
class Request:
    """One API request, as a route handler sees it.

    `path` is the resource path (without stage or base path, still
    percent-encoded), `params` the decoded path parameters, `query` the query
    string's parameters (decoded, the last value of each), `base_path` what
    precedes `path` in the URL the client used (`/dev`, `/v1` or empty), `reader`
    the verified reader id (None on public routes).
    """

    method: str
    path: str
    params: Mapping[str, str]
    headers: Headers
    query: Mapping[str, str] = field(default_factory=dict)
    reader: str | None = None
    base_path: str = ""
    request_id: str = "unknown"
    raw_body: str | None = None
    is_base64_encoded: bool = False

    @property
    def reader_id(self) -> str:
        """The verified reader id of a reader's route."""
        if self.reader is None:
            raise Unauthorized(_SIGN_IN)
        return self.reader

    def link(self, path: str) -> str:
        """The URL path of the resource path `path` as this client addresses the API."""
        return self.base_path + path

    def data(self) -> bytes:
        """The request body as bytes, base64-decoded when API Gateway encoded it."""
        raw = self.raw_body or ""
        if not self.is_base64_encoded:
            # A body string holding a lone surrogate must reach the JSON parser,
            # which refuses it with a 400, instead of failing to encode here.
            return raw.encode("utf-8", "surrogatepass")
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise BadRequest("The request body is not valid base64.", code="invalid_body") from None

    def json(self) -> object:
        """The request body decoded as JSON, after checking its size."""
        data = self.data()
        if len(data) > MAX_BODY_BYTES:
            raise PayloadTooLarge(
                f"The request body is {len(data)} bytes; send at most {MAX_BODY_BYTES} bytes.",
                details={"limit_bytes": MAX_BODY_BYTES},
            )
        if not data.strip():
            raise BadRequest("The request body is empty; send a JSON object.", code="missing_body")
        return parse_json_body(data)


@dataclass(frozen=True, slots=True)
class Response:
    """A JSON response (None: no body): status, body and the headers besides `Content-Type`."""

    status: int
    body: Mapping[str, object] | None
    headers: Mapping[str, str] = field(default_factory=dict)

    def proxy_result(self, extra_headers: Mapping[str, str]) -> dict[str, Any]:
        """The result API Gateway's Lambda proxy integration expects, with `extra_headers`."""
        if self.body is None:
            return {
                "statusCode": self.status,
                "headers": {**self.headers, **extra_headers},
                "body": "",
                "isBase64Encoded": False,
            }
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json", **self.headers, **extra_headers},
            "body": json.dumps(self.body, ensure_ascii=False),
            "isBase64Encoded": False,
        }


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """`method` on the paths of `template` (OpenAPI syntax, `/stories/{session_id}`).

    Unless `public`, the route is a reader's: it needs the authorizer's `sub` claim.
    """

    method: str
    template: str
    handler: Handler
    public: bool = False


class RestApi:
    """Routes API Gateway REST proxy events to their handlers; errors become responses.

    Templates are matched segment by segment: a `{name}` segment takes any
    non-empty segment (percent-decoded into `Request.params`), any other must be
    equal. The first template that matches the path decides: its method's handler,
    the CORS preflight for OPTIONS, or a 405 when it has none for the request's
    method. On a reader's route the reader is checked next (401), and only then is
    the request read. `cors_origins` are the origins whose browsers may read the
    responses (`cors.py`).
    """

    def __init__(self, routes: Iterable[Route], cors_origins: Sequence[str] = ()) -> None:
        self.routes = tuple(routes)
        self.cors_origins = tuple(cors_origins)
        # Each template's routes by method, templates in the order first declared.
        self._paths: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            self._paths.setdefault(route.template, {})[route.method] = route

    def resolve(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """The proxy result for `event`: the route's response, or its error's."""
        request_context = event.get("requestContext") or {}
        # API Gateway's request id: the caller sees it too (x-amzn-RequestId).
        request_id = str(
            request_context.get("requestId") or getattr(context, "aws_request_id", "unknown")
        )
        headers = Headers(_header_values(event))
        origin = headers.get("Origin")
        try:
            response = self._dispatch(event, request_id, headers, origin)
        except ApiError as error:
            response = error_response(error)
        except Exception:
            logger.exception("Unexpected error", extra={"request_id": request_id})
            response = error_response(
                InternalError(
                    "The story service failed unexpectedly; retry later, and report the "
                    "request_id if it keeps failing.",
                    details={"request_id": request_id},
                )
            )
        return response.proxy_result(cors.response_headers(origin, self.cors_origins))

    def _dispatch(
        self, event: Mapping[str, Any], request_id: str, headers: Headers, origin: str | None
    ) -> Response:
        method = str(event.get("httpMethod") or "")
        path, base_path = locate(event)
        by_method, params = self._match(method, path)
        route = by_method.get(method)
        if route is None and method == "OPTIONS":
            methods = [*by_method, "OPTIONS"]
            preflight = cors.preflight_headers(origin, self.cors_origins, methods)
            return Response(204, None, {"Allow": ", ".join(methods), **preflight})
        if route is None:
            raise MethodNotAllowed(", ".join(by_method))
        request = Request(
            method=method,
            path=path,
            params=params,
            headers=headers,
            query=_query_values(event),
            reader=None if route.public else reader_of(event),
            base_path=base_path,
            request_id=request_id,
            raw_body=event.get("body"),
            is_base64_encoded=bool(event.get("isBase64Encoded")),
        )
        return route.handler(request)

    def _match(self, method: str, path: str) -> tuple[dict[str, Route], dict[str, str]]:
        segments = _segments(path)
        for template, by_method in self._paths.items():
            params = _match_template(_segments(template), segments)
            if params is not None:
                return by_method, params
        routes = ", ".join(f"{route.method} {route.template}" for route in self.routes)
        raise NotFound(f"No route {method} {path}; the API has {routes}.", code="route_not_found")


_SIGN_IN = (
    "Sign in first: send your ID token in the Authorization header; this request "
    "reached the story service without a verified reader identity."
)


def reader_of(event: Mapping[str, Any]) -> str:
    """The reader id of a request: the `sub` claim API Gateway's Cognito authorizer verified.

    Raises `Unauthorized` when the event has no such claim, or one that is not a
    reader id (`READER_ID_SCHEMA`).
    """
    authorizer = (event.get("requestContext") or {}).get("authorizer")
    claims = authorizer.get("claims") if isinstance(authorizer, Mapping) else None
    sub = claims.get("sub") if isinstance(claims, Mapping) else None
    try:
        validate(sub, READER_ID_SCHEMA, "sub")
    except BadRequest:
        raise Unauthorized(_SIGN_IN) from None
    assert isinstance(sub, str)  # the schema says so
    return sub


def locate(event: Mapping[str, Any]) -> tuple[str, str]:
    """The request's resource path, and what precedes it in the URL the client used.

    `requestContext.path` is the path as the client sent it: with the stage on the
    execute-api host (`/dev/stories`), with the base path on a custom domain
    (`/v1/stories`). `path` is the resource path, except that on a custom domain
    API Gateway leaves the base path in it too; the resource path is therefore the
    last segments of `path`, as many as the resource template (`resource`) has.
    The prefix is what precedes those segments in `requestContext.path` (or, without
    it, in `path`); `make dev` sends `requestContext.path == path`: no prefix.
    """
    segments = _segments(str(event.get("path") or "/"))
    count = len(segments)
    resource = event.get("resource")
    if isinstance(resource, str) and resource.startswith("/") and "+}" not in resource:
        count = min(count, len(_segments(resource)))
    split = len(segments) - count
    resource_segments, prefix = segments[split:], segments[:split]
    client_path = (event.get("requestContext") or {}).get("path")
    if isinstance(client_path, str):
        client = _segments(client_path)
        if count <= len(client) and client[len(client) - count :] == resource_segments:
            prefix = client[: len(client) - count]
    return "/" + "/".join(resource_segments), "".join(f"/{part}" for part in prefix if part)


def create_app(
    service: StoryService, router: Router, environment: str, cors_origins: Sequence[str] = ()
) -> RestApi:
    """The story API bound to `service`.

    `router` is asked for its providers' circuit states only (GET /health);
    `cors_origins` is CORS_ALLOWED_ORIGINS (`cors.py`).
    """

    def list_stories(request: Request) -> Response:
        cursor = request.query.get("cursor")
        stories, next_cursor = service.stories(request.reader_id, _limit(request), cursor)
        body = {"stories": [summary_json(story) for story in stories], "next_cursor": next_cursor}
        return Response(200, body)

    def start_story(request: Request) -> Response:
        start = StartStory.from_json(request.json())
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None:
            validate(key, IDEMPOTENCY_KEY_SCHEMA, IDEMPOTENCY_HEADER)
        session = service.start(request.reader_id, start, key)
        body = {"session_id": session.session_id, "beat": beat_json(session.beats[0])}
        location = request.link(f"/stories/{session.session_id}")
        return Response(201, body, {"Location": location})

    def make_choice(request: Request) -> Response:
        session_id = _session_id(request)
        choice = ChoiceRequest.from_json(request.json())
        beat = service.choose(session_id, choice, reader=request.reader_id)
        return Response(200, {"session_id": session_id, "beat": beat_json(beat)})

    def get_story(request: Request) -> Response:
        session = service.get(_session_id(request), reader=request.reader_id)
        return Response(200, session_json(session))

    def get_health(request: Request) -> Response:
        return Response(200, health(router, environment))

    # Each path's methods in the order API Gateway's 405 mock lists them in `Allow`.
    return RestApi(
        [
            Route("GET", "/stories", list_stories),
            Route("POST", "/stories", start_story),
            Route("GET", "/stories/{session_id}", get_story),
            Route("POST", "/stories/{session_id}/choices", make_choice),
            Route("GET", "/health", get_health, public=True),
        ],
        cors_origins,
    )


def health(router: Router, environment: str) -> dict[str, object]:
    """Liveness and each provider's circuit, from the circuit store (no provider is called)."""
    states = router.circuit_states()
    providers = [
        {
            "name": provider.settings.name,
            "kind": provider.settings.kind.value,
            "model": provider.settings.model,
            "priority": provider.settings.priority,
            "circuit": states[provider.settings.name].value,
        }
        for provider in router.providers
    ]
    available = any(entry["circuit"] != "open" for entry in providers)
    return {
        "status": "ok" if available else "degraded",
        "environment": environment,
        "providers": providers,
    }


def error_response(error: ApiError) -> Response:
    """The response of an `ApiError`: its status, its JSON body and its headers."""
    headers = {}
    if error.retry_after_header is not None:
        headers["Retry-After"] = error.retry_after_header
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = error.allowed
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return Response(error.status, error.to_body(), headers)


def _segments(path: str) -> list[str]:
    """`/stories/abc` -> `["stories", "abc"]`; `/` -> `[]`."""
    return path.split("/")[1:] if path not in {"", "/"} else []


def _match_template(template: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(template) != len(segments):
        return None
    params: dict[str, str] = {}
    for pattern, segment in zip(template, segments, strict=True):
        if pattern.startswith("{") and pattern.endswith("}"):
            if not segment:
                return None
            params[pattern[1:-1]] = unquote(segment)
        elif pattern != segment:
            return None
    return params


def _header_values(event: Mapping[str, Any]) -> dict[str, str]:
    """One value per header: `headers`, else the last of `multiValueHeaders`."""
    values = {
        str(name): str(listed[-1])
        for name, listed in (event.get("multiValueHeaders") or {}).items()
        if listed
    }
    values.update((str(name), str(value)) for name, value in (event.get("headers") or {}).items())
    return values


def _query_values(event: Mapping[str, Any]) -> dict[str, str]:
    """One value per query parameter: `queryStringParameters`, else the last listed."""
    values = {
        str(name): str(listed[-1])
        for name, listed in (event.get("multiValueQueryStringParameters") or {}).items()
        if listed
    }
    values.update(
        (str(name), str(value))
        for name, value in (event.get("queryStringParameters") or {}).items()
    )
    return values


def _limit(request: Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_PAGE
    value: object = int(text) if _DIGITS.fullmatch(text) else text
    validate(value, LIST_LIMIT_SCHEMA, "limit")
    assert isinstance(value, int)  # the schema says so
    return value


def _session_id(request: Request) -> str:
    session_id = request.params["session_id"]
    if not is_session_id(session_id):
        raise BadRequest(
            f"`session_id` must be a session id as returned by POST /stories (a lower-case "
            f"UUID matching {SESSION_ID_PATTERN}).",
            code="invalid_session_id",
            details={"field": "session_id"},
        )
    return session_id
