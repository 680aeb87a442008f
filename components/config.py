"""Typed stack configuration: the pydantic models behind ``Pulumi.<stack>.yaml``.

Every key a stack file may set is declared here, with its bounds. Loading fails
before any resource is declared, with one line per problem naming the config key
as it is written in the stack file, the bad value and what is allowed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from importlib import resources
from pathlib import Path
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

from lambdas.story_generator.cors import InvalidOrigins, parse_allowed_origins

from .bedrock_models import (
    BedrockModelType,
    is_foundation_model_id,
    is_inference_profile,
    needs_inference_profile,
    profile_arn_region,
    profile_foundation_model,
)
from .naming import PROJECT, Naming

CONFIG_NAMESPACE = PROJECT

# API Gateway gives up on an integration after 29 s: the generator must answer
# (or fail over to the next provider) well inside that.
API_GATEWAY_TIMEOUT_S = 29

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

_PROVIDER_NAME = re.compile(r"^[a-z0-9-]{1,40}$")


def to_camel(name: str) -> str:
    """The stack-file spelling of a field: ``input_price_per_1k`` -> ``inputPricePer1k``."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class ConfigError(ValueError):
    """The stack config is invalid; the message lists every problem, one per line."""


@functools.cache
def aws_regions() -> frozenset[str]:
    """Every region botocore knows, in every partition (its endpoints data)."""
    document = json.loads(
        resources.files("botocore").joinpath("data", "endpoints.json").read_text()
    )
    return frozenset(region for part in document["partitions"] for region in part["regions"])


def _check_region(value: str) -> str:
    if value not in aws_regions():
        raise ValueError(
            "is not an AWS region: use one such as us-east-1 or eu-west-2 "
            "(`aws ec2 describe-regions` lists yours)"
        )
    return value


def _check_retention(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in LOG_RETENTION_DAYS)
        raise ValueError(f"must be one of the retention periods CloudWatch accepts: {allowed}")
    return value


