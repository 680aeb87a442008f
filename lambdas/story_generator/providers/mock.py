"""A deterministic offline provider for local runs, tests and benchmarks.

It answers at once with a beat in the JSON the story module asks models for,
`{"text": "...", "choices": ["...", ...]}` (2 to 4 choices), derived from a hash
of the prompt: the same prompt always gets the same beat, a different choice a
different one.
"""

from __future__ import annotations

import hashlib
import json

from ..generation import GenerationRequest
from ..settings import ProviderSettings
from .base import Completion, check_encodable

_PLACES = (
    "on a platform lit by a single flickering lamp",
    "in a carriage where every seat faces backwards",
    "in a station whose name is painted over",
    "in a tunnel that hums a tune you almost know",
    "in a ticket hall with clocks that disagree",
    "on a night bus that never stops at the same street twice",
)
_EVENTS = (
    "A conductor in a moth-grey coat checks a ticket you do not remember buying.",
    "The doors open onto fog, and somewhere in it a bell rings twice.",
    "A child across the aisle is drawing a map of a line that does not exist.",
    "The announcement names your stop, then names it again in a language you half-recall.",
    "Your reflection in the window gets off one station early.",
    "A suitcase with your initials slides gently towards your feet.",
)
_CHOICES = (
    "Follow the conductor",
    "Stay in your seat",
    "Step out into the fog",
    "Ask the child about the map",
    "Open the suitcase",
    "Pull the emergency cord",
    "Read the timetable on the wall",
    "Walk towards the bell",
)


class MockProvider:
    """Writes a plausible beat from a hash of the prompt; never waits."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings

    @property
    def settings(self) -> ProviderSettings:
        """The provider's entry of AI_PROVIDER_CONFIG."""
        return self._settings

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        """A beat JSON derived from the prompt (`timeout_s` is irrelevant offline).

        Like the real clients, it refuses a prompt that is not Unicode text (UNENCODABLE).
        """
        check_encodable(request)
        prompt = "\n".join([request.system, *(f"{m.role}: {m.text}" for m in request.messages)])
        digest = hashlib.sha256(prompt.encode()).digest()
        place = _PLACES[digest[0] % len(_PLACES)]
        event = _EVENTS[digest[1] % len(_EVENTS)]
        count = 2 + digest[2] % 3
        first = digest[3] % len(_CHOICES)
        choices = [_CHOICES[(first + step) % len(_CHOICES)] for step in range(count)]
        beat = {"text": f"You find yourself {place}. {event}", "choices": choices}
        text = json.dumps(beat)
        return Completion(
            text=text,
            input_tokens=request.estimated_input_tokens(),
            output_tokens=-(-len(text) // 4),
        )
