"""providers/openai.py: each classification rule, alone, against the fake OpenAI server.

Every error reply here is built so that exactly one rule of `OpenAIProvider.failure`
can classify it: without that rule the reply would fall through to another kind (the
status's), so a rule that stops working fails its own case. `error.code` and
`error.type` are set independently (the fake's `fail` sets both to one value).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdas.story_generator.providers import (
    Completion,
    FailureKind,
)
from tests.lambdas.fake_providers import (
    PROVIDER_REQUEST,
    FakeProvider,
    failure_of,
    provider_client,
)


def error_body(**error: object) -> bytes:
    """OpenAI's error format, `{"error": {...}}`, with exactly the fields given."""
    return json.dumps({"error": error}).encode()


def completion_of(fake: FakeProvider, body: dict[str, Any]) -> Completion:
    fake.send(200, json.dumps(body).encode())
    return provider_client(fake).complete(PROVIDER_REQUEST, 5.0)


# (id, status, error object, expected kind); each id's comment: the kind without the rule
ISOLATED_RULES: list[tuple[str, int, dict[str, object], FailureKind]] = [
    # error.code, with a type that names nothing.
    (
        "code-insufficient-quota-on-429",  # else THROTTLED
        429,
        {"message": "quota", "type": "requests", "code": "insufficient_quota"},
        FailureKind.QUOTA_EXHAUSTED,
    ),
    (
        "code-billing-hard-limit",  # else BAD_REQUEST
        400,
        {"message": "limit", "type": "invalid_request_error", "code": "billing_hard_limit_reached"},
        FailureKind.QUOTA_EXHAUSTED,
    ),
    (
        "code-context-length",  # else BAD_REQUEST
        400,
        {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"},
        FailureKind.CONTEXT_EXCEEDED,
    ),
    (
        "code-string-above-max-length",  # else BAD_REQUEST
        400,
        {"message": "too long", "type": "invalid_request_error", "code": "string_above_max_length"},
        FailureKind.CONTEXT_EXCEEDED,
    ),
    (
        "code-model-not-found-on-400",  # else BAD_REQUEST (a 404 would say it by status)
        400,
        {"message": "no model", "type": "invalid_request_error", "code": "model_not_found"},
        FailureKind.MODEL_NOT_FOUND,
    ),
    (
        "code-invalid-api-key-on-400",  # else BAD_REQUEST (a 401 would say it by status)
        400,
        {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"},
        FailureKind.UNAUTHORIZED,
    ),
    (
        "code-unsupported-value-without-the-message-prefix",  # else BAD_REQUEST
        400,
        {
            "message": "temperature: 0.7",
            "type": "invalid_request_error",
            "code": "unsupported_value",
        },
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    (
        "code-unsupported-parameter-on-422",  # else BAD_REQUEST; the message rule is 400 only
        422,
        {
            "message": "Unsupported parameter: 'max_tokens'",
            "type": "invalid_request_error",
            "code": "unsupported_parameter",
        },
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    # error.type when error.code is null or absent (OpenAI's quota replies name it in both).
    (
        "type-insufficient-quota-code-null",  # else THROTTLED
        429,
        {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None},
        FailureKind.QUOTA_EXHAUSTED,
    ),
    (
        "type-insufficient-quota-code-absent",  # else THROTTLED
        429,
        {"message": "You exceeded your current quota", "type": "insufficient_quota"},
        FailureKind.QUOTA_EXHAUSTED,
    ),
    (
        "type-used-when-the-code-is-unknown",  # else BAD_REQUEST
        400,
        {"message": "x", "type": "context_length_exceeded", "code": "something_new"},
        FailureKind.CONTEXT_EXCEEDED,
    ),
    # The message of a refused field that comes with `code: null`.
    (
        "message-unsupported-value",  # else BAD_REQUEST
        400,
        {
            "message": "Unsupported value: 'temperature' does not support 0.2 with this model.",
            "type": "invalid_request_error",
            "code": None,
        },
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
    (
        "message-unsupported-parameter",  # else BAD_REQUEST
        400,
        {
            "message": "Unsupported parameter: 'top_p' is not supported with this model.",
            "type": "invalid_request_error",
            "code": None,
        },
        FailureKind.UNSUPPORTED_PARAMETER,
    ),
]


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [case[1:] for case in ISOLATED_RULES],
    ids=[case[0] for case in ISOLATED_RULES],
)
def test_each_openai_rule_classifies_the_reply_only_it_matches(
    fake_openai: FakeProvider, status: int, error: dict[str, object], expected: FailureKind
) -> None:
    fake_openai.send(status, error_body(**error))

    failure = failure_of(provider_client(fake_openai))

    assert failure.kind is expected, failure
    assert failure.message == f"HTTP {status}: {error['message']}"


# Replies that look like a rule's but must not be classified by it.
NOT_MATCHED: list[tuple[str, int, dict[str, object], FailureKind]] = [
    (
        "unsupported-message-on-a-422-is-judged-by-status",
        422,
        {"message": "Unsupported parameter: 'x'", "type": "invalid_request_error", "code": None},
        FailureKind.BAD_REQUEST,
    ),
    (
        "unsupported-message-on-a-500-is-judged-by-status",
        500,
        {"message": "Unsupported value: 'x'", "type": "server_error", "code": None},
        FailureKind.UNAVAILABLE,
    ),
    (
        "the-prefix-must-start-the-message",
        400,
        {"message": "Sorry. Unsupported parameter: 'x'", "type": "invalid_request_error"},
        FailureKind.BAD_REQUEST,
    ),
    (
        "a-known-code-wins-over-the-unsupported-message",
        400,
        {"message": "Unsupported value: 'x'", "type": "requests", "code": "invalid_api_key"},
        FailureKind.UNAUTHORIZED,
    ),
    (
        "the-code-wins-over-the-type",
        400,
        {"message": "x", "type": "insufficient_quota", "code": "context_length_exceeded"},
        FailureKind.CONTEXT_EXCEEDED,
    ),
    (
        "an-unknown-code-and-type-are-judged-by-status",
        429,
        {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
        FailureKind.THROTTLED,
    ),
    (
        "a-numeric-code-is-judged-by-status",
        503,
        {"message": "Overloaded", "type": None, "code": 503},
        FailureKind.UNAVAILABLE,
    ),
]


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [case[1:] for case in NOT_MATCHED],
    ids=[case[0] for case in NOT_MATCHED],
)
def test_openai_replies_outside_a_rule_fall_through_to_the_status(
    fake_openai: FakeProvider, status: int, error: dict[str, object], expected: FailureKind
) -> None:
    fake_openai.send(status, error_body(**error))

    assert failure_of(provider_client(fake_openai)).kind is expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, b"<html><body>Bad gateway</body></html>", FailureKind.UNAVAILABLE),
        (503, b'{"detail": "upstream overloaded"}', FailureKind.UNAVAILABLE),
        (400, b'{"error": "bad request"}', FailureKind.BAD_REQUEST),
        (400, b'{"error": {"message": ["not", "text"], "code": null}}', FailureKind.BAD_REQUEST),
        (400, b'{"error": {"message": "", "code": null}}', FailureKind.BAD_REQUEST),
        (402, b'{"error": {"message": null}}', FailureKind.QUOTA_EXHAUSTED),
        (413, b"Request Entity Too Large", FailureKind.CONTEXT_EXCEEDED),
    ],
    ids=[
        "html-502",
        "no-error-object",
        "error-not-an-object",
        "message-not-text",
        "empty-message",
        "402-null-message",
        "plain-text-413",
    ],
)
def test_an_error_reply_without_a_usable_message_reports_the_raw_body(
    fake_openai: FakeProvider, status: int, body: bytes, expected: FailureKind
) -> None:
    fake_openai.send(status, body)

    failure = failure_of(provider_client(fake_openai))

    assert failure.kind is expected
    assert failure.message == f"HTTP {status}: {body.decode()}", "the operator sees what came back"


# A 200 reply ----------------------------------------------------------------------


def choice(message: object, finish_reason: str | None = "stop") -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": "none"},
        choice("just text"),
        choice(None),
        {"choices": [{"text": "legacy completions format"}]},
    ],
    ids=["no-choices", "choices-not-a-list", "message-is-text", "message-null", "no-message"],
)
def test_a_reply_without_a_first_choice_message_is_an_invalid_response(
    fake_openai: FakeProvider, body: dict[str, Any]
) -> None:
    fake_openai.send(200, json.dumps(body).encode())

    failure = failure_of(provider_client(fake_openai))

    assert failure.kind is FailureKind.INVALID_RESPONSE
    assert "no choices[0].message" in failure.message


