"""LiminalPlatform: the whole platform of one environment, composed from the stack config."""

from __future__ import annotations

import pulumi

from .config import StackConfig
from .identity import OidcFederation, ReaderIdentity, ReaderIdentityArgs
from .storage import Storage, StorageArgs
from .story_api import CustomDomain, StoryApi, StoryApiArgs
from .story_generator import StoryGenerator, StoryGeneratorArgs


class LiminalPlatform(pulumi.ComponentResource):
    """Every component of one environment, wired together from a :class:`StackConfig`.

    The stack config is turned into each component's own args here and nowhere
    else, so that the components stay usable on their own.

    Attributes:
        storage, generator, api: the components, for stacks that build on this one.
        identity: the readers' user pool (None when the config names an existing one).
    """

    def __init__(
        self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liminal:platform:LiminalPlatform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        naming = config.naming

        self.storage = Storage(
            f"{name}-storage",
            StorageArgs(
                naming=naming,
                deletion_protection=config.storage.deletion_protection,
                kms_deletion_window_days=config.storage.kms_deletion_window_days,
            ),
            opts=child,
        )
        generator = config.generator
        self.generator = StoryGenerator(
            f"{name}-generator",
            StoryGeneratorArgs(
                naming=naming,
                table_name=self.storage.table_name,
                table_arn=self.storage.table_arn,
                key_arn=self.storage.key_arn,
                ai=config.ai,
                memory_mb=generator.memory_mb,
                timeout_s=generator.timeout_s,
                log_retention_days=config.log_retention_days,
                log_level=generator.log_level,
                reserved_concurrency=generator.reserved_concurrency,
                provisioned_concurrency=generator.provisioned_concurrency,
                session_ttl_days=config.storage.session_ttl_days,
                powertools_layer_version=generator.powertools_layer_version,
                secret_recovery_window_days=generator.secret_recovery_window_days,
                cors_allowed_origins=config.api.cors_allowed_origins,
            ),
            opts=child,
        )
        self.identity = self._identity(name, config, child)
        user_pool_arn: pulumi.Input[str]
        if self.identity is not None:
            user_pool_arn = self.identity.user_pool_arn
        else:
            assert config.identity.existing_user_pool_arn is not None
            user_pool_arn = config.identity.existing_user_pool_arn
        api = config.api
        self.api = StoryApi(
            f"{name}-api",
            StoryApiArgs(
                naming=naming,
                function_name=self.generator.function_name,
                alias_name=self.generator.alias_name,
                alias_invoke_arn=self.generator.alias_invoke_arn,
                key_arn=self.storage.key_arn,
                stage_name=api.stage_name,
                throttle_rate_limit=api.throttle_rate_limit,
                throttle_burst_limit=api.throttle_burst_limit,
                user_pool_arns=[user_pool_arn],
                cors_allowed_origins=api.cors_allowed_origins,
                log_retention_days=config.log_retention_days,
                manage_account_log_role=api.manage_account_log_role,
                custom_domain=(
                    CustomDomain(
                        api.custom_domain.domain_name,
                        api.custom_domain.certificate_arn,
                        api.custom_domain.base_path,
                    )
                    if api.custom_domain
                    else None
                ),
            ),
            opts=child,
        )
        self.register_outputs(self.exports())

    @staticmethod
    def _identity(
        name: str, config: StackConfig, child: pulumi.ResourceOptions
    ) -> ReaderIdentity | None:
        """The stack's own user pool, unless the config names an existing one."""
        identity = config.identity
        if identity.existing_user_pool_arn is not None:
            return None
        oidc = identity.oidc
        return ReaderIdentity(
            f"{name}-identity",
            ReaderIdentityArgs(
                naming=config.naming,
                deletion_protection=identity.deletion_protection,
                domain_prefix=identity.domain_prefix,
                callback_urls=identity.callback_urls,
                logout_urls=identity.logout_urls,
                oidc=(
                    OidcFederation(
                        issuer=oidc.issuer,
                        client_id=oidc.client_id,
                        client_secret=pulumi.Output.secret(oidc.client_secret),
                        provider_name=oidc.provider_name,
                    )
                    if oidc
                    else None
                ),
            ),
            opts=child,
        )

    def exports(self) -> dict[str, pulumi.Output[str]]:
        """The stack outputs: what operators and other stacks need to find."""
        reader_pool: dict[str, pulumi.Output[str]] = (
            {
                "user_pool_id": self.identity.user_pool_id,
                "user_pool_client_id": self.identity.client_id,
                "token_issuer": self.identity.issuer,
            }
            if self.identity is not None
            else {}
        )
        return {
            **reader_pool,
            "api_url": self.api.url,
            "api_id": self.api.rest_api_id,
            "table_name": self.storage.table_name,
            "function_name": self.generator.function_name,
            "alias_arn": self.generator.alias_arn,
            "key_arn": self.storage.key_arn,
            "dlq_url": self.generator.dlq_url,
            "event_bus_name": self.generator.event_bus_name,
        }
