"""providers/bedrock.py: each error code, message rule, stop reason and transport error.

Error codes are sent with a status that would classify the reply differently, so
that each entry of the code table is what decides. ValidationException messages
are matched one phrase at a time.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from lambdas.story_generator.providers import (
    Completion,
    FailureKind,
)
from lambdas.story_generator.providers import bedrock as bedrock_module
from lambdas.story_generator.providers.bedrock import (
    BedrockProvider,
    _client_error,
    _transport_error,
)
from lambdas.story_generator.settings import ProviderKind, ProviderSettings
from tests.lambdas.fake_providers import (
    BEDROCK_REGION,
    PROVIDER_REQUEST,
    FakeProvider,
    failure_of,
    provider_client,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ThrottlingException", FailureKind.THROTTLED),
        ("ServiceQuotaExceededException", FailureKind.THROTTLED),
        ("ModelNotReadyException", FailureKind.UNAVAILABLE),
        ("ServiceUnavailableException", FailureKind.UNAVAILABLE),
        ("InternalServerException", FailureKind.UNAVAILABLE),
        ("ModelErrorException", FailureKind.UNAVAILABLE),
        ("ModelTimeoutException", FailureKind.TIMEOUT),
        ("AccessDeniedException", FailureKind.UNAUTHORIZED),
        ("UnrecognizedClientException", FailureKind.UNAUTHORIZED),
        ("ResourceNotFoundException", FailureKind.MODEL_NOT_FOUND),
    ],
)
def test_each_error_code_decides_whatever_the_status(
    fake_bedrock: FakeProvider, code: str, expected: FailureKind
) -> None:
    """Sent as a 400, which alone would be BAD_REQUEST."""
    fake_bedrock.fail(400, code, "Something happened")

    failure = failure_of(provider_client(fake_bedrock))

    assert failure.kind is expected
    assert failure.message == f"{code}: Something happened"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ConflictException", 409, FailureKind.BAD_REQUEST),
        ("SomethingNewException", 502, FailureKind.UNAVAILABLE),
        ("SomethingNewException", 401, FailureKind.UNAUTHORIZED),
    ],
)
def test_an_unknown_error_code_is_judged_by_status(
    fake_bedrock: FakeProvider, code: str, status: int, expected: FailureKind
) -> None:
    fake_bedrock.fail(status, code, "Something happened")

    assert failure_of(provider_client(fake_bedrock)).kind is expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Input is too long for requested model.", FailureKind.CONTEXT_EXCEEDED),
        ("Too many input tokens. Max input tokens: 200000", FailureKind.CONTEXT_EXCEEDED),
        ("too many tokens in the request", FailureKind.CONTEXT_EXCEEDED),
        ("The prompt exceeds the model's CONTEXT WINDOW.", FailureKind.CONTEXT_EXCEEDED),
        ("prompt + max_tokens exceeds the context length", FailureKind.CONTEXT_EXCEEDED),
        ("`temperature` is deprecated for this model.", FailureKind.UNSUPPORTED_PARAMETER),
        ("top_k is not supported for this model", FailureKind.UNSUPPORTED_PARAMETER),
        ("`temperature` cannot be set to 2", FailureKind.UNSUPPORTED_PARAMETER),
        ("temperature and top_p cannot both be specified", FailureKind.UNSUPPORTED_PARAMETER),
        ('{"message": "temperature: range: 0..1"}', FailureKind.UNSUPPORTED_PARAMETER),
        ("The provided model identifier is invalid.", FailureKind.MODEL_NOT_FOUND),
        (
            "Invocation of model ID anthropic.claude-sonnet-4-6 with on-demand throughput "
            "isn't supported. Retry your request with the ID or ARN of an inference profile.",
            FailureKind.MODEL_NOT_FOUND,
        ),
        ("This model version is not supported in this Region.", FailureKind.MODEL_NOT_FOUND),
        # Both a parameter and a model phrase: the parameter rule comes first.
        (
            "The model returned: `top_k` is not supported for this model.",
            FailureKind.UNSUPPORTED_PARAMETER,
        ),
        # Both a context and a parameter phrase: the context rule comes first.
        ("Input is too long; temperature: range: 0..1", FailureKind.CONTEXT_EXCEEDED),
        ("1 validation error detected: messages", FailureKind.BAD_REQUEST),
    ],
    ids=[
        "too-long",
        "too-many-input-tokens",
        "too-many-tokens",
        "context-window",
        "context-length",
        "deprecated",
        "not-supported-for-this-model",
        "cannot-be-set",
        "cannot-both",
        "temperature-range",
        "model-identifier",
        "on-demand-throughput",
        "model-not-supported",
        "parameter-before-model",
        "context-before-parameter",
        "nothing-known",
    ],
)
def test_a_validation_exception_is_classified_by_its_message(
    fake_bedrock: FakeProvider, message: str, expected: FailureKind
) -> None:
    fake_bedrock.fail(400, "ValidationException", message)

    assert failure_of(provider_client(fake_bedrock)).kind is expected


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        # Bedrock's own throttling text: "too many tokens" is a rate, not a context window.
        ("ThrottlingException", 429, FailureKind.THROTTLED),
        ("ServiceUnavailableException", 503, FailureKind.UNAVAILABLE),
        ("SomethingNewException", 400, FailureKind.BAD_REQUEST),
    ],
)
def test_message_rules_apply_to_validation_exceptions_only(
    fake_bedrock: FakeProvider, code: str, status: int, expected: FailureKind
) -> None:
    fake_bedrock.fail(status, code, "Too many tokens, please wait before trying again.")

    assert failure_of(provider_client(fake_bedrock)).kind is expected


@pytest.mark.parametrize(
    ("code", "status", "headers", "expected"),
    [
        ("ServiceUnavailableException", 503, {"Retry-After": "1"}, 1.0),
        ("ThrottlingException", 429, {"retry-after-ms": "250"}, 0.25),
        ("ThrottlingException", 429, {}, None),
        ("ModelNotReadyException", 429, {"Retry-After": "1"}, None),
        ("ServiceQuotaExceededException", 400, {"Retry-After": "1"}, None),
    ],
)
def test_retry_after_is_read_for_throttling_and_unavailability_only(
    fake_bedrock: FakeProvider,
    code: str,
    status: int,
    headers: dict[str, str],
    expected: float | None,
) -> None:
    fake_bedrock.fail(status, code, "slow down", headers=headers)

    assert failure_of(provider_client(fake_bedrock)).retry_after_s == expected


def test_a_long_error_message_is_cut_at_300_characters(fake_bedrock: FakeProvider) -> None:
    fake_bedrock.fail(400, "ValidationException", "m" * 1000)

    assert failure_of(provider_client(fake_bedrock)).message == "ValidationException: " + "m" * 300


def client_error(response: dict[str, Any]) -> ClientError:
    return ClientError(response, "Converse")


@pytest.mark.parametrize(
    ("response", "kind", "message"),
    [
        (
            {"Error": {"Message": "gateway"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
            FailureKind.UNAVAILABLE,
            "503: gateway",
        ),
        (
            {"Error": {"Code": "", "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
            FailureKind.MODEL_NOT_FOUND,
            "404: x",
        ),
        # No status, or one that is not a number: as if the service failed (500).
        ({"Error": {"Code": "OddException", "Message": "x"}}, FailureKind.UNAVAILABLE, None),
        (
            {
                "Error": {"Code": "Odd", "Message": "x"},
                "ResponseMetadata": {"HTTPStatusCode": "404"},
            },
            FailureKind.UNAVAILABLE,
            None,
        ),
    ],
    ids=["no-code", "empty-code", "no-status", "status-not-a-number"],
)
def test_a_client_error_without_a_code_or_status_still_has_a_kind_and_message(
    response: dict[str, Any], kind: FailureKind, message: str | None
) -> None:
    error = _client_error(client_error(response))

    assert error.kind is kind
    if message is not None:
        assert error.message == message


def test_a_client_error_without_a_message_is_described_by_botocore() -> None:
    error = _client_error(
        client_error({"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {}})
    )

    assert error.kind is FailureKind.THROTTLED
    assert error.message.startswith("ThrottlingException: An error occurred (ThrottlingException)")
    assert error.retry_after_s is None, "no headers to read"


def test_retry_after_needs_the_headers_as_a_mapping() -> None:
    def throttled(headers: object) -> ClientError:
        metadata = {"HTTPStatusCode": 429, "HTTPHeaders": headers}
        return client_error(
            {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": metadata}
        )

    assert _client_error(throttled({"retry-after": "2"})).retry_after_s == 2.0
    assert _client_error(throttled([("retry-after", "2")])).retry_after_s is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ReadTimeoutError(endpoint_url="https://bedrock.test"), FailureKind.TIMEOUT),
        (ConnectTimeoutError(endpoint_url="https://bedrock.test"), FailureKind.TIMEOUT),
        (NoCredentialsError(), FailureKind.UNAUTHORIZED),
        (NoRegionError(), FailureKind.UNAUTHORIZED),
        (EndpointConnectionError(endpoint_url="https://bedrock.test"), FailureKind.CONNECTION),
    ],
    ids=["read-timeout", "connect-timeout", "no-credentials", "no-region", "endpoint"],
)
def test_each_transport_error_has_its_kind(error: Exception, kind: FailureKind) -> None:
    failure = _transport_error(error)

    assert failure.kind is kind
    assert str(error) in failure.message


def test_other_transport_errors_are_named_in_the_message() -> None:
    failure = _transport_error(EndpointConnectionError(endpoint_url="https://bedrock.test"))

    assert failure.message.startswith("EndpointConnectionError: ")


@pytest.fixture
def no_aws_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No credentials and no region anywhere botocore looks (instance metadata off), and
    a fresh default boto3 session (the process's own caches the credentials it found)."""
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def bedrock_settings(fake: FakeProvider) -> ProviderSettings:
    return ProviderSettings(
        "bedrock", ProviderKind.BEDROCK, "anthropic.claude-test:0", 1, endpoint_url=fake.url
    )


