"""Errors the story generator reports to its callers.

Every error a caller can cause or should know about is an `ApiError` subclass with
an HTTP status, a stable machine-readable `code` (the kind of error) and a
`message` for people that says what to fix. The API edge (`api.py`) turns them
into responses in one place; nothing else in the package knows about status codes.

A status with several causes (400, 404, 409) takes the code at each raise; the
others have exactly one code, their `default_code`. Every code is listed in the
`x-error-codes` table of `openapi.yaml` (tests/lambdas/test_error_contract.py
finds them in the source, so each code is written out as a literal).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import ClassVar


class ApiError(Exception):
    """Base class of the errors the API reports as JSON `{"error": {...}}`.

    `details` are extra JSON-serialisable fields merged into the error object
    (for example the offending `field`); `retry_after_s`, when set, becomes a
    `Retry-After` header.
    """

    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str,
        details: Mapping[str, object] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details: dict[str, object] = dict(details or {})
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str | None:
        """The `Retry-After` header value (whole seconds, at least 1), if any."""
        if self.retry_after_s is None:
            return None
        return str(max(1, math.ceil(self.retry_after_s)))

    def to_body(self) -> dict[str, object]:
        """The JSON body of the error response."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        error.update((name, value) for name, value in self.details.items() if name not in error)
        return {"error": error}


class _SingleCodeError(ApiError):
    """An error whose status has one code only."""

    default_code: ClassVar[str]

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, object] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(
            message, code=self.default_code, details=details, retry_after_s=retry_after_s
        )


class BadRequest(ApiError):  # noqa: N818 (named after the HTTP status)
    """400: the request is malformed or a field is invalid."""

    status = 400


class Unauthorized(_SingleCodeError):  # noqa: N818 (named after the HTTP status)
    """401: the request carries no verified reader identity (the authorizer's `sub` claim)."""

    status = 401
    default_code = "unauthorized"


class NotFound(ApiError):  # noqa: N818 (named after the HTTP status)
    """404: the session (or route) does not exist."""

    status = 404


class MethodNotAllowed(_SingleCodeError):  # noqa: N818 (named after the HTTP status)
    """405: the path exists but does not serve this HTTP method.

    `allowed` is the `Allow` header value (the methods it serves, comma-separated).
    """

    status = 405
    default_code = "method_not_allowed"

    def __init__(self, allowed: str) -> None:
        # The same body as API Gateway's mock for these methods
        # (components/api_definition.py, `method_not_allowed_body`).
        super().__init__(f"This path takes {allowed} only.", details={"allowed": allowed})
        self.allowed = allowed


class Conflict(ApiError):  # noqa: N818 (named after the HTTP status)
    """409: the session is not in the state the request expects."""

    status = 409


class PayloadTooLarge(_SingleCodeError):  # noqa: N818 (named after the HTTP status)
    """413: the request body is over the size limit."""

    status = 413
    default_code = "payload_too_large"


class InternalError(_SingleCodeError):
    """500: an unexpected failure; the message never carries internals."""

    status = 500
    default_code = "internal_error"


class NoProviderAvailable(_SingleCodeError):  # noqa: N818 (named after the HTTP status)
    """503: no AI provider could answer.

    `failures` maps each provider name to the kind of its failure (a
    `providers.base.FailureKind` value such as `timeout` or `circuit_open`); it is
    reported to the caller as `details["providers"]`, `{name: kind}` in priority order.
    """

    status = 503
    default_code = "no_provider_available"

    def __init__(
        self,
        failures: Mapping[str, object],
        retry_after_s: float,
        message: str = "No AI provider could write the next beat; retry the same request later.",
    ) -> None:
        self.failures: dict[str, str] = {
            name: str(kind.value if isinstance(kind, Enum) else kind)
            for name, kind in failures.items()
        }
        super().__init__(
            message, details={"providers": dict(self.failures)}, retry_after_s=retry_after_s
        )


class GenerationBudgetExceeded(_SingleCodeError):  # noqa: N818 (named after what ran out)
    """429: this reader has caused as many generations as its budget allows for now.

    `retry_after_s` is the time until the exceeded window (a minute, a day) ends.
    """

    status = 429
    default_code = "generation_budget_exceeded"

    def __init__(
        self,
        retry_after_s: float,
        message: str = "You have asked for too many beats for now; retry after Retry-After.",
        *,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, details=details, retry_after_s=retry_after_s)
