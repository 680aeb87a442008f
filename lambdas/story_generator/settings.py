"""The generator's configuration, parsed from the environment once per container.

`load_settings(os.environ)` returns a frozen `Settings` or raises
`ConfigurationError` with a message that names the variable (and, inside the JSON
variables, the entry and the field), the bad value and what is allowed.

Besides the tables and the providers: READER_BUDGET (`{"per_minute": 1-10000,
"per_day": 1-1000000}`; absent: readers' generations are not counted) and
CORS_ALLOWED_ORIGINS (a JSON list of exact origins, or `["*"]`; absent: no CORS
headers, see `cors.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from .cors import InvalidOrigins, parse_allowed_origins

ENVIRONMENTS: Final = ("dev", "staging", "production", "local")
_NAME = re.compile(r"[a-z0-9-]{1,40}")
_URL = re.compile(r"https?://[^\s/?#]+(?::\d+)?(/[^\s?#]*)?")
_REQUIRED: Final = object()


class ConfigurationError(ValueError):
    """The environment holds a value the generator cannot run with."""


class ProviderKind(StrEnum):
    """The API a provider entry is called through."""

    BEDROCK = "bedrock"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    MOCK = "mock"


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """One entry of AI_PROVIDER_CONFIG (see the README for each field)."""

    name: str
    kind: ProviderKind
    model: str
    priority: int
    max_tokens: int = 1024
    # None: the request leaves the field out and the model's own default applies.
    temperature: float | None = None
    timeout_s: float = 10.0
    input_price_per_1k: float = 0.0
    output_price_per_1k: float = 0.0
    endpoint_url: str | None = None
    context_window: int | None = None
    reasoning_effort: str | None = None

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """The price of one call in US dollars."""
        return (
            input_tokens * self.input_price_per_1k + output_tokens * self.output_price_per_1k
        ) / 1000


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """AI_ROUTER_CONFIG: the deadline, hedging and circuit breaker tuning."""

    deadline_s: float = 25.0
    hedge_delay_s: float | None = None
    circuit_failure_threshold: int = 3
    circuit_cooldown_s: float = 30.0
    misconfigured_cooldown_s: float = 300.0
    circuit_cache_s: float = 2.0


@dataclass(frozen=True, slots=True)
class ReaderBudgetSettings:
    """READER_BUDGET: how many generations one reader may cause per minute and per day."""

    per_minute: int
    per_day: int


@dataclass(frozen=True, slots=True)
class ApiKeySource:
    """Where a provider kind's API key comes from: the key itself (local) or a secret."""

    env_var: str
    secret_arn_env_var: str
    value: str | None = field(default=None, repr=False)
    secret_arn: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the generator reads from its environment."""

    environment: str = "local"
    session_table_name: str | None = None
    session_ttl_days: int = 30
    event_bus_name: str = "default"
    events_enabled: bool = False
    providers: tuple[ProviderSettings, ...] = ()
    router: RouterSettings = RouterSettings()
    bedrock_region: str | None = None
    api_keys: Mapping[ProviderKind, ApiKeySource] = field(default_factory=dict)
    # Exact origins, or ("*",); empty: no CORS headers.
    cors_allowed_origins: tuple[str, ...] = ()
    # None: readers' generations are not counted.
    reader_budget: ReaderBudgetSettings | None = None


MOCK_PROVIDER: Final = ProviderSettings(
    name="mock", kind=ProviderKind.MOCK, model="mock", priority=1, timeout_s=5.0
)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Parse the environment (the contract's variables) into `Settings`."""
    env = _Env(environ)
    return Settings(
        environment=env.choice("ENVIRONMENT", ENVIRONMENTS, default="local"),
        session_table_name=env.text("SESSION_TABLE_NAME"),
        session_ttl_days=env.integer("SESSION_TTL_DAYS", 1, 365, default=30),
        event_bus_name=env.text("EVENT_BUS_NAME") or "default",
        events_enabled=env.choice("EVENTS_ENABLED", ("true", "false"), default="false") == "true",
        providers=_providers(environ.get("AI_PROVIDER_CONFIG")),
        router=_router(environ.get("AI_ROUTER_CONFIG")),
        bedrock_region=env.text("BEDROCK_REGION") or env.text("AWS_REGION"),
        api_keys={
            ProviderKind.OPENAI: env.key_source("OPENAI_API_KEY"),
            ProviderKind.ANTHROPIC: env.key_source("ANTHROPIC_API_KEY"),
        },
        cors_allowed_origins=_cors_origins(environ.get("CORS_ALLOWED_ORIGINS")),
        reader_budget=_reader_budget(environ.get("READER_BUDGET")),
    )


