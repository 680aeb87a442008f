"""The local devserver over real HTTP, on an ephemeral port of 127.0.0.1.

A whole story; readers' `Bearer dev:<reader-id>` tokens and the 401 without one;
CORS preflights; every method reaching the handler; API Gateway's own answers
(401, 413, 504, 502) from openapi.yaml; request framing (411, chunked bodies,
Expect, stalled uploads); a burst of concurrent clients; the console (a line per
request, the Lambda's logs and metrics only when asked); and `python -m
lambdas.devserver` itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from lambdas import devserver
from lambdas.devserver import (
    DEV_CORS_ORIGINS,
    MAX_PAYLOAD_BYTES,
    DevOptions,
    DevServer,
    LambdaHandler,
    LocalContext,
    dev_claims,
    local_settings,
    proxy_event,
)
from lambdas.story_generator.handler import build_handler
from lambdas.story_generator.story import READER_ID_SCHEMA
from lambdas.story_generator.validation import validate
from tests.lambdas.fake_providers import FakeProvider

ROOT = Path(__file__).resolve().parents[2]
READER = "dev"
AUTH = f"Bearer dev:{READER}"
# The raw header line, for requests written byte by byte.
AUTH_LINE = f"Authorization: {AUTH}\r\n".encode()
GATEWAY_RESPONSES = yaml.safe_load(devserver.OPENAPI_PATH.read_text())[
    "x-amazon-apigateway-gateway-responses"
]


def gateway_body(kind: str) -> Any:
    """The JSON body openapi.yaml gives API Gateway's `kind` refusals."""
    return json.loads(GATEWAY_RESPONSES[kind]["responseTemplates"]["application/json"])


