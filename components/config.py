"""Typed stack configuration: the pydantic models behind ``Pulumi.<stack>.yaml``.

Every key a stack file may set is declared here, with its bounds. Loading fails
before any resource is declared, with one line per problem naming the config key
as it is written in the stack file, the bad value and what is allowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .naming import PROJECT

CONFIG_NAMESPACE = PROJECT

# API Gateway gives up on an integration after 29 s: the generator must answer
# (or fail over to the next provider) well inside that.
API_GATEWAY_TIMEOUT_S = 29

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

_REGION = re.compile(
    r"^(us|eu|ap|sa|ca|me|af|il|mx)-(gov-|iso-|isob-)?"
    r"(north|south|east|west|central|northeast|southeast|northwest|southwest)-\d{1,2}$"
)
_BEDROCK_MODEL = re.compile(
    r"^((us|eu|apac|jp|au|ca|us-gov|global)\.)?[a-z0-9-]+\.[A-Za-z0-9.:_-]+$"
)
_PROVIDER_NAME = re.compile(r"^[a-z0-9-]{1,40}$")


def to_camel(name: str) -> str:
    """The stack-file spelling of a field: ``input_price_per_1k`` -> ``inputPricePer1k``."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class ConfigError(ValueError):
    """The stack config is invalid; the message lists every problem, one per line."""


def _check_region(value: str) -> str:
    if not _REGION.match(value):
        raise ValueError("must be an AWS region name such as us-east-1 or eu-west-2")
    return value


def _check_retention(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in LOG_RETENTION_DAYS)
        raise ValueError(f"must be one of the retention periods CloudWatch accepts: {allowed}")
    return value


Region = Annotated[str, AfterValidator(_check_region)]
RetentionDays = Annotated[int, AfterValidator(_check_retention)]


class Environment(StrEnum):
    """The environments this project is deployed as."""

    DEV = "dev"
    STAGING = "staging"
    PRODUCTION = "production"


class ProviderKind(StrEnum):
    """The AI providers the generator can route to."""

    BEDROCK = "bedrock"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    MOCK = "mock"


