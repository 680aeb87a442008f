"""CORS: which browser origins may read the story API's responses, as response headers.

Pure functions, shared by the Lambda (`api.py`), the dev server, and the StoryApi
component, which builds API Gateway's own OPTIONS answers and refusals from the
same constants, so that every answer of the deployed API carries the same headers.

CORS_ALLOWED_ORIGINS is a JSON list of exact origins (`https://reader.example.com`,
`http://localhost:5173`), or `["*"]` for any origin; absent or empty, no response
carries CORS headers (browsers then refuse cross-origin reads). An origin is
compared exactly, as browsers send it: scheme, host and port, in lower case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Final

ANY_ORIGIN: Final = "*"
# What a browser may send (the preflight's Access-Control-Allow-Headers).
ALLOWED_HEADERS: Final = "Authorization, Content-Type, Idempotency-Key"
# What a browser's script may read besides the CORS-safelisted headers.
EXPOSED_HEADERS: Final = "Location, Retry-After, x-amzn-RequestId"
# How long a browser may cache a preflight answer.
MAX_AGE_S: Final = 600

_ORIGIN = re.compile(r"https?://(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


class InvalidOrigins(ValueError):  # noqa: N818 (a value, like ValueError)
    """CORS_ALLOWED_ORIGINS is not a list of exact origins; the message says why."""


def parse_allowed_origins(text: str | None) -> tuple[str, ...]:
    """The origins of a CORS_ALLOWED_ORIGINS value (empty: CORS off).

    Raises `InvalidOrigins` for anything but a JSON list of distinct origins
    `scheme://host[:port]` (lower case, no path, no trailing slash), or `["*"]`.
    """
    if text is None or not text.strip():
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidOrigins(f"is not valid JSON ({error})") from None
    if not isinstance(value, list) or not all(isinstance(origin, str) for origin in value):
        raise InvalidOrigins('use a JSON list of origins, such as ["https://reader.example.com"]')
    if ANY_ORIGIN in value and len(value) > 1:
        raise InvalidOrigins('"*" allows every origin, so it must be the only entry')
    for origin in value:
        if origin != ANY_ORIGIN and not _ORIGIN.fullmatch(origin):
            raise InvalidOrigins(
                f"{origin!r} is not an origin: use scheme://host[:port] in lower case, "
                "without a path or a trailing slash"
            )
    if len(set(value)) != len(value):
        raise InvalidOrigins("lists an origin twice")
    return tuple(value)


def allowed_origin(origin: str | None, allowed_origins: Sequence[str]) -> str | None:
    """The Access-Control-Allow-Origin value for a request from `origin`, or None."""
    if list(allowed_origins) == [ANY_ORIGIN]:
        return ANY_ORIGIN
    if origin is not None and origin in allowed_origins:
        return origin
    return None


def response_headers(origin: str | None, allowed_origins: Sequence[str]) -> dict[str, str]:
    """The CORS headers of an actual response (success or error) to a request from `origin`.

    `Vary: Origin` whenever CORS is on, since the answer depends on the Origin; the
    others only for an allowed origin.
    """
    if not allowed_origins:
        return {}
    headers = {"Vary": "Origin"}
    value = allowed_origin(origin, allowed_origins)
    if value is not None:
        headers["Access-Control-Allow-Origin"] = value
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return headers


def preflight_headers(
    origin: str | None, allowed_origins: Sequence[str], methods: Sequence[str]
) -> dict[str, str]:
    """The CORS headers of the answer to a preflight (OPTIONS) on a path serving `methods`.

    `Access-Control-Allow-Methods` is `methods` plus OPTIONS. A request from an origin
    that is not allowed gets `Vary: Origin` only, and the browser stops there.
    """
    if not allowed_origins:
        return {}
    headers = {"Vary": "Origin"}
    value = allowed_origin(origin, allowed_origins)
    if value is not None:
        listed = [method for method in methods if method != "OPTIONS"]
        headers.update(
            {
                "Access-Control-Allow-Origin": value,
                "Access-Control-Allow-Methods": ", ".join([*listed, "OPTIONS"]),
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(MAX_AGE_S),
            }
        )
    return headers
