"""The provider clients against fake OpenAI, Anthropic and Bedrock servers.

Each client must speak its provider's wire format and turn every failure into
the right `FailureKind`: the router decides from the kind alone.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.story_generator.circuit import MemoryCircuitStore
from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers import FailureKind, ProviderError, build_providers
from lambdas.story_generator.providers.anthropic import AnthropicProvider
from lambdas.story_generator.providers.base import FailureCategory
from lambdas.story_generator.providers.http import post_json
from lambdas.story_generator.providers.keys import ApiKeys
from lambdas.story_generator.settings import ProviderKind, ProviderSettings
from tests.lambdas.fake_providers import (
    PROVIDER_REQUEST,
    FakeClock,
    FakeProvider,
    Kind,
    accept_json,
    failure_of,
    provider_client,
    router_for,
    settings_for,
)

MakeFake = Callable[[Kind], FakeProvider]


# (provider kind, status, code, message, expected kind)
STATUS_FAILURES = [
    ("openai", 429, "rate_limit_exceeded", "Rate limit reached", FailureKind.THROTTLED),
    ("openai", 429, "insufficient_quota", "You exceeded your quota", FailureKind.QUOTA_EXHAUSTED),
    (
        "openai",
        400,
        "context_length_exceeded",
        "maximum context length",
        FailureKind.CONTEXT_EXCEEDED,
    ),
    ("openai", 400, "invalid_value", "bad temperature", FailureKind.BAD_REQUEST),
    (
        "openai",
        400,
        "unsupported_value",
        "Unsupported value: 'temperature' does not support 0.7 with this model.",
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    (
        "openai",
        400,
        "unsupported_parameter",
        "Unsupported parameter: 'max_tokens' is not supported with this model.",
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    ("openai", 401, "invalid_api_key", "Incorrect API key", FailureKind.UNAUTHORIZED),
    ("openai", 403, "unsupported_country", "Not supported", FailureKind.UNAUTHORIZED),
    ("openai", 404, "model_not_found", "The model does not exist", FailureKind.MODEL_NOT_FOUND),
    ("openai", 408, "", "Request timeout", FailureKind.TIMEOUT),
    ("openai", 500, "server_error", "Internal error", FailureKind.UNAVAILABLE),
    ("openai", 502, "", "Bad gateway", FailureKind.UNAVAILABLE),
    ("openai", 503, "", "Overloaded", FailureKind.UNAVAILABLE),
    ("anthropic", 529, "overloaded_error", "Overloaded", FailureKind.UNAVAILABLE),
    ("anthropic", 429, "rate_limit_error", "Rate limited", FailureKind.THROTTLED),
    ("anthropic", 500, "api_error", "Internal", FailureKind.UNAVAILABLE),
    (
        "anthropic",
        400,
        "invalid_request_error",
        "prompt is too long: 345320 tokens > 199999 maximum",
        FailureKind.CONTEXT_EXCEEDED,
    ),
    (
        "anthropic",
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
        FailureKind.QUOTA_EXHAUSTED,
    ),
    (
        "anthropic",
        400,
        "invalid_request_error",
        "messages: field required",
        FailureKind.BAD_REQUEST,
    ),
    (
        "anthropic",
        400,
        "invalid_request_error",
        "`temperature` is deprecated for this model.",
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    ("anthropic", 401, "authentication_error", "invalid x-api-key", FailureKind.UNAUTHORIZED),
    ("anthropic", 402, "billing_error", "Billing", FailureKind.QUOTA_EXHAUSTED),
    ("anthropic", 403, "permission_error", "No access", FailureKind.UNAUTHORIZED),
    ("anthropic", 404, "not_found_error", "model: claude-test", FailureKind.MODEL_NOT_FOUND),
    ("anthropic", 413, "request_too_large", "Request too large", FailureKind.CONTEXT_EXCEEDED),
    ("bedrock", 429, "ThrottlingException", "Too many requests", FailureKind.THROTTLED),
    ("bedrock", 400, "ServiceQuotaExceededException", "Quota", FailureKind.THROTTLED),
    ("bedrock", 429, "ModelNotReadyException", "Model not ready", FailureKind.UNAVAILABLE),
    ("bedrock", 408, "ModelTimeoutException", "Model timed out", FailureKind.TIMEOUT),
    ("bedrock", 503, "ServiceUnavailableException", "Unavailable", FailureKind.UNAVAILABLE),
    ("bedrock", 500, "InternalServerException", "Internal", FailureKind.UNAVAILABLE),
    ("bedrock", 424, "ModelErrorException", "Model error", FailureKind.UNAVAILABLE),
    (
        "bedrock",
        400,
        "ValidationException",
        "Input is too long for requested model.",
        FailureKind.CONTEXT_EXCEEDED,
    ),
    (
        "bedrock",
        400,
        "ValidationException",
        "The provided model identifier is invalid.",
        FailureKind.MODEL_NOT_FOUND,
    ),
    (
        "bedrock",
        400,
        "ValidationException",
        "The model returned the following errors: temperature is deprecated for this model.",
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    ("bedrock", 400, "ValidationException", "Malformed input request", FailureKind.BAD_REQUEST),
    ("bedrock", 403, "AccessDeniedException", "Not authorized", FailureKind.UNAUTHORIZED),
    ("bedrock", 404, "ResourceNotFoundException", "Model not found", FailureKind.MODEL_NOT_FOUND),
]


@pytest.mark.parametrize(
    ("kind", "status", "code", "message", "expected"),
    STATUS_FAILURES,
    ids=[f"{kind}-{status}-{code or 'no-code'}" for kind, status, code, *_ in STATUS_FAILURES],
)
def test_each_error_reply_maps_to_its_failure_kind(
    fake_provider: MakeFake,
    kind: Kind,
    status: int,
    code: str,
    message: str,
    expected: FailureKind,
) -> None:
    fake = fake_provider(kind).fail(status, code, message)

    error = failure_of(provider_client(fake))

    assert error.kind is expected, f"HTTP {status} {code} {message!r} -> {error}"
    assert error.retry_after_s is None, "no Retry-After header was sent"
    assert len(fake.requests) == 1, "the SDKs' own retries are off: the router decides"


def test_anthropic_spend_cap_is_misconfiguration_not_a_rate_limit(
    fake_anthropic: FakeProvider,
) -> None:
    fake_anthropic.fail(
        429,
        "rate_limit_error",
        "Spend limit reached",
        error_fields={"details": {"error_code": "enforced_spend_limit_reached"}},
    )

    error = failure_of(provider_client(fake_anthropic))

    assert error.kind is FailureKind.QUOTA_EXHAUSTED, "waiting does not lift a spend cap"
    assert error.kind.category is FailureCategory.MISCONFIGURED


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_a_server_that_never_answers_is_a_timeout(fake_provider: MakeFake, kind: Kind) -> None:
    fake = fake_provider(kind).hang()

    assert (
        failure_of(provider_client(fake, timeout_s=0.3), timeout_s=0.3).kind is FailureKind.TIMEOUT
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("openai", FailureKind.CONNECTION),
        ("anthropic", FailureKind.CONNECTION),
        # botocore reads the truncated body without complaint; its parser then finds no output.
        ("bedrock", FailureKind.INVALID_RESPONSE),
    ],
)
def test_a_connection_closed_mid_reply_is_unhealthy(
    fake_provider: MakeFake, kind: Kind, expected: FailureKind
) -> None:
    fake = fake_provider(kind).close_mid_reply()

    error = failure_of(provider_client(fake))

    assert error.kind is expected
    assert error.kind.category is FailureCategory.UNHEALTHY


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_a_refused_connection_is_a_connection_failure(fake_provider: MakeFake, kind: Kind) -> None:
    fake = fake_provider(kind)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    error = failure_of(provider_client(fake, endpoint_url=f"http://127.0.0.1:{closed_port}"))

    assert error.kind is FailureKind.CONNECTION


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
@pytest.mark.parametrize("body", [b"<html>gateway</html>", b'{"unexpected": true}'])
def test_a_200_reply_that_is_not_the_api_format_is_the_providers_failure(
    fake_provider: MakeFake, kind: Kind, body: bytes
) -> None:
    fake = fake_provider(kind).send(200, body)

    error = failure_of(provider_client(fake))

    assert error.kind is FailureKind.INVALID_RESPONSE
    assert error.kind.category is FailureCategory.UNHEALTHY, "no prompt makes the API's format"


CONTENT_FILTERED: list[tuple[Kind, dict[str, Any]]] = [
    (
        "openai",
        {
            "choices": [
                {
                    "message": {"role": "assistant", "content": None},
                    "finish_reason": "content_filter",
                }
            ]
        },
    ),
    (
        "openai",
        {
            "choices": [
                {
                    "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                    "finish_reason": "stop",
                }
            ]
        },
    ),
    ("anthropic", {"content": [], "stop_reason": "refusal"}),
    ("bedrock", {"output": {"message": {"content": []}}, "stopReason": "content_filtered"}),
    (
        "bedrock",
        {
            "output": {"message": {"content": [{"text": "Blocked."}]}},
            "stopReason": "guardrail_intervened",
        },
    ),
]


@pytest.mark.parametrize(
    ("kind", "reply"),
    CONTENT_FILTERED,
    ids=["openai-content-filter", "openai-refusal", "anthropic", "bedrock", "bedrock-guardrail"],
)
def test_content_filtering_is_the_requests_failure(
    fake_provider: MakeFake, kind: Kind, reply: dict[str, Any]
) -> None:
    fake = fake_provider(kind).send(200, json.dumps(reply).encode())

    error = failure_of(provider_client(fake))

    assert error.kind is FailureKind.CONTENT_FILTERED
    assert error.kind.category is FailureCategory.REQUEST, "the prompt was filtered, not the API"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock", None], ids=str)
@pytest.mark.parametrize("where", ["system", "message"])
def test_a_prompt_with_a_lone_surrogate_is_refused_before_it_is_sent(
    fake_provider: MakeFake, kind: Kind | None, where: str
) -> None:
    fake = None if kind is None else fake_provider(kind)
    mock = {"name": "m", "kind": "mock", "priority": 1}
    (provider,) = build_providers(settings_for(fake.entry() if fake else mock))
    bad = "Premise: \ud800 (a lone surrogate)"
    request = (
        GenerationRequest(bad, PROVIDER_REQUEST.messages)
        if where == "system"
        else GenerationRequest("You narrate.", (Message("user", bad),))
    )

    with pytest.raises(ProviderError) as raised:
        provider.complete(request, 5.0)

    assert raised.value.kind is FailureKind.UNENCODABLE
    assert raised.value.kind.category is FailureCategory.REQUEST
    assert fake is None or fake.requests == [], (
        "sent escaped, the provider would judge it, maybe with a 500 that opens the circuit"
    )


def test_non_ascii_text_is_sent_as_utf_8(fake_openai: FakeProvider) -> None:
    request = GenerationRequest("", (Message("user", "Le quai, la nuit \u2014 \U0001f687"),))

    provider_client(fake_openai).complete(request, 5.0)

    assert fake_openai.requests[0].body["messages"][0]["content"] == request.messages[0].text


def test_every_failure_kind_has_a_category_and_only_the_providers_own_count() -> None:
    counted = {
        kind
        for kind in FailureKind
        if kind.category in {FailureCategory.UNHEALTHY, FailureCategory.MISCONFIGURED}
    }
    assert counted == {
        FailureKind.TIMEOUT,
        FailureKind.CONNECTION,
        FailureKind.THROTTLED,
        FailureKind.UNAVAILABLE,
        FailureKind.INVALID_RESPONSE,
        FailureKind.UNAUTHORIZED,
        FailureKind.MODEL_NOT_FOUND,
        FailureKind.QUOTA_EXHAUSTED,
        FailureKind.UNSUPPORTED_PARAMETER,
    }, "a failure a request can provoke must never count towards a shared circuit"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_a_reply_cut_at_max_tokens_is_marked_truncated(fake_provider: MakeFake, kind: Kind) -> None:
    fake = fake_provider(kind).reply("half a sto", truncated=True)

    completion = provider_client(fake).complete(PROVIDER_REQUEST, 5.0)

    assert completion.truncated, "finish_reason length / stop_reason max_tokens"
    assert completion.text == "half a sto"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_a_completion_carries_text_and_token_usage(fake_provider: MakeFake, kind: Kind) -> None:
    fake = fake_provider(kind).reply("Once.", input_tokens=101, output_tokens=7)

    completion = provider_client(fake).complete(PROVIDER_REQUEST, 5.0)

    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("Once.", 101, 7)
    assert not completion.truncated


def test_openai_request_wire_format(fake_openai: FakeProvider) -> None:
    provider_client(fake_openai, max_tokens=321, temperature=0.4).complete(PROVIDER_REQUEST, 5.0)

    (received,) = fake_openai.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You narrate."},
            {"role": "user", "content": "Begin."},
            {"role": "assistant", "content": "{}"},
            {"role": "user", "content": "Go"},
        ],
        "max_completion_tokens": 321,
        "temperature": 0.4,
    }


def test_anthropic_request_wire_format(fake_anthropic: FakeProvider) -> None:
    provider_client(fake_anthropic, max_tokens=321, temperature=0.4).complete(PROVIDER_REQUEST, 5.0)

    (received,) = fake_anthropic.requests
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == "sk-ant-test"
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.body == {
        "model": "claude-test",
        "max_tokens": 321,
        "temperature": 0.4,
        "system": "You narrate.",
        "messages": [
            {"role": "user", "content": "Begin."},
            {"role": "assistant", "content": "{}"},
            {"role": "user", "content": "Go"},
        ],
    }


def test_bedrock_request_is_a_signed_converse_call(fake_bedrock: FakeProvider) -> None:
    provider_client(fake_bedrock, max_tokens=321, temperature=0.4).complete(PROVIDER_REQUEST, 5.0)

    (received,) = fake_bedrock.requests
    assert received.path == "/model/anthropic.claude-test:0/converse"
    assert received.headers["authorization"].startswith("AWS4-HMAC-SHA256")
    assert received.body == {
        "messages": [
            {"role": "user", "content": [{"text": "Begin."}]},
            {"role": "assistant", "content": [{"text": "{}"}]},
            {"role": "user", "content": [{"text": "Go"}]},
        ],
        "system": [{"text": "You narrate."}],
        "inferenceConfig": {"maxTokens": 321, "temperature": 0.4},
    }


def test_bedrock_stop_reason_context_window_exceeded_is_a_context_failure(
    fake_bedrock: FakeProvider,
) -> None:
    body = b'{"output": {"message": {"role": "assistant", "content": []}}, "stopReason": '
    fake_bedrock.send(200, body + b'"model_context_window_exceeded", "usage": {}}')

    assert failure_of(provider_client(fake_bedrock)).kind is FailureKind.CONTEXT_EXCEEDED


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_an_empty_system_prompt_is_left_out(fake_provider: MakeFake, kind: Kind) -> None:
    fake = fake_provider(kind)

    provider_client(fake).complete(GenerationRequest("", (Message("user", "Go"),)), 5.0)

    body = fake.requests[0].body
    assert "system" not in body and all(m["role"] != "system" for m in body["messages"])


def test_an_endpoint_given_with_its_version_segment_is_not_doubled(
    fake_openai: FakeProvider,
) -> None:
    provider_client(fake_openai, endpoint_url=f"{fake_openai.url}/v1/").complete(
        PROVIDER_REQUEST, 5.0
    )

    assert fake_openai.requests[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("kind", "status", "code", "headers", "expected"),
    [
        ("openai", 429, "rate_limit_exceeded", {"retry-after": "1"}, 1.0),
        ("openai", 429, "rate_limit_exceeded", {"retry-after-ms": "250"}, 0.25),
        ("anthropic", 529, "overloaded_error", {"retry-after": "3"}, 3.0),
        ("anthropic", 500, "api_error", {"retry-after": "3"}, None),
        ("bedrock", 429, "ThrottlingException", {"Retry-After": "2"}, 2.0),
        ("bedrock", 500, "InternalServerException", {"Retry-After": "2"}, None),
    ],
)
def test_retry_after_is_read_from_429_503_and_529_replies_only(
    fake_provider: MakeFake,
    kind: Kind,
    status: int,
    code: str,
    headers: dict[str, str],
    expected: float | None,
) -> None:
    fake = fake_provider(kind).fail(status, code, "slow down", headers=headers)

    assert failure_of(provider_client(fake)).retry_after_s == expected


# What the configured model accepts: temperature and reasoning_effort only when set.

REASONING_MODEL = "gpt-5-mini"
CLAUDE_WITHOUT_TEMPERATURE = "claude-haiku-5-5"
BEDROCK_WITHOUT_TEMPERATURE = "us.anthropic.claude-haiku-5-5"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock"])
def test_an_unset_temperature_is_left_out_of_the_request(
    fake_provider: MakeFake, kind: Kind
) -> None:
    fake = fake_provider(kind)

    provider_client(fake).complete(PROVIDER_REQUEST, 5.0)

    body = fake.requests[0].body
    sent = body["inferenceConfig"] if kind == "bedrock" else body
    assert "temperature" not in sent, f"the model's default applies: {sent}"


def test_bedrock_inference_config_without_temperature_is_max_tokens_alone(
    fake_bedrock: FakeProvider,
) -> None:
    provider_client(fake_bedrock, max_tokens=321).complete(PROVIDER_REQUEST, 5.0)

    assert fake_bedrock.requests[0].body["inferenceConfig"] == {"maxTokens": 321}


def test_openai_reasoning_model_without_temperature_answers(fake_openai: FakeProvider) -> None:
    provider = provider_client(fake_openai, model=REASONING_MODEL, max_tokens=2048)

    completion = provider.complete(PROVIDER_REQUEST, 5.0)

    assert completion.text, "the fake reasoning model accepted the request"
    body = fake_openai.requests[0].body
    assert "temperature" not in body and "max_tokens" not in body, body
    assert body["max_completion_tokens"] == 2048


@pytest.mark.parametrize(
    ("temperature", "detail"),
    [
        (0.7, "Unsupported value: 'temperature' does not support 0.7 with this model."),
        (1, "Unsupported parameter: 'temperature' is not supported with this model."),
    ],
)
def test_openai_reasoning_model_refusing_temperature_is_misconfigured(
    fake_openai: FakeProvider, temperature: float, detail: str
) -> None:
    provider = provider_client(fake_openai, model=REASONING_MODEL, temperature=temperature)

    error = failure_of(provider)

    assert error.kind is FailureKind.UNSUPPORTED_PARAMETER, error
    assert error.kind.category is FailureCategory.MISCONFIGURED, "our config, not the reader"
    assert detail in error.message


def test_openai_reasoning_effort_is_passed_through(fake_openai: FakeProvider) -> None:
    provider_client(fake_openai, model=REASONING_MODEL, reasoning_effort="minimal").complete(
        PROVIDER_REQUEST, 5.0
    )

    assert fake_openai.requests[0].body["reasoning_effort"] == "minimal"


def test_openai_leaves_reasoning_effort_out_when_unset(fake_openai: FakeProvider) -> None:
    provider_client(fake_openai).complete(PROVIDER_REQUEST, 5.0)

    assert "reasoning_effort" not in fake_openai.requests[0].body


@pytest.mark.parametrize(
    ("kind", "model"),
    [("anthropic", CLAUDE_WITHOUT_TEMPERATURE), ("bedrock", BEDROCK_WITHOUT_TEMPERATURE)],
)
def test_a_claude_model_refusing_temperature_is_misconfigured(
    fake_provider: MakeFake, kind: Kind, model: str
) -> None:
    fake = fake_provider(kind)

    error = failure_of(provider_client(fake, model=model, temperature=0.7))

    assert error.kind is FailureKind.UNSUPPORTED_PARAMETER, error
    assert "`temperature` is deprecated for this model." in error.message


@pytest.mark.parametrize(
    ("kind", "model"),
    [("anthropic", CLAUDE_WITHOUT_TEMPERATURE), ("bedrock", BEDROCK_WITHOUT_TEMPERATURE)],
)
def test_a_claude_model_refusing_temperature_answers_without_one(
    fake_provider: MakeFake, kind: Kind, model: str
) -> None:
    fake = fake_provider(kind)

    assert provider_client(fake, model=model).complete(PROVIDER_REQUEST, 5.0).text


@pytest.mark.parametrize(
    ("temperature", "detail"),
    [(1.5, "temperature: range: 0..1"), (-1.0, "`temperature` cannot be set to -1")],
)
def test_anthropic_temperature_outside_0_to_1_is_misconfigured(
    fake_anthropic: FakeProvider, temperature: float, detail: str
) -> None:
    # load_settings refuses these values; built directly, they reach the API's own check.
    settings = ProviderSettings(
        "anthropic",
        ProviderKind.ANTHROPIC,
        "claude-test",
        1,
        temperature=temperature,
        endpoint_url=fake_anthropic.url,
    )
    keys = ApiKeys(settings_for(fake_anthropic.entry()).api_keys)

    error = failure_of(AnthropicProvider(settings, keys))

    assert error.kind is FailureKind.UNSUPPORTED_PARAMETER, error
    assert detail in error.message


@pytest.mark.parametrize(
    "model",
    [
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-6",
        "arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
    ],
)
def test_bedrock_sends_an_inference_profile_arn_as_the_model_id(
    fake_bedrock: FakeProvider, model: str
) -> None:
    provider_client(fake_bedrock, model=model).complete(PROVIDER_REQUEST, 5.0)

    assert fake_bedrock.requests[0].path == f"/model/{model}/converse"


def test_a_model_refusing_temperature_is_skipped_for_the_misconfigured_cooldown(
    fake_openai: FakeProvider,
) -> None:
    clock = FakeClock()
    store = MemoryCircuitStore()
    mock = {"name": "mock", "kind": "mock", "priority": 50}
    router = router_for(
        fake_openai.entry(model=REASONING_MODEL, temperature=0.7),
        mock,
        store=store,
        clock=clock,
        router={"misconfigured_cooldown_s": 600},
    )

    router.generate(PROVIDER_REQUEST, accept_json)
    clock.advance(599)
    _, generation = router.generate(PROVIDER_REQUEST, accept_json)

    assert generation.provider == "mock"
    assert len(fake_openai.requests) == 1, "not asked again before the cooldown ends"
    assert store.load(["openai"])["openai"].open_until == pytest.approx(clock.now - 599 + 600)


def test_the_fake_reasoning_model_refuses_max_tokens_in_openai_words(
    fake_openai: FakeProvider,
) -> None:
    reply = post_json(
        f"{fake_openai.url}/v1/chat/completions",
        {"model": REASONING_MODEL, "messages": [], "max_tokens": 10},
        {},
        5.0,
    )

    assert (reply.status, reply.body) == (
        400,
        {
            "error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
        },
    ), "the error the real API answers, so the client is tested against it"
