"""The provider clients, built from the settings once per container."""

from __future__ import annotations

from ..settings import ProviderKind, Settings
from .anthropic import AnthropicProvider
from .base import Completion, FailureCategory, FailureKind, Provider, ProviderError
from .bedrock import BedrockProvider
from .keys import ApiKeys
from .mock import MockProvider
from .openai import OpenAIProvider

__all__ = [
    "Completion",
    "FailureCategory",
    "FailureKind",
    "Provider",
    "ProviderError",
    "build_providers",
]


def build_providers(settings: Settings, keys: ApiKeys | None = None) -> tuple[Provider, ...]:
    """One client per configured provider, in priority order (no network calls yet)."""
    keys = keys or ApiKeys(settings.api_keys)
    providers: list[Provider] = []
    for entry in settings.providers:
        if entry.kind is ProviderKind.BEDROCK:
            providers.append(BedrockProvider(entry, settings.bedrock_region))
        elif entry.kind is ProviderKind.OPENAI:
            providers.append(OpenAIProvider(entry, keys))
        elif entry.kind is ProviderKind.ANTHROPIC:
            providers.append(AnthropicProvider(entry, keys))
        else:
            providers.append(MockProvider(entry))
    return tuple(providers)