def test_the_first_choice_is_the_completion(fake_openai: FakeProvider) -> None:
    body = choice({"role": "assistant", "content": "first"})
    body["choices"].append({"index": 1, "message": {"content": "second"}, "finish_reason": "stop"})

    assert completion_of(fake_openai, body).text == "first"


@pytest.mark.parametrize(
    ("refusal", "content"),
    [("", "Beat."), (None, "Beat."), ({"unexpected": "shape"}, "Beat.")],
    ids=["empty-refusal", "null-refusal", "refusal-not-text"],
)
def test_only_a_refusal_with_text_is_the_content_filter(
    fake_openai: FakeProvider, refusal: object, content: str
) -> None:
    completion = completion_of(
        fake_openai, choice({"role": "assistant", "content": content, "refusal": refusal})
    )

    assert completion.text == content


def test_a_refusal_names_the_finish_reason_and_the_refusal(fake_openai: FakeProvider) -> None:
    fake_openai.send(200, json.dumps(choice({"content": None, "refusal": "I can't."})).encode())

    failure = failure_of(provider_client(fake_openai))

    assert failure.kind is FailureKind.CONTENT_FILTERED
    assert failure.message == 'finish_reason stop: "I can\'t."'


@pytest.mark.parametrize("content", [None, ["a", "list"], 42], ids=["null", "list", "number"])
def test_content_that_is_not_text_is_an_empty_completion(
    fake_openai: FakeProvider, content: object
) -> None:
    completion = completion_of(fake_openai, choice({"role": "assistant", "content": content}))

    assert completion == Completion(text="", input_tokens=0, output_tokens=0, truncated=False)


