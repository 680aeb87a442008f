"""Serve the story API locally, with no AWS account: `python -m lambdas.devserver` (`make dev`).

Listens on http://127.0.0.1:8787 and runs the same story generator the Lambda
runs, built from the environment with the sessions and the circuit breakers in
memory and events off. Without AI_PROVIDER_CONFIG the offline mock provider
writes the beats; with it, the configured providers are called, with keys from
OPENAI_API_KEY / ANTHROPIC_API_KEY (Bedrock uses the usual AWS credentials).

Environment (besides the Lambda's own settings):
- `PORT`: the port on 127.0.0.1 (default 8787; 0 picks a free one).
- `CORS_ALLOWED_ORIGINS` (the Lambda's too): a JSON list of the web origins
  browsers may call from; unset, `DEV_CORS_ORIGINS`, the usual local web dev
  servers (`http://localhost:5173`, `http://127.0.0.1:5173`); `[]` turns CORS off.
- `DEV_LOG_LEVEL`: DEBUG, INFO, WARNING (default), ERROR or CRITICAL: the level
  of the Lambda's structured JSON logs (it becomes POWERTOOLS_LOG_LEVEL).
- `DEV_METRICS=1`: also show the EMF metric documents the Lambda writes to
  stdout, one per provider attempt (hidden by default).

The console shows one line per request, `POST /stories -> 201 in 3.4 ms`, then
whatever the Lambda logs at DEV_LOG_LEVEL and up.

Each HTTP request becomes an API Gateway REST proxy event and the handler's
result becomes the HTTP response, as deployed:
- Readers are identified as the Cognito authorizer identifies them, except that
  the token is `Authorization: Bearer dev:<reader-id>` (a reader id like a
  Cognito `sub`: 1 to 128 characters of `A-Z a-z 0-9 . _ @ : + -`, the first a
  letter or digit): on every operation openapi.yaml secures (all but `GET
  /health`) the event gets `requestContext.authorizer.claims` with that `sub`,
  and a request without such a token gets API Gateway's UNAUTHORIZED answer
  (401) without reaching the handler. Only `make dev` reads these tokens: the
  deployed API's authorizer refuses them, and the Lambda trusts nothing but its
  claims.
- OPTIONS on a path of the document is the CORS preflight, answered here (204,
  `cors.preflight_headers`) as API Gateway's mock answers it, without the
  handler; API Gateway's own answers carry the CORS headers of an actual response.
- Every other method reaches the handler, which answers 405 or 404 itself.
- API Gateway's own answers come from openapi.yaml's
  `x-amazon-apigateway-gateway-responses`: REQUEST_TOO_LARGE (413) for a body
  over 10 MB, INTEGRATION_TIMEOUT (504) when the handler has not answered within
  29 s, and DEFAULT_5XX (502, "Internal server error") when it raises or returns
  something that is not a proxy result (the traceback goes to the console).
- Handler calls run one at a time, like one Lambda container (Powertools keeps
  per-event state). A call that timed out keeps running (its 504 closes the
  connection, and the console says when the call ends); later requests wait for
  it, each within its own 29 s, and one whose 29 s run out while waiting gets
  its 504 without reaching the handler.
- Not API Gateway's: 411 `length_required` for a POST, PUT or PATCH without a
  Content-Length or a chunked body, and for an invalid Content-Length; 408 (in
  DEFAULT_4XX's shape, `gateway_refused`) for a client that sends part of a
  request, headers or body, then nothing for `READ_TIMEOUT_S` (its connection is
  closed and its thread freed; an idle kept-alive connection is closed silently
  after as long); and http.server's refusals of malformed requests in
  DEFAULT_4XX/5XX's shape.
- Up to `LISTEN_BACKLOG` connections wait to be accepted, so that a burst of
  clients (a browser, a load test, a fuzzer) is queued rather than reset.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import http.client
import io
import json
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, TextIO, cast
from urllib.parse import parse_qs

import yaml

from .story_generator.cors import preflight_headers, response_headers
from .story_generator.settings import ConfigurationError, Settings, load_settings

HOST = "127.0.0.1"
DEFAULT_PORT = 8787
OPENAPI_PATH = Path(__file__).resolve().parent / "story_generator" / "openapi.yaml"
# API Gateway refuses larger payloads itself, before the Lambda sees them.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# API Gateway stops waiting for the Lambda after 29 s.
INTEGRATION_TIMEOUT_S = 29.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A client that sends nothing for this long, mid-request or between kept-alive
# requests, loses its connection, and its thread is freed.
READ_TIMEOUT_S = 30.0
# Connections the kernel holds until the server accepts them: socketserver's 5
# drops or resets a burst of concurrent clients.
LISTEN_BACKLOG = 128
# Vite's (the usual local web dev server's) origins, allowed when CORS_ALLOWED_ORIGINS is unset.
DEV_CORS_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173")
# `Authorization: Bearer dev:<reader-id>`, the reader id as story.READER_ID_SCHEMA has it.
DEV_TOKEN = re.compile(r"(?i:bearer) dev:([A-Za-z0-9][A-Za-z0-9._@:+-]{0,127})")

LambdaHandler = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]
_Outcome = Mapping[str, Any] | Exception | None  # of a handler call

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Framing is the server's business: API Gateway sets these itself.
_HOP_BY_HOP = frozenset({"content-length", "connection", "transfer-encoding"})
_MAX_LINE = 65536  # http.server's limit on the request line
_MAX_TRAILER_LINES = 100
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Closing a socket with unread input sends a reset, which can destroy the answer
# before the client reads it: after a refusal, what the client still sends is
# read and dropped first, for this long and this much at most.
_LINGER_S = 2.0
_LINGER_BYTES = 64 * 1024 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_EMF_PREFIX = '{"_aws":'


def local_settings(environ: Mapping[str, str]) -> Settings:
    """The settings of `environ` with embedded storage, without events, and with the
    local web dev origins allowed when `CORS_ALLOWED_ORIGINS` is unset."""
    local = {name: value for name, value in environ.items() if name != "SESSION_TABLE_NAME"}
    local["EVENTS_ENABLED"] = "false"
    local.setdefault("ENVIRONMENT", "local")
    local.setdefault("CORS_ALLOWED_ORIGINS", json.dumps(DEV_CORS_ORIGINS))
    return load_settings(local)


def dev_claims(authorization: str | None) -> dict[str, str] | None:
    """The Cognito claims `make dev` gives a `Bearer dev:<reader-id>` token; None for any
    other Authorization header value (or none)."""
    match = DEV_TOKEN.fullmatch((authorization or "").strip())
    if match is None:
        return None
    reader = match.group(1)
    # As API Gateway passes an ID token's claims: strings only.
    return {"sub": reader, "cognito:username": reader, "token_use": "id", "iss": "make-dev"}


@dataclass
class LocalContext:
    """The parts of the Lambda context object the handler and Powertools read."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "story-generator-local"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:story-generator-local"
    memory_limit_in_mb: int = 1024
    log_group_name: str = "/aws/lambda/story-generator-local"
    log_stream_name: str = "local"
    deadline: float = field(default_factory=lambda: time.monotonic() + INTEGRATION_TIMEOUT_S)

    def get_remaining_time_in_millis(self) -> int:
        """Until API Gateway's integration timeout (`deadline`, time.monotonic)."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def proxy_event(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
    claims: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The API Gateway REST proxy event of an HTTP request (`target`: path and query).

    `claims` are the Cognito authorizer's, on an operation behind it.
    """
    path, query_string = split_target(target)
    query = parse_qs(query_string, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    request_id = str(uuid.uuid4())
    request_context: dict[str, Any] = {
        "requestId": request_id,
        "stage": "local",
        "httpMethod": method,
        "path": path,
        "resourcePath": path,
        "requestTimeEpoch": int(time.time() * 1000),
        "identity": {"sourceIp": source_ip},
    }
    if claims is not None:
        request_context["authorizer"] = {"claims": dict(claims)}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "body": text if body else None,
        "isBase64Encoded": encoded,
        "requestContext": request_context,
    }


