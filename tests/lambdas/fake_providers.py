"""Fake OpenAI, Anthropic and Bedrock servers on 127.0.0.1, told per test what to do.

Each fake is a real HTTP/1.1 server (keep-alive, an ephemeral port) speaking its
provider's wire format, so the tests exercise the real clients: urllib3 for
OpenAI and Anthropic, botocore (pointed at the fake with `endpoint_url` and
dummy credentials) for Bedrock's `POST /model/{modelId}/converse`.

A fake answers each request with the next queued `Action` (`times=n`), else with
its standing one (set when `times` is None). Nothing here sleeps to synchronise:
a hanging or slow fake waits on an event that closing the server sets.

Before that, each fake refuses the fields its API refuses, with the real status
and error body (see `refusal`): OpenAI's reasoning models (ids starting with
`OPENAI_REASONING_PREFIXES`) take no `temperature` and no `max_tokens`; Claude
models from Opus 4.7 on (`CLAUDE_WITHOUT_SAMPLING`) take no `temperature`, on
Anthropic's API and on Bedrock alike; Anthropic refuses a temperature outside 0-1.

`bench/router.py` imports these fakes too.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote

import pytest

from lambdas.story_generator.circuit import CircuitStore, MemoryCircuitStore
from lambdas.story_generator.generation import GenerationRequest, MalformedReply, Message
from lambdas.story_generator.providers import Provider, ProviderError, build_providers
from lambdas.story_generator.router import Router, build_router
from lambdas.story_generator.settings import Settings, load_settings

Kind = Literal["openai", "anthropic", "bedrock"]
_ABSENT: Any = object()
BEAT = json.dumps({"text": "The train leaves without you.", "choices": ["Wait", "Run"]})
BEDROCK_REGION = "eu-west-1"
OPENAI_REASONING_PREFIXES = ("gpt-5", "gpt-6", "o1", "o3", "o4")
# Claude families that answer 400 to any temperature; matched anywhere in the model id,
# so that Bedrock's "us.anthropic.claude-haiku-5-5" is one too.
CLAUDE_WITHOUT_SAMPLING = (
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-haiku-5",
    "claude-fable",
    "claude-mythos",
)


@dataclass(frozen=True)
class Action:
    """What a fake does with one request."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    close_mid_reply: bool = False
    dribble: bool = False


@dataclass(frozen=True)
class Received:
    """A request a fake received."""

    path: str
    headers: Mapping[str, str]
    body: Any


