"""providers/http.py: the JSON POST, status classification, Retry-After and URL building.

`post_json` is exercised both against the fake servers and against a stub pool
(monkeypatched over the module's `_POOL`) that records exactly what urllib3 was
asked to do and raises the errors a real network raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any

import pytest
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from lambdas.story_generator.providers import FailureKind, ProviderError
from lambdas.story_generator.providers import http as http_module
from lambdas.story_generator.providers.anthropic import AnthropicProvider
from lambdas.story_generator.providers.http import (
    JsonReply,
    error_for,
    post_json,
    retry_after_s,
    status_kind,
)
from lambdas.story_generator.providers.keys import ApiKeys
from lambdas.story_generator.providers.openai import OpenAIProvider
from lambdas.story_generator.settings import ApiKeySource, ProviderKind, ProviderSettings
from tests.lambdas.fake_providers import (
    BEAT,
    PROVIDER_REQUEST,
    Action,
    FakeProvider,
    Kind,
    accept_json,
    failure_of,
    provider_client,
    router_for,
)

NOW = 1_800_000_000.0


class StubPool:
    """Stands in for the urllib3 pool: records each request, answers or raises."""

    def __init__(
        self,
        status: int = 200,
        data: bytes = b"{}",
        headers: Mapping[str, str] | None = None,
        raises: Exception | None = None,
    ) -> None:
        self.calls: list[dict[str, Any]] = []
        self._reply = SimpleNamespace(
            status=status, data=data, headers=HTTPHeaderDict(dict(headers or {}))
        )
        self._raises = raises

    def request(self, method: str, url: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append({"method": method, "url": url, **kwargs})
        if self._raises is not None:
            raise self._raises
        return self._reply


@pytest.fixture
def stub_pool(monkeypatch: pytest.MonkeyPatch) -> StubPool:
    pool = StubPool()
    monkeypatch.setattr(http_module, "_POOL", pool)
    return pool


# status_kind ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, FailureKind.BAD_REQUEST),
        (401, FailureKind.UNAUTHORIZED),
        (402, FailureKind.QUOTA_EXHAUSTED),
        (403, FailureKind.UNAUTHORIZED),
        (404, FailureKind.MODEL_NOT_FOUND),
        (408, FailureKind.TIMEOUT),
        (409, FailureKind.BAD_REQUEST),
        (413, FailureKind.CONTEXT_EXCEEDED),
        (422, FailureKind.BAD_REQUEST),
        (429, FailureKind.THROTTLED),
        (499, FailureKind.BAD_REQUEST),
        (500, FailureKind.UNAVAILABLE),
        (502, FailureKind.UNAVAILABLE),
        (503, FailureKind.UNAVAILABLE),
        (504, FailureKind.UNAVAILABLE),
        (529, FailureKind.UNAVAILABLE),
    ],
)
def test_each_status_stands_for_its_failure(status: int, expected: FailureKind) -> None:
    assert status_kind(status) is expected


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("openai", 402, FailureKind.QUOTA_EXHAUSTED),
        ("openai", 408, FailureKind.TIMEOUT),
        ("openai", 413, FailureKind.CONTEXT_EXCEEDED),
        ("anthropic", 401, FailureKind.UNAUTHORIZED),
        ("anthropic", 402, FailureKind.QUOTA_EXHAUSTED),
        ("anthropic", 404, FailureKind.MODEL_NOT_FOUND),
        ("anthropic", 408, FailureKind.TIMEOUT),
        ("anthropic", 409, FailureKind.BAD_REQUEST),
        ("anthropic", 504, FailureKind.UNAVAILABLE),
    ],
)
def test_a_reply_whose_body_names_nothing_is_judged_by_status_alone(
    fake_provider: Any, kind: Kind, status: int, expected: FailureKind
) -> None:
    """A body with no error code, type or known phrase: only the status table speaks."""
    fake = fake_provider(kind).send(status, b'{"error": {"message": "failed"}}')

    assert failure_of(provider_client(fake)).kind is expected


# Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "-10"}, 0.0),
        ({"retry-after-ms": "500", "retry-after": "9"}, 0.5),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "soon"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": formatdate(NOW - 30, usegmt=True)}, 0.0),
    ],
    ids=[
        "none",
        "seconds",
        "fractional-seconds",
        "zero",
        "negative-seconds",
        "millis",
        "millis-above-a-second",
        "negative-millis",
        "millis-win",
        "bad-millis-fall-back",
        "bad-millis-alone",
        "bad-seconds",
        "empty",
        "http-date-ahead",
        "http-date-past",
    ],
)
def test_retry_after_is_read_from_millis_seconds_or_an_http_date(
    monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], expected: float | None
) -> None:
    monkeypatch.setattr(http_module, "time", lambda: NOW)

    assert retry_after_s(headers) == expected


def test_retry_after_headers_are_matched_whatever_their_case(fake_openai: FakeProvider) -> None:
    fake_openai.fail(503, "", "Overloaded", headers={"Retry-After": "4"})

    failure = failure_of(provider_client(fake_openai))

    assert (failure.kind, failure.retry_after_s) == (FailureKind.UNAVAILABLE, 4.0)


# error_for ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (429, 4.0),
        (503, 4.0),
        (529, 4.0),
        (400, None),
        (408, None),
        (413, None),
        (500, None),
        (502, None),
        (504, None),
    ],
)
def test_retry_after_is_kept_for_429_503_and_529_only(
    status: int, retry_after: float | None
) -> None:
    reply = JsonReply(status, {"retry-after": "4"}, None, "slow down")

    error = error_for(reply, None, None)

    assert error.retry_after_s == retry_after
    assert error.kind is status_kind(status)


def test_the_clients_kind_wins_over_the_status() -> None:
    reply = JsonReply(429, {}, None, "")

    assert (
        error_for(reply, FailureKind.QUOTA_EXHAUSTED, "spent").kind is FailureKind.QUOTA_EXHAUSTED
    )


@pytest.mark.parametrize(
    ("message", "text", "shown"),
    [
        ("Rate limited", "{...}", "Rate limited"),
        ("", "raw body", "raw body"),
        (None, "raw body", "raw body"),
        (["not", "text"], "raw body", "raw body"),
        ("m" * 1000, "", "m" * 300),
        (None, "t" * 1000, "t" * 300),
    ],
    ids=["message", "empty-message", "no-message", "message-not-text", "long-message", "long-body"],
)
def test_the_error_message_is_the_status_and_300_characters_of_detail(
    message: object, text: str, shown: str
) -> None:
    error = error_for(JsonReply(400, {}, None, text), None, message)

    assert error.message == f"HTTP 400: {shown}"
    assert str(error) == f"bad_request: HTTP 400: {shown}"


# post_json ------------------------------------------------------------------------


def test_post_json_sends_utf_8_json_once_without_redirects_or_retries(stub_pool: StubPool) -> None:
    reply = post_json(
        "https://provider.test/v1/x",
        {"text": "Le quai \u2014 la nuit"},
        {"authorization": "Bearer k", "content-type": "text/plain"},
        3.5,
    )

    (call,) = stub_pool.calls
    assert (call["method"], call["url"]) == ("POST", "https://provider.test/v1/x")
    assert call["body"] == '{"text": "Le quai \u2014 la nuit"}'.encode()
    assert call["headers"] == {"authorization": "Bearer k", "content-type": "application/json"}
    assert (call["timeout"].connect_timeout, call["timeout"].read_timeout) == (3.5, 3.5)
    assert call["retries"] is False and call["redirect"] is False, "the router alone retries"
    assert (reply.status, reply.body, reply.text) == (200, {}, "{}")


def test_a_reply_that_is_not_utf_8_or_json_keeps_its_text_and_has_no_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_module, "_POOL", StubPool(502, b"\xffbad gateway"))

    reply = post_json("https://provider.test", {}, {}, 1.0)

    assert (reply.status, reply.body, reply.text) == (502, None, "\ufffdbad gateway")


def test_a_request_that_is_not_unicode_is_refused_before_anything_is_sent(
    stub_pool: StubPool,
) -> None:
    with pytest.raises(ProviderError) as raised:
        post_json("https://provider.test", {"text": "lone \ud800"}, {}, 1.0)

    assert raised.value.kind is FailureKind.UNENCODABLE
    assert "not valid Unicode" in raised.value.message
    assert stub_pool.calls == []


@pytest.mark.parametrize(
    ("raised", "expected", "words"),
    [
        (NewConnectionError(None, "refused"), FailureKind.CONNECTION, "cannot connect to"),
        (ConnectTimeoutError("connect timed out"), FailureKind.TIMEOUT, "timed out"),
        (ReadTimeoutError(None, None, "read timed out"), FailureKind.TIMEOUT, "timed out"),
        (ProtocolError("connection reset"), FailureKind.CONNECTION, "failed"),
    ],
    ids=["new-connection", "connect-timeout", "read-timeout", "protocol"],
)
def test_network_errors_become_connection_or_timeout_failures(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, expected: FailureKind, words: str
) -> None:
    """NewConnectionError is a ConnectTimeoutError in urllib3 2, yet a refused connection."""
    monkeypatch.setattr(http_module, "_POOL", StubPool(raises=raised))

    with pytest.raises(ProviderError) as failure:
        post_json("https://provider.test/v1/x", {}, {}, 1.0)

    assert failure.value.kind is expected
    assert words in failure.value.message and "https://provider.test/v1/x" in failure.value.message


# HttpProvider ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_a_200_reply_that_is_json_but_not_an_object_is_invalid(
    fake_provider: Any, kind: Kind, body: bytes
) -> None:
    fake = fake_provider(kind).send(200, body)

    failure = failure_of(provider_client(fake))

    assert failure.kind is FailureKind.INVALID_RESPONSE
    assert failure.message == f"the reply is not a JSON object: {body.decode()}"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_redirect_is_not_followed(fake_provider: Any, kind: Kind) -> None:
    fake = fake_provider(kind)
    fake.act(Action(307, b"", {"location": f"{fake.url}/elsewhere"}), times=1)

    with pytest.raises(ProviderError):
        provider_client(fake).complete(PROVIDER_REQUEST, 5.0)

    assert len(fake.requests) == 1, "the Location is not asked for"


@pytest.mark.parametrize(
    ("kind", "suffix", "path"),
    [
        ("openai", "", "/v1/chat/completions"),
        ("openai", "/", "/v1/chat/completions"),
        ("openai", "/v1", "/v1/chat/completions"),
        ("openai", "/proxy", "/proxy/v1/chat/completions"),
        ("openai", "/proxy/v1/", "/proxy/v1/chat/completions"),
        ("anthropic", "/v1", "/v1/messages"),
        ("anthropic", "/", "/v1/messages"),
        ("anthropic", "/gateway", "/gateway/v1/messages"),
    ],
)
def test_the_api_path_is_appended_to_the_endpoint_once(
    fake_provider: Any, kind: Kind, suffix: str, path: str
) -> None:
    fake = fake_provider(kind)

    provider_client(fake, endpoint_url=fake.url + suffix).complete(PROVIDER_REQUEST, 5.0)

    assert fake.requests[0].path == path


@pytest.mark.parametrize(
    ("provider_class", "kind", "url"),
    [
        (OpenAIProvider, ProviderKind.OPENAI, "https://api.openai.com/v1/chat/completions"),
        (AnthropicProvider, ProviderKind.ANTHROPIC, "https://api.anthropic.com/v1/messages"),
    ],
)
def test_without_an_endpoint_the_providers_own_api_is_called(
    stub_pool: StubPool, provider_class: Any, kind: ProviderKind, url: str
) -> None:
    settings = ProviderSettings(kind.value, kind, "model", 1)
    keys = ApiKeys({kind: ApiKeySource("KEY", "KEY_SECRET_ARN", value="sk-test")})

    with pytest.raises(ProviderError):
        provider_class(settings, keys).complete(
            PROVIDER_REQUEST, 2.5
        )  # the stub's {} is no completion

    assert stub_pool.calls[0]["url"] == url
    assert stub_pool.calls[0]["timeout"].read_timeout == 2.5


# Token usage and cost, through the router ------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_a_generation_costs_its_tokens_at_the_prices_per_1k(fake_provider: Any, kind: Kind) -> None:
    fake = fake_provider(kind).reply(BEAT, input_tokens=1000, output_tokens=2000)
    router = router_for(fake.entry(input_price_per_1k=0.003, output_price_per_1k=0.015))

    _, generation = router.generate(PROVIDER_REQUEST, accept_json)

    assert (generation.input_tokens, generation.output_tokens) == (1000, 2000)
    assert generation.cost_usd == pytest.approx(1000 * 0.003 / 1000 + 2000 * 0.015 / 1000)
    assert generation.cost_usd == pytest.approx(0.033)


def test_a_provider_without_prices_costs_nothing(fake_openai: FakeProvider) -> None:
    fake_openai.reply(BEAT, input_tokens=1000, output_tokens=2000)
    entry = fake_openai.entry()
    del entry["input_price_per_1k"], entry["output_price_per_1k"]

    _, generation = router_for(entry).generate(PROVIDER_REQUEST, accept_json)

    assert generation.cost_usd == 0.0
    assert json.loads(generation.text) == json.loads(BEAT)