def split_target(target: str) -> tuple[str, str]:
    """The path (still percent-encoded, as REST APIs pass it; `/` when empty) and the
    query string of a request target.

    Split at the first `?`, not parsed as a URL: `//x/y` is a path, not a host
    `x`, and `//[` is a path, not a malformed IPv6 address.
    """
    path, _, query = target.partition("#")[0].partition("?")
    return path or "/", query


class Reply(NamedTuple):
    """An HTTP answer: status, headers in order (a name may repeat) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class ProxyResultError(ValueError):
    """The handler returned something API Gateway cannot turn into a response (its 502)."""


def proxy_reply(result: object) -> Reply:
    """The HTTP answer API Gateway makes of a Lambda proxy integration's result."""
    if not isinstance(result, Mapping):
        raise ProxyResultError(f"the handler returned a {type(result).__name__}, not a dict")
    status = result.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ProxyResultError(f"statusCode {status!r} is not an HTTP status from 200 to 599")
    single, multi = result.get("headers") or {}, result.get("multiValueHeaders") or {}
    if not isinstance(single, Mapping) or not isinstance(multi, Mapping):
        raise ProxyResultError("headers and multiValueHeaders must be objects")
    merged = {str(name): [str(value)] for name, value in single.items()}
    for name, values in multi.items():
        if not isinstance(values, list):
            raise ProxyResultError(f"multiValueHeaders[{name!r}] is not a list")
        merged[str(name)] = [str(value) for value in values]
    headers = [
        _header(name, value, ProxyResultError)
        for name, values in merged.items()
        if name.lower() not in _HOP_BY_HOP
        for value in values
    ]
    body = result.get("body")
    if body is None:
        return Reply(status, headers, b"")
    if not isinstance(body, str):
        raise ProxyResultError(f"body is a {type(body).__name__}, not a string")
    if not result.get("isBase64Encoded"):
        try:
            return Reply(status, headers, body.encode("utf-8"))
        except UnicodeEncodeError as error:  # a lone surrogate: API Gateway cannot send it
            raise ProxyResultError(f"body is not Unicode text ({error.reason})") from None
    try:
        return Reply(status, headers, base64.b64decode(body, validate=True))
    except binascii.Error:
        raise ProxyResultError("isBase64Encoded is true but body is not base64") from None


