"""What every provider client offers the router, and how it reports failures.

A client turns a `GenerationRequest` into one call to its provider and the reply
into a `Completion`, or raises `ProviderError` with one of a small set of
`FailureKind`s. The router decides what to do from the kind (its `category`
above all), so no provider-specific status code or exception leaks past the
client. A client classifies by cause: the provider's network, capacity or API
(unhealthy), our configuration (misconfigured), or this request (its prompt, its
encoding, the reply that prompt got), which must never count against a provider
that every reader shares. The helpers at the end read fields out of a parsed
JSON reply without trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ..generation import GenerationRequest
from ..settings import ProviderSettings


class FailureCategory(StrEnum):
    """How the router reacts to a failure.

    Only failures on the provider's side (UNHEALTHY, MISCONFIGURED) count towards
    its circuit: a failure that this request caused (REQUEST) or that our own client
    code caused (FAULT) says nothing against the provider, and counting it would let
    one reader's requests open a circuit that every reader shares.
    """

    UNHEALTHY = "unhealthy"
    """Try the next provider; counts towards this provider's circuit breaker."""
    MISCONFIGURED = "misconfigured"
    """Try the next provider; skip this one for `misconfigured_cooldown_s`."""
    REQUEST = "request"
    """Caused by this request (its prompt, its encoding, the reply the prompt led to):
    try the next provider, the circuit is untouched."""
    FAULT = "fault"
    """A bug of our client (an unexpected exception): try the next provider, the
    circuit is untouched, since nothing is known of the provider's health."""
    SKIPPED = "skipped"
    """The router did not call the provider at all."""


class FailureKind(StrEnum):
    """Why a provider produced no usable reply (reported to callers as the value)."""

    # The provider's side: its network, its capacity, its API.
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"
    # A 200 reply that is not in the API's format (a proxy's HTML page, a body cut short).
    INVALID_RESPONSE = "invalid_response"
    # The configuration: fix it, waiting does not help.
    UNAUTHORIZED = "unauthorized"
    MODEL_NOT_FOUND = "model_not_found"
    QUOTA_EXHAUSTED = "quota_exhausted"
    # The model refuses a field of our request (a temperature it does not take, max_tokens
    # where it wants max_completion_tokens, an effort it does not know): fix the config.
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    # The request: what this prompt got, from a provider that works.
    CONTEXT_EXCEEDED = "context_exceeded"
    BAD_REQUEST = "bad_request"
    # The model's text is not what the caller asked for (a prompt can provoke that).
    MALFORMED = "malformed"
    EMPTY = "empty"
    TRUNCATED = "truncated"
    # The provider's content filter or guardrail withheld the reply.
    CONTENT_FILTERED = "content_filtered"
    # The request cannot be encoded for the provider (a lone surrogate, say).
    UNENCODABLE = "unencodable"
    # Our client raised something unexpected (logged with its traceback).
    CLIENT_ERROR = "client_error"
    # Set by the router for providers it did not call.
    CIRCUIT_OPEN = "circuit_open"
    DEADLINE_EXCEEDED = "deadline_exceeded"

    @property
    def category(self) -> FailureCategory:
        """How the router reacts to this kind of failure."""
        return _CATEGORIES[self]


_CATEGORIES = {
    FailureKind.TIMEOUT: FailureCategory.UNHEALTHY,
    FailureKind.CONNECTION: FailureCategory.UNHEALTHY,
    FailureKind.THROTTLED: FailureCategory.UNHEALTHY,
    FailureKind.UNAVAILABLE: FailureCategory.UNHEALTHY,
    FailureKind.INVALID_RESPONSE: FailureCategory.UNHEALTHY,
    FailureKind.UNAUTHORIZED: FailureCategory.MISCONFIGURED,
    FailureKind.MODEL_NOT_FOUND: FailureCategory.MISCONFIGURED,
    FailureKind.QUOTA_EXHAUSTED: FailureCategory.MISCONFIGURED,
    FailureKind.UNSUPPORTED_PARAMETER: FailureCategory.MISCONFIGURED,
    FailureKind.CONTEXT_EXCEEDED: FailureCategory.REQUEST,
    FailureKind.BAD_REQUEST: FailureCategory.REQUEST,
    FailureKind.MALFORMED: FailureCategory.REQUEST,
    FailureKind.EMPTY: FailureCategory.REQUEST,
    FailureKind.TRUNCATED: FailureCategory.REQUEST,
    FailureKind.CONTENT_FILTERED: FailureCategory.REQUEST,
    FailureKind.UNENCODABLE: FailureCategory.REQUEST,
    FailureKind.CLIENT_ERROR: FailureCategory.FAULT,
    FailureKind.CIRCUIT_OPEN: FailureCategory.SKIPPED,
    FailureKind.DEADLINE_EXCEEDED: FailureCategory.SKIPPED,
}


class ProviderError(Exception):
    """A provider call that produced no usable reply.

    `retry_after_s` is the provider's own Retry-After (429/503/529 replies only).
    """

    def __init__(self, kind: FailureKind, message: str, retry_after_s: float | None = None):
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's reply: its text, its token usage and whether it hit max_tokens."""

    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool = False


class Provider(Protocol):
    """One configured model behind one API."""

    @property
    def settings(self) -> ProviderSettings:
        """The provider's entry of AI_PROVIDER_CONFIG."""
        ...

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        """Call the provider once (no retries), within `timeout_s`.

        Raises `ProviderError` for every failure the provider or the network causes.
        """
        ...


def check_encodable(request: GenerationRequest) -> None:
    """Raise `ProviderError` (UNENCODABLE) unless every text of `request` is Unicode text.

    A Python string may hold a lone surrogate (JSON's `"\\ud800"`), which no UTF-8
    payload can carry: an SDK sends it escaped, and the provider may answer that with
    anything up to a 500. Refused here, it is what it is: this request's failure.
    """
    for text in (request.system, *(message.text for message in request.messages)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ProviderError(
                FailureKind.UNENCODABLE,
                f"the prompt is not valid Unicode: {error.reason} at character {error.start}",
            ) from None


def dig(data: object, *path: str | int) -> object:
    """The value at `path` inside parsed JSON, or None when any step is missing."""
    for step in path:
        if isinstance(step, int) and isinstance(data, list) and -len(data) <= step < len(data):
            data = data[step]
        elif isinstance(step, str) and isinstance(data, dict):
            data = data.get(step)
        else:
            return None
    return data


def token_count(data: object, *path: str | int) -> int:
    """A token count from a reply's usage block (0 when the provider left it out)."""
    value = dig(data, *path)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def joined_text(blocks: object) -> str:
    """The text of a list of content blocks, joined (blocks without text are skipped)."""
    if not isinstance(blocks, list):
        raise ProviderError(
            FailureKind.INVALID_RESPONSE, f"the reply has no content list: {blocks!r:.200}"
        )
    return "".join(text for block in blocks if isinstance(text := dig(block, "text"), str))