@contextlib.contextmanager
def serving_handler(handler: LambdaHandler, **options: Any) -> Iterator[DevServer]:
    """A DevServer of `handler` on a free port, serving on a thread."""
    options.setdefault("console", lambda line: None)
    dev = DevServer(("127.0.0.1", 0), handler, **options)
    thread = threading.Thread(target=dev.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield dev
    finally:
        dev.shutdown()
        dev.server_close()
        thread.join()


@contextlib.contextmanager
def serving(environ: dict[str, str], **options: Any) -> Iterator[DevServer]:
    """The devserver as `python -m lambdas.devserver` builds it from `environ`, on a free port."""
    with serving_handler(build_handler(local_settings(environ)), **options) as dev:
        yield dev


@pytest.fixture
def server() -> Iterator[DevServer]:
    with serving({"SESSION_TABLE_NAME": "ignored-locally", "EVENTS_ENABLED": "true"}) as dev:
        yield dev


def request(
    server: DevServer,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    *,
    reader: str | None = READER,
) -> tuple[int, dict[str, str], Any]:
    """One request on its own connection, as `reader` (None: no Authorization header)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    try:
        data = (
            body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        )
        sent = {"Authorization": f"Bearer dev:{reader}"} if reader is not None else {}
        connection.request(method, path, body=data, headers={**sent, **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        connection.close()


def exchange(server: DevServer, data: bytes) -> tuple[int, dict[str, str], Any]:
    """The answer to raw `data`, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as client:
        client.sendall(data)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, json.loads(body)


def run_devserver(environ: Mapping[str, str], *requests: tuple[str, str, object]) -> str:
    """Everything `python -m lambdas.devserver` writes to stdout while serving `requests`."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DEV_", "POWERTOOLS_")) and name != "AI_PROVIDER_CONFIG"
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "lambdas.devserver"],
        cwd=ROOT,
        env={**clean, "PORT": "0", "PYTHONPATH": str(ROOT), **environ},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        banner = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        for method, path, body in requests:
            connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
            connection.request(
                method,
                path,
                body=json.dumps(body) if body else None,
                headers={"Authorization": AUTH},
            )
            connection.getresponse().read()
            connection.close()
    finally:
        process.send_signal(signal.SIGINT)  # a clean stop: everything written is flushed
        rest, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    return banner + rest


def test_local_settings_use_embedded_storage_and_no_events() -> None:
    settings = local_settings(
        {"SESSION_TABLE_NAME": "prod-table", "EVENTS_ENABLED": "true", "SESSION_TTL_DAYS": "3"}
    )
    assert settings.session_table_name is None and not settings.events_enabled
    assert settings.environment == "local" and settings.session_ttl_days == 3
    assert [provider.kind.value for provider in settings.providers] == ["mock"]


def test_local_settings_allow_the_local_web_dev_origins_unless_told_otherwise() -> None:
    assert local_settings({}).cors_allowed_origins == DEV_CORS_ORIGINS
    assert DEV_CORS_ORIGINS == ("http://localhost:5173", "http://127.0.0.1:5173")
    chosen = local_settings({"CORS_ALLOWED_ORIGINS": '["http://localhost:3000"]'})
    assert chosen.cors_allowed_origins == ("http://localhost:3000",)
    assert local_settings({"CORS_ALLOWED_ORIGINS": "[]"}).cors_allowed_origins == ()


def test_a_whole_story_over_http(server: DevServer) -> None:
    status, headers, started = request(
        server, "POST", "/stories", {"genre": "liminal", "max_beats": 4}
    )
    assert status == 201 and headers["Content-Type"] == "application/json"
    session_id = started["session_id"]
    assert headers["Location"] == f"/stories/{session_id}"
    beat = started["beat"]
    while not beat["ending"]:
        status, _, reply = request(
            server,
            "POST",
            f"/stories/{session_id}/choices",
            {"beat": beat["index"], "choice": len(beat["choices"]) - 1},
        )
        assert status == 200, reply
        beat = reply["beat"]
    status, _, session = request(server, "GET", f"/stories/{session_id}")
    assert status == 200 and session["status"] == "completed" and len(session["beats"]) == 4
    status, _, health = request(server, "GET", "/health")
    assert status == 200 and health["providers"][0]["kind"] == "mock"


def test_ai_provider_config_is_honoured(fake_openai: FakeProvider) -> None:
    fake_openai.reply(json.dumps({"text": "From the configured provider.", "choices": ["A", "B"]}))
    environ = {"AI_PROVIDER_CONFIG": json.dumps([fake_openai.entry()]), "OPENAI_API_KEY": "sk-x"}
    with serving(environ) as dev:
        status, _, body = request(dev, "POST", "/stories", {"genre": "comedy"})
        assert status == 201 and body["beat"]["text"] == "From the configured provider."
        _, _, health = request(dev, "GET", "/health")
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-x"
    assert [provider["kind"] for provider in health["providers"]] == ["openai"]


def test_two_readers_choosing_on_the_same_beat_get_one_200_and_one_409(
    server: DevServer,
) -> None:
    _, _, started = request(server, "POST", "/stories", {"genre": "horror"})
    path = f"/stories/{started['session_id']}/choices"
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(
                lambda choice: request(server, "POST", path, {"beat": 0, "choice": choice}), [0, 1]
            )
        )
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses == [200, 409]
    conflict = next(body for status, _, body in outcomes if status == 409)
    assert conflict["error"]["code"] == "choice_already_made"


def test_http_errors_are_json(server: DevServer) -> None:
    status, headers, body = request(server, "DELETE", "/stories")
    assert (status, headers["Allow"], body["error"]["code"]) == (
        405,
        "GET, POST",
        "method_not_allowed",
    )
    status, _, body = request(server, "GET", "/stories/x/y/z?debug=1")
    assert (status, body["error"]["code"]) == (404, "route_not_found")
    status, _, body = request(server, "POST", "/stories", b"\xff\xfe")
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    status, _, body = request(server, "POST", "/stories", b"{" * 9000)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


def test_idempotency_key_header_reaches_the_handler(server: DevServer) -> None:
    body = {"genre": "mystery"}
    first = request(server, "POST", "/stories", body, {"Idempotency-Key": "abc-123"})
    again = request(server, "POST", "/stories", body, {"idempotency-key": "abc-123"})
    assert first[2] == again[2]


def test_head_gets_headers_without_a_body(server: DevServer) -> None:
    status, headers, body = request(server, "HEAD", "/health")
    assert status == 405 and headers["Allow"] == "GET" and body is None


def test_python_m_lambdas_devserver_serves_on_port_from_env() -> None:
    output = run_devserver({}, ("GET", "/health", None))
    assert re.search(r"^GET /health -> 200 in ", output, re.MULTILINE), output


def test_bad_provider_config_stops_the_devserver_with_the_reason() -> None:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "AI_PROVIDER_CONFIG": "[{}]"}
    result = subprocess.run(
        [sys.executable, "-m", "lambdas.devserver"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "AI_PROVIDER_CONFIG[0]" in result.stderr


# Readers and CORS, as API Gateway's authorizer and mocks answer -----------------------


def recording_handler(calls: list[Mapping[str, Any]]) -> LambdaHandler:
    """A handler that keeps each event and answers 200 `{}`."""

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    return handler


def test_a_dev_token_becomes_the_authorizers_claims() -> None:
    calls: list[Mapping[str, Any]] = []
    with serving_handler(recording_handler(calls)) as dev:
        assert request(dev, "POST", "/stories", {"genre": "horror"}, reader="reader-1")[0] == 200
        assert request(dev, "GET", "/health", reader="reader-1")[0] == 200

    secured, health = (event["requestContext"] for event in calls)
    assert secured["authorizer"]["claims"]["sub"] == "reader-1", "what the Lambda trusts"
    assert "authorizer" not in health, "an open operation has no authorizer, deployed or not"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer dev:",
        "dev:alice",
        "Basic dev:alice",
        "Bearer dev:-alice",
        "Bearer dev:al ice",
        "Bearer dev:al#ice",
        "Bearer dev:" + "a" * 129,
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
    ],
    ids=[
        "absent",
        "empty",
        "no-token",
        "no-reader",
        "no-scheme",
        "basic",
        "leading-dash",
        "space",
        "hash",
        "129-characters",
        "a-real-jwt",
    ],
)
def test_a_story_route_without_a_dev_token_gets_api_gateways_401(
    authorization: str | None,
) -> None:
    calls: list[Mapping[str, Any]] = []
    headers = {} if authorization is None else {"Authorization": authorization}
    with serving_handler(recording_handler(calls)) as dev:
        for method, path in [("POST", "/stories"), ("GET", "/stories/x")]:
            status, answer_headers, body = request(dev, method, path, b"{}", headers, reader=None)
            assert (status, body) == (401, gateway_body("UNAUTHORIZED")), (method, path)
            assert answer_headers["WWW-Authenticate"] == "Bearer"
    assert calls == [], "refused before the handler, as the authorizer refuses before the Lambda"


def test_dev_reader_ids_are_the_lambdas_reader_ids() -> None:
    for reader in ["a", "alice@example.com", "0f8e-1:2+3.4_5", "A" * 128]:
        claims = dev_claims(f"bearer dev:{reader}")
        assert claims is not None and claims["sub"] == reader
        validate(reader, READER_ID_SCHEMA)
    assert dev_claims("Bearer dev:" + "A" * 129) is None


def test_open_routes_unknown_paths_and_other_methods_need_no_token(server: DevServer) -> None:
    assert request(server, "GET", "/health", reader=None)[0] == 200
    assert request(server, "GET", "/nowhere", reader=None)[0] == 404
    status, headers, _ = request(server, "DELETE", "/stories", reader=None)
    assert (status, headers["Allow"]) == (405, "GET, POST"), "API Gateway's 405 mock is open"


def test_readers_see_their_own_stories_only(server: DevServer) -> None:
    status, _, started = request(server, "POST", "/stories", {"genre": "horror"}, reader="alice")
    assert status == 201
    path = f"/stories/{started['session_id']}"

    assert request(server, "GET", path, reader="alice")[0] == 200
    assert request(server, "GET", path, reader="bob")[0] in (403, 404)


def test_a_preflight_is_answered_without_the_handler() -> None:
    calls: list[Mapping[str, Any]] = []
    with serving_handler(recording_handler(calls)) as dev:
        allowed = request(
            dev,
            "OPTIONS",
            "/stories/abc/choices",
            headers={
                "Origin": "http://localhost:5173",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
            reader=None,
        )
        refused = request(
            dev, "OPTIONS", "/stories", headers={"Origin": "https://evil.example"}, reader=None
        )
        unknown = request(dev, "OPTIONS", "/nowhere", reader=None)

    status, headers, body = allowed
    assert (status, body) == (204, None)
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    status, headers, _ = refused
    assert status == 204 and "Access-Control-Allow-Origin" not in headers
    assert headers["Vary"] == "Origin"
    assert unknown[0] == 200 and [event["path"] for event in calls] == ["/nowhere"], (
        "no path, no preflight mock: the request goes on, as to API Gateway's 404"
    )


def test_api_gateways_own_answers_carry_cors_headers_for_an_allowed_origin() -> None:
    with serving_handler(
        recording_handler([]), cors_allowed_origins=["https://app.example"]
    ) as dev:
        status, headers, _ = request(
            dev, "POST", "/stories", b"{}", {"Origin": "https://app.example"}, reader=None
        )
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == "https://app.example", (
        "else the browser hides the 401 from the web reader"
    )


# Every method, as API Gateway passes it on --------------------------------------------


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "BREW", "PURGE"])
@pytest.mark.parametrize("path", ["/stories", "/health", "/nowhere"])
def test_any_method_gets_the_handlers_own_json_answer(method: str, path: str) -> None:
    handler = build_handler(local_settings({}))
    with serving_handler(handler) as dev:
        status, headers, body = request(dev, method, path)
    expected = handler(proxy_event(method, path, [], b""), LocalContext())
    assert (status, body) == (expected["statusCode"], json.loads(expected["body"])), (
        "http.server answers methods without a do_<METHOD> 501 in HTML; the Lambda answers JSON"
    )
    assert headers["Content-Type"] == "application/json"


def test_kept_alive_requests_do_not_wait_for_delayed_acks(server: DevServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    request(server, "GET", "/health")  # the handler's first call builds its caches
    started = time.perf_counter()
    for _ in range(50):
        connection.request("GET", "/health")
        assert connection.getresponse().read()
    elapsed_s = time.perf_counter() - started
    connection.close()
    assert elapsed_s < 1.0, f"50 requests took {elapsed_s:.2f} s: Nagle's 40 ms per request is back"


# API Gateway's own answers ---------------------------------------------------------------


def test_a_body_over_10_mb_gets_api_gateways_413_without_reaching_the_handler() -> None:
    calls: list[object] = []
    with serving_handler(lambda event, context: calls.append(event) or {}) as dev:
        status, headers, body = request(dev, "POST", "/stories", b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert (status, body) == (413, gateway_body("REQUEST_TOO_LARGE"))
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert calls == []


def test_expect_100_continue_is_answered_only_once_the_size_is_known(server: DevServer) -> None:
    status, _, body = exchange(
        server,
        b"POST /stories HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + AUTH_LINE
        + b"Content-Length: %d\r\n\r\n" % (MAX_PAYLOAD_BYTES + 1),
    )
    assert (status, body) == (413, gateway_body("REQUEST_TOO_LARGE")), "413 instead of 100"
    story = json.dumps({"genre": "horror"}).encode()
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as client:
        client.sendall(
            b"POST /stories HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + AUTH_LINE
            + b"Content-Length: %d\r\n\r\n" % len(story)
        )
        assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(story)
        assert client.recv(100).startswith(b"HTTP/1.1 201 ")


def test_a_handler_past_the_integration_timeout_gets_api_gateways_504() -> None:
    release = threading.Event()
    calls: list[str] = []
    lines: list[str] = []

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event["path"])
        if event["path"] == "/slow":
            release.wait(10)
        return {"statusCode": 200, "body": "{}"}

    with serving_handler(handler, integration_timeout_s=0.2, console=lines.append) as dev:
        status, headers, body = request(dev, "GET", "/slow")
        assert (status, body) == (504, gateway_body("INTEGRATION_TIMEOUT"))
        assert headers["Connection"] == "close", "its handler thread still runs the call"
        status, _, body = request(dev, "GET", "/queued")
        assert (status, body) == (504, gateway_body("INTEGRATION_TIMEOUT"))
        assert calls == ["/slow"], "a request whose 29 s run out behind the running call never runs"
        release.set()
        assert dev.wait_idle(10)
        assert request(dev, "GET", "/after")[0] == 200 and calls == ["/slow", "/after"]
    assert re.fullmatch(r"GET /slow -> 504 in \d+\.\d ms \(timed out; .*\)", lines[0]), lines
    assert re.fullmatch(r"GET /slow: the handler returned after \d+\.\d s, past its 504", lines[2])


def test_a_handler_that_raises_or_returns_no_proxy_result_gets_api_gateways_502() -> None:
    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        if event["path"] == "/raise":
            raise RuntimeError("boom")
        return {"statusCode": "200", "body": "{}"}

    lines: list[str] = []
    with serving_handler(handler, console=lines.append) as dev:
        for path in ("/raise", "/malformed"):
            status, _, body = request(dev, "GET", path)
            assert (status, body) == (
                502,
                {"error": {"code": "gateway_error", "message": "Internal server error"}},
            ), "DEFAULT_5XX with API Gateway's own message"
    console = "\n".join(lines)
    assert "RuntimeError: boom" in console and "statusCode '200' is not an HTTP status" in console


# Request framing -----------------------------------------------------------------------


def test_a_body_without_a_valid_content_length_gets_411(server: DevServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    connection.putrequest("POST", "/stories")
    connection.putheader("Authorization", AUTH)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411 and response.getheader("Connection") == "close"
    assert json.loads(response.read())["error"]["code"] == "length_required"
    connection.close()
    for length in (b"abc", b"-1", b"\xb2", b"5, 6"):
        status, _, body = exchange(
            server,
            b"POST /stories HTTP/1.1\r\nHost: x\r\n"
            + AUTH_LINE
            + b"Content-Length: "
            + length
            + b"\r\n\r\n",
        )
        assert (status, body["error"]["code"]) == (411, "length_required"), length


def test_a_chunked_body_is_read_and_the_connection_stays_usable(server: DevServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    chunks = iter([b'{"genre": ', b'"horror"}'])
    # http.client sends it chunked
    connection.request("POST", "/stories", body=chunks, headers={"Authorization": AUTH})
    response = connection.getresponse()
    assert response.status == 201 and json.loads(response.read())["beat"]["index"] == 0
    sock = connection.sock
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    assert connection.sock is sock, "the same connection answered both"
    connection.close()


def test_a_malformed_or_oversized_chunked_body_is_refused_and_its_connection_closed(
    server: DevServer,
) -> None:
    head = (
        b"POST /stories HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for body in (b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhello world\r\n0\r\n\r\n"):
        status, headers, answer = exchange(server, head + body)
        assert (status, answer["error"]["code"]) == (400, "gateway_refused"), body
        assert headers["Connection"] == "close"
    megabyte = b"x" * (1024 * 1024)
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    connection.request(
        "POST", "/stories", body=iter([megabyte] * 11), headers={"Authorization": AUTH}
    )
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (
        413,
        gateway_body("REQUEST_TOO_LARGE"),
    )
    connection.close()
    status, _, answer = exchange(server, head.replace(b"chunked", b"gzip") + b"\r\n")
    assert (status, answer["error"]["code"]) == (501, "gateway_error")


def test_a_malformed_request_gets_json_in_the_gateways_shape(server: DevServer) -> None:
    status, headers, body = exchange(server, b"NONSENSE\r\n\r\n")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert body["error"]["code"] == "gateway_refused"


def read_all(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def handler_threads() -> list[threading.Thread]:
    """socketserver's per-connection threads still alive."""
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /stories HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"Content-Length: 100\r\n\r\n{",
        b"POST /stories HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"Transfer-Encoding: chunked\r\n"
        b'\r\n5\r\n{"gen',
        b"POST /stories HTTP/1.1\r\nHost: x\r\n",
    ],
    ids=["part-of-the-body", "part-of-a-chunk", "part-of-the-headers"],
)
def test_a_client_that_stalls_mid_request_gets_408_and_its_thread_is_freed(sent: bytes) -> None:
    calls: list[Mapping[str, Any]] = []
    lines: list[str] = []
    with serving_handler(recording_handler(calls), read_timeout_s=0.2, console=lines.append) as dev:
        before = set(handler_threads())
        with socket.create_connection(("127.0.0.1", dev.server_port), timeout=10) as client:
            client.sendall(sent)
            received = read_all(client)  # until the server closes the connection
        for thread in set(handler_threads()) - before:  # this connection's, if not done yet
            thread.join(10)
            assert not thread.is_alive(), "no thread is left waiting for the rest"
        assert request(dev, "GET", "/health")[0] == 200, "the server still answers"

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    assert json.loads(body)["error"]["code"] == "gateway_refused"
    assert calls == [] or [event["path"] for event in calls] == ["/health"]
    assert re.fullmatch(
        r"POST /stories -> 408 in .* \(the client sent nothing for 0.2 s\)", lines[0]
    )


