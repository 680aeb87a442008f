"""providers/keys.py: where a key comes from, what a secret may hold, when it is read again.

`ApiKeys` is given a `read_secret` double for the caching rules; `_SecretReader`
is given a stub Secrets Manager client (monkeypatched over `aws_client`) for the
error classification, and moto for a binary secret.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers import FailureKind, ProviderError, build_providers
from lambdas.story_generator.providers import keys as keys_module
from lambdas.story_generator.providers.keys import ApiKeys
from lambdas.story_generator.settings import ApiKeySource, ProviderKind
from tests.lambdas.fake_providers import FakeProvider, settings_for

OPENAI_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai"
ANTHROPIC_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:anthropic"
REQUEST = GenerationRequest("", (Message("user", "Go"),))


def secret_source(env_var: str, arn: str, value: str | None = None) -> ApiKeySource:
    return ApiKeySource(env_var, f"{env_var}_SECRET_ARN", value=value, secret_arn=arn)


SOURCES = {
    ProviderKind.OPENAI: secret_source("OPENAI_API_KEY", OPENAI_ARN),
    ProviderKind.ANTHROPIC: secret_source("ANTHROPIC_API_KEY", ANTHROPIC_ARN),
}


class Secrets:
    """A `read_secret` double: answers from `values` (a callable raises), counts reads."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.reads: list[str] = []

    def __call__(self, arn: str) -> str:
        self.reads.append(arn)
        value = self.values[arn]
        if callable(value):
            value = value()
        assert isinstance(value, str)
        return value


def key_error(keys: ApiKeys, kind: ProviderKind = ProviderKind.OPENAI) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        keys.get(kind)
    return raised.value


# What a secret may hold ------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("sk-plain", "sk-plain"),
        ("  sk-padded \n", "sk-padded"),
        ('{"api_key": "sk-json"}', "sk-json"),
        ('  {"api_key": "sk-json", "rotated": "2026-01-01"}\n', "sk-json"),
    ],
    ids=["plain", "plain-padded", "json", "json-padded-with-other-fields"],
)
def test_a_secret_holds_the_key_or_a_json_object_with_api_key(secret: str, key: str) -> None:
    keys = ApiKeys(SOURCES, read_secret=Secrets({OPENAI_ARN: secret}))

    assert keys.get(ProviderKind.OPENAI) == key


@pytest.mark.parametrize(
    "secret",
    [
        '{"key": "sk-json"}',
        '{"api_key": 123}',
        '{"api_key": ""}',
        '{"api_key": null}',
        '{"api_key": "sk-',
    ],
    ids=["other-field", "number", "empty", "null", "not-json"],
)
def test_a_json_secret_without_a_string_api_key_is_a_misconfiguration(secret: str) -> None:
    error = key_error(ApiKeys(SOURCES, read_secret=Secrets({OPENAI_ARN: secret})))

    assert error.kind is FailureKind.UNAUTHORIZED
    assert error.message == f"secret {OPENAI_ARN} is JSON without a string 'api_key' field"


@pytest.mark.parametrize("secret", ["", "   \n"], ids=["empty", "blank"])
def test_an_empty_secret_is_a_misconfiguration(secret: str) -> None:
    error = key_error(ApiKeys(SOURCES, read_secret=Secrets({OPENAI_ARN: secret})))

    assert (error.kind, error.message) == (
        FailureKind.UNAUTHORIZED,
        f"secret {OPENAI_ARN} is empty",
    )


# Where a key comes from ------------------------------------------------------------


def test_a_kind_without_any_source_is_a_misconfiguration() -> None:
    error = key_error(ApiKeys({}), ProviderKind.ANTHROPIC)

    assert (error.kind, error.message) == (
        FailureKind.UNAUTHORIZED,
        "no anthropic API key: set a key",
    )


def test_an_empty_environment_value_falls_back_to_the_secret() -> None:
    secrets = Secrets({OPENAI_ARN: "sk-secret"})
    sources = {ProviderKind.OPENAI: secret_source("OPENAI_API_KEY", OPENAI_ARN, value="")}

    assert ApiKeys(sources, read_secret=secrets).get(ProviderKind.OPENAI) == "sk-secret"
    assert secrets.reads == [OPENAI_ARN]


def test_an_environment_value_needs_no_secret_at_all() -> None:
    sources = {ProviderKind.OPENAI: ApiKeySource("OPENAI_API_KEY", "X", value="sk-env")}

    assert ApiKeys(sources, read_secret=Secrets({})).get(ProviderKind.OPENAI) == "sk-env"


# When a key is read ----------------------------------------------------------------