def test_missing_credentials_are_a_misconfiguration(
    fake_bedrock: FakeProvider, no_aws_configuration: None
) -> None:
    failure = failure_of(BedrockProvider(bedrock_settings(fake_bedrock), BEDROCK_REGION))

    assert failure.kind is FailureKind.UNAUTHORIZED
    assert fake_bedrock.requests == []


def test_a_missing_region_is_a_misconfiguration(
    fake_bedrock: FakeProvider, no_aws_configuration: None
) -> None:
    failure = failure_of(BedrockProvider(bedrock_settings(fake_bedrock), None))

    assert failure.kind is FailureKind.UNAUTHORIZED
    assert "region" in failure.message


def test_the_client_is_made_once_with_the_providers_timeouts_and_no_retries(
    fake_bedrock: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict[str, Any]] = []
    real = bedrock_module.aws_client

    def recording(service: Any, **options: Any) -> Any:
        made.append({"service": service, **options})
        return real(service, **options)

    monkeypatch.setattr(bedrock_module, "aws_client", recording)
    provider = provider_client(fake_bedrock, timeout_s=7.5)

    provider.complete(PROVIDER_REQUEST, 5.0)
    provider.complete(PROVIDER_REQUEST, 5.0)

    assert made == [
        {
            "service": "bedrock-runtime",
            "connect_timeout_s": 7.5,
            "read_timeout_s": 7.5,
            "attempts": 1,
            "region": BEDROCK_REGION,
            "endpoint_url": fake_bedrock.url,
        }
    ]
    assert len(fake_bedrock.requests) == 2