def test_an_idle_kept_alive_connection_is_closed_without_an_answer() -> None:
    lines: list[str] = []
    with (
        serving_handler(recording_handler([]), read_timeout_s=0.2, console=lines.append) as dev,
        socket.create_connection(("127.0.0.1", dev.server_port), timeout=10) as client,
    ):
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = read_all(client)
    assert received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1") == 1
    assert len(lines) == 1, "one line for the request, none for the idle close"


def test_64_concurrent_clients_are_queued_not_reset() -> None:
    dev = DevServer(("127.0.0.1", 0), recording_handler([]), console=lambda line: None)
    clients: list[socket.socket] = []
    thread = threading.Thread(target=dev.serve_forever, args=(0.01,), daemon=True)
    try:
        # All connect before the server accepts any: the listen backlog holds them.
        for _ in range(64):
            clients.append(socket.create_connection(("127.0.0.1", dev.server_port), timeout=5))
        thread.start()
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = [read_all(client) for client in clients]
    finally:
        for client in clients:
            client.close()
        dev.shutdown() if thread.is_alive() else None
        dev.server_close()
    assert [answer.split(b" ", 2)[1] for answer in answers] == [b"200"] * 64


def post(body: bytes, head: bytes = AUTH_LINE) -> bytes:
    """A POST /stories of `body` with its Content-Length."""
    return b"POST /stories HTTP/1.1\r\n" + head + b"Content-Length: %d\r\n\r\n" % len(body) + body