def test_each_kind_has_its_own_cached_key_and_forget_drops_one_only() -> None:
    secrets = Secrets({OPENAI_ARN: "sk-openai", ANTHROPIC_ARN: "sk-anthropic"})
    keys = ApiKeys(SOURCES, read_secret=secrets)

    assert keys.get(ProviderKind.OPENAI) == "sk-openai"
    assert keys.get(ProviderKind.ANTHROPIC) == "sk-anthropic"
    keys.forget(ProviderKind.OPENAI)
    keys.get(ProviderKind.OPENAI)
    keys.get(ProviderKind.ANTHROPIC)

    assert secrets.reads == [OPENAI_ARN, ANTHROPIC_ARN, OPENAI_ARN]


def test_forgetting_a_key_never_read_is_harmless() -> None:
    secrets = Secrets({OPENAI_ARN: "sk-openai"})
    keys = ApiKeys(SOURCES, read_secret=secrets)

    keys.forget(ProviderKind.OPENAI)

    assert keys.get(ProviderKind.OPENAI) == "sk-openai"


def test_a_failed_read_is_not_cached_so_the_next_call_tries_again() -> None:
    outcomes = [ProviderError(FailureKind.UNAVAILABLE, "throttled"), "sk-later"]

    def next_outcome() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    secrets = Secrets({OPENAI_ARN: next_outcome})
    keys = ApiKeys(SOURCES, read_secret=secrets)

    assert key_error(keys).kind is FailureKind.UNAVAILABLE
    assert keys.get(ProviderKind.OPENAI) == "sk-later"
    assert len(secrets.reads) == 2


def test_threads_asking_at_once_read_the_secret_once() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "sk-once"

    secrets = Secrets({OPENAI_ARN: slow})
    keys = ApiKeys(SOURCES, read_secret=secrets)
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(keys.get(ProviderKind.OPENAI))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)

    assert got == ["sk-once"] * 4
    assert secrets.reads == [OPENAI_ARN]


def test_a_slow_secret_of_one_kind_does_not_hold_up_another() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "sk-openai"

    secrets = Secrets({OPENAI_ARN: slow, ANTHROPIC_ARN: "sk-anthropic"})
    keys = ApiKeys(SOURCES, read_secret=secrets)
    reader = threading.Thread(target=keys.get, args=(ProviderKind.OPENAI,))
    reader.start()
    try:
        answer: list[str] = []
        other = threading.Thread(target=lambda: answer.append(keys.get(ProviderKind.ANTHROPIC)))
        other.start()
        other.join(2)
        assert answer == ["sk-anthropic"], "the anthropic key waited for the openai secret"
    finally:
        release.set()
        reader.join(5)


# A key the provider rejects, through the HTTP clients ---------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reads"),
    [
        (401, "invalid_api_key", 2),
        (403, "unsupported_country", 2),
        (400, "invalid_api_key", 2),
        (429, "rate_limit_exceeded", 1),
        (404, "model_not_found", 1),
        (500, "server_error", 1),
    ],
)
def test_only_an_unauthorized_reply_makes_the_key_be_read_again(
    fake_openai: FakeProvider, status: int, code: str, reads: int
) -> None:
    secrets = Secrets({OPENAI_ARN: "sk-secret"})
    settings = settings_for(
        fake_openai.entry(), OPENAI_API_KEY="", OPENAI_API_KEY_SECRET_ARN=OPENAI_ARN
    )
    (provider,) = build_providers(settings, ApiKeys(settings.api_keys, read_secret=secrets))
    fake_openai.fail(status, code, "refused", times=1)

    with pytest.raises(ProviderError):
        provider.complete(REQUEST, 5.0)
    provider.complete(REQUEST, 5.0)

    assert len(secrets.reads) == reads


def test_an_anthropic_401_makes_its_key_be_read_again(fake_anthropic: FakeProvider) -> None:
    secrets = Secrets({ANTHROPIC_ARN: "sk-ant-secret"})
    settings = settings_for(
        fake_anthropic.entry(), ANTHROPIC_API_KEY="", ANTHROPIC_API_KEY_SECRET_ARN=ANTHROPIC_ARN
    )
    (provider,) = build_providers(settings, ApiKeys(settings.api_keys, read_secret=secrets))
    fake_anthropic.fail(401, "authentication_error", "invalid x-api-key", times=1)

    with pytest.raises(ProviderError):
        provider.complete(REQUEST, 5.0)
    provider.complete(REQUEST, 5.0)

    assert secrets.reads == [ANTHROPIC_ARN, ANTHROPIC_ARN]
    assert fake_anthropic.requests[-1].headers["x-api-key"] == "sk-ant-secret"


