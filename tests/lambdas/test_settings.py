"""settings.py: the environment parsed into frozen settings, with errors that say what to fix."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lambdas.story_generator.settings import (
    MOCK_PROVIDER,
    REASONING_EFFORTS,
    ConfigurationError,
    ProviderKind,
    ProviderSettings,
    RouterSettings,
    load_settings,
)

BEDROCK = {
    "name": "bedrock-claude",
    "kind": "bedrock",
    "model": "anthropic.claude-3-sonnet-20240229-v1:0",
    "priority": 1,
    "max_tokens": 4096,
    "temperature": 0.7,
    "timeout_s": 10.0,
    "input_price_per_1k": 0.003,
    "output_price_per_1k": 0.015,
    "endpoint_url": None,
    "context_window": 200000,
}
OPENAI = {**BEDROCK, "name": "openai", "kind": "openai", "model": "gpt-4o", "priority": 2}


def providers_env(*entries: object) -> dict[str, str]:
    return {"AI_PROVIDER_CONFIG": json.dumps(list(entries))}


def error_for(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ)
    return str(raised.value)


def test_empty_environment_runs_locally_with_one_mock_provider() -> None:
    settings = load_settings({})

    assert settings.providers == (MOCK_PROVIDER,), "no AI_PROVIDER_CONFIG means the mock alone"
    assert settings.environment == "local"
    assert settings.session_table_name is None, "no table: the in-memory stores"
    assert settings.session_ttl_days == 30
    assert settings.event_bus_name == "default"
    assert settings.events_enabled is False
    assert settings.router == RouterSettings()


def test_contract_example_is_parsed_and_sorted_by_priority() -> None:
    environ = {
        **providers_env(OPENAI, BEDROCK),
        "AI_ROUTER_CONFIG": json.dumps({"deadline_s": 20, "hedge_delay_s": 2.5}),
        "ENVIRONMENT": "production",
        "SESSION_TABLE_NAME": "sessions",
        "SESSION_TTL_DAYS": "7",
        "EVENT_BUS_NAME": "bus",
        "EVENTS_ENABLED": "true",
        "AWS_REGION": "eu-west-1",
    }

    settings = load_settings(environ)

    assert [provider.name for provider in settings.providers] == ["bedrock-claude", "openai"]
    bedrock = settings.providers[0]
    assert bedrock.kind is ProviderKind.BEDROCK
    assert bedrock.context_window == 200_000 and bedrock.endpoint_url is None
    assert settings.router.deadline_s == 20.0 and settings.router.hedge_delay_s == 2.5
    assert settings.router.circuit_failure_threshold == 3, "absent router fields keep defaults"
    assert settings.bedrock_region == "eu-west-1", "BEDROCK_REGION defaults to AWS_REGION"
    assert (settings.environment, settings.session_table_name) == ("production", "sessions")
    assert (settings.session_ttl_days, settings.event_bus_name) == (7, "bus")
    assert settings.events_enabled is True


def test_optional_provider_fields_have_defaults() -> None:
    (provider,) = load_settings(
        providers_env({"name": "oa", "kind": "openai", "model": "gpt-4o", "priority": 1})
    ).providers

    assert (provider.max_tokens, provider.timeout_s) == (1024, 10.0)
    assert (provider.input_price_per_1k, provider.output_price_per_1k) == (0.0, 0.0)
    assert provider.temperature is None, "no temperature: the request leaves it out"
    assert provider.reasoning_effort is None


@pytest.mark.parametrize("kind", ["bedrock", "openai", "anthropic"])
def test_a_null_temperature_is_the_same_as_none(kind: str) -> None:
    (provider,) = load_settings(
        providers_env({**OPENAI, "kind": kind, "temperature": None})
    ).providers

    assert provider.temperature is None


@pytest.mark.parametrize("effort", REASONING_EFFORTS)
def test_openai_takes_each_documented_reasoning_effort(effort: str) -> None:
    (provider,) = load_settings(providers_env({**OPENAI, "reasoning_effort": effort})).providers

    assert provider.reasoning_effort == effort


def test_an_unknown_reasoning_effort_names_the_allowed_ones() -> None:
    message = error_for(providers_env({**OPENAI, "reasoning_effort": "maximal"}))

    assert message.startswith("AI_PROVIDER_CONFIG[0] ('openai').reasoning_effort = 'maximal'")
    assert "use one of none, minimal, low, medium, high, xhigh, max" in message, message


@pytest.mark.parametrize("kind", ["bedrock", "anthropic", "mock"])
def test_reasoning_effort_is_refused_on_other_kinds_naming_entry_and_field(kind: str) -> None:
    entry = {**OPENAI, "name": "other", "kind": kind, "reasoning_effort": "low"}

    message = error_for(providers_env(entry))

    assert message.startswith("AI_PROVIDER_CONFIG[0] ('other').reasoning_effort = 'low'"), message
    assert f"only openai providers take reasoning_effort (this one is {kind})" in message


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
        "arn:aws:bedrock:us-east-1::foundation-model/" + "x" * 1900,
    ],
)
def test_bedrock_takes_inference_profile_ids_and_arns(model: str) -> None:
    (provider,) = load_settings(providers_env({**BEDROCK, "model": model})).providers

    assert provider.model == model


@pytest.mark.parametrize("model", ["anthropic claude", "x" * 2049, ""])
def test_a_model_with_spaces_or_over_2048_characters_is_refused(model: str) -> None:
    message = error_for(providers_env({**BEDROCK, "model": model}))

    assert "use the provider's model id, inference profile id or ARN (no spaces)" in message


def test_settings_are_frozen() -> None:
    settings = load_settings({})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.environment = "production"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("max_tokens", 0, "an integer from 1 to 200000"),
        ("max_tokens", 200_001, "an integer from 1 to 200000"),
        ("max_tokens", 10.5, "an integer from 1 to 200000"),
        ("max_tokens", True, "an integer from 1 to 200000"),
        ("temperature", 2.5, "a number from 0 to 2"),
        ("temperature", -0.1, "a number from 0 to 2"),
        ("temperature", "0.7", "a number from 0 to 2"),
        ("timeout_s", 0.05, "a number from 0.1 to 28"),
        ("timeout_s", 29, "a number from 0.1 to 28"),
        ("timeout_s", "10", "a number from 0.1 to 28"),
        ("input_price_per_1k", -0.001, "a number from 0 to 1000"),
        ("output_price_per_1k", -1, "a number from 0 to 1000"),
        ("priority", 0, "an integer from 1 to 100"),
        ("priority", 101, "an integer from 1 to 100"),
        ("name", "Bedrock Claude", "1 to 40 characters from a-z, 0-9 and '-'"),
        ("name", "x" * 41, "1 to 40 characters from a-z, 0-9 and '-'"),
        ("kind", "gemini", "bedrock, openai, anthropic, mock"),
        ("endpoint_url", "ftp://example.com", "an http:// or https:// URL"),
        ("endpoint_url", "api.openai.com", "an http:// or https:// URL"),
        ("context_window", 0, "an integer from 1 to 10000000"),
    ],
)
def test_a_bad_provider_field_names_variable_entry_field_value_and_what_is_allowed(
    field: str, value: object, allowed: str
) -> None:
    entry = {**BEDROCK, field: value}

    message = error_for(providers_env(OPENAI, entry))

    assert message.startswith(f"AI_PROVIDER_CONFIG[1] ({entry['name']!r}).{field} = {value!r}")
    assert allowed in message, message


def test_anthropic_temperature_is_limited_to_its_api_range() -> None:
    entry = {**OPENAI, "kind": "anthropic", "temperature": 1.5}

    assert "a number from 0 to 1" in error_for(providers_env(entry))


@pytest.mark.parametrize("missing", ["name", "kind", "model", "priority"])
def test_a_missing_required_field_is_named(missing: str) -> None:
    entry = {key: value for key, value in OPENAI.items() if key != missing}

    message = error_for(providers_env(entry))

    assert f".{missing} is missing: it is required" in message, message


def test_a_mock_provider_needs_no_model() -> None:
    (provider,) = load_settings(
        providers_env({"name": "mock", "kind": "mock", "priority": 1})
    ).providers

    assert provider.model == "mock"


def test_an_unknown_field_is_named_with_the_allowed_ones() -> None:
    message = error_for(providers_env({**OPENAI, "max_token": 10}))

    assert "AI_PROVIDER_CONFIG[0] ('openai') has unknown field(s) max_token" in message
    assert "max_tokens" in message, "the allowed fields are listed"


@pytest.mark.parametrize("field", ["name", "priority"])
def test_names_and_priorities_are_unique(field: str) -> None:
    second = {**OPENAI, "name": "other", "priority": 5}
    second[field] = OPENAI[field]

    message = error_for(providers_env(OPENAI, second))

    assert f"duplicate {field} [{OPENAI[field]!r}]" in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", "non-empty JSON list"),
        ('{"name": "x"}', "non-empty JSON list"),
        ("[1]", "AI_PROVIDER_CONFIG[0] = 1 is not allowed: use a JSON object"),
        ("[{", "AI_PROVIDER_CONFIG is not valid JSON"),
    ],
)
def test_provider_config_must_be_a_list_of_objects(text: str, expected: str) -> None:
    assert expected in error_for({"AI_PROVIDER_CONFIG": text})


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"deadline_s": 29},
            "AI_ROUTER_CONFIG.deadline_s = 29 is not allowed: use a number from 1 to 28",
        ),
        ({"deadline_s": 10, "hedge_delay_s": 10}, "use a delay below deadline_s (10)"),
        ({"circuit_failure_threshold": 0}, "circuit_failure_threshold = 0"),
        ({"circuit_cooldown_s": 0}, "circuit_cooldown_s = 0"),
        ({"misconfigured_cooldown_s": 100_000}, "misconfigured_cooldown_s = 100000"),
        ({"circuit_cache_s": -1}, "circuit_cache_s = -1"),
        ({"deadline": 10}, "AI_ROUTER_CONFIG has unknown field(s) deadline"),
        ([], "AI_ROUTER_CONFIG = [] is not allowed: use a JSON object"),
    ],
)
def test_bad_router_config_is_named(config: object, expected: str) -> None:
    assert expected in error_for({"AI_ROUTER_CONFIG": json.dumps(config)})


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("ENVIRONMENT", "prod", "use one of ('dev', 'staging', 'production', 'local')"),
        ("SESSION_TTL_DAYS", "0", "use an integer from 1 to 365"),
        ("SESSION_TTL_DAYS", "thirty", "use an integer from 1 to 365"),
        ("EVENTS_ENABLED", "yes", "use one of ('true', 'false')"),
        ("OPENAI_API_KEY_SECRET_ARN", "openai-key", "use a Secrets Manager secret ARN"),
    ],
)
def test_bad_plain_variables_are_named(name: str, value: str, allowed: str) -> None:
    message = error_for({name: value})

    assert message.startswith(f"{name} = {value!r} is not allowed"), message
    assert allowed in message


def test_api_keys_never_appear_in_the_settings_repr() -> None:
    settings = load_settings(
        {"OPENAI_API_KEY": "sk-secret", "ANTHROPIC_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:x"}
    )

    assert settings.api_keys[ProviderKind.OPENAI].value == "sk-secret"
    assert "sk-secret" not in repr(settings), "settings may be logged"
    assert settings.api_keys[ProviderKind.ANTHROPIC].secret_arn == "arn:aws:secretsmanager:x"


def test_cost_is_priced_per_thousand_tokens() -> None:
    provider = ProviderSettings(
        "p", ProviderKind.OPENAI, "m", 1, input_price_per_1k=0.003, output_price_per_1k=0.015
    )

    assert provider.cost_usd(2000, 1000) == pytest.approx(0.006 + 0.015)