@dataclass(frozen=True)
class GatewayResponse:
    """One entry of `x-amazon-apigateway-gateway-responses`."""

    status: int | None  # None: the status of the refusal (DEFAULT_4XX, DEFAULT_5XX)
    headers: tuple[tuple[str, str], ...]
    template: str  # the application/json body template


# What API Gateway answers where the document configures nothing.
_AWS_DEFAULT = GatewayResponse(
    None, (("Content-Type", "application/json"),), '{"message": $context.error.messageString}'
)


class GatewayResponses:
    """API Gateway's own answers (`x-amazon-apigateway-gateway-responses`), by type."""

    SECTION = "x-amazon-apigateway-gateway-responses"

    def __init__(self, responses: Mapping[str, GatewayResponse]) -> None:
        self.responses = dict(responses)

    @classmethod
    def load(cls, path: Path = OPENAPI_PATH) -> GatewayResponses:
        """The section of the OpenAPI document at `path` (ValueError when it is missing)."""
        return cls.of(_document(path), path)

    @classmethod
    def of(cls, document: object, path: Path = OPENAPI_PATH) -> GatewayResponses:
        """The section of `document`, read from `path` (ValueError when it is missing)."""
        section = document.get(cls.SECTION) if isinstance(document, dict) else None
        if not isinstance(section, dict):
            raise ValueError(f"{path} has no {cls.SECTION} section")
        return cls({str(kind): _gateway_response(kind, entry) for kind, entry in section.items()})

    def answer(self, kind: str | None, status: int, message: str) -> Reply:
        """API Gateway's answer of type `kind` (e.g. "INTEGRATION_TIMEOUT").

        `status` and `message` ($context.error.messageString) are API Gateway's for
        that refusal, used where the response does not replace them. A type the
        document leaves out (or None) falls back to DEFAULT_4XX or DEFAULT_5XX.
        """
        default = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        response = (
            self.responses.get(kind or default) or self.responses.get(default) or _AWS_DEFAULT
        )
        # API Gateway substitutes the message as a JSON string, quotes included.
        body = response.template.replace("$context.error.messageString", json.dumps(message))
        return Reply(response.status or status, list(response.headers), body.encode())


class Operations:
    """The document's paths: the methods each declares, and whether each needs a reader.

    An operation needs a reader when its `security` (or, without one, the
    document's) is not empty: API Gateway puts those behind the Cognito authorizer.
    Templates match as API Gateway's do, segment by segment, `{name}` taking any
    non-empty segment.
    """

    def __init__(self, paths: Mapping[str, Mapping[str, bool]]) -> None:
        self._paths = [(_segments(template), dict(methods)) for template, methods in paths.items()]

    @classmethod
    def of(cls, document: object) -> Operations:
        """The operations of an OpenAPI document."""
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            return cls({})
        default = document.get("security")
        declared: dict[str, dict[str, bool]] = {}
        for template, item in document["paths"].items():
            if not isinstance(item, dict):
                continue
            declared[str(template)] = {
                method.upper(): bool(operation.get("security", default))
                for method, operation in item.items()
                if method in _OPENAPI_METHODS and isinstance(operation, dict)
            }
        return cls(declared)

    def methods(self, path: str) -> Mapping[str, bool] | None:
        """The declared methods (each: whether it needs a reader) of the first template
        `path` matches; None when it matches none."""
        segments = _segments(path)
        for template, methods in self._paths:
            if len(template) == len(segments) and all(
                part == segment or (part.startswith("{") and part.endswith("}") and segment)
                for part, segment in zip(template, segments, strict=True)
            ):
                return methods
        return None


