"""Types shared by the story module, the router and the provider clients.

A `GenerationRequest` is what the story module asks for (a system prompt and the
conversation so far); a `Generation` is what the router reports about the answer
it accepted. Both are provider-neutral: each client translates them to its own
wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# A rough number of characters per token for English prose. Only used to skip a
# provider whose configured context window the prompt clearly cannot fit; the
# provider's own answer stays the authority.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation sent to the model."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A system prompt and the conversation so far (the last message is the user's)."""

    system: str
    messages: tuple[Message, ...]

    def estimated_input_tokens(self) -> int:
        """A rough count of the prompt's tokens (characters / 4, plus a little per message)."""
        chars = len(self.system) + sum(len(message.text) for message in self.messages)
        overhead = _TOKENS_PER_MESSAGE * (len(self.messages) + 1)
        return -(-chars // _CHARS_PER_TOKEN) + overhead


@dataclass(frozen=True, slots=True)
class Generation:
    """What the router reports about the reply it accepted.

    `input_tokens`, `output_tokens` and `cost_usd` are those of the accepted
    attempt; `latency_ms` is the whole call, fallbacks included (what the reader
    waited); `fallback` is true when the reply came from a provider other than
    the first one tried.
    """

    text: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float
    fallback: bool


class MalformedReply(Exception):  # noqa: N818 (a reply, not an error of ours)
    """Raised by the caller's `accept` callback when a reply is unusable.

    The router counts it as that provider's failure and moves on to the next one.
    """
