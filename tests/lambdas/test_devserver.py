"""The local devserver: a whole story over real HTTP, on an ephemeral port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lambdas.devserver import DevServer, local_settings
from lambdas.story_generator.handler import build_handler
from tests.lambdas.fake_providers import FakeProvider


@contextlib.contextmanager
def serving(environ: dict[str, str]) -> Iterator[DevServer]:
    """The devserver as `python -m lambdas.devserver` builds it from `environ`, on a free port."""
    dev = DevServer(("127.0.0.1", 0), build_handler(local_settings(environ)))
    thread = threading.Thread(target=dev.serve_forever, daemon=True)
    thread.start()
    try:
        yield dev
    finally:
        dev.shutdown()
        dev.server_close()
        thread.join()


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
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    try:
        data = (
            body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        )
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        connection.close()


def test_local_settings_use_embedded_storage_and_no_events() -> None:
    settings = local_settings(
        {"SESSION_TABLE_NAME": "prod-table", "EVENTS_ENABLED": "true", "SESSION_TTL_DAYS": "3"}
    )
    assert settings.session_table_name is None and not settings.events_enabled
    assert settings.environment == "local" and settings.session_ttl_days == 3
    assert [provider.kind.value for provider in settings.providers] == ["mock"]


def test_a_whole_story_over_http(server: DevServer) -> None:
    status, headers, started = request(
        server, "POST", "/stories", {"user_id": "dev", "genre": "liminal", "max_beats": 4}
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
        status, _, body = request(dev, "POST", "/stories", {"user_id": "dev", "genre": "comedy"})
        assert status == 201 and body["beat"]["text"] == "From the configured provider."
        _, _, health = request(dev, "GET", "/health")
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-x"
    assert [provider["kind"] for provider in health["providers"]] == ["openai"]


def test_two_readers_choosing_on_the_same_beat_get_one_200_and_one_409(
    server: DevServer,
) -> None:
    _, _, started = request(server, "POST", "/stories", {"user_id": "dev", "genre": "horror"})
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
    assert (status, headers["Allow"], body["error"]["code"]) == (405, "POST", "method_not_allowed")
    status, _, body = request(server, "GET", "/stories/x/y/z?debug=1")
    assert (status, body["error"]["code"]) == (404, "route_not_found")
    status, _, body = request(server, "POST", "/stories", b"\xff\xfe")
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    status, _, body = request(server, "POST", "/stories", b"{" * 9000)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


def test_idempotency_key_header_reaches_the_handler(server: DevServer) -> None:
    body = {"user_id": "dev", "genre": "mystery"}
    first = request(server, "POST", "/stories", body, {"Idempotency-Key": "abc-123"})
    again = request(server, "POST", "/stories", body, {"idempotency-key": "abc-123"})
    assert first[2] == again[2]


def test_head_gets_headers_without_a_body(server: DevServer) -> None:
    status, headers, body = request(server, "HEAD", "/health")
    assert status == 405 and headers["Allow"] == "GET" and body is None


def test_python_m_lambdas_devserver_serves_on_port_from_env() -> None:
    root = Path(__file__).resolve().parents[2]
    environ = {**os.environ, "PORT": "0", "PYTHONPATH": str(root)}
    environ.pop("AI_PROVIDER_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "lambdas.devserver"],
        cwd=root,
        env=environ,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        connection.request("GET", "/health")
        assert json.loads(connection.getresponse().read())["status"] == "ok"
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_bad_provider_config_stops_the_devserver_with_the_reason() -> None:
    root = Path(__file__).resolve().parents[2]
    environ = {**os.environ, "PYTHONPATH": str(root), "AI_PROVIDER_CONFIG": "[{}]"}
    result = subprocess.run(
        [sys.executable, "-m", "lambdas.devserver"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "AI_PROVIDER_CONFIG[0]" in result.stderr