_OPENAPI_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "trace"})


def _segments(path: str) -> list[str]:
    return path.split("/")[1:] if path not in {"", "/"} else []


def _document(path: Path) -> object:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _gateway_response(kind: object, entry: object) -> GatewayResponse:
    if not isinstance(entry, dict):
        raise ValueError(f"gateway response {kind} is not a mapping")
    status = entry.get("statusCode")
    headers = []
    for parameter, value in (entry.get("responseParameters") or {}).items():
        name = str(parameter).removeprefix("gatewayresponse.header.")
        # Only static values ('...'); request mappings have no local meaning.
        if name != parameter and isinstance(value, str) and len(value) >= 2 and value[0] == "'":
            headers.append(_header(name, value.strip("'"), ValueError))
    template = (entry.get("responseTemplates") or {}).get("application/json")
    return GatewayResponse(
        int(status) if status is not None else None,
        tuple(headers),
        template if isinstance(template, str) else _AWS_DEFAULT.template,
    )


def _header(name: str, value: str, error: type[ValueError]) -> tuple[str, str]:
    """`(name, value)`, checked to be a header that can be written as such."""
    if not _TOKEN.fullmatch(name) or any(char in value for char in "\r\n\0"):
        raise error(f"header {name!r}: {value!r} cannot be sent")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise error(f"header {name!r}: {value!r} is not Latin-1") from None
    return name, value


class IntegrationTimeoutError(Exception):
    """A handler call could not start in time: an earlier call that timed out still runs."""


class DevServer(ThreadingHTTPServer):
    """An HTTP server in front of a Lambda handler of API Gateway proxy events.

    `integration_timeout_s` bounds each request's wait for the handler (API
    Gateway's 29 s); `read_timeout_s` how long a client may send nothing before
    its connection is closed; `console` receives one line per request (default:
    stdout); `gateway` holds API Gateway's own answers and `operations` the
    document's paths (default: openapi.yaml's); `cors_allowed_origins` are the
    origins browsers may call from. Binds `address` on construction.
    """

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        handler: LambdaHandler,
        *,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        console: Callable[[str], None] | None = None,
        gateway: GatewayResponses | None = None,
        operations: Operations | None = None,
        cors_allowed_origins: Sequence[str] = DEV_CORS_ORIGINS,
    ) -> None:
        self.handler = handler
        self.integration_timeout_s = integration_timeout_s
        self.read_timeout_s = read_timeout_s
        self.console = console or _print_line
        document = _document(OPENAPI_PATH) if gateway is None or operations is None else None
        self.gateway = gateway or GatewayResponses.of(document)
        self.operations = operations or Operations.of(document)
        self.cors_allowed_origins = tuple(cors_allowed_origins)
        self._calls = threading.Lock()  # held while a handler call runs
        self._watchdog = _Watchdog(integration_timeout_s)  # stopped by server_close
        super().__init__(address, _ProxyRequestHandler)

    def invoke(
        self, event: Mapping[str, Any], on_timeout: Callable[[], None]
    ) -> Mapping[str, Any] | None:
        """The handler's result for `event`, one call at a time, like one Lambda container.

        The handler runs on the calling thread. When it outlasts
        `integration_timeout_s` (counted from this call), `on_timeout` runs on
        another thread to answer the request, and whatever the handler returns or
        raises later is dropped (None, and a line on the console). Raises
        IntegrationTimeoutError when an earlier call keeps this one from starting
        in time, and the handler's exceptions.
        """
        deadline = time.monotonic() + self.integration_timeout_s
        if not self._calls.acquire(timeout=self.integration_timeout_s):
            raise IntegrationTimeoutError
        outcome: _Outcome = None
        try:
            self._watchdog.start(deadline, on_timeout)
            outcome = self.handler(event, LocalContext(deadline=deadline))
        except Exception as error:
            outcome = error
        finally:
            in_time = self._watchdog.end()
            if not in_time:  # before the next call can start, so that tests can wait_idle
                self._report_late(event, deadline, outcome)
            self._calls.release()
        if not in_time:
            return None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def wait_idle(self, timeout_s: float) -> bool:
        """Whether no handler call is running, waiting up to `timeout_s` for that."""
        if not self._calls.acquire(timeout=timeout_s):
            return False
        self._calls.release()
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception a request raised past its handler: its traceback, on the console."""
        self.console(f"{client_address}: the dev server failed\n{traceback.format_exc().rstrip()}")

    def server_close(self) -> None:
        """Close the socket and stop the integration timeout's thread."""
        super().server_close()
        self._watchdog.stop()

    def _report_late(self, event: Mapping[str, Any], deadline: float, outcome: _Outcome) -> None:
        elapsed_s = time.monotonic() - deadline + self.integration_timeout_s
        what = "raised" if isinstance(outcome, Exception) else "returned"
        line = f"{event['httpMethod']} {event['path']}: the handler {what} after "
        line += f"{elapsed_s:.1f} s, past its 504"
        if isinstance(outcome, Exception):
            line += "\n" + "".join(traceback.format_exception(outcome)).rstrip()
        self.console(line)


