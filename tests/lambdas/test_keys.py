"""providers/keys.py: API keys from the environment or Secrets Manager, read once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers import FailureKind, ProviderError, build_providers
from lambdas.story_generator.providers.keys import ApiKeys
from lambdas.story_generator.settings import ProviderKind, load_settings
from tests.lambdas.fake_providers import FakeProvider, settings_for

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai"


class CountingReader:
    """A `read_secret` double that hands out `key-1`, `key-2`, ... and counts reads."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def __call__(self, arn: str) -> str:
        self.reads.append(arn)
        return f"key-{len(self.reads)}"


def keys_from(environ: dict[str, str], reader: Callable[[str], str] | None = None) -> ApiKeys:
    return ApiKeys(load_settings(environ).api_keys, read_secret=reader)


def test_an_environment_key_wins_over_the_secret() -> None:
    reader = CountingReader()
    keys = keys_from({"OPENAI_API_KEY": "sk-local", "OPENAI_API_KEY_SECRET_ARN": ARN}, reader)

    assert keys.get(ProviderKind.OPENAI) == "sk-local"
    assert reader.reads == [], "local runs never call Secrets Manager"


def test_a_secret_is_read_once_per_container() -> None:
    reader = CountingReader()
    keys = keys_from({"OPENAI_API_KEY_SECRET_ARN": ARN}, reader)

    assert [keys.get(ProviderKind.OPENAI) for _ in range(3)] == ["key-1"] * 3
    assert reader.reads == [ARN]


def test_a_missing_key_is_a_misconfiguration_that_names_the_variables() -> None:
    keys = keys_from({})

    with pytest.raises(ProviderError) as raised:
        keys.get(ProviderKind.ANTHROPIC)

    assert raised.value.kind is FailureKind.UNAUTHORIZED
    assert "ANTHROPIC_API_KEY_SECRET_ARN or ANTHROPIC_API_KEY" in raised.value.message


@pytest.mark.parametrize("value", ["sk-plain\n", {"api_key": "sk-plain"}])
def test_secrets_manager_holds_the_key_or_a_json_object_with_api_key(
    make_secret: Callable[[str, object], str], value: object
) -> None:
    arn = make_secret("openai-key", value)

    keys = keys_from({"OPENAI_API_KEY_SECRET_ARN": arn})

    assert keys.get(ProviderKind.OPENAI) == "sk-plain"


def test_an_unreadable_secret_is_a_misconfiguration(
    make_secret: Callable[[str, object], str],
) -> None:
    make_secret("another", "x")  # moto is up, but this ARN does not exist
    keys = keys_from({"OPENAI_API_KEY_SECRET_ARN": ARN})

    with pytest.raises(ProviderError) as raised:
        keys.get(ProviderKind.OPENAI)

    assert raised.value.kind is FailureKind.UNAUTHORIZED
    assert "ResourceNotFoundException" in raised.value.message


def test_a_key_the_provider_rejects_is_read_again(fake_openai: FakeProvider) -> None:
    reader = CountingReader()
    settings = settings_for(fake_openai.entry(), OPENAI_API_KEY="", OPENAI_API_KEY_SECRET_ARN=ARN)
    (provider,) = build_providers(settings, ApiKeys(settings.api_keys, read_secret=reader))
    fake_openai.fail(401, "invalid_api_key", "Incorrect API key", times=1)
    request = GenerationRequest("", (Message("user", "Go"),))

    with pytest.raises(ProviderError):
        provider.complete(request, 5.0)
    provider.complete(request, 5.0)

    assert len(reader.reads) == 2, "a 401 drops the cached key so a rotated one is picked up"
    assert fake_openai.requests[-1].headers["authorization"] == "Bearer key-2"