class FakeProvider:
    """One fake provider server (use as a context manager, or call `close`)."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.requests: list[Received] = []
        self._queue: deque[Action] = deque()
        self._standing = self._success(BEAT, 12, 34, truncated=False)
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self.released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()

    def __enter__(self) -> FakeProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release hanging requests and stop the server."""
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    # What to do next ------------------------------------------------------------------

    def act(self, action: Action, times: int | None = None) -> FakeProvider:
        """Do `action` for the next `times` requests, or from now on when None."""
        with self._lock:
            if times is None:
                self._queue.clear()
                self._standing = action
            else:
                self._queue.extend([action] * times)
        return self

    def reply(
        self,
        text: str = BEAT,
        *,
        input_tokens: int = 12,
        output_tokens: int = 34,
        truncated: bool = False,
        delay_s: float = 0.0,
        times: int | None = None,
    ) -> FakeProvider:
        """Answer with a successful completion of `text`."""
        action = self._success(text, input_tokens, output_tokens, truncated=truncated)
        return self.act(Action(body=action.body, delay_s=delay_s), times)

    def fail(
        self,
        status: int,
        code: str = "",
        message: str = "failure",
        *,
        headers: Mapping[str, str] | None = None,
        error_fields: Mapping[str, object] | None = None,
        delay_s: float = 0.0,
        times: int | None = None,
    ) -> FakeProvider:
        """Answer with the provider's error format.

        `code` is OpenAI's `error.code` (and `type`), Anthropic's `error.type`, or
        Bedrock's exception name (sent in `x-amzn-ErrorType`); `error_fields` are
        added to (or replace fields of) OpenAI's and Anthropic's `error` object.
        """
        action = self._error(status, code, message, headers=headers, error_fields=error_fields)
        return self.act(replace(action, delay_s=delay_s), times)

    def send(self, status: int, body: bytes, times: int | None = None) -> FakeProvider:
        """Answer with exactly `body` (for replies that are not what the API promises)."""
        return self.act(Action(status, body), times)

    def hang(self, times: int | None = None) -> FakeProvider:
        """Accept the request and never answer."""
        return self.act(Action(hang=True), times)

    def dribble(self, times: int | None = None) -> FakeProvider:
        """Send headers, then a byte now and then, never finishing the body."""
        return self.act(Action(dribble=True), times)

    def close_mid_reply(self, times: int | None = None) -> FakeProvider:
        """Start a successful reply and close the connection halfway through the body."""
        success = self._success(BEAT, 12, 34, truncated=False)
        return self.act(Action(body=success.body, close_mid_reply=True), times)

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> bool:
        """Wait until `count` requests have arrived; False if they have not by `timeout_s`.

        A call the router made may still be on its way to the server when `generate`
        returns (a hanging primary a hedge beat, a hedge the primary's reply beat):
        this waits for the request itself, not for some guessed time.
        """
        with self._received:
            return self._received.wait_for(lambda: len(self.requests) >= count, timeout_s)

    # Configuration -------------------------------------------------------------------

    def entry(
        self, name: str | None = None, priority: int = 1, **fields: object
    ) -> dict[str, object]:
        """An AI_PROVIDER_CONFIG entry for this fake."""
        model = {
            "openai": "gpt-test",
            "anthropic": "claude-test",
            "bedrock": "anthropic.claude-test:0",
        }
        return {
            "name": name or self.kind,
            "kind": self.kind,
            "model": model[self.kind],
            "priority": priority,
            "timeout_s": 5.0,
            "input_price_per_1k": 0.003,
            "output_price_per_1k": 0.015,
            "endpoint_url": self.url,
            **fields,
        }

    # Internals -----------------------------------------------------------------------

    def _success(
        self, text: str, input_tokens: int, output_tokens: int, *, truncated: bool
    ) -> Action:
        body: object
        if self.kind == "openai":
            body = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        elif self.kind == "anthropic":
            body = {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn",
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        else:
            body = {
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "max_tokens" if truncated else "end_turn",
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens,
                },
                "metrics": {"latencyMs": 1},
            }
        return Action(body=json.dumps(body).encode())

    def refusal(self, received: Received) -> Action | None:
        """The 400 the real API answers to a field that this model refuses, if any."""
        body: Mapping[str, Any] = received.body if isinstance(received.body, dict) else {}
        if self.kind == "openai":
            return self._openai_refusal(body)
        if self.kind == "anthropic":
            model = str(body.get("model", ""))
            return self._claude_refusal(model, body.get("temperature", _ABSENT))
        config = body.get("inferenceConfig")
        temperature = config.get("temperature", _ABSENT) if isinstance(config, dict) else _ABSENT
        return self._claude_refusal(received.path, temperature)

    def _openai_refusal(self, body: Mapping[str, Any]) -> Action | None:
        if not str(body.get("model", "")).startswith(OPENAI_REASONING_PREFIXES):
            return None
        if "max_tokens" in body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            return self._openai_invalid("max_tokens", "unsupported_parameter", message)
        if "temperature" not in body:
            return None
        value = body["temperature"]
        if value == 1:
            # gpt-5.2 and later refuse any temperature, with this text and no code.
            message = "Unsupported parameter: 'temperature' is not supported with this model."
            return self._openai_invalid("temperature", None, message)
        message = (
            f"Unsupported value: 'temperature' does not support {json.dumps(value)} with this "
            "model. Only the default (1) value is supported."
        )
        return self._openai_invalid("temperature", "unsupported_value", message)

    def _openai_invalid(self, param: str, code: str | None, message: str) -> Action:
        fields = {"type": "invalid_request_error", "param": param, "code": code}
        return self._error(400, "invalid_request_error", message, error_fields=fields)

    def _claude_refusal(self, model: str, temperature: object) -> Action | None:
        if temperature is _ABSENT:
            return None
        if any(family in model for family in CLAUDE_WITHOUT_SAMPLING):
            message = "`temperature` is deprecated for this model."
        elif isinstance(temperature, int | float) and temperature > 1:
            message = "temperature: range: 0..1"
        elif isinstance(temperature, int | float) and temperature < 0:
            message = f"`temperature` cannot be set to {temperature:g} for this model"
        else:
            return None
        if self.kind == "anthropic":
            return self._error(400, "invalid_request_error", message)
        # Bedrock passes Anthropic's own error body on inside a ValidationException.
        upstream = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        return self._error(
            400,
            "ValidationException",
            f"The model returned the following errors: {json.dumps(upstream)}",
        )

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        error_fields: Mapping[str, object] | None = None,
    ) -> Action:
        error_headers = dict(headers or {})
        if self.kind == "openai":
            error: dict[str, object] = {"message": message, "type": code, "param": None}
            body: object = {"error": {**error, "code": code, **(error_fields or {})}}
        elif self.kind == "anthropic":
            error = {"type": code, "message": message, **(error_fields or {})}
            body = {"type": "error", "error": error}
        else:
            body = {"message": message}
            error_headers["x-amzn-ErrorType"] = code
        return Action(status, json.dumps(body).encode(), error_headers)

    def _next_action(self, received: Received) -> Action:
        with self._lock:
            self.requests.append(received)
            self._received.notify_all()
            refusal = self.refusal(received)
            if refusal is not None:
                return refusal
            return self._queue.popleft() if self._queue else self._standing