class _Watchdog:
    """One thread that answers for the running handler call once its deadline passes."""

    def __init__(self, idle_wait_s: float) -> None:
        # Idle, it wakes every `idle_wait_s` (the integration timeout): a call
        # starting meanwhile has a later deadline, unless it waited for the
        # previous call, and then `start` wakes the watchdog.
        self._idle_wait_s = idle_wait_s
        self._wake_at = math.inf
        self._deadline = math.inf  # of the running call
        self._on_timeout: Callable[[], None] | None = None
        self._expired = False
        self._stopped = False
        self._changed = threading.Condition(threading.Lock())
        threading.Thread(target=self._run, name="integration-timeout", daemon=True).start()

    def start(self, deadline: float, on_timeout: Callable[[], None]) -> None:
        """Watch a call: `on_timeout` answers for it if it has not ended by `deadline`."""
        with self._changed:
            self._deadline, self._on_timeout, self._expired = deadline, on_timeout, False
            if deadline < self._wake_at:
                self._changed.notify()

    def end(self) -> bool:
        """Stop watching the call: False when `on_timeout` has answered for it."""
        with self._changed:  # waits for an answer being written
            self._deadline, self._on_timeout = math.inf, None
            return not self._expired

    def stop(self) -> None:
        """End the thread."""
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._stopped:
                now = time.monotonic()
                if self._on_timeout is not None and self._deadline <= now:
                    self._expired = True
                    on_timeout, self._deadline, self._on_timeout = self._on_timeout, math.inf, None
                    on_timeout()
                    continue
                self._wake_at = min(self._deadline, now + self._idle_wait_s)
                self._changed.wait(self._wake_at - now)


