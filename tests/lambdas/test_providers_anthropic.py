"""providers/anthropic.py: each classification rule, alone, against the fake Anthropic server.

Each error reply matches one rule of `AnthropicProvider.failure` only: its status
would classify it as something else, and its message holds no phrase of another
rule. (A spend cap test whose message says "spend limit" would pass on the phrase
rule alone, hiding a broken `error_code` rule.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdas.story_generator.providers import (
    Completion,
    FailureKind,
)
from lambdas.story_generator.providers.base import FailureCategory
from tests.lambdas.fake_providers import (
    PROVIDER_REQUEST,
    FakeProvider,
    failure_of,
    provider_client,
)


def anthropic_error(error_type: str, message: object, **fields: object) -> bytes:
    error = {"type": error_type, "message": message, **fields}
    return json.dumps({"type": "error", "error": error}).encode()


def test_the_spend_limit_error_code_alone_is_quota_not_a_rate_limit(
    fake_anthropic: FakeProvider,
) -> None:
    """A 429 rate_limit_error whose message names no quota phrase: only `details.error_code`
    says that waiting will not help."""
    fake_anthropic.send(
        429,
        anthropic_error(
            "rate_limit_error",
            "Request refused.",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
    )

    failure = failure_of(provider_client(fake_anthropic))

    assert failure.kind is FailureKind.QUOTA_EXHAUSTED
    assert failure.kind.category is FailureCategory.MISCONFIGURED


def test_another_error_code_in_the_details_leaves_a_rate_limit_a_rate_limit(
    fake_anthropic: FakeProvider,
) -> None:
    fake_anthropic.send(
        429,
        anthropic_error(
            "rate_limit_error", "Request refused.", details={"error_code": "tokens_per_minute"}
        ),
    )

    assert failure_of(provider_client(fake_anthropic)).kind is FailureKind.THROTTLED


def test_billing_error_type_alone_is_quota(fake_anthropic: FakeProvider) -> None:
    """A 403 would be UNAUTHORIZED by status, and the message names no quota phrase."""
    fake_anthropic.send(
        403, anthropic_error("billing_error", "This organization cannot call the API.")
    )

    assert failure_of(provider_client(fake_anthropic)).kind is FailureKind.QUOTA_EXHAUSTED


@pytest.mark.parametrize(
    "message",
    [
        "Your credit balance is too low to access the Anthropic API.",
        "You have reached your specified workspace Spend Limit.",
        "You have reached your specified API usage limits. You will regain access on 2026-07-01.",
        "Please visit Plans & Billing to upgrade.",
    ],
    ids=["credit-balance", "spend-limit", "usage-limits", "billing"],
)
def test_each_quota_phrase_alone_turns_a_rate_limit_into_quota(
    fake_anthropic: FakeProvider, message: str
) -> None:
    """Sent as a 429 rate_limit_error, which would otherwise be THROTTLED (case ignored)."""
    fake_anthropic.send(429, anthropic_error("rate_limit_error", message))

    failure = failure_of(provider_client(fake_anthropic))

    assert failure.kind is FailureKind.QUOTA_EXHAUSTED
    assert failure.message == f"HTTP 429: {message}"


@pytest.mark.parametrize(
    "message",
    [
        "Prompt is too long: 345320 tokens > 199999 maximum",
        "Input is too long for requested model.",
        "input length and `max_tokens` exceed context window limit: 198000 + 4096 > 200000",
    ],
    ids=["prompt-is-too-long", "input-is-too-long", "context-window"],
)
def test_each_context_phrase_alone_makes_a_400_a_context_failure(
    fake_anthropic: FakeProvider, message: str
) -> None:
    fake_anthropic.send(400, anthropic_error("invalid_request_error", message))

    assert failure_of(provider_client(fake_anthropic)).kind is FailureKind.CONTEXT_EXCEEDED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, FailureKind.UNAVAILABLE),
        (429, FailureKind.THROTTLED),
        (404, FailureKind.MODEL_NOT_FOUND),
    ],
)
def test_a_context_phrase_outside_a_400_or_413_is_judged_by_status(
    fake_anthropic: FakeProvider, status: int, expected: FailureKind
) -> None:
    fake_anthropic.send(status, anthropic_error("api_error", "prompt is too long"))

    assert failure_of(provider_client(fake_anthropic)).kind is expected


@pytest.mark.parametrize(
    "message",
    [
        "`temperature` is deprecated for this model.",
        "`top_k` is not supported for this model.",
        "`temperature` cannot be set to 2 for this model",
        "`temperature` and `top_p` cannot both be specified for this model.",
        "temperature: range: 0..1",
    ],
    ids=["deprecated", "not-supported", "cannot-be-set", "cannot-both", "range"],
)
def test_each_parameter_phrase_alone_makes_a_400_misconfigured(
    fake_anthropic: FakeProvider, message: str
) -> None:
    fake_anthropic.send(400, anthropic_error("invalid_request_error", message))

    failure = failure_of(provider_client(fake_anthropic))

    assert failure.kind is FailureKind.UNSUPPORTED_PARAMETER
    assert failure.kind.category is FailureCategory.MISCONFIGURED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, FailureKind.MODEL_NOT_FOUND),
        (413, FailureKind.CONTEXT_EXCEEDED),
        (500, FailureKind.UNAVAILABLE),
    ],
)
def test_a_parameter_phrase_outside_a_400_is_judged_by_status(
    fake_anthropic: FakeProvider, status: int, expected: FailureKind
) -> None:
    fake_anthropic.send(
        status, anthropic_error("not_found_error", "`x` is not supported for this model.")
    )

    assert failure_of(provider_client(fake_anthropic)).kind is expected


def test_quota_is_judged_before_context_and_context_before_parameters(
    fake_anthropic: FakeProvider,
) -> None:
    fake_anthropic.send(
        400,
        anthropic_error("invalid_request_error", "credit balance too low; prompt is too long"),
        times=1,
    )
    fake_anthropic.send(
        400,
        anthropic_error(
            "invalid_request_error",
            "prompt is too long; `temperature` is deprecated for this model.",
        ),
        times=1,
    )
    provider = provider_client(fake_anthropic)

    assert failure_of(provider).kind is FailureKind.QUOTA_EXHAUSTED
    assert failure_of(provider).kind is FailureKind.CONTEXT_EXCEEDED


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (529, b"overloaded", FailureKind.UNAVAILABLE),
        (500, b'{"type": "error", "error": "boom"}', FailureKind.UNAVAILABLE),
        (
            400,
            b'{"type": "error", "error": {"type": "invalid_request_error"}}',
            FailureKind.BAD_REQUEST,
        ),
        (
            400,
            b'{"type": "error", "error": {"type": "invalid_request_error", "message": 7}}',
            FailureKind.BAD_REQUEST,
        ),
    ],
    ids=["plain-text", "error-not-an-object", "no-message", "message-not-text"],
)
def test_an_anthropic_error_without_a_message_is_judged_by_status_and_shows_the_body(
    fake_anthropic: FakeProvider, status: int, body: bytes, expected: FailureKind
) -> None:
    fake_anthropic.send(status, body)

    failure = failure_of(provider_client(fake_anthropic))

    assert failure.kind is expected
    assert failure.message == f"HTTP {status}: {body.decode()}"


# A 200 reply ----------------------------------------------------------------------


def message_reply(content: object, stop_reason: str | None = "end_turn", **fields: Any) -> bytes:
    body = {"type": "message", "role": "assistant", "content": content, "stop_reason": stop_reason}
    return json.dumps({**body, **fields}).encode()


def test_the_text_blocks_are_joined_and_other_blocks_skipped(fake_anthropic: FakeProvider) -> None:
    content = [
        {"type": "thinking", "thinking": "The reader wants a train.", "signature": "sig"},
        {"type": "text", "text": "The train "},
        {"type": "tool_use", "id": "toolu_1", "name": "map", "input": {}},
        {"type": "text", "text": 5},
        {"type": "text", "text": "leaves."},
        "not a block",
    ]
    fake_anthropic.send(200, message_reply(content))

    assert (
        provider_client(fake_anthropic).complete(PROVIDER_REQUEST, 5.0).text == "The train leaves."
    )


@pytest.mark.parametrize("content", [None, "text", {"type": "text", "text": "x"}])
def test_content_that_is_not_a_list_is_an_invalid_response(
    fake_anthropic: FakeProvider, content: object
) -> None:
    fake_anthropic.send(200, message_reply(content))

    failure = failure_of(provider_client(fake_anthropic))

    assert failure.kind is FailureKind.INVALID_RESPONSE
    assert failure.message.startswith("the reply has no content list")


def test_a_refusal_is_filtered_whatever_the_content(fake_anthropic: FakeProvider) -> None:
    fake_anthropic.send(200, message_reply([{"type": "text", "text": "I won't."}], "refusal"))

    failure = failure_of(provider_client(fake_anthropic))

    assert (failure.kind, failure.message) == (FailureKind.CONTENT_FILTERED, "stop_reason refusal")


@pytest.mark.parametrize(
    ("stop_reason", "truncated"),
    [("max_tokens", True), ("end_turn", False), ("stop_sequence", False), (None, False)],
)
def test_only_stop_reason_max_tokens_is_truncation(
    fake_anthropic: FakeProvider, stop_reason: str | None, truncated: bool
) -> None:
    fake_anthropic.send(200, message_reply([{"type": "text", "text": "x"}], stop_reason))

    assert provider_client(fake_anthropic).complete(PROVIDER_REQUEST, 5.0).truncated is truncated


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"input_tokens": 2048, "output_tokens": 512}, (2048, 512)),
        ({"input_tokens": 3}, (3, 0)),
        ({"output_tokens": 4}, (0, 4)),
        ({"prompt_tokens": 5, "completion_tokens": 6}, (0, 0)),
        ({"input_tokens": False, "output_tokens": "4"}, (0, 0)),
        ("none", (0, 0)),
    ],
    ids=["both", "input-only", "output-only", "openai-names", "bool-and-text", "usage-not-object"],
)
def test_token_usage_is_read_from_input_and_output_tokens(
    fake_anthropic: FakeProvider, usage: object, tokens: tuple[int, int]
) -> None:
    fake_anthropic.send(200, message_reply([{"type": "text", "text": "x"}], usage=usage))

    completion = provider_client(fake_anthropic).complete(PROVIDER_REQUEST, 5.0)

    assert completion == Completion("x", *tokens)
