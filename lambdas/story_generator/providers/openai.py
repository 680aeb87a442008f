"""OpenAI chat completions: POST {endpoint}/v1/chat/completions."""

from __future__ import annotations

from ..generation import GenerationRequest
from ..settings import ProviderKind
from .base import Completion, FailureKind, ProviderError, dig, token_count
from .http import HttpProvider, JsonReply

# OpenAI names these in `error.code` (or `error.type`); everything else is judged by status.
_ERROR_CODES = {
    "insufficient_quota": FailureKind.QUOTA_EXHAUSTED,
    "billing_hard_limit_reached": FailureKind.QUOTA_EXHAUSTED,
    "context_length_exceeded": FailureKind.CONTEXT_EXCEEDED,
    "string_above_max_length": FailureKind.CONTEXT_EXCEEDED,
    "model_not_found": FailureKind.MODEL_NOT_FOUND,
    "invalid_api_key": FailureKind.UNAUTHORIZED,
    # A field the configured model does not take, e.g. a temperature on a reasoning model.
    "unsupported_value": FailureKind.UNSUPPORTED_PARAMETER,
    "unsupported_parameter": FailureKind.UNSUPPORTED_PARAMETER,
}
# Some refusals of a field come with `code: null`; their message still says so.
_UNSUPPORTED_MESSAGES = ("Unsupported parameter:", "Unsupported value:")


class OpenAIProvider(HttpProvider):
    """A chat model behind the OpenAI API (or an endpoint compatible with it)."""

    kind = ProviderKind.OPENAI
    default_endpoint = "https://api.openai.com"
    path = "/v1/chat/completions"

    def headers(self, key: str) -> dict[str, str]:
        """Bearer authentication."""
        return {"authorization": f"Bearer {key}"}

    def payload(self, request: GenerationRequest) -> dict[str, object]:
        """The system prompt as the first message, then the conversation.

        `temperature` and `reasoning_effort` are sent only when configured: the
        reasoning models refuse any temperature but their default, and the other
        models refuse `reasoning_effort`.
        """
        settings = self.settings
        system = [{"role": "system", "content": request.system}] if request.system else []
        payload: dict[str, object] = {
            "model": settings.model,
            "messages": system
            + [{"role": message.role, "content": message.text} for message in request.messages],
            # max_tokens is deprecated and refused by the reasoning models. Their reasoning
            # tokens count against this budget too.
            "max_completion_tokens": settings.max_tokens,
        }
        if settings.temperature is not None:
            payload["temperature"] = settings.temperature
        if settings.reasoning_effort is not None:
            payload["reasoning_effort"] = settings.reasoning_effort
        return payload

    def failure(self, reply: JsonReply) -> tuple[FailureKind | None, object]:
        """`{"error": {"message", "type", "code"}}`."""
        error = dig(reply.body, "error")
        message = dig(error, "message")
        kind = _ERROR_CODES.get(str(dig(error, "code"))) or _ERROR_CODES.get(
            str(dig(error, "type"))
        )
        if (
            kind is None
            and reply.status == 400
            and isinstance(message, str)
            and message.startswith(_UNSUPPORTED_MESSAGES)
        ):
            kind = FailureKind.UNSUPPORTED_PARAMETER
        return kind, message

    def completion(self, body: dict[str, object]) -> Completion:
        """`choices[0].message.content`, `finish_reason` "length" when cut at max tokens.

        `finish_reason` "content_filter", or a `refusal` instead of content, is the
        content filter's answer to this prompt.
        """
        message = dig(body, "choices", 0, "message")
        if not isinstance(message, dict):
            raise ProviderError(
                FailureKind.INVALID_RESPONSE, f"no choices[0].message in {body!r:.200}"
            )
        finish_reason = dig(body, "choices", 0, "finish_reason")
        refusal = message.get("refusal")
        if finish_reason == "content_filter" or (isinstance(refusal, str) and refusal):
            raise ProviderError(
                FailureKind.CONTENT_FILTERED, f"finish_reason {finish_reason}: {refusal!r:.200}"
            )
        content = message.get("content")
        return Completion(
            text=content if isinstance(content, str) else "",
            input_tokens=token_count(body, "usage", "prompt_tokens"),
            output_tokens=token_count(body, "usage", "completion_tokens"),
            truncated=finish_reason == "length",
        )