class _RefusedError(Exception):
    """A request answered without the handler, its body maybe unread: the connection ends."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _ProxyRequestHandler(BaseHTTPRequestHandler):
    server: DevServer
    protocol_version = "HTTP/1.1"
    # Each answer is one write, sent at once: with Nagle's algorithm a write waits
    # for the ACK of the previous one, which the client delays by up to 40 ms.
    disable_nagle_algorithm = True
    _started: float
    _status: int | None  # of the answer sent, once sent
    _logged: bool
    _note: str
    _expect_100: bool

    def setup(self) -> None:
        super().setup()
        # Every read and write of the connection: a client that stalls frees its thread.
        self.connection.settimeout(self.server.read_timeout_s)

    def handle_one_request(self) -> None:
        # As BaseHTTPRequestHandler's, except that every method goes to the handler:
        # http.server only dispatches methods with a do_<METHOD> attribute (and
        # answers the others 501 in HTML); API Gateway passes them all on.
        self._status, self._logged, self._note, self._expect_100 = None, False, "", False
        self.raw_requestline, self.requestline, self.command = b"", "", ""
        # Not the previous request's, should this one end before its headers are read.
        self.headers = http.client.HTTPMessage()
        try:
            self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
            self._started = time.perf_counter()
            if not self.raw_requestline:
                self.close_connection = True
            elif len(self.raw_requestline) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            elif self.parse_request():
                self._proxy()
        except ConnectionError:
            self.close_connection = True
            if self.raw_requestline:  # else it was an idle kept-alive connection
                self._note = "the client left"
                self._log_request()
        except TimeoutError:
            self.close_connection = True
            # Idle between requests: closed without a word, as a kept-alive connection is.
            # Mid-request (a line, the headers or the body came short), with a 408.
            if self.raw_requestline and self._status is None:
                self._stalled()

    def handle_expect_100(self) -> bool:
        # Deferred until the body is known to be accepted: a client told 413 or
        # 411 instead need not send it.
        self._expect_100 = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's refusals of malformed requests, in the shape API Gateway
        # gives its own (DEFAULT_4XX, DEFAULT_5XX) rather than http.server's HTML.
        reply = self.server.gateway.answer(None, code, message or _phrase(code))
        self._send(reply, refused=True, own=True)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.console(format % args)

    def _log_request(self) -> None:
        """The request's console line (once): written as its answer goes out."""
        if self._logged:
            return
        self._logged = True
        if self.command:
            label = f"{self.command} {self.path}"
        else:
            label = repr(self.requestline[:80]) if self.requestline else "(a long request line)"
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        answer = "no answer" if self._status is None else str(self._status)
        note = f" ({self._note})" if self._note else ""
        self.server.console(f"{label} -> {answer} in {elapsed_ms:.1f} ms{note}")

    def _proxy(self) -> None:
        methods = self.server.operations.methods(split_target(self.path)[0])
        try:
            # The authorizer answers before the body is read, as API Gateway's does.
            claims = self._claims(methods)
            body = self._read_body()
        except _RefusedError as refused:
            self._send(refused.reply, refused=True, own=True)
            return
        if methods is not None and self.command == "OPTIONS":
            self._send(self._preflight(methods))
            return
        event = proxy_event(
            self.command, self.path, self.headers.items(), body, self.client_address[0], claims
        )
        request_id: str = event["requestContext"]["requestId"]
        gateway = self.server.gateway
        own = True  # the answer is API Gateway's, not the handler's
        try:
            result = self.server.invoke(event, lambda: self._time_out(request_id))
        except IntegrationTimeoutError:
            self._note = "timed out waiting for an earlier call; not run"
            reply = gateway.answer("INTEGRATION_TIMEOUT", 504, "Endpoint request timed out")
        except Exception:
            self.server.console(traceback.format_exc().rstrip())
            self._note = "the handler raised"
            reply = gateway.answer(None, 502, "Internal server error")
        else:
            if result is None:  # `_time_out` has answered
                self.close_connection = True
                return
            try:
                reply, own = proxy_reply(result), False
            except ProxyResultError as error:
                self._note = f"not a proxy result: {error}"
                reply = gateway.answer(None, 502, "Internal server error")
        self._send(reply, request_id, own=own)

    def _claims(self, methods: Mapping[str, bool] | None) -> dict[str, str] | None:
        """The authorizer's claims when the operation needs a reader, or a 401 refusal."""
        if methods is None or self.command == "OPTIONS" or not methods.get(self.command):
            return None
        values = self.headers.get_all("Authorization") or []
        claims = dev_claims(values[0]) if len(values) == 1 else None
        if claims is None:
            self._note = "no reader: send Authorization: Bearer dev:<reader-id>"
            raise _RefusedError(self.server.gateway.answer("UNAUTHORIZED", 401, "Unauthorized"))
        return claims

    def _preflight(self, methods: Mapping[str, bool]) -> Reply:
        """The CORS preflight of a path serving `methods`, as API Gateway's mock answers it."""
        origin = self.headers.get("Origin")
        headers = preflight_headers(origin, self.server.cors_allowed_origins, list(methods))
        return Reply(204, list(headers.items()), b"")

    def _stalled(self) -> None:
        """Answer a request whose client stopped sending, and let the connection go."""
        timeout_s = self.server.read_timeout_s
        self._note = f"the client sent nothing for {timeout_s:g} s"
        reply = self.server.gateway.answer(
            None, 408, f"Request Timeout: nothing received for {timeout_s:g} s; send it whole"
        )
        try:
            self._send(reply, own=True)
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:  # the client has left, or does not read either
            pass

    def _time_out(self, request_id: str) -> None:
        """Answer 504 while the handler still runs (on the watchdog's thread)."""
        # The handler's thread reads this connection again only once the call ends.
        self.close_connection = True
        self._note = "timed out; the handler runs on and later requests wait for it"
        reply = self.server.gateway.answer("INTEGRATION_TIMEOUT", 504, "Endpoint request timed out")
        try:
            self._send(reply, request_id, own=True)
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:  # the client has left
            pass

    def _read_body(self) -> bytes:
        """The body, framed by `Transfer-Encoding: chunked` or Content-Length; or _RefusedError."""
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = [value.strip() for value in self.headers.get_all("Content-Length") or []]
        if encodings:
            coding = ", ".join(encodings)
            if coding.strip().lower() != "chunked":
                raise self._gateway_refusal(501, f"Transfer-Encoding {coding!r} is not supported")
            # Both framings on one request can smuggle a second one past a proxy:
            # RFC 9112 says use the chunked one and close after answering.
            self.close_connection = self.close_connection or bool(lengths)
            self._continue()
            return self._read_chunked()
        # API Gateway would not answer 411 (it reads a body without length as
        # empty, and the Lambda answers 400 missing_body): locally it is more
        # likely a client bug worth naming.
        if not lengths:
            if self.command in _BODY_METHODS:
                raise _length_required(f"A {self.command} needs a Content-Length header.")
            return b""
        length = _content_length(lengths)
        if length is None:
            raise _length_required(f"Content-Length {lengths[0]!r} is not a number of bytes.")
        if length > MAX_PAYLOAD_BYTES:
            raise _RefusedError(
                self.server.gateway.answer("REQUEST_TOO_LARGE", 413, "Request Too Long")
            )
        self._continue()
        body = self.rfile.read(length)
        if len(body) < length:
            raise self._gateway_refusal(400, "The body ended before its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        """A chunked body (RFC 9112 section 7.1), its trailer fields dropped."""
        chunks: list[bytes] = []
        total = 0
        while size := self._chunk_size():
            total += size
            if total > MAX_PAYLOAD_BYTES:
                raise _RefusedError(
                    self.server.gateway.answer("REQUEST_TOO_LARGE", 413, "Request Too Long")
                )
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise self._gateway_refusal(400, "Malformed chunked body: a chunk is cut short")
            chunks.append(chunk)
        for _ in range(_MAX_TRAILER_LINES):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return b"".join(chunks)
            if not line.endswith(b"\n"):
                break
        raise self._gateway_refusal(400, "Malformed chunked body: its trailer does not end")

    def _chunk_size(self) -> int:
        line = self.rfile.readline(_MAX_LINE + 1)
        size = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size):
            raise self._gateway_refusal(400, "Malformed chunked body: bad chunk size line")
        return int(size, 16)

    def _continue(self) -> None:
        if self._expect_100:
            self._expect_100 = False
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _gateway_refusal(self, status: int, message: str) -> _RefusedError:
        return _RefusedError(self.server.gateway.answer(None, status, message))

    def _send(
        self,
        reply: Reply,
        request_id: str | None = None,
        *,
        refused: bool = False,
        own: bool = False,
    ) -> None:
        """Write `reply` in one piece; a refused request's connection ends after it.

        `own`: the dev server's answer in API Gateway's place, which gets the CORS
        headers API Gateway adds to its own answers (the handler adds its own).
        """
        status, headers, body = reply
        if own:
            present = {name.lower() for name, _ in headers}
            cors = response_headers(self.headers.get("Origin"), self.server.cors_allowed_origins)
            headers = headers + [(n, v) for n, v in cors.items() if n.lower() not in present]
        close = refused or self.close_connection
        if status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            body = b""
        lines = [
            f"{self.protocol_version} {status} {_phrase(status)}",
            f"Date: {self.date_time_string()}",
            f"x-amzn-RequestId: {request_id or uuid.uuid4()}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
        ]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._status = status
        self._log_request()
        self.wfile.write(head if self.command == "HEAD" else head + body)
        if refused:
            self._linger()

    def _linger(self) -> None:
        """Close after the answer without losing it (see _LINGER_S)."""
        self.close_connection = True
        deadline = time.monotonic() + _LINGER_S
        drained = 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while drained < _LINGER_BYTES and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                data = self.connection.recv(65536)
                if not data:
                    return
                drained += len(data)
        except OSError:  # the client is gone, or took too long
            return


def _content_length(values: list[str]) -> int | None:
    """The one Content-Length of `values` (repeats must agree), None when it is invalid."""
    if len(set(values)) != 1 or not values[0].isascii() or not values[0].isdigit():
        return None
    digits = values[0].lstrip("0")
    # Anything that long is too large anyway; int() of thousands of digits is slow.
    return int(digits or "0") if len(digits) <= 15 else MAX_PAYLOAD_BYTES + 1


def _length_required(message: str) -> _RefusedError:
    body = json.dumps({"error": {"code": "length_required", "message": message}}).encode()
    return _RefusedError(Reply(411, [("Content-Type", "application/json")], body))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class DevOptions:
    """What `python -m lambdas.devserver` reads from its environment (see the module doc)."""

    port: int = DEFAULT_PORT
    log_level: str = "WARNING"
    metrics: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DevOptions:
        """The options of `environ`; ValueError names a bad value and what is allowed."""
        port = environ.get("PORT", str(DEFAULT_PORT))
        if not (port.isascii() and port.isdigit() and int(port) <= 65535):
            raise ValueError(f"PORT = {port!r} is not allowed: use a port number from 0 to 65535")
        level = environ.get("DEV_LOG_LEVEL", "WARNING")
        if level.upper() not in LOG_LEVELS:
            raise ValueError(
                f"DEV_LOG_LEVEL = {level!r} is not allowed: use one of {', '.join(LOG_LEVELS)}"
            )
        metrics = environ.get("DEV_METRICS", "")
        if metrics.strip().lower() not in _TRUE | _FALSE:
            raise ValueError(f"DEV_METRICS = {metrics!r} is not allowed: use 1 or 0")
        return cls(int(port), level.upper(), metrics.strip().lower() in _TRUE)


class _WithoutMetrics(io.TextIOBase):
    """A text stream passing everything but EMF documents on to `stream`.

    `print(document)` writes the document, then its newline: that newline is
    dropped too, per thread, so that another thread's line in between stays whole.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._after_document = threading.local()

    def write(self, text: str) -> int:
        """Write `text` unless it is (the newline after) an EMF document."""
        after_document = getattr(self._after_document, "value", False)
        self._after_document.value = text.startswith(_EMF_PREFIX) and not text.endswith("\n")
        if not text.startswith(_EMF_PREFIX) and not (after_document and text == "\n"):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        """Flush `stream`."""
        self._stream.flush()


@contextlib.contextmanager
def _console_stdout(*, metrics: bool) -> Iterator[None]:
    """stdout line-buffered (in order with the request lines when piped), EMF only if asked.

    Not POWERTOOLS_METRICS_DISABLED: with it, Powertools 3.31.1's flush_metrics
    also skips clearing the metric set, so ProviderMetrics' values pile up (with
    a PowertoolsUserWarning about re-added dimensions) until add_metric prints
    all 100 of them anyway.
    """
    stdout = sys.stdout
    if isinstance(stdout, io.TextIOWrapper):
        stdout.reconfigure(line_buffering=True)
    if not metrics:
        sys.stdout = cast(TextIO, _WithoutMetrics(stdout))
    try:
        yield
    finally:
        sys.stdout = stdout


def _listen_error(port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (
            f"make dev: port {port} on {HOST} is in use (another make dev?); "
            "choose another with PORT=9000 make dev"
        )
    return f"make dev: cannot listen on {HOST}:{port} ({error.strerror or error}); try PORT=9000"


def main() -> None:
    """Serve until interrupted (Ctrl-C)."""
    try:
        options = DevOptions.from_environ(os.environ)
    except ValueError as error:
        sys.exit(f"make dev: {error}")
    # Before the Lambda's modules are imported: Powertools reads the level when
    # each Logger is created, at import.
    os.environ["POWERTOOLS_LOG_LEVEL"] = options.log_level
    from .story_generator.handler import build_handler

    try:
        settings = local_settings(os.environ)
        handler = build_handler(settings)
    except ConfigurationError as error:
        sys.exit(f"Configuration error: {error}")
    try:
        server = DevServer(
            (HOST, options.port), handler, cors_allowed_origins=settings.cors_allowed_origins
        )
    except OSError as error:
        sys.exit(_listen_error(options.port, error))
    shown = "shown" if options.metrics else "hidden (DEV_METRICS=1 shows them)"
    with _console_stdout(metrics=options.metrics):
        print(
            f"Story API on http://{HOST}:{server.server_port} (Ctrl-C to stop); Lambda logs "
            f"at {options.log_level} and up (DEV_LOG_LEVEL), EMF metrics {shown}; "
            "readers send Authorization: Bearer dev:<reader-id>",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


if __name__ == "__main__":
    main()