# A 200 reply ----------------------------------------------------------------------


def converse_reply(content: object, stop_reason: str, usage: object = None) -> bytes:
    body: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "metrics": {"latencyMs": 1},
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("stop_reason", "kind"),
    [
        ("model_context_window_exceeded", FailureKind.CONTEXT_EXCEEDED),
        ("malformed_model_output", FailureKind.MALFORMED),
        ("malformed_tool_use", FailureKind.MALFORMED),
        ("content_filtered", FailureKind.CONTENT_FILTERED),
        ("guardrail_intervened", FailureKind.CONTENT_FILTERED),
    ],
)
def test_each_failing_stop_reason_has_its_kind(
    fake_bedrock: FakeProvider, stop_reason: str, kind: FailureKind
) -> None:
    fake_bedrock.send(200, converse_reply([{"text": "partial"}], stop_reason))

    failure = failure_of(provider_client(fake_bedrock))

    assert (failure.kind, failure.message) == (kind, f"stopReason {stop_reason}")


@pytest.mark.parametrize(
    ("stop_reason", "truncated"),
    [("max_tokens", True), ("end_turn", False), ("stop_sequence", False), ("tool_use", False)],
)
def test_other_stop_reasons_answer_and_only_max_tokens_is_truncation(
    fake_bedrock: FakeProvider, stop_reason: str, truncated: bool
) -> None:
    fake_bedrock.send(200, converse_reply([{"text": "x"}], stop_reason, {"inputTokens": 1}))

    completion = provider_client(fake_bedrock).complete(PROVIDER_REQUEST, 5.0)

    assert (completion.text, completion.truncated) == ("x", truncated)


def test_the_text_blocks_are_joined_and_other_blocks_skipped(fake_bedrock: FakeProvider) -> None:
    content = [
        {"reasoningContent": {"reasoningText": {"text": "The reader wants a train."}}},
        {"text": "The train "},
        {"text": "leaves."},
    ]
    fake_bedrock.send(200, converse_reply(content, "end_turn"))

    assert provider_client(fake_bedrock).complete(PROVIDER_REQUEST, 5.0).text == "The train leaves."


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"inputTokens": 900, "outputTokens": 80, "totalTokens": 980}, (900, 80)),
        ({"inputTokens": 900}, (900, 0)),
        ({"outputTokens": 80}, (0, 80)),
        (None, (0, 0)),
    ],
    ids=["both", "input-only", "output-only", "no-usage"],
)
def test_token_usage_is_read_from_input_and_output_tokens(
    fake_bedrock: FakeProvider, usage: object, tokens: tuple[int, int]
) -> None:
    fake_bedrock.send(200, converse_reply([{"text": "x"}], "end_turn", usage))

    assert provider_client(fake_bedrock).complete(PROVIDER_REQUEST, 5.0) == Completion("x", *tokens)