class _Model(BaseModel):
    """Stack-file keys are camelCase; unknown keys are errors, not ignored."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=False,
    )


class StorageConfig(_Model):
    """``liminal-transit:storage``: the session table and its key."""

    session_ttl_days: int = Field(30, ge=1, le=365)
    deletion_protection: bool = False
    kms_deletion_window_days: int = Field(30, ge=7, le=30)


class GeneratorConfig(_Model):
    """``liminal-transit:generator``: the story generator Lambda."""

    memory_mb: int = Field(1024, ge=128, le=10240)
    timeout_s: int = Field(API_GATEWAY_TIMEOUT_S, ge=3, le=900)
    reserved_concurrency: int | None = Field(None, ge=1, le=100_000)
    provisioned_concurrency: int = Field(0, ge=0, le=100_000)
    powertools_layer_version: int = Field(36, ge=1, le=1000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    secret_recovery_window_days: int = Field(30, ge=7, le=30)

    @model_validator(mode="after")
    def _provisioned_within_reserved(self) -> Self:
        reserved = self.reserved_concurrency
        if reserved is not None and self.provisioned_concurrency > reserved:
            raise ValueError(
                f"provisionedConcurrency ({self.provisioned_concurrency}) must not exceed "
                f"reservedConcurrency ({reserved}): Lambda rejects it"
            )
        return self


class CustomDomainConfig(_Model):
    """``liminal-transit:api.customDomain``: a regional custom domain for the API."""

    domain_name: str = Field(max_length=253, pattern=r"^([a-z0-9-]{1,63}\.)+[a-z]{2,63}$")
    certificate_arn: str = Field(pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/.+$")


class ApiConfig(_Model):
    """``liminal-transit:api``: the REST API stage."""

    stage_name: str = Field(pattern=r"^[A-Za-z0-9_]{1,128}$")
    throttle_rate_limit: float = Field(ge=1, le=10_000)
    throttle_burst_limit: int = Field(ge=1, le=5_000)
    manage_account_log_role: bool = True
    custom_domain: CustomDomainConfig | None = None


class ProviderConfig(_Model):
    """One entry of ``liminal-transit:ai.providers``."""

    name: str
    kind: ProviderKind
    model: str = Field(min_length=1, max_length=200)
    priority: int = Field(ge=1, le=100)
    max_tokens: int = Field(1024, ge=1, le=200_000)
    temperature: float = Field(0.7, ge=0, le=2)
    timeout_s: float = Field(10, ge=0.1, le=28)
    input_price_per_1k: float = Field(0, ge=0, le=1000)
    output_price_per_1k: float = Field(0, ge=0, le=1000)
    endpoint_url: str | None = Field(None, pattern=r"^https://[^\s/$.?#][^\s]*$")
    context_window: int | None = Field(None, ge=1, le=10_000_000)

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not _PROVIDER_NAME.match(value):
            raise ValueError("must be 1 to 40 lower-case letters, digits or hyphens")
        return value

    @model_validator(mode="after")
    def _anthropic_temperature(self) -> Self:
        if self.kind is ProviderKind.ANTHROPIC and self.temperature > 1:
            raise ValueError(
                f"temperature {self.temperature} is above 1, the most the Anthropic API accepts"
            )
        return self

    @model_validator(mode="after")
    def _bedrock_model_id(self) -> Self:
        if self.kind is ProviderKind.BEDROCK and not _BEDROCK_MODEL.match(self.model):
            raise ValueError(
                f"model {self.model!r} is not a Bedrock model id "
                "(such as anthropic.claude-3-haiku-20240307-v1:0 or us.anthropic.claude-...)"
            )
        return self


class AiConfig(_Model):
    """``liminal-transit:ai``: the provider router."""

    deadline_s: float = Field(25, ge=1, lt=API_GATEWAY_TIMEOUT_S)
    hedge_delay_s: float | None = Field(None, gt=0, le=20)
    circuit_failure_threshold: int = Field(3, ge=1, le=100)
    circuit_cooldown_s: int = Field(30, ge=1, le=3600)
    misconfigured_cooldown_s: int = Field(300, ge=1, le=86_400)
    providers: list[ProviderConfig] = Field(min_length=1, max_length=10)

    @model_validator(mode="after")
    def _unique_providers(self) -> Self:
        for attribute in ("name", "priority"):
            values = [getattr(p, attribute) for p in self.providers]
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"provider {attribute}s must be unique; repeated: {duplicates}")
        return self


class StackConfig(_Model):
    """The whole stack configuration, one attribute per top-level config key."""

    region: Region
    environment: Environment
    cost_center: str = Field(min_length=1, max_length=256)
    log_retention_days: RetentionDays
    storage: StorageConfig = StorageConfig()
    generator: GeneratorConfig = GeneratorConfig()
    api: ApiConfig
    ai: AiConfig

    @model_validator(mode="after")
    def _deadline_within_lambda_timeout(self) -> Self:
        if self.ai.deadline_s >= self.generator.timeout_s:
            raise ValueError(
                f"{CONFIG_NAMESPACE}:ai.deadlineS = {self.ai.deadline_s}: must be below "
                f"{CONFIG_NAMESPACE}:generator.timeoutS ({self.generator.timeout_s}) "
                "so the router answers before Lambda stops the function"
            )
        return self


# Top-level keys of the stack file and the field each one fills. `aws:region`
# belongs to the AWS provider's namespace but is validated with the rest.
_REGION_KEY = "aws:region"


def _field_by_key() -> dict[str, str]:
    keys = {f"{CONFIG_NAMESPACE}:{to_camel(f)}": f for f in StackConfig.model_fields}
    del keys[f"{CONFIG_NAMESPACE}:region"]
    keys[_REGION_KEY] = "region"
    return keys


def _decode(value: Any) -> Any:
    """Pulumi hands structured config values over as JSON text."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse_stack_config(raw: Mapping[str, Any]) -> StackConfig:
    """Validate ``raw`` (full config keys such as ``liminal-transit:api``) into a StackConfig.

    Keys of other namespaces (``aws:profile``, ...) are left to their owners;
    an unknown key in this project's namespace is an error.
    """
    field_by_key = _field_by_key()
    data: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if key in field_by_key:
            data[field_by_key[key]] = _decode(value)
        elif key.startswith(f"{CONFIG_NAMESPACE}:"):
            allowed = ", ".join(sorted(field_by_key))
            problems.append(f"{key} = {value!r}: unknown key; allowed keys are {allowed}")
    try:
        config = StackConfig.model_validate(data)
    except ValidationError as error:
        problems.extend(_describe(error, field_by_key))
    if problems:
        raise ConfigError("invalid stack config:\n  " + "\n  ".join(problems))
    return config


def _describe(error: ValidationError, field_by_key: Mapping[str, str]) -> list[str]:
    key_by_field = {field: key for key, field in field_by_key.items()}
    lines = []
    for detail in error.errors():
        location = list(detail["loc"])
        head = location[0] if location else None
        if isinstance(head, str):
            # With aliases, pydantic reports camelCase names; map the top one back.
            head = key_by_field.get(head) or key_by_field.get(_snake(head), head)
        path = _join_path([head, *location[1:]]) if location else "config"
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        elif detail["type"] == "extra_forbidden":
            lines.append(f"{path} = {detail['input']!r}: unknown key; {_siblings(location)}")
        elif isinstance(detail["input"], dict):
            # A rule across several keys: its message names them.
            lines.append(f"{path}: {message}" if location else message)
        else:
            lines.append(f"{path} = {detail['input']!r}: {message}")
    return lines


def _join_path(parts: list[Any]) -> str:
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _siblings(location: list[Any]) -> str:
    """Name the keys allowed where an unknown key was found."""
    model: type[BaseModel] = StackConfig
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(_snake(str(part)))
        annotation = field.annotation if field else None
        inner = _model_in(annotation)
        if inner is None:
            return "check the spelling"
        model = inner
    names = sorted(to_camel(name) for name in model.model_fields)
    return "allowed keys here are " + ", ".join(names)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def load_stack_config() -> StackConfig:
    """Validate the config the Pulumi engine handed to this program.

    All keys are read (not only the known ones) so that a misspelt key is
    reported instead of silently falling back to a default.
    """
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return parse_stack_config(raw)
