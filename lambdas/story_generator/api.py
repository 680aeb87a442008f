"""The story API: its routes, API Gateway's REST proxy events in and results out, and
the one place errors become responses.

Routes (documented in `openapi.yaml`):
- `POST /stories` -> 201 `{"session_id", "beat"}` with `Location` (optional
  `Idempotency-Key` header)
- `POST /stories/{session_id}/choices` -> 200 `{"session_id", "beat"}`
- `GET /stories/{session_id}` -> 200 the session with its beats
- `GET /health` -> 200 liveness and each provider's circuit state

The routing is this module's own (`RestApi`): four path templates need no
framework, and Powertools' event handler costs the cold start tens of
milliseconds of resolvers and asyncio the function never uses. An unknown path is
a 404 `route_not_found`. A known path with any method it does not serve, whatever
the method's name, is a 405 with `Allow` and the same body as API Gateway's mock
for that path (components/api_definition.py), so the deployed API and `make dev`
answer alike. Header names are matched in any case, path parameters are
percent-decoded, base64 bodies are decoded.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger

from .errors import ApiError, BadRequest, InternalError, MethodNotAllowed, NotFound, PayloadTooLarge
from .router import Router
from .sessions import SESSION_ID_PATTERN, is_session_id
from .story import (
    IDEMPOTENCY_KEY_SCHEMA,
    ChoiceRequest,
    StartStory,
    StoryService,
    beat_json,
    session_json,
)
from .validation import validate

logger = Logger(child=True)

MAX_BODY_BYTES = 8 * 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"


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
    percent-encoded), `params` the decoded path parameters, `base_path` what
    precedes `path` in the URL the client used (`/dev`, `/v1` or empty).
    """

    method: str
    path: str
    params: Mapping[str, str]
    headers: Headers
    base_path: str = ""
    request_id: str = "unknown"
    raw_body: str | None = None
    is_base64_encoded: bool = False

    def link(self, path: str) -> str:
        """The URL path of the resource path `path` as this client addresses the API."""
        return self.base_path + path

    def data(self) -> bytes:
        """The request body as bytes, base64-decoded when API Gateway encoded it."""
        raw = self.raw_body or ""
        if not self.is_base64_encoded:
            return raw.encode()
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
        try:
            return json.loads(data, parse_constant=_reject_constant)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, NaN or Infinity
            raise BadRequest(
                f"The request body is not valid JSON: {error}.", code="invalid_json"
            ) from None


@dataclass(frozen=True, slots=True)
class Response:
    """A JSON response: status, body and the headers besides `Content-Type`."""

    status: int
    body: Mapping[str, object]
    headers: Mapping[str, str] = field(default_factory=dict)

    def proxy_result(self) -> dict[str, Any]:
        """The result API Gateway's Lambda proxy integration expects."""
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json", **self.headers},
            "body": json.dumps(self.body, ensure_ascii=False),
            "isBase64Encoded": False,
        }


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """`method` on the paths of `template` (OpenAPI syntax, `/stories/{session_id}`)."""

    method: str
    template: str
    handler: Handler


class RestApi:
    """Routes API Gateway REST proxy events to their handlers; errors become responses.

    Templates are matched segment by segment: a `{name}` segment takes any
    non-empty segment (percent-decoded into `Request.params`), any other must be
    equal. The first template that matches the path decides: its method's handler,
    or a 405 when it has none for the request's method.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
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
        try:
            response = self._dispatch(event, request_id)
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
        return response.proxy_result()

    def _dispatch(self, event: Mapping[str, Any], request_id: str) -> Response:
        method = str(event.get("httpMethod") or "")
        path, base_path = locate(event)
        route, params = self._match(method, path)
        request = Request(
            method=method,
            path=path,
            params=params,
            headers=Headers(_header_values(event)),
            base_path=base_path,
            request_id=request_id,
            raw_body=event.get("body"),
            is_base64_encoded=bool(event.get("isBase64Encoded")),
        )
        return route.handler(request)

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        segments = _segments(path)
        for template, by_method in self._paths.items():
            params = _match_template(_segments(template), segments)
            if params is None:
                continue
            route = by_method.get(method)
            if route is None:
                raise MethodNotAllowed(", ".join(by_method))
            return route, params
        routes = ", ".join(f"{route.method} {route.template}" for route in self.routes)
        raise NotFound(f"No route {method} {path}; the API has {routes}.", code="route_not_found")


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


def create_app(service: StoryService, router: Router, environment: str) -> RestApi:
    """The story API bound to `service`.

    `router` is asked for its providers' circuit states only (GET /health).
    """

    def start_story(request: Request) -> Response:
        start = StartStory.from_json(request.json())
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None:
            validate(key, IDEMPOTENCY_KEY_SCHEMA, IDEMPOTENCY_HEADER)
        session = service.start(start, key)
        body = {"session_id": session.session_id, "beat": beat_json(session.beats[0])}
        location = request.link(f"/stories/{session.session_id}")
        return Response(201, body, {"Location": location})

    def make_choice(request: Request) -> Response:
        session_id = _session_id(request)
        choice = ChoiceRequest.from_json(request.json())
        beat = service.choose(session_id, choice)
        return Response(200, {"session_id": session_id, "beat": beat_json(beat)})

    def get_story(request: Request) -> Response:
        return Response(200, session_json(service.get(_session_id(request))))

    def get_health(request: Request) -> Response:
        return Response(200, health(router, environment))

    return RestApi(
        [
            Route("POST", "/stories", start_story),
            Route("GET", "/stories/{session_id}", get_story),
            Route("POST", "/stories/{session_id}/choices", make_choice),
            Route("GET", "/health", get_health),
        ]
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


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")
