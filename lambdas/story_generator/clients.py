"""The function's AWS clients (sessions, events, Bedrock, secrets, circuits), made lazily.

boto3 is imported and each client created on first use, once per container:
the cold start pays for neither when a deployment does not use them. Every
client has explicit timeouts and a total number of attempts, so no SDK retry
hides inside the router's deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value made on first use, once, even when threads ask at the same time."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value, made now if it was not yet."""
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value


def aws_client(
    service: Literal["bedrock-runtime", "dynamodb", "events", "secretsmanager"],
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    attempts: int,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> Any:
    """A boto3 client with these timeouts and at most `attempts` attempts per call.

    `total_max_attempts` counts the first attempt; botocore's `max_attempts` would
    count retries only (`max_attempts: 1` still allows one hidden retry).
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        tcp_keepalive=True,
    )
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
