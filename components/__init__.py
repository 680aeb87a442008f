"""Liminal Transit's Pulumi components, importable one by one by other stacks.

``from components import StoryApi, StoryApiArgs`` builds the API alone;
``LiminalPlatform`` composes everything from a ``StackConfig``.
"""

from .bedrock_models import BedrockModelType
from .config import (
    AiConfig,
    ConfigError,
    ProviderConfig,
    ProviderKind,
    StackConfig,
    load_stack_config,
    parse_stack_config,
)
from .identity import OidcFederation, ReaderIdentity, ReaderIdentityArgs
from .naming import Naming
from .platform import LiminalPlatform
from .storage import Storage, StorageArgs
from .story_api import CustomDomain, StoryApi, StoryApiArgs
from .story_generator import StoryGenerator, StoryGeneratorArgs, VpcPlacement

__all__ = [
    "AiConfig",
    "BedrockModelType",
    "ConfigError",
    "CustomDomain",
    "LiminalPlatform",
    "Naming",
    "OidcFederation",
    "ProviderConfig",
    "ProviderKind",
    "ReaderIdentity",
    "ReaderIdentityArgs",
    "StackConfig",
    "Storage",
    "StorageArgs",
    "StoryApi",
    "StoryApiArgs",
    "StoryGenerator",
    "StoryGeneratorArgs",
    "VpcPlacement",
    "load_stack_config",
    "parse_stack_config",
]