Region = Annotated[str, AfterValidator(_check_region)]
RetentionDays = Annotated[int, AfterValidator(_check_retention)]
AccountId = Annotated[str, Field(pattern=r"^\d{12}$")]


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
    """``liminal-transit:generator``: the story generator Lambda.

    ``reservedConcurrency`` is required: without a cap, a runaway loop or a spike
    in one stack can take the whole account's concurrency from the others.
    """

    memory_mb: int = Field(1024, ge=128, le=10240)
    timeout_s: int = Field(API_GATEWAY_TIMEOUT_S, ge=3, le=900)
    reserved_concurrency: int = Field(ge=1, le=100_000)
    provisioned_concurrency: int = Field(0, ge=0, le=100_000)
    powertools_layer_version: int = Field(36, ge=1, le=1000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    secret_recovery_window_days: int = Field(30, ge=7, le=30)

    @model_validator(mode="after")
    def _provisioned_within_reserved(self) -> Self:
        reserved = self.reserved_concurrency
        if self.provisioned_concurrency > reserved:
            raise ValueError(
                f"provisionedConcurrency ({self.provisioned_concurrency}) must not exceed "
                f"reservedConcurrency ({reserved}): Lambda rejects it"
            )
        return self


class CustomDomainConfig(_Model):
    """``liminal-transit:api.customDomain``: a regional custom domain for the API."""

    domain_name: str = Field(max_length=253, pattern=r"^([a-z0-9-]{1,63}\.)+[a-z]{2,63}$")
    certificate_arn: str = Field(pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/.+$")
    base_path: str = Field("", pattern=r"^([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?$", max_length=300)

    @property
    def certificate_region(self) -> str:
        """The region of the ACM certificate (a regional API needs one in its own region)."""
        return self.certificate_arn.split(":")[3]


_ORIGIN = r"^(https://[a-z0-9.-]+(:\d{1,5})?|http://(localhost|127\.0\.0\.1)(:\d{1,5})?|\*)$"
_HTTPS_URL = r"^(https://[^\s]+|http://(localhost|127\.0\.0\.1)(:\d{1,5})?(/[^\s]*)?)$"


class OidcConfig(_Model):
    """``liminal-transit:identity.oidc``: an external OpenID Connect issuer federated
    into the user pool (set ``clientSecret`` with ``pulumi config set --secret --path``)."""

    issuer: str = Field(pattern=r"^https://[^\s]+$", max_length=2048)
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: str = Field(min_length=1, max_length=2048, repr=False)
    provider_name: str = Field("organisation", pattern=r"^[A-Za-z0-9_-]{1,32}$")


class IdentityConfig(_Model):
    """``liminal-transit:identity``: who readers are.

    By default the stack has its own Cognito user pool; ``existingUserPoolArn``
    uses an organisation's pool instead (in the stack's region), and ``oidc``
    federates an external OpenID Connect issuer into the stack's pool.
    """

    existing_user_pool_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:cognito-idp:[a-z0-9-]+:\d{12}:userpool/[\w-]+_[0-9A-Za-z]+$"
    )
    deletion_protection: bool = False
    domain_prefix: str | None = Field(None, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    callback_urls: list[Annotated[str, Field(pattern=_HTTPS_URL, max_length=1024)]] = Field(
        default_factory=list, max_length=100
    )
    logout_urls: list[Annotated[str, Field(pattern=_HTTPS_URL, max_length=1024)]] = Field(
        default_factory=list, max_length=100
    )
    oidc: OidcConfig | None = None

    @model_validator(mode="after")
    def _one_source_of_readers(self) -> Self:
        if self.existing_user_pool_arn is not None and (
            self.oidc is not None or self.domain_prefix or self.callback_urls
        ):
            raise ValueError(
                "existingUserPoolArn uses a pool this stack does not manage: oidc, "
                "domainPrefix and callbackUrls belong to the pool's own stack"
            )
        if self.domain_prefix and any(
            w in self.domain_prefix for w in ("aws", "amazon", "cognito")
        ):
            raise ValueError(
                f"domainPrefix {self.domain_prefix!r}: Cognito refuses prefixes containing "
                "aws, amazon or cognito"
            )
        if (self.callback_urls or self.oidc) and not self.domain_prefix:
            raise ValueError(
                "callbackUrls and oidc sign readers in through the hosted pages: set domainPrefix"
            )
        return self


class ReaderBudgetConfig(_Model):
    """``liminal-transit:ai.readerBudget``: generations one reader may ask for."""

    per_minute: int = Field(10, ge=1, le=10_000)
    per_day: int = Field(500, ge=1, le=1_000_000)


class ApiConfig(_Model):
    """``liminal-transit:api``: the REST API stage."""

    stage_name: str = Field(pattern=r"^[A-Za-z0-9_]{1,128}$")
    throttle_rate_limit: float = Field(ge=1, le=10_000)
    throttle_burst_limit: int = Field(ge=1, le=5_000)
    manage_account_log_role: bool = False
    custom_domain: CustomDomainConfig | None = None
    cors_allowed_origins: list[Annotated[str, Field(pattern=_ORIGIN, max_length=300)]] = Field(
        default_factory=list, max_length=20
    )

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins_the_function_accepts(cls, value: list[str]) -> list[str]:
        if "*" in value and len(value) > 1:
            raise ValueError("'*' allows every origin: list it alone, or list origins instead")
        # The function parses CORS_ALLOWED_ORIGINS with these rules at start-up: a
        # list it refuses would fail every invocation, so it is refused here first.
        try:
            parse_allowed_origins(json.dumps(value))
        except InvalidOrigins as error:
            raise ValueError(str(error)) from None
        return value


class ProviderConfig(_Model):
    """One entry of ``liminal-transit:ai.providers``.

    ``temperature`` is sent only when set: some current models (OpenAI's
    reasoning models) refuse any value but their default. Bedrock entries say
    what ``model`` is (``modelType``) and, for an inference profile, the regions
    it routes to, which the function's role must be allowed to invoke the
    foundation model in.
    """

    name: str
    kind: ProviderKind
    model: str = Field(min_length=1, max_length=2048)
    priority: int = Field(ge=1, le=100)
    max_tokens: int = Field(1024, ge=1, le=200_000)
    temperature: float | None = Field(None, ge=0, le=2)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    timeout_s: float = Field(10, ge=0.1, le=28)
    input_price_per_1k: float = Field(0, ge=0, le=1000)
    output_price_per_1k: float = Field(0, ge=0, le=1000)
    endpoint_url: str | None = Field(None, pattern=r"^https://[^\s/$.?#][^\s]*$")
    context_window: int | None = Field(None, ge=1, le=10_000_000)
    model_type: BedrockModelType | None = None
    inference_profile_regions: list[Region] | None = Field(None, min_length=1, max_length=40)
    foundation_model: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not _PROVIDER_NAME.match(value):
            raise ValueError("must be 1 to 40 lower-case letters, digits or hyphens")
        return value

    @model_validator(mode="after")
    def _kind_specific_fields(self) -> Self:
        if self.kind is ProviderKind.ANTHROPIC and (self.temperature or 0) > 1:
            raise ValueError(
                f"temperature {self.temperature} is above 1, the most the Anthropic API accepts"
            )
        if self.reasoning_effort is not None and self.kind is not ProviderKind.OPENAI:
            raise ValueError(f"reasoningEffort is an OpenAI setting; {self.kind.value} has none")
        bedrock_fields = ("model_type", "inference_profile_regions", "foundation_model")
        if self.kind is not ProviderKind.BEDROCK:
            given = [to_camel(f) for f in bedrock_fields if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: Bedrock settings, not for {self.kind.value}")
        return self

    @model_validator(mode="after")
    def _context_window_holds_the_reply(self) -> Self:
        if self.context_window is not None and self.context_window < self.max_tokens:
            raise ValueError(
                f"contextWindow ({self.context_window}) is smaller than maxTokens "
                f"({self.max_tokens}): the reply alone would not fit; raise contextWindow "
                "to the model's documented window or lower maxTokens"
            )
        return self

    @model_validator(mode="after")
    def _bedrock_model(self) -> Self:
        if self.kind is not ProviderKind.BEDROCK:
            return self
        if self.model_type is None:
            raise ValueError(
                "modelType is required for Bedrock: foundation-model (a model id invoked "
                "on demand) or inference-profile (a cross-region inference profile id or ARN)"
            )
        if self.model_type is BedrockModelType.FOUNDATION_MODEL:
            self._check_foundation_model()
        else:
            self._check_inference_profile()
        return self

    def _check_foundation_model(self) -> None:
        if not is_foundation_model_id(self.model):
            raise ValueError(
                f"model {self.model!r} is not a Bedrock foundation model id (such as "
                "amazon.nova-lite-v1:0); for an inference profile set modelType: "
                "inference-profile"
            )
        if needs_inference_profile(self.model):
            raise ValueError(
                f"model {self.model!r}: Bedrock serves this model only through an inference "
                f"profile; set model to its profile (such as us.{self.model}), modelType: "
                "inference-profile and inferenceProfileRegions"
            )
        if self.inference_profile_regions is not None or self.foundation_model is not None:
            raise ValueError(
                "inferenceProfileRegions and foundationModel apply to modelType: "
                "inference-profile only"
            )

    def _check_inference_profile(self) -> None:
        if not is_inference_profile(self.model):
            raise ValueError(
                f"model {self.model!r} is not an inference profile id (such as "
                "us.anthropic.claude-haiku-4-5-20251001-v1:0) or inference profile ARN"
            )
        if self.inference_profile_regions is None:
            raise ValueError(
                "inferenceProfileRegions is required for an inference profile: the regions "
                "it routes requests to, from the profile's page in the Bedrock documentation "
                "(the function's role may invoke the model there only)"
            )
        derived = profile_foundation_model(self.model)
        if derived is None and self.foundation_model is None:
            raise ValueError(
                f"foundationModel is required: {self.model!r} is an application inference "
                "profile, whose ARN does not name the model it routes to"
            )
        if derived is not None and self.foundation_model not in (None, derived):
            raise ValueError(
                f"foundationModel {self.foundation_model!r} differs from {derived!r}, "
                f"the model the profile {self.model!r} routes to"
            )

    @property
    def invoked_foundation_model(self) -> str | None:
        """The foundation model a Bedrock entry ends up invoking (None for other kinds)."""
        if self.kind is not ProviderKind.BEDROCK:
            return None
        if self.model_type is BedrockModelType.FOUNDATION_MODEL:
            return self.model
        return self.foundation_model or profile_foundation_model(self.model)


class AiConfig(_Model):
    """``liminal-transit:ai``: the provider router."""

    deadline_s: float = Field(25, ge=1, lt=API_GATEWAY_TIMEOUT_S)
    hedge_delay_s: float | None = Field(None, gt=0, le=20)
    circuit_failure_threshold: int = Field(3, ge=1, le=100)
    circuit_cooldown_s: int = Field(30, ge=1, le=3600)
    misconfigured_cooldown_s: int = Field(300, ge=1, le=86_400)
    reader_budget: ReaderBudgetConfig = ReaderBudgetConfig()
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
    """The whole stack configuration, one attribute per top-level config key.

    ``stack`` is the Pulumi stack's name (not a config key): ``<environment>`` or
    ``<environment>-<suffix>`` (``dev-alice``), the suffix of every physical name.
    """

    stack: str
    region: Region
    allowed_account_ids: list[AccountId] | None = Field(None, min_length=1)
    environment: Environment
    cost_center: str = Field(min_length=1, max_length=256)
    log_retention_days: RetentionDays
    storage: StorageConfig = StorageConfig()
    generator: GeneratorConfig
    api: ApiConfig
    identity: IdentityConfig = IdentityConfig()
    ai: AiConfig

    @property
    def naming(self) -> Naming:
        """The names and tags of this stack's resources."""
        return Naming(
            stack=self.stack, environment=self.environment.value, cost_center=self.cost_center
        )

    @model_validator(mode="after")
    def _stack_belongs_to_environment(self) -> Self:
        env = self.environment.value
        if self.stack != env and not self.stack.startswith(f"{env}-"):
            raise ValueError(
                f"{CONFIG_NAMESPACE}:environment = {env!r} does not match the stack "
                f"{self.stack!r}: a stack of environment {env} is named {env} or "
                f"{env}-<suffix> (such as {env}-alice); fix the stack file's environment "
                "or select the right stack"
            )
        problems = self.naming.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _deadline_within_lambda_timeout(self) -> Self:
        if self.ai.deadline_s >= self.generator.timeout_s:
            raise ValueError(
                f"{CONFIG_NAMESPACE}:ai.deadlineS = {self.ai.deadline_s}: must be below "
                f"{CONFIG_NAMESPACE}:generator.timeoutS ({self.generator.timeout_s}) "
                "so the router answers before Lambda stops the function"
            )
        return self

    @model_validator(mode="after")
    def _browsers_of_this_stack_only(self) -> Self:
        origins = self.api.cors_allowed_origins
        if self.environment is not Environment.DEV:
            loose = [o for o in origins if o == "*" or not o.startswith("https://")]
            if loose:
                raise ValueError(
                    f"{CONFIG_NAMESPACE}:api.corsAllowedOrigins = {origins}: {loose} may not be "
                    f"allowed in {self.environment.value}; list the web reader's https:// origins"
                )
        return self

    @model_validator(mode="after")
    def _existing_pool_in_api_region(self) -> Self:
        pool = self.identity.existing_user_pool_arn
        if pool is not None and pool.split(":")[3] != self.region:
            raise ValueError(
                f"{CONFIG_NAMESPACE}:identity.existingUserPoolArn = {pool!r}: a Cognito "
                f"authorizer needs a pool in the API's region, {self.region}"
            )
        return self

    @model_validator(mode="after")
    def _certificate_in_api_region(self) -> Self:
        domain = self.api.custom_domain
        if domain is not None and domain.certificate_region != self.region:
            raise ValueError(
                f"{CONFIG_NAMESPACE}:api.customDomain.certificateArn = "
                f"{domain.certificate_arn!r}: the certificate is in {domain.certificate_region}, "
                f"but a regional API needs one in its own region, {self.region} (aws:region); "
                "request or import the certificate there"
            )
        return self

    @model_validator(mode="after")
    def _inference_profiles_serve_this_region(self) -> Self:
        for index, provider in enumerate(self.ai.providers):
            key = f"{CONFIG_NAMESPACE}:ai.providers[{index}]"
            arn_region = profile_arn_region(provider.model)
            if arn_region is not None and arn_region != self.region:
                raise ValueError(
                    f"{key}.model = {provider.model!r}: the profile ARN is in {arn_region}; "
                    f"the function invokes Bedrock in {self.region} (aws:region)"
                )
            regions = provider.inference_profile_regions
            if regions is not None and self.region not in regions:
                raise ValueError(
                    f"{key}.inferenceProfileRegions = {regions}: must include {self.region} "
                    "(aws:region): the function invokes the profile in its own region, "
                    "which must be one of the profile's source regions"
                )
        return self


# Top-level keys of the stack file and the field each one fills. `aws:region` and
# `aws:allowedAccountIds` belong to the AWS provider's namespace (the default
# provider reads them itself) but are validated with the rest.
_AWS_KEYS = {"aws:region": "region", "aws:allowedAccountIds": "allowed_account_ids"}
# Fields that no config key sets.
_NOT_KEYS = ("stack",)
_BOOLEAN_HINT = (
    "; YAML reads unquoted yes, no, on, off, true and false as booleans: quote the value"
)


def _field_by_key() -> dict[str, str]:
    keys = {
        f"{CONFIG_NAMESPACE}:{to_camel(f)}": f
        for f in StackConfig.model_fields
        if f not in (*_AWS_KEYS.values(), *_NOT_KEYS)
    }
    keys.update(_AWS_KEYS)
    return keys


def _decode(value: Any) -> Any:
    """Pulumi hands structured config values over as JSON text."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse_stack_config(raw: Mapping[str, Any], stack: str | None = None) -> StackConfig:
    """Validate ``raw`` (full config keys such as ``liminal-transit:api``) into a StackConfig.

    ``stack`` is the Pulumi stack's name (default: the environment's name).
    Keys of other namespaces (``aws:profile``, ...) are left to their owners;
    an unknown key in this project's namespace is an error.
    """
    field_by_key = _field_by_key()
    data: dict[str, Any] = {}
    environment = _decode(raw.get(f"{CONFIG_NAMESPACE}:environment"))
    data["stack"] = stack if stack is not None else environment
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
        problems.extend(_describe(error.errors(), field_by_key))
    if problems:
        raise ConfigError("invalid stack config:\n  " + "\n  ".join(problems))
    return config


def string_fields_given_booleans(raw: Mapping[str, Any]) -> list[str]:
    """The keys of ``raw`` (a stack file's typed config) where a boolean stands for a string.

    The Pulumi CLI hands every value over as text, so ``costCenter: false`` would
    reach the program as the string "false"; only the file itself shows the slip.
    """
    field_by_key = _field_by_key()
    data = {field_by_key[key]: value for key, value in raw.items() if key in field_by_key}
    try:
        StackConfig.model_validate(data)
    except ValidationError as error:
        slips = [
            detail
            for detail in error.errors()
            if detail["type"] == "string_type" and isinstance(detail["input"], bool)
        ]
        return _describe(slips, field_by_key)
    return []


def _describe(details: Sequence[Any], field_by_key: Mapping[str, str]) -> list[str]:
    key_by_field = {field: key for key, field in field_by_key.items()}
    lines = []
    for detail in details:
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
        elif detail["type"] == "string_type" and isinstance(detail["input"], bool):
            lines.append(f"{path} = {detail['input']!r}: {message}{_BOOLEAN_HINT}")
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
    import pulumi
    from pulumi.runtime import config as runtime_config

    from .stack_file import check_stack_file

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    stack = pulumi.get_stack()
    check_stack_file(Path.cwd() / f"Pulumi.{stack}.yaml")
    return parse_stack_config(raw, stack)
