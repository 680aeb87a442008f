"""What Bedrock's model identifiers mean: foundation models, inference profiles, ARNs.

Current Claude models on Bedrock are served only through cross-region inference
profiles: the caller invokes the profile (``us.anthropic...``) in its own region
and Bedrock routes the request to the foundation model in one of the profile's
destination regions. IAM checks both, so the invoking role needs
``bedrock:InvokeModel`` on the profile and on the foundation model in every
destination region.
"""

from __future__ import annotations

import re
from enum import StrEnum

# The geography prefix of a system-defined cross-region inference profile id.
PROFILE_GEOGRAPHIES = ("us", "eu", "apac", "jp", "au", "ca", "us-gov", "global")
_PROFILE_ID = re.compile(rf"^({'|'.join(re.escape(g) for g in PROFILE_GEOGRAPHIES)})\.(.+)$")
_FOUNDATION_MODEL_ID = re.compile(r"^[a-z0-9-]+\.[A-Za-z0-9.:_-]+$")
_PROFILE_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<type>inference-profile|application-inference-profile)/(?P<id>[A-Za-z0-9.:_-]+)$"
)
# Foundation models that Bedrock serves only through an inference profile: invoked
# by their bare id they fail with "on-demand throughput isn't supported".
PROFILE_ONLY_MODELS = re.compile(
    r"^anthropic\.claude-(3-5-sonnet-20241022|3-5-haiku|3-7-sonnet|(sonnet|opus|haiku)-\d)"
    r"|^meta\.llama(3-[23]|4)|^deepseek\.|^amazon\.nova-premier"
)


class BedrockModelType(StrEnum):
    """How a Bedrock provider's ``model`` is invoked."""

    FOUNDATION_MODEL = "foundation-model"
    """A foundation model id invoked on demand in the stack's region."""
    INFERENCE_PROFILE = "inference-profile"
    """A cross-region inference profile id or ARN (or an application inference profile ARN)."""


def is_foundation_model_id(model: str) -> bool:
    """Whether ``model`` looks like a foundation model id (``anthropic.claude-...``)."""
    return _PROFILE_ID.match(model) is None and bool(_FOUNDATION_MODEL_ID.match(model))


def profile_foundation_model(model: str) -> str | None:
    """The foundation model a system-defined profile id or ARN routes to.

    None for an application inference profile ARN (it names no model) and for
    anything that is not a profile.
    """
    arn = _PROFILE_ARN.match(model)
    if arn is not None:
        if arn["type"] == "application-inference-profile":
            return None
        model = arn["id"]
    profile = _PROFILE_ID.match(model)
    return profile.group(2) if profile else None


def profile_geography(model: str) -> str | None:
    """The geography of a system-defined profile id or ARN (``us``, ``global``, ...), or None."""
    arn = _PROFILE_ARN.match(model)
    profile = _PROFILE_ID.match(arn["id"] if arn else model)
    return profile.group(1) if profile else None


def is_inference_profile(model: str) -> bool:
    """Whether ``model`` is an inference profile id or ARN."""
    return _PROFILE_ARN.match(model) is not None or _PROFILE_ID.match(model) is not None


def profile_arn_region(model: str) -> str | None:
    """The region of an inference profile ARN (None for an id)."""
    arn = _PROFILE_ARN.match(model)
    return arn["region"] if arn else None


def needs_inference_profile(foundation_model: str) -> bool:
    """Whether Bedrock refuses ``foundation_model`` invoked on demand by its bare id."""
    return PROFILE_ONLY_MODELS.match(foundation_model) is not None
