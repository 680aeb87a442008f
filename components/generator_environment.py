"""The story generator's environment variables: its configuration contract.

README, "Generator configuration", documents every variable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi

from lambdas.story_generator.settings import PROVIDER_FIELDS

from .config import AiConfig, ProviderConfig

AI_METRICS_NAMESPACE = "LiminalTransit/AIProviders"


def provider_entry(provider: ProviderConfig) -> dict[str, object]:
    """One AI_PROVIDER_CONFIG entry: the Lambda's own fields (the Bedrock profile's
    regions and foundation model are for IAM only), unset optional ones left out."""
    entry = provider.model_dump(mode="json", include=set(PROVIDER_FIELDS))
    return {name: entry[name] for name in PROVIDER_FIELDS if entry.get(name) is not None}


def function_environment(
    *,
    environment: str,
    table_name: pulumi.Input[str],
    session_ttl_days: int,
    event_bus_name: pulumi.Input[str],
    log_level: str,
    ai: AiConfig,
    secret_arns: dict[str, pulumi.Output[str]],
    cors_allowed_origins: Sequence[str] = (),
) -> dict[str, pulumi.Input[str]]:
    """The variables the function reads at start-up.

    Provider keys are never among them: only the ARNs of the secrets holding them.
    """
    router = {
        "deadline_s": ai.deadline_s,
        "hedge_delay_s": ai.hedge_delay_s,
        "circuit_failure_threshold": ai.circuit_failure_threshold,
        "circuit_cooldown_s": ai.circuit_cooldown_s,
        "misconfigured_cooldown_s": ai.misconfigured_cooldown_s,
    }
    variables: dict[str, pulumi.Input[str]] = {
        "ENVIRONMENT": environment,
        "SESSION_TABLE_NAME": table_name,
        "SESSION_TTL_DAYS": str(session_ttl_days),
        "EVENT_BUS_NAME": event_bus_name,
        "EVENTS_ENABLED": "true",
        "AI_PROVIDER_CONFIG": json.dumps(
            [provider_entry(p) for p in ai.providers], separators=(",", ":")
        ),
        "AI_ROUTER_CONFIG": json.dumps(router, separators=(",", ":")),
        "POWERTOOLS_SERVICE_NAME": "story-generator",
        "POWERTOOLS_METRICS_NAMESPACE": AI_METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": log_level,
        "READER_BUDGET": json.dumps(
            {"per_minute": ai.reader_budget.per_minute, "per_day": ai.reader_budget.per_day},
            separators=(",", ":"),
        ),
    }
    if cors_allowed_origins:
        variables["CORS_ALLOWED_ORIGINS"] = json.dumps(list(cors_allowed_origins))
    for kind, arn in secret_arns.items():
        variables[f"{kind.upper()}_API_KEY_SECRET_ARN"] = arn
    return variables