# Secrets Manager itself ------------------------------------------------------------


class StubSecretsManager:
    def __init__(self, answer: dict[str, Any] | None = None, raises: Exception | None = None):
        self.answer = answer or {}
        self.raises = raises
        self.calls: list[dict[str, Any]] = []

    def get_secret_value(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.raises is not None:
            raise self.raises
        return self.answer


@pytest.fixture
def made_clients(monkeypatch: pytest.MonkeyPatch) -> Callable[[StubSecretsManager], list[Any]]:
    """Install a stub client behind `aws_client`; returns the options it was made with."""

    def install(stub: StubSecretsManager) -> list[Any]:
        made: list[Any] = []

        def make(service: str, **options: Any) -> StubSecretsManager:
            made.append((service, options))
            return stub

        monkeypatch.setattr(keys_module, "aws_client", make)
        return made

    return install


def test_the_secret_client_is_made_once_with_short_timeouts_and_one_retry(
    made_clients: Callable[[StubSecretsManager], list[Any]],
) -> None:
    stub = StubSecretsManager({"SecretString": "sk-read"})
    made = made_clients(stub)
    reader = keys_module._SecretReader()

    assert [reader(OPENAI_ARN), reader(ANTHROPIC_ARN)] == ["sk-read", "sk-read"]
    assert made == [
        ("secretsmanager", {"connect_timeout_s": 2, "read_timeout_s": 3, "attempts": 2})
    ]
    assert stub.calls == [{"SecretId": OPENAI_ARN}, {"SecretId": ANTHROPIC_ARN}]


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("AccessDeniedException", FailureKind.UNAUTHORIZED),
        ("ResourceNotFoundException", FailureKind.UNAUTHORIZED),
        ("DecryptionFailure", FailureKind.UNAUTHORIZED),
        ("InvalidRequestException", FailureKind.UNAUTHORIZED),
        ("InternalServiceError", FailureKind.UNAVAILABLE),
        ("ThrottlingException", FailureKind.UNAVAILABLE),
        ("", FailureKind.UNAVAILABLE),
    ],
)
def test_a_secret_that_cannot_be_read_is_permanent_or_transient_by_its_error_code(
    made_clients: Callable[[StubSecretsManager], list[Any]], code: str, kind: FailureKind
) -> None:
    error = ClientError({"Error": {"Code": code, "Message": "no"}}, "GetSecretValue")
    made_clients(StubSecretsManager(raises=error))

    with pytest.raises(ProviderError) as raised:
        keys_module._SecretReader()(OPENAI_ARN)

    assert raised.value.kind is kind
    assert raised.value.message == f"cannot read secret {OPENAI_ARN}: {code}"


def test_a_client_error_without_an_error_block_is_transient(
    made_clients: Callable[[StubSecretsManager], list[Any]],
) -> None:
    made_clients(StubSecretsManager(raises=ClientError({}, "GetSecretValue")))

    with pytest.raises(ProviderError) as raised:
        keys_module._SecretReader()(OPENAI_ARN)

    assert raised.value.kind is FailureKind.UNAVAILABLE


def test_a_secrets_manager_that_cannot_be_reached_is_transient(
    made_clients: Callable[[StubSecretsManager], list[Any]],
) -> None:
    made_clients(StubSecretsManager(raises=EndpointConnectionError(endpoint_url="https://sm.test")))

    with pytest.raises(ProviderError) as raised:
        keys_module._SecretReader()(OPENAI_ARN)

    assert raised.value.kind is FailureKind.UNAVAILABLE
    assert raised.value.message.startswith(f"cannot read secret {OPENAI_ARN}: EndpointConnection")


def test_a_binary_secret_has_no_key(
    made_clients: Callable[[StubSecretsManager], list[Any]],
) -> None:
    made_clients(StubSecretsManager({"SecretBinary": b"sk-bytes", "Name": "openai"}))

    with pytest.raises(ProviderError) as raised:
        keys_module._SecretReader()(OPENAI_ARN)

    assert raised.value.kind is FailureKind.UNAUTHORIZED
    assert raised.value.message == f"secret {OPENAI_ARN} has no string value"


def test_a_binary_secret_in_secrets_manager_is_refused(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="binary-key", SecretBinary=b"sk-bytes")["ARN"]
    keys = ApiKeys({ProviderKind.OPENAI: secret_source("OPENAI_API_KEY", arn)})

    error = key_error(keys)

    assert (error.kind, error.message) == (
        FailureKind.UNAUTHORIZED,
        f"secret {arn} has no string value",
    )
