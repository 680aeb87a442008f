"""providers/: behaviour the other provider tests left unpinned (found by mutation testing).

The offline mock provider first: its beat is made of one place and one event of
its vocabulary and a run of consecutive choices, each drawn from its own byte of
the prompt's SHA-256, so they vary independently; the beat a given prompt gets is
the same in every process and on every machine (pinned below), and its output
tokens are counted like the request's input: one per four characters, rounded up.

Then the real clients: the refusal message of a prompt that is not Unicode, `dig`
with a negative index, Anthropic's context phrases read on 400 and 413 replies
only, an endpoint path kept as given apart from trailing slashes, and a Secrets
Manager error without a code reported without an invented one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers import Completion, FailureKind, ProviderError
from lambdas.story_generator.providers import keys as keys_module
from lambdas.story_generator.providers.base import dig
from lambdas.story_generator.providers.mock import _CHOICES, _EVENTS, _PLACES, MockProvider
from lambdas.story_generator.settings import MOCK_PROVIDER
from tests.lambdas.fake_providers import (
    PROVIDER_REQUEST,
    FakeProvider,
    failure_of,
    provider_client,
)
from tests.lambdas.test_mock_provider import request
from tests.lambdas.test_providers_anthropic import anthropic_error

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai"
BEAT_TEXT = re.compile(r"You find yourself (?P<place>[^.]+)\. (?P<event>.+)")


def mock_beats(count: int) -> list[dict[str, Any]]:
    """The beats the mock writes for `count` different choices of the reader."""
    provider = MockProvider(MOCK_PROVIDER)
    return [json.loads(provider.complete(request(f"door {n}"), 1.0).text) for n in range(count)]


def place_and_event(beat: dict[str, Any]) -> tuple[str, str]:
    match = BEAT_TEXT.fullmatch(beat["text"])
    assert match is not None, beat["text"]
    return match["place"], match["event"]


# The mock provider -----------------------------------------------------------------


def test_a_mock_beat_is_one_of_its_places_then_one_of_its_events() -> None:
    for beat in mock_beats(60):
        place, event = place_and_event(beat)

        assert place in _PLACES
        assert event in _EVENTS


def test_mock_choices_are_consecutive_entries_of_its_choice_list_in_order() -> None:
    for beat in mock_beats(60):
        first = _CHOICES.index(beat["choices"][0])
        expected = [_CHOICES[(first + n) % len(_CHOICES)] for n in range(len(beat["choices"]))]

        assert beat["choices"] == expected


def test_the_place_the_event_and_the_number_of_choices_vary_independently() -> None:
    beats = mock_beats(300)
    places_events = {place_and_event(beat) for beat in beats}
    events_counts = {(place_and_event(beat)[1], len(beat["choices"])) for beat in beats}

    assert len(places_events) == len(_PLACES) * len(_EVENTS)
    assert len(events_counts) == len(_EVENTS) * 3


@pytest.mark.parametrize(
    ("prompt", "beat", "output_tokens"),
    [
        (
            PROVIDER_REQUEST,
            {
                "text": "You find yourself on a night bus that never stops at the same street "
                "twice. A conductor in a moth-grey coat checks a ticket you do not remember "
                "buying.",
                "choices": ["Ask the child about the map", "Open the suitcase"],
            },
            57,
        ),
        (
            GenerationRequest("You narrate.", (Message("user", "Begin."),)),
            {
                "text": "You find yourself on a platform lit by a single flickering lamp. Your "
                "reflection in the window gets off one station early.",
                "choices": [
                    "Step out into the fog",
                    "Ask the child about the map",
                    "Open the suitcase",
                    "Pull the emergency cord",
                ],
            },
            63,
        ),
    ],
    ids=["conversation", "opening"],
)
def test_a_prompt_gets_the_same_mock_beat_in_every_process(
    prompt: GenerationRequest, beat: dict[str, Any], output_tokens: int
) -> None:
    """A SHA-256 of the prompt, not Python's per-process `hash`, picks the beat."""
    completion = MockProvider(MOCK_PROVIDER).complete(prompt, 1.0)

    assert completion == Completion(
        json.dumps(beat), prompt.estimated_input_tokens(), output_tokens
    )


@pytest.mark.parametrize("number", range(8))
def test_mock_output_tokens_are_a_token_per_four_characters_rounded_up(number: int) -> None:
    completion = MockProvider(MOCK_PROVIDER).complete(request(f"door {number}"), 1.0)

    assert type(completion.output_tokens) is int
    assert completion.output_tokens == math.ceil(len(completion.text) / 4)


# The real clients ------------------------------------------------------------------


def test_a_prompt_that_is_not_unicode_is_refused_with_the_reason_and_the_position() -> None:
    prompt = GenerationRequest("You narrate.", (Message("user", "Go \ud800 now"),))

    with pytest.raises(ProviderError) as raised:
        MockProvider(MOCK_PROVIDER).complete(prompt, 1.0)

    assert raised.value.kind is FailureKind.UNENCODABLE
    assert raised.value.message == (
        "the prompt is not valid Unicode: surrogates not allowed at character 3"
    )


@pytest.mark.parametrize(
    ("data", "path", "value"),
    [
        (["only"], (-1,), "only"),
        (["first", "last"], (-2,), "first"),
        ({"choices": [{"text": "a"}, {"text": "b"}]}, ("choices", -2, "text"), "a"),
        (["only"], (-2,), None),
        ([], (-1,), None),
    ],
)
def test_dig_takes_negative_indices_down_to_the_first_item(
    data: object, path: tuple[str | int, ...], value: object
) -> None:
    assert dig(data, *path) == value


@pytest.mark.parametrize("status", [414, 422])
def test_a_context_phrase_in_another_4xx_reply_is_a_bad_request(
    fake_anthropic: FakeProvider, status: int
) -> None:
    fake_anthropic.send(status, anthropic_error("invalid_request_error", "prompt is too long"))

    assert failure_of(provider_client(fake_anthropic)).kind is FailureKind.BAD_REQUEST


@pytest.mark.parametrize(
    ("suffix", "path"),
    [
        ("/gateway-X", "/gateway-X/v1/messages"),
        ("/gateway-X/", "/gateway-X/v1/messages"),
    ],
)
def test_an_endpoint_path_loses_only_its_trailing_slashes(
    fake_anthropic: FakeProvider, suffix: str, path: str
) -> None:
    provider_client(fake_anthropic, endpoint_url=fake_anthropic.url + suffix).complete(
        PROVIDER_REQUEST, 5.0
    )

    assert [received.path for received in fake_anthropic.requests] == [path]


class FailingSecretsManager:
    """A Secrets Manager client whose every read raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_secret_value(self, **kwargs: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize(
    "response",
    [{}, {"Error": {"Message": "no code"}}],
    ids=["no-error-block", "no-code"],
)
def test_a_secret_error_without_a_code_is_reported_without_one(
    monkeypatch: pytest.MonkeyPatch, response: dict[str, Any]
) -> None:
    client = FailingSecretsManager(ClientError(response, "GetSecretValue"))  # type: ignore[arg-type]
    monkeypatch.setattr(keys_module, "aws_client", lambda service, **options: client)

    with pytest.raises(ProviderError) as raised:
        keys_module._SecretReader()(SECRET_ARN)

    assert raised.value.kind is FailureKind.UNAVAILABLE
    assert raised.value.message == f"cannot read secret {SECRET_ARN}: "
