"""The story API: routes, request parsing and the one place errors become responses.

Routes (documented in `openapi.yaml`):
- `POST /stories` -> 201 `{"session_id", "beat"}` (optional `Idempotency-Key` header)
- `POST /stories/{session_id}/choices` -> 200 `{"session_id", "beat"}`
- `GET /stories/{session_id}` -> 200 the session with its beats
- `GET /health` -> 200 liveness and each provider's circuit state

Every error is JSON `{"error": {"code", "message", ...}}` with the status of its
`ApiError` class; anything unexpected is logged and becomes a 500 without internals.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

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
# Each route and its method; any other method on these paths is a 405.
ROUTES = {
    "/stories": "POST",
    "/stories/<session_id>": "GET",
    "/stories/<session_id>/choices": "POST",
    "/health": "GET",
}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def create_app(service: StoryService, router: Router, environment: str) -> APIGatewayRestResolver:
    """The API Gateway REST resolver of the story API, bound to `service`.

    `router` is asked for its providers' circuit states only (GET /health).
    """
    app = APIGatewayRestResolver()

    @app.post("/stories")
    def start_story() -> Response[str]:
        request = StartStory.from_json(_json_body(app))
        key = app.current_event.headers.get(IDEMPOTENCY_HEADER)
        if key is not None:
            validate(key, IDEMPOTENCY_KEY_SCHEMA, IDEMPOTENCY_HEADER)
        session = service.start(request, key)
        body = {"session_id": session.session_id, "beat": beat_json(session.beats[0])}
        return _json_response(201, body, {"Location": f"/stories/{session.session_id}"})

    @app.post("/stories/<session_id>/choices")
    def make_choice(session_id: str) -> Response[str]:
        _check_session_id(session_id)
        request = ChoiceRequest.from_json(_json_body(app))
        beat = service.choose(session_id, request)
        return _json_response(200, {"session_id": session_id, "beat": beat_json(beat)})

    @app.get("/stories/<session_id>")
    def get_story(session_id: str) -> Response[str]:
        _check_session_id(session_id)
        return _json_response(200, session_json(service.get(session_id)))

    @app.get("/health")
    def get_health() -> Response[str]:
        return _json_response(200, health(router, environment))

    for rule, method in ROUTES.items():
        others = [other for other in _METHODS if other != method]
        app.route(rule, method=others)(_method_not_allowed(method))

    # Registered by call: Powertools' `exception_handler` decorator is untyped.
    app.exception_handler(ApiError)(error_response)

    @app.not_found
    def route_not_found(_: NotFoundError) -> Response[str]:
        event = app.current_event
        routes = ", ".join(
            f"{method} {rule.replace('<', '{').replace('>', '}')}"
            for rule, method in ROUTES.items()
        )
        return error_response(
            NotFound(
                f"No route {event.http_method} {event.path}; the API has {routes}.",
                code="route_not_found",
            )
        )

    def unexpected_error(error: Exception) -> Response[str]:
        # API Gateway's request id: the caller sees it too (x-amzn-RequestId).
        context = app.current_event.raw_event.get("requestContext") or {}
        request_id = str(context.get("requestId", "unknown"))
        logger.exception("Unexpected error", extra={"request_id": request_id})
        return error_response(
            InternalError(
                "The story service failed unexpectedly; retry later, and report the "
                "request_id if it keeps failing.",
                details={"request_id": request_id},
            )
        )

    app.exception_handler(Exception)(unexpected_error)
    return app


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


def error_response(error: ApiError) -> Response[str]:
    """The response of an `ApiError`: its status, its JSON body and its headers."""
    headers = {}
    if error.retry_after_header is not None:
        headers["Retry-After"] = error.retry_after_header
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = str(error.details["allowed"])
    return _json_response(error.status, error.to_body(), headers)


def _json_response(
    status: int, body: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, ensure_ascii=False),
        headers=dict(headers or {}),
    )


def _method_not_allowed(allowed: str) -> Callable[..., Response[str]]:
    def handler(**_path: Any) -> Response[str]:
        raise MethodNotAllowed(f"This path takes {allowed} only.", details={"allowed": allowed})

    return handler


def _check_session_id(session_id: str) -> None:
    if not is_session_id(session_id):
        raise BadRequest(
            f"`session_id` must be a session id as returned by POST /stories (a lower-case "
            f"UUID matching {SESSION_ID_PATTERN}).",
            code="invalid_session_id",
            details={"field": "session_id"},
        )


def _json_body(app: APIGatewayRestResolver) -> object:
    """The request body decoded as JSON, after checking its size."""
    event = app.current_event
    raw = event.body or ""
    try:
        data = base64.b64decode(raw, validate=True) if event.is_base64_encoded else raw.encode()
    except binascii.Error:
        raise BadRequest("The request body is not valid base64.", code="invalid_body") from None
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


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")