def _handler_for(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm
        # and the client's delayed ACK add 40 ms to every kept-alive request.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output clean

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            headers = {name.lower(): value for name, value in self.headers.items()}
            received = Received(unquote(self.path), headers, body)
            action = fake._next_action(received)
            if action.hang:
                fake.released.wait()
                self.close_connection = True
                return
            if action.delay_s and fake.released.wait(action.delay_s):
                return
            self.send_response(action.status)
            self.send_header("content-type", "application/json")
            for name, value in action.headers.items():
                self.send_header(name, value)
            if action.dribble:
                self._dribble()
            elif action.close_mid_reply:
                self.send_header("content-length", str(len(action.body)))
                self.end_headers()
                self.wfile.write(action.body[: len(action.body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            else:
                self.send_header("content-length", str(len(action.body)))
                self.end_headers()
                self.wfile.write(action.body)

        def _dribble(self) -> None:
            self.send_header("content-length", "1000000")
            self.end_headers()
            self.close_connection = True
            try:
                while not fake.released.wait(0.05):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up

    return Handler


def settings_for(
    *entries: Mapping[str, object], router: Mapping[str, object] | None = None, **environ: str
) -> Settings:
    """Settings for providers `entries` (keys and region for the fakes are set)."""
    return load_settings(
        {
            "ENVIRONMENT": "dev",
            "AI_PROVIDER_CONFIG": json.dumps(list(entries)),
            "AI_ROUTER_CONFIG": json.dumps(dict(router or {})),
            "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "BEDROCK_REGION": BEDROCK_REGION,
            **environ,
        }
    )


PROVIDER_REQUEST = GenerationRequest(
    "You narrate.", (Message("user", "Begin."), Message("assistant", "{}"), Message("user", "Go"))
)


def provider_client(fake: FakeProvider, **fields: Any) -> Provider:
    """The client `build_providers` makes for `fake`, its entry changed by `fields`."""
    (provider,) = build_providers(settings_for(fake.entry(**fields)))
    return provider


def failure_of(provider: Provider, timeout_s: float = 5.0) -> ProviderError:
    """The `ProviderError` that completing `PROVIDER_REQUEST` raises."""
    with pytest.raises(ProviderError) as raised:
        provider.complete(PROVIDER_REQUEST, timeout_s)
    return raised.value


def router_for(
    *entries: Mapping[str, object],
    router: Mapping[str, object] | None = None,
    store: CircuitStore | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Router:
    """A router over `entries` with an in-memory circuit (unless `store` is given)."""
    settings = settings_for(*entries, router=router)
    store = store or MemoryCircuitStore()
    return build_router(settings, circuit_store=store, clock=clock, sleep=sleep)


def accept_json(text: str) -> Any:
    """A router `accept` reduced to its essence: JSON, or `MalformedReply`."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise MalformedReply(f"not JSON: {error}") from None


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format documents among captured stdout lines."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"_aws"')]


class FakeClock:
    """An epoch clock that only moves when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, so botocore signs requests to the fake Bedrock."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")


@pytest.fixture
def fake_provider(aws_credentials: None) -> Iterator[Callable[[Kind], FakeProvider]]:
    """A factory of fake provider servers, all closed after the test."""
    fakes: list[FakeProvider] = []

    def make(kind: Kind) -> FakeProvider:
        fakes.append(FakeProvider(kind))
        return fakes[-1]

    yield make
    for fake in fakes:
        fake.close()


@pytest.fixture
def fake_openai(fake_provider: Callable[[Kind], FakeProvider]) -> FakeProvider:
    """A fake OpenAI chat completions server."""
    return fake_provider("openai")


@pytest.fixture
def fake_anthropic(fake_provider: Callable[[Kind], FakeProvider]) -> FakeProvider:
    """A fake Anthropic messages server."""
    return fake_provider("anthropic")


@pytest.fixture
def fake_bedrock(fake_provider: Callable[[Kind], FakeProvider]) -> FakeProvider:
    """A fake Bedrock runtime server (Converse)."""
    return fake_provider("bedrock")