class _Env:
    """Reads plain environment variables, naming the variable in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def choice(self, name: str, allowed: tuple[str, ...], *, default: str) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value not in allowed:
            raise ConfigurationError(f"{name} = {value!r} is not allowed: use one of {allowed}")
        return value

    def integer(self, name: str, low: int, high: int, *, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigurationError(
                f"{name} = {value!r} is not allowed: use an integer from {low} to {high}"
            )
        return int(value)

    def key_source(self, env_var: str) -> ApiKeySource:
        arn_var = f"{env_var}_SECRET_ARN"
        arn = self.text(arn_var)
        if arn is not None and not arn.startswith("arn:"):
            raise ConfigurationError(
                f"{arn_var} = {arn!r} is not allowed: use a Secrets Manager secret ARN (arn:...)"
            )
        return ApiKeySource(env_var, arn_var, value=self.text(env_var), secret_arn=arn)


class _Fields:
    """Reads the fields of one JSON object, naming the object and the field in every error."""

    def __init__(self, where: str, raw: object, allowed: tuple[str, ...]) -> None:
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where} = {raw!r} is not allowed: use a JSON object")
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ConfigurationError(
                f"{where} has unknown field(s) {', '.join(unknown)}: "
                f"allowed are {', '.join(allowed)}"
            )
        self.where = where
        self._raw: dict[str, object] = raw

    def fail(self, key: str, what: str) -> ConfigurationError:
        return ConfigurationError(
            f"{self.where}.{key} = {self._raw.get(key)!r} is not allowed: {what}"
        )

    def _get(self, key: str, default: object) -> object:
        if key in self._raw and self._raw[key] is not None:
            return self._raw[key]
        if default is _REQUIRED:
            raise ConfigurationError(f"{self.where}.{key} is missing: it is required")
        return default

    def text(
        self, key: str, pattern: re.Pattern[str], what: str, default: object = _REQUIRED
    ) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self.fail(key, what)
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self._get(key, _REQUIRED)
        if value not in allowed:
            raise self.fail(key, f"use one of {', '.join(allowed)}")
        return str(value)

    def optional_text(self, key: str, pattern: re.Pattern[str], what: str) -> str | None:
        return None if self._raw.get(key) is None else self.text(key, pattern, what)

    def number(self, key: str, low: float, high: float, default: object = _REQUIRED) -> float:
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.fail(key, f"use a number from {low:g} to {high:g}")
        return float(value)

    def integer(self, key: str, low: int, high: int, default: object = _REQUIRED) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"use an integer from {low} to {high}")
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        return None if self._raw.get(key) is None else self.integer(key, low, high)

    def optional_number(self, key: str, low: float, high: float) -> float | None:
        return None if self._raw.get(key) is None else self.number(key, low, high)

    def optional_choice(self, key: str, allowed: tuple[str, ...]) -> str | None:
        return None if self._raw.get(key) is None else self.choice(key, allowed)


def _parse_json(name: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{name} is not valid JSON ({error}): {text[:200]!r}") from None


# The fields of an AI_PROVIDER_CONFIG entry (the Pulumi component writes exactly these).
PROVIDER_FIELDS: Final = (
    "name",
    "kind",
    "model",
    "priority",
    "max_tokens",
    "temperature",
    "timeout_s",
    "input_price_per_1k",
    "output_price_per_1k",
    "endpoint_url",
    "context_window",
    "reasoning_effort",
)
_KINDS = tuple(kind.value for kind in ProviderKind)
# Long enough for Bedrock inference profile ARNs: Converse takes a modelId of up to 2048.
_MODEL = re.compile(r"\S{1,2048}")
# The `reasoning_effort` values of OpenAI's chat completions; each model takes a subset.
REASONING_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_PRICE_MAX = 1000.0


def _providers(text: str | None) -> tuple[ProviderSettings, ...]:
    if text is None or not text.strip():
        return (MOCK_PROVIDER,)
    raw = _parse_json("AI_PROVIDER_CONFIG", text)
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(
            f"AI_PROVIDER_CONFIG = {text[:200]!r} is not allowed: use a non-empty JSON list "
            "of provider objects"
        )
    providers = [_provider(index, entry) for index, entry in enumerate(raw)]
    for attribute in ("name", "priority"):
        values = [getattr(provider, attribute) for provider in providers]
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ConfigurationError(
                f"AI_PROVIDER_CONFIG has duplicate {attribute} {duplicates}: each provider "
                f"needs its own {attribute}"
            )
    return tuple(sorted(providers, key=lambda provider: provider.priority))


def _provider(index: int, entry: object) -> ProviderSettings:
    label = f" ({entry.get('name')!r})" if isinstance(entry, dict) and "name" in entry else ""
    fields = _Fields(f"AI_PROVIDER_CONFIG[{index}]{label}", entry, PROVIDER_FIELDS)
    kind = ProviderKind(fields.choice("kind", _KINDS))
    # Anthropic's API takes temperatures up to 1 only; the others up to 2.
    max_temperature = 1.0 if kind is ProviderKind.ANTHROPIC else 2.0
    return ProviderSettings(
        name=fields.text("name", _NAME, "use 1 to 40 characters from a-z, 0-9 and '-'"),
        kind=kind,
        model=fields.text(
            "model",
            _MODEL,
            "use the provider's model id, inference profile id or ARN (no spaces)",
            default="mock" if kind is ProviderKind.MOCK else _REQUIRED,
        ),
        priority=fields.integer("priority", 1, 100),
        max_tokens=fields.integer("max_tokens", 1, 200_000, default=1024),
        temperature=fields.optional_number("temperature", 0.0, max_temperature),
        timeout_s=fields.number("timeout_s", 0.1, 28.0, default=10.0),
        input_price_per_1k=fields.number("input_price_per_1k", 0.0, _PRICE_MAX, default=0.0),
        output_price_per_1k=fields.number("output_price_per_1k", 0.0, _PRICE_MAX, default=0.0),
        endpoint_url=fields.optional_text(
            "endpoint_url", _URL, "use an http:// or https:// URL without query or fragment"
        ),
        context_window=fields.optional_integer("context_window", 1, 10_000_000),
        reasoning_effort=_reasoning_effort(fields, kind),
    )


def _reasoning_effort(fields: _Fields, kind: ProviderKind) -> str | None:
    effort = fields.optional_choice("reasoning_effort", REASONING_EFFORTS)
    if effort is not None and kind is not ProviderKind.OPENAI:
        raise fields.fail(
            "reasoning_effort",
            f"only openai providers take reasoning_effort (this one is {kind.value}); remove it",
        )
    return effort


_ROUTER_FIELDS = (
    "deadline_s",
    "hedge_delay_s",
    "circuit_failure_threshold",
    "circuit_cooldown_s",
    "misconfigured_cooldown_s",
    "circuit_cache_s",
)


def _router(text: str | None) -> RouterSettings:
    if text is None or not text.strip():
        return RouterSettings()
    fields = _Fields("AI_ROUTER_CONFIG", _parse_json("AI_ROUTER_CONFIG", text), _ROUTER_FIELDS)
    defaults = RouterSettings()
    # Below API Gateway's 29 s integration timeout, with room to write the response.
    deadline_s = fields.number("deadline_s", 1.0, 28.0, default=defaults.deadline_s)
    hedge_delay_s = fields.optional_number("hedge_delay_s", 0.01, 28.0)
    if hedge_delay_s is not None and hedge_delay_s >= deadline_s:
        raise fields.fail("hedge_delay_s", f"use a delay below deadline_s ({deadline_s:g})")
    return RouterSettings(
        deadline_s=deadline_s,
        hedge_delay_s=hedge_delay_s,
        circuit_failure_threshold=fields.integer(
            "circuit_failure_threshold", 1, 100, default=defaults.circuit_failure_threshold
        ),
        circuit_cooldown_s=fields.number(
            "circuit_cooldown_s", 1.0, 3600.0, default=defaults.circuit_cooldown_s
        ),
        misconfigured_cooldown_s=fields.number(
            "misconfigured_cooldown_s", 1.0, 86_400.0, default=defaults.misconfigured_cooldown_s
        ),
        circuit_cache_s=fields.number(
            "circuit_cache_s", 0.0, 60.0, default=defaults.circuit_cache_s
        ),
    )


def _cors_origins(text: str | None) -> tuple[str, ...]:
    try:
        return parse_allowed_origins(text)
    except InvalidOrigins as error:
        shown = (text or "")[:200]
        raise ConfigurationError(
            f"CORS_ALLOWED_ORIGINS = {shown!r} is not allowed: {error}"
        ) from None


def _reader_budget(text: str | None) -> ReaderBudgetSettings | None:
    if text is None or not text.strip():
        return None
    fields = _Fields("READER_BUDGET", _parse_json("READER_BUDGET", text), ("per_minute", "per_day"))
    return ReaderBudgetSettings(
        per_minute=fields.integer("per_minute", 1, 10_000),
        per_day=fields.integer("per_day", 1, 1_000_000),
    )
