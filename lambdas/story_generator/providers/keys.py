"""API keys of the HTTP providers, read once per container.

A key comes from its environment variable when set (local runs), else from the
Secrets Manager secret named by `<VAR>_SECRET_ARN` (the Lambda). The secret holds
the key itself, or a JSON object with an `api_key` field. A key is read on the
first call that needs it, inside that call's time budget, then cached; `forget`
drops it after the provider rejects it, so a rotated key is read again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..clients import Lazy, aws_client
from ..settings import ApiKeySource, ProviderKind
from .base import FailureKind, ProviderError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Errors that a retry will not fix: the secret is missing or the role cannot read it.
_PERMANENT_SECRET_ERRORS = frozenset(
    {
        "AccessDeniedException",
        "ResourceNotFoundException",
        "DecryptionFailure",
        "InvalidRequestException",
    }
)


class ApiKeys:
    """Per-container cache of provider API keys (thread-safe)."""

    def __init__(
        self,
        sources: Mapping[ProviderKind, ApiKeySource],
        *,
        read_secret: Callable[[str], str] | None = None,
    ) -> None:
        self._sources = sources
        self._read_secret = read_secret or _SecretReader()
        self._cache: dict[ProviderKind, str] = {}
        # One lock per kind: a slow secret read for one provider never holds up another.
        self._locks = {kind: threading.Lock() for kind in ProviderKind}

    def get(self, kind: ProviderKind) -> str:
        """The API key for `kind`, or `ProviderError` (unauthorized when none is configured)."""
        with self._locks[kind]:
            cached = self._cache.get(kind)
            if cached is None:
                cached = self._cache[kind] = self._load(kind)
            return cached

    def forget(self, kind: ProviderKind) -> None:
        """Drop a cached key (the provider rejected it; it may have been rotated)."""
        with self._locks[kind]:
            self._cache.pop(kind, None)

    def _load(self, kind: ProviderKind) -> str:
        source = self._sources.get(kind)
        if source is not None and source.value:
            return source.value
        if source is None or source.secret_arn is None:
            names = f"{source.secret_arn_env_var} or {source.env_var}" if source else "a key"
            raise ProviderError(FailureKind.UNAUTHORIZED, f"no {kind.value} API key: set {names}")
        return _key_from_secret(self._read_secret(source.secret_arn), source.secret_arn)


def _key_from_secret(secret: str, arn: str) -> str:
    text = secret.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("api_key")
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise ProviderError(
                FailureKind.UNAUTHORIZED, f"secret {arn} is JSON without a string 'api_key' field"
            )
        return value
    if not text:
        raise ProviderError(FailureKind.UNAUTHORIZED, f"secret {arn} is empty")
    return text


class _SecretReader:
    """Reads a secret's string through one lazily created Secrets Manager client."""

    def __init__(self) -> None:
        self._client: Lazy[SecretsManagerClient] = Lazy(
            lambda: aws_client("secretsmanager", connect_timeout_s=2, read_timeout_s=3, attempts=2)
        )

    def __call__(self, arn: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            secret = self._client.get().get_secret_value(SecretId=arn).get("SecretString")
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            kind = (
                FailureKind.UNAUTHORIZED
                if code in _PERMANENT_SECRET_ERRORS
                else FailureKind.UNAVAILABLE
            )
            raise ProviderError(kind, f"cannot read secret {arn}: {code}") from None
        except BotoCoreError as error:
            raise ProviderError(
                FailureKind.UNAVAILABLE, f"cannot read secret {arn}: {error!r}"
            ) from None
        if secret is None:
            raise ProviderError(FailureKind.UNAUTHORIZED, f"secret {arn} has no string value")
        return secret
