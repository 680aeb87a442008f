"""providers/mock.py: a deterministic offline provider whose replies are valid beats."""

from __future__ import annotations

import json

from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers.mock import MockProvider
from lambdas.story_generator.settings import MOCK_PROVIDER
from lambdas.story_generator.story import parse_beat


def request(choice: str) -> GenerationRequest:
    return GenerationRequest("You narrate.", (Message("user", f"The reader chooses: {choice}"),))


def test_the_same_prompt_always_gets_the_same_reply() -> None:
    provider = MockProvider(MOCK_PROVIDER)

    assert provider.complete(request("left"), 1.0) == provider.complete(request("left"), 1.0)


def test_every_reply_is_a_beat_the_story_module_accepts() -> None:
    provider = MockProvider(MOCK_PROVIDER)

    for number in range(50):
        completion = provider.complete(request(f"door {number}"), 1.0)
        draft = parse_beat(completion.text, opening=True, final=False)

        assert draft.text and 2 <= len(draft.choices) <= 4
        assert set(json.loads(completion.text)) == {"text", "choices"}
        assert completion.input_tokens > 0 and completion.output_tokens > 0


def test_different_prompts_get_different_beats() -> None:
    provider = MockProvider(MOCK_PROVIDER)

    texts = {provider.complete(request(f"door {number}"), 1.0).text for number in range(20)}

    assert len(texts) > 10, "the story moves on with the reader's choices"
