"""Amazon Bedrock through the Converse API (boto3 `bedrock-runtime` `converse`).

Each provider's client is created on first use and kept for the container.
botocore's own retries are off: the router alone decides whether a provider is
called again.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..clients import Lazy, aws_client
from ..generation import GenerationRequest
from ..settings import ProviderSettings
from .base import (
    Completion,
    FailureKind,
    ProviderError,
    check_encodable,
    dig,
    joined_text,
    token_count,
)
from .http import retry_after_s, status_kind

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

_ERROR_KINDS = {
    "ThrottlingException": FailureKind.THROTTLED,
    "ServiceQuotaExceededException": FailureKind.THROTTLED,
    "ModelNotReadyException": FailureKind.UNAVAILABLE,
    "ServiceUnavailableException": FailureKind.UNAVAILABLE,
    "InternalServerException": FailureKind.UNAVAILABLE,
    "ModelErrorException": FailureKind.UNAVAILABLE,
    "ModelTimeoutException": FailureKind.TIMEOUT,
    "AccessDeniedException": FailureKind.UNAUTHORIZED,
    "UnrecognizedClientException": FailureKind.UNAUTHORIZED,
    "ResourceNotFoundException": FailureKind.MODEL_NOT_FOUND,
}
_RETRYABLE_ERRORS = frozenset({"ThrottlingException", "ServiceUnavailableException"})
# What a ValidationException's message says when the prompt does not fit the model...
_CONTEXT_MESSAGE = re.compile(r"too long|too many (input )?tokens|context (window|length)", re.I)
# ...when the model refuses a field of inferenceConfig (Claude Opus 4.7 and later models
# answer "`temperature` is deprecated for this model.")...
_PARAMETER_MESSAGE = re.compile(
    r"(is deprecated|is not supported) for this model|cannot be set to|cannot both be specified"
    r"|temperature: range",
    re.I,
)
# ...and when the model id cannot be used as configured (wrong id, needs an inference profile).
_MODEL_MESSAGE = re.compile(
    r"model identifier is invalid|on-demand throughput|model .*not supported", re.I
)
_STOP_FAILURES = {
    "model_context_window_exceeded": FailureKind.CONTEXT_EXCEEDED,
    "malformed_model_output": FailureKind.MALFORMED,
    "malformed_tool_use": FailureKind.MALFORMED,
    "content_filtered": FailureKind.CONTENT_FILTERED,
    "guardrail_intervened": FailureKind.CONTENT_FILTERED,
}


class BedrockProvider:
    """A model on Amazon Bedrock, called through the Converse API."""

    def __init__(self, settings: ProviderSettings, region: str | None) -> None:
        self._settings = settings
        # Per-container cache: the provider's Bedrock runtime client, made on first use.
        self._client: Lazy[BedrockRuntimeClient] = Lazy(
            lambda: aws_client(
                "bedrock-runtime",
                connect_timeout_s=settings.timeout_s,
                read_timeout_s=settings.timeout_s,
                attempts=1,
                region=region,
                endpoint_url=settings.endpoint_url,
            )
        )

    @property
    def settings(self) -> ProviderSettings:
        """The provider's entry of AI_PROVIDER_CONFIG."""
        return self._settings

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        """One `converse` call; botocore errors become `ProviderError`.

        The client's socket timeouts are the provider's `timeout_s`; a shorter
        budget (`timeout_s` here) is enforced by the router's worker thread.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        check_encodable(request)
        settings = self._settings
        inference_config: dict[str, Any] = {"maxTokens": settings.max_tokens}
        if settings.temperature is not None:
            inference_config["temperature"] = settings.temperature
        arguments: dict[str, Any] = {
            # A model id, an inference profile id or an inference profile ARN.
            "modelId": settings.model,
            "messages": [
                {"role": message.role, "content": [{"text": message.text}]}
                for message in request.messages
            ],
            "inferenceConfig": inference_config,
        }
        if request.system:
            arguments["system"] = [{"text": request.system}]
        try:
            reply: object = self._client.get().converse(**arguments)
        except ClientError as error:
            raise _client_error(error) from None
        except BotoCoreError as error:
            raise _transport_error(error) from None
        return _completion(reply)


def _completion(reply: object) -> Completion:
    stop_reason = dig(reply, "stopReason")
    failure = _STOP_FAILURES.get(str(stop_reason))
    if failure is not None:
        raise ProviderError(failure, f"stopReason {stop_reason}")
    return Completion(
        text=joined_text(dig(reply, "output", "message", "content")),
        input_tokens=token_count(reply, "usage", "inputTokens"),
        output_tokens=token_count(reply, "usage", "outputTokens"),
        truncated=stop_reason == "max_tokens",
    )


def _client_error(error: Any) -> ProviderError:
    """The failure a botocore `ClientError` stands for: by error code, else by status."""
    code = str(dig(error.response, "Error", "Code") or "")
    message = str(dig(error.response, "Error", "Message") or error)
    kind = _ERROR_KINDS.get(code)
    if code == "ValidationException":
        if _CONTEXT_MESSAGE.search(message):
            kind = FailureKind.CONTEXT_EXCEEDED
        elif _PARAMETER_MESSAGE.search(message):
            kind = FailureKind.UNSUPPORTED_PARAMETER
        elif _MODEL_MESSAGE.search(message):
            kind = FailureKind.MODEL_NOT_FOUND
    status = dig(error.response, "ResponseMetadata", "HTTPStatusCode")
    if kind is None:
        kind = status_kind(status if isinstance(status, int) else 500)
    headers = dig(error.response, "ResponseMetadata", "HTTPHeaders")
    retry_after = (
        retry_after_s(headers) if code in _RETRYABLE_ERRORS and isinstance(headers, dict) else None
    )
    return ProviderError(kind, f"{code or status}: {message[:300]}", retry_after)


def _transport_error(error: Exception) -> ProviderError:
    from botocore.exceptions import (
        ConnectTimeoutError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )

    if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
        return ProviderError(FailureKind.TIMEOUT, str(error))
    if isinstance(error, NoCredentialsError | NoRegionError):
        return ProviderError(FailureKind.UNAUTHORIZED, str(error))
    return ProviderError(FailureKind.CONNECTION, f"{type(error).__name__}: {error}")
