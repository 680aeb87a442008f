"""JSON over HTTP: what the OpenAI and Anthropic clients have in common.

One `urllib3.PoolManager` per container keeps TLS connections alive across warm
invocations. urllib3's own retries and redirects are off: the router alone
decides whether a provider is called again.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import ClassVar

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as UrllibTimeoutError

from ..generation import GenerationRequest
from ..settings import ProviderKind, ProviderSettings
from .base import Completion, FailureKind, ProviderError
from .keys import ApiKeys

# Per-container cache: the connection pool, shared by every HTTP provider.
_POOL = urllib3.PoolManager(num_pools=8, maxsize=10, block=False, retries=False)

_MESSAGE_LIMIT = 300
_STATUS_KINDS = {
    401: FailureKind.UNAUTHORIZED,
    402: FailureKind.QUOTA_EXHAUSTED,
    403: FailureKind.UNAUTHORIZED,
    404: FailureKind.MODEL_NOT_FOUND,
    408: FailureKind.TIMEOUT,
    413: FailureKind.CONTEXT_EXCEEDED,
    429: FailureKind.THROTTLED,
}
# Statuses whose Retry-After the router may honour.
_RETRYABLE_STATUSES = frozenset({429, 503, 529})


@dataclass(frozen=True, slots=True)
class JsonReply:
    """An HTTP reply: its status, headers and JSON body (None when it is not JSON)."""

    status: int
    headers: Mapping[str, str]
    body: object
    text: str


def post_json(
    url: str, payload: Mapping[str, object], headers: Mapping[str, str], timeout_s: float
) -> JsonReply:
    """POST `payload` as JSON and read the whole reply, or raise `ProviderError`.

    `timeout_s` bounds the connection and each socket read; the router's worker
    thread bounds the whole exchange (a server may dribble bytes forever).
    """
    try:
        # UTF-8 rather than ASCII escapes: a lone surrogate then fails here, as this
        # request's failure, instead of going out escaped for the provider to judge.
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise ProviderError(
            FailureKind.UNENCODABLE,
            f"the request is not valid Unicode: {error.reason}",
        ) from None
    try:
        response = _POOL.request(
            "POST",
            url,
            body=data,
            headers={**headers, "content-type": "application/json"},
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=False,
            redirect=False,
        )
    except NewConnectionError as error:  # a subclass of the timeout errors in urllib3 2
        raise ProviderError(FailureKind.CONNECTION, f"cannot connect to {url}: {error}") from None
    except UrllibTimeoutError as error:
        raise ProviderError(FailureKind.TIMEOUT, f"{url} timed out: {error}") from None
    except HTTPError as error:
        raise ProviderError(FailureKind.CONNECTION, f"{url} failed: {error}") from None
    text = response.data.decode("utf-8", errors="replace")
    try:
        body: object = json.loads(text)
    except ValueError:
        body = None
    return JsonReply(response.status, response.headers, body, text)


def error_for(reply: JsonReply, kind: FailureKind | None, message: object) -> ProviderError:
    """The `ProviderError` of a non-200 reply: `kind` if the client knows it, else by status."""
    if kind is None:
        kind = status_kind(reply.status)
    detail = message if isinstance(message, str) and message else reply.text
    retry_after = retry_after_s(reply.headers) if reply.status in _RETRYABLE_STATUSES else None
    return ProviderError(kind, f"HTTP {reply.status}: {detail[:_MESSAGE_LIMIT]}", retry_after)


def status_kind(status: int) -> FailureKind:
    """The failure an HTTP error status stands for when the body says nothing more precise."""
    kind = _STATUS_KINDS.get(status)
    if kind is None:
        kind = FailureKind.UNAVAILABLE if status >= 500 else FailureKind.BAD_REQUEST
    return kind


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


class HttpProvider(ABC):
    """A provider called with one JSON POST; subclasses write the request and read the reply."""

    kind: ClassVar[ProviderKind]
    default_endpoint: ClassVar[str]
    path: ClassVar[str]

    def __init__(self, settings: ProviderSettings, keys: ApiKeys) -> None:
        self._settings = settings
        self._keys = keys
        base = (settings.endpoint_url or self.default_endpoint).rstrip("/")
        # Accept an endpoint given with or without the API version segment.
        self._url = base.removesuffix("/v1") + self.path

    @property
    def settings(self) -> ProviderSettings:
        """The provider's entry of AI_PROVIDER_CONFIG."""
        return self._settings

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        """POST the request, turn a non-200 reply into `ProviderError`, read a 200 one."""
        key = self._keys.get(self.kind)
        reply = post_json(self._url, self.payload(request), self.headers(key), timeout_s)
        if reply.status != 200:
            kind, message = self.failure(reply)
            error = error_for(reply, kind, message)
            if error.kind is FailureKind.UNAUTHORIZED:
                self._keys.forget(self.kind)
            raise error
        if not isinstance(reply.body, dict):
            raise ProviderError(
                FailureKind.INVALID_RESPONSE, f"the reply is not a JSON object: {reply.text:.200}"
            )
        return self.completion(reply.body)

    @abstractmethod
    def headers(self, key: str) -> dict[str, str]:
        """The request headers, authentication included."""

    @abstractmethod
    def payload(self, request: GenerationRequest) -> dict[str, object]:
        """The JSON request body."""

    @abstractmethod
    def failure(self, reply: JsonReply) -> tuple[FailureKind | None, object]:
        """The failure kind a non-200 reply names (None: judge by status) and its message."""

    @abstractmethod
    def completion(self, body: dict[str, object]) -> Completion:
        """The completion a 200 reply holds."""
