"""ReaderIdentity: the Cognito user pool that identifies readers, and the web reader's client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from .aws_context import AwsContext
from .naming import Naming

# Refresh tokens outlive sessions of reading; access and ID tokens are short so
# that a revoked reader loses access within the hour.
_TOKEN_HOURS = 1
_REFRESH_DAYS = 30
_OAUTH_SCOPES = ("openid", "email", "profile")


@dataclass(frozen=True)
class OidcFederation:
    """An organisation's own OpenID Connect issuer, federated into the user pool.

    Readers sign in at the issuer; Cognito issues the tokens the API checks, so
    the API's authorizer stays a Cognito one. ``client_secret`` should be a
    Pulumi secret (``pulumi config set --secret``).
    """

    issuer: str
    client_id: str
    client_secret: pulumi.Input[str]
    provider_name: str = "organisation"
    scopes: Sequence[str] = ("openid", "email", "profile")


@dataclass(frozen=True)
class ReaderIdentityArgs:
    """Settings of :class:`ReaderIdentity`.

    ``callback_urls`` and ``logout_urls`` are the web reader's sign-in redirects
    (authorization code flow with PKCE, through the hosted sign-in pages at
    ``domain_prefix``); without them the client signs in with SRP only.
    ``domain_prefix`` is unique per region across all of AWS.
    """

    naming: Naming
    deletion_protection: bool = False
    domain_prefix: str | None = None
    callback_urls: Sequence[str] = field(default_factory=tuple)
    logout_urls: Sequence[str] = field(default_factory=tuple)
    minimum_password_length: int = 12
    oidc: OidcFederation | None = None


class ReaderIdentity(pulumi.ComponentResource):
    """A Cognito user pool of readers and the web reader's app client.

    Readers sign up with their email address, which Cognito verifies; passwords
    follow a policy; the pool is protected from deletion where asked. The app
    client has no secret (it runs in browsers) and allows SRP and, with
    callback URLs, the authorization code flow with PKCE; never plain password
    authentication.

    Outputs:
        user_pool_id, user_pool_arn: the pool (what the API's authorizer trusts).
        client_id: the web reader's app client.
        issuer: the tokens' ``iss``.
        domain: the hosted sign-in domain, when ``domain_prefix`` is set.
    """

    user_pool_id: pulumi.Output[str]
    user_pool_arn: pulumi.Output[str]
    client_id: pulumi.Output[str]
    issuer: pulumi.Output[str]
    domain: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: ReaderIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liminal:identity:ReaderIdentity", name, None, opts)
        self._name = name
        self._args = args
        pool = self._user_pool()
        providers: list[pulumi.Input[str]] = ["COGNITO"]
        if args.oidc is not None:
            providers.append(self._federation(pool, args.oidc).provider_name)
        client = self._web_client(pool, providers)
        self.domain = self._domain(pool) if args.domain_prefix else None

        context = AwsContext.of(self)
        self.user_pool_id = pool.id
        self.user_pool_arn = pool.arn
        self.client_id = client.id
        self.issuer = pulumi.Output.concat(
            "https://cognito-idp.", context.region, ".", context.dns_suffix, "/", pool.id
        )
        self.register_outputs(
            {
                "user_pool_id": self.user_pool_id,
                "user_pool_arn": self.user_pool_arn,
                "client_id": self.client_id,
                "issuer": self.issuer,
                "domain": self.domain,
            }
        )

    @property
    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)

    def _user_pool(self) -> aws.cognito.UserPool:
        args = self._args
        return aws.cognito.UserPool(
            f"{self._name}-readers",
            name=args.naming.physical("readers"),
            username_attributes=["email"],
            auto_verified_attributes=["email"],
            username_configuration=aws.cognito.UserPoolUsernameConfigurationArgs(
                case_sensitive=False
            ),
            password_policy=aws.cognito.UserPoolPasswordPolicyArgs(
                minimum_length=args.minimum_password_length,
                require_lowercase=True,
                require_uppercase=True,
                require_numbers=True,
                require_symbols=True,
                temporary_password_validity_days=3,
            ),
            account_recovery_setting=aws.cognito.UserPoolAccountRecoverySettingArgs(
                recovery_mechanisms=[
                    aws.cognito.UserPoolAccountRecoverySettingRecoveryMechanismArgs(
                        name="verified_email", priority=1
                    )
                ]
            ),
            verification_message_template=aws.cognito.UserPoolVerificationMessageTemplateArgs(
                default_email_option="CONFIRM_WITH_CODE"
            ),
            mfa_configuration="OPTIONAL",
            software_token_mfa_configuration=aws.cognito.UserPoolSoftwareTokenMfaConfigurationArgs(
                enabled=True
            ),
            deletion_protection="ACTIVE" if args.deletion_protection else "INACTIVE",
            tags=args.naming.tags,
            opts=self._child,
        )

    def _federation(
        self, pool: aws.cognito.UserPool, oidc: OidcFederation
    ) -> aws.cognito.IdentityProvider:
        return aws.cognito.IdentityProvider(
            f"{self._name}-oidc",
            user_pool_id=pool.id,
            provider_name=oidc.provider_name,
            provider_type="OIDC",
            provider_details={
                "client_id": oidc.client_id,
                "client_secret": oidc.client_secret,
                "oidc_issuer": oidc.issuer,
                "authorize_scopes": " ".join(oidc.scopes),
                "attributes_request_method": "GET",
            },
            attribute_mapping={"email": "email", "username": "sub"},
            opts=self._child,
        )

    def _web_client(
        self, pool: aws.cognito.UserPool, identity_providers: list[pulumi.Input[str]]
    ) -> aws.cognito.UserPoolClient:
        args = self._args
        code_flow = bool(args.callback_urls)
        return aws.cognito.UserPoolClient(
            f"{self._name}-web-reader",
            name="web-reader",
            user_pool_id=pool.id,
            # A browser cannot keep a secret: the client has none, and so uses
            # SRP or the code flow with PKCE, never plain password auth.
            generate_secret=False,
            explicit_auth_flows=["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            prevent_user_existence_errors="ENABLED",
            enable_token_revocation=True,
            access_token_validity=_TOKEN_HOURS,
            id_token_validity=_TOKEN_HOURS,
            refresh_token_validity=_REFRESH_DAYS,
            token_validity_units=aws.cognito.UserPoolClientTokenValidityUnitsArgs(
                access_token="hours",  # noqa: S106 (units, not secrets)
                id_token="hours",  # noqa: S106
                refresh_token="days",  # noqa: S106
            ),
            allowed_oauth_flows_user_pool_client=code_flow,
            allowed_oauth_flows=["code"] if code_flow else None,
            allowed_oauth_scopes=list(_OAUTH_SCOPES) if code_flow else None,
            callback_urls=list(args.callback_urls) or None,
            logout_urls=list(args.logout_urls) or None,
            supported_identity_providers=identity_providers,
            opts=self._child,
        )

    def _domain(self, pool: aws.cognito.UserPool) -> pulumi.Output[str]:
        domain = aws.cognito.UserPoolDomain(
            f"{self._name}-domain",
            domain=self._args.domain_prefix,
            user_pool_id=pool.id,
            managed_login_version=2,
            opts=self._child,
        )
        return domain.domain