FUZZ = [
    b"GET //[ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET //stories HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /stories/%ff%00 HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"\r\n",
    post(b"\xff\xfe\x00\x01z"),
    post(rb'{"genre": "liminal", "premise": "\ud800"}'),
    post(rb'{"genre": "liminal", "\udfff\ud800": 1}'),
    post(b"[" * 8000),
    post(b'{"genre": "liminal", "premise": 1e999}'),
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Odd: \xff\xfe\r\n\r\n",
    b"\x00\x01\x02\r\n\r\n",
    b"GET /health HTTP/9.9\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    b"GET " + b"/a" * 40_000 + b" HTTP/1.1\r\n\r\n",
    b"POST /stories HTTP/1.1\r\n" + AUTH_LINE + b"Transfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    b"POST /stories HTTP/1.1\r\n" + AUTH_LINE + b"Content-Length: 99999999999999999999\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nAuthorization: Bearer dev:\xe9\r\n\r\n",
    post(b"{}", b"Authorization: Bearer dev:x\r\nAuthorization: Bearer dev:y\r\n"),
    b"POST /stories HTTP/1.1\r\n" + AUTH_LINE + b"Content-Length: 10\r\n\r\n{",
    b"BREW /stories/x/choices HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
]


def answers_in(received: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in `received`, in order (a 100 Continue included)."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        length = int(headers.get("Content-Length", "0"))
        answers.append((int(status_line.split()[1]), headers, rest[:length]))
        received = rest[length:]
    return answers


@pytest.mark.parametrize("data", FUZZ, ids=range(len(FUZZ)))
def test_whatever_a_fuzzer_sends_gets_a_json_answer_and_the_server_lives_on(data: bytes) -> None:
    lines: list[str] = []
    handler = build_handler(local_settings({}))
    with serving_handler(handler, read_timeout_s=0.5, console=lines.append) as dev:
        with socket.create_connection(("127.0.0.1", dev.server_port), timeout=10) as client:
            client.sendall(data)
            with contextlib.suppress(OSError):  # the server may have closed already
                client.shutdown(socket.SHUT_WR)
            received = read_all(client)
        assert request(dev, "GET", "/health")[0] == 200, "the server still answers"

    *interim, (status, headers, body) = answers_in(received)
    assert all(answer[0] == 100 for answer in interim)
    assert 200 <= status <= 599
    if body:
        assert headers["Content-Type"] == "application/json"
        assert status < 400 or set(json.loads(body)["error"]) >= {"code", "message"}
    assert not any("Traceback" in line for line in lines), lines


# The console ---------------------------------------------------------------------------


def test_the_console_has_one_line_per_request() -> None:
    lines: list[str] = []
    with serving({}, console=lines.append) as dev:
        request(dev, "POST", "/stories", {"genre": "liminal"})
        request(dev, "GET", "/health?verbose=1")
        request(dev, "DELETE", "/health")
    assert [re.sub(r"\d+\.\d ms", "N ms", line) for line in lines] == [
        "POST /stories -> 201 in N ms",
        "GET /health?verbose=1 -> 200 in N ms",
        "DELETE /health -> 405 in N ms",
    ]


def test_dev_options_come_from_the_environment() -> None:
    assert DevOptions.from_environ({}) == DevOptions(8787, "WARNING", metrics=False)
    environ = {"PORT": "0", "DEV_LOG_LEVEL": "debug", "DEV_METRICS": "1"}
    assert DevOptions.from_environ(environ) == DevOptions(0, "DEBUG", metrics=True)
    for name, value, allowed in [
        ("PORT", "65536", "from 0 to 65535"),
        ("DEV_LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("DEV_METRICS", "maybe", "1 or 0"),
    ]:
        with pytest.raises(ValueError, match=allowed):
            DevOptions.from_environ({name: value})


START_STORY = ("POST", "/stories", {"genre": "horror"})


@pytest.fixture
def failing_then_mock(fake_openai: FakeProvider) -> dict[str, str]:
    """An environment whose first provider fails (a WARNING log), then the mock writes."""
    fake_openai.fail(500, "server_error")
    providers = [fake_openai.entry(priority=1), {"name": "mock", "kind": "mock", "priority": 2}]
    return {"AI_PROVIDER_CONFIG": json.dumps(providers), "OPENAI_API_KEY": "sk-x"}


def test_by_default_the_console_shows_requests_and_warnings_but_no_metrics(
    failing_then_mock: dict[str, str],
) -> None:
    output = run_devserver(failing_then_mock, START_STORY)
    lines = output.splitlines()
    assert lines[0].startswith("Story API on http://127.0.0.1:")
    assert "Lambda logs at WARNING and up" in lines[0] and "EMF metrics hidden" in lines[0]
    assert re.fullmatch(r"POST /stories -> 201 in \d+\.\d ms", lines[-1]), output
    warnings = [json.loads(line) for line in lines[1:-1]]
    assert [(log["level"], log["message"]) for log in warnings] == [("WARNING", "provider failed")]
    assert '"_aws"' not in output, "EMF documents only with DEV_METRICS=1"


def test_dev_metrics_and_dev_log_level_choose_what_the_lambda_shows(
    failing_then_mock: dict[str, str],
) -> None:
    environ = {**failing_then_mock, "DEV_METRICS": "1", "DEV_LOG_LEVEL": "ERROR"}
    output = run_devserver(environ, START_STORY)
    documents = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    assert [document["Provider"] for document in documents] == ["openai", "mock"]
    assert "provider failed" not in output, "a WARNING is below DEV_LOG_LEVEL=ERROR"


# `python -m lambdas.devserver` ---------------------------------------------------------


def test_a_port_in_use_stops_main_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("PORT", str(port))
        monkeypatch.delenv("AI_PROVIDER_CONFIG", raising=False)
        monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")  # main() sets it: undone after
        with pytest.raises(SystemExit) as stopped:
            devserver.main()
    assert stopped.value.code == (
        f"make dev: port {port} on 127.0.0.1 is in use (another make dev?); "
        "choose another with PORT=9000 make dev"
    ), "sys.exit with a message: exit status 1 and that line on stderr"
    assert "Traceback" not in capsys.readouterr().err
