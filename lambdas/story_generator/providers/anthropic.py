"""Anthropic messages: POST {endpoint}/v1/messages."""

from __future__ import annotations

from ..generation import GenerationRequest
from ..settings import ProviderKind
from .base import Completion, FailureKind, ProviderError, dig, joined_text, token_count
from .http import HttpProvider, JsonReply

API_VERSION = "2023-06-01"
# Phrases of 400 invalid_request_error messages that say what went wrong.
_CONTEXT_PHRASES = ("prompt is too long", "input is too long", "context window")
_QUOTA_PHRASES = ("credit balance", "spend limit", "usage limits", "billing")
# ...and those that refuse a sampling field: Claude Opus 4.7 and later models take no
# temperature at all, and every model refuses one outside 0-1.
_PARAMETER_PHRASES = (
    "is deprecated for this model",
    "is not supported for this model",
    "cannot be set to",
    "cannot both be specified",
    "temperature: range",
)


class AnthropicProvider(HttpProvider):
    """A Claude model behind Anthropic's own API."""

    kind = ProviderKind.ANTHROPIC
    default_endpoint = "https://api.anthropic.com"
    path = "/v1/messages"

    def headers(self, key: str) -> dict[str, str]:
        """`x-api-key` and the pinned API version."""
        return {"x-api-key": key, "anthropic-version": API_VERSION}

    def payload(self, request: GenerationRequest) -> dict[str, object]:
        """The system prompt is a top-level field, not a message; `temperature` only when set."""
        payload: dict[str, object] = {
            "model": self.settings.model,
            "max_tokens": self.settings.max_tokens,
            "messages": [
                {"role": message.role, "content": message.text} for message in request.messages
            ],
        }
        if self.settings.temperature is not None:
            payload["temperature"] = self.settings.temperature
        if request.system:
            payload["system"] = request.system
        return payload

    def failure(self, reply: JsonReply) -> tuple[FailureKind | None, object]:
        """`{"type": "error", "error": {"type", "message", "details"?}}`."""
        error = dig(reply.body, "error")
        error_type = dig(error, "type")
        message = dig(error, "message")
        text = message.lower() if isinstance(message, str) else ""
        # A spend cap answers 429 rate_limit_error like a rate limit, but waiting does not help.
        if (
            error_type == "billing_error"
            or dig(error, "details", "error_code") == "enforced_spend_limit_reached"
            or any(phrase in text for phrase in _QUOTA_PHRASES)
        ):
            return FailureKind.QUOTA_EXHAUSTED, message
        if reply.status in (400, 413) and any(phrase in text for phrase in _CONTEXT_PHRASES):
            return FailureKind.CONTEXT_EXCEEDED, message
        if reply.status == 400 and any(phrase in text for phrase in _PARAMETER_PHRASES):
            return FailureKind.UNSUPPORTED_PARAMETER, message
        return None, message

    def completion(self, body: dict[str, object]) -> Completion:
        """The text blocks of `content`, `stop_reason` "max_tokens" when cut.

        `stop_reason` "refusal" is the model's safety classifier declining this prompt.
        """
        stop_reason = dig(body, "stop_reason")
        if stop_reason == "refusal":
            raise ProviderError(FailureKind.CONTENT_FILTERED, "stop_reason refusal")
        return Completion(
            text=joined_text(dig(body, "content")),
            input_tokens=token_count(body, "usage", "input_tokens"),
            output_tokens=token_count(body, "usage", "output_tokens"),
            truncated=stop_reason == "max_tokens",
        )