@pytest.mark.parametrize(
    ("finish_reason", "truncated"),
    [("length", True), ("stop", False), (None, False), ("tool_calls", False)],
)
def test_only_finish_reason_length_is_truncation(
    fake_openai: FakeProvider, finish_reason: str | None, truncated: bool
) -> None:
    completion = completion_of(fake_openai, choice({"content": "x"}, finish_reason))

    assert completion.truncated is truncated


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"prompt_tokens": 1500, "completion_tokens": 250}, (1500, 250)),
        ({"prompt_tokens": 7}, (7, 0)),
        ({"completion_tokens": 9}, (0, 9)),
        ({"input_tokens": 5, "output_tokens": 6}, (0, 0)),
        ({"prompt_tokens": True, "completion_tokens": "9"}, (0, 0)),
        ({"prompt_tokens": 1.5, "completion_tokens": None}, (0, 0)),
        (None, (0, 0)),
    ],
    ids=[
        "both",
        "prompt-only",
        "completion-only",
        "anthropic-names",
        "bool-and-text",
        "float-and-null",
        "no-usage",
    ],
)
def test_token_usage_is_read_from_prompt_and_completion_tokens(
    fake_openai: FakeProvider, usage: object, tokens: tuple[int, int]
) -> None:
    body = choice({"content": "x"})
    if usage is not None:
        body["usage"] = usage

    completion = completion_of(fake_openai, body)

    assert (completion.input_tokens, completion.output_tokens) == tokens
