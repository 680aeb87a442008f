"""Storage: the customer-managed key and the story-session table."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .aws_context import AwsContext
from .naming import Naming

SESSION_INDEX = "UserStoryIndex"


@dataclass(frozen=True)
class StorageArgs:
    """Settings of :class:`Storage`.

    ``kms_deletion_window_days`` is how long a deleted key can still be
    recovered (7 to 30 days); ``deletion_protection`` guards the table itself.
    """

    naming: Naming
    deletion_protection: bool = False
    kms_deletion_window_days: int = 30


class Storage(pulumi.ComponentResource):
    """A KMS key with rotation and the story-session DynamoDB table encrypted with it.

    The table: hash key ``session_id`` (S), range key ``timestamp`` (N), global
    secondary index ``UserStoryIndex`` on ``user_id`` + ``timestamp``, TTL on
    ``expires_at``, point-in-time recovery, on-demand billing.

    Outputs:
        key_arn, key_id, key_alias: the customer-managed key every other
            component encrypts with (logs, queues, secrets, topics).
        table_name, table_arn: the session table.
    """

    key_arn: pulumi.Output[str]
    key_id: pulumi.Output[str]
    key_alias: pulumi.Output[str]
    table_name: pulumi.Output[str]
    table_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liminal:storage:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        naming = args.naming
        context = AwsContext.of(self)

        key = aws.kms.Key(
            f"{name}-key",
            description=f"Liminal Transit {naming.stack}: sessions, logs, queues, secrets, events",
            enable_key_rotation=True,
            deletion_window_in_days=args.kms_deletion_window_days,
            policy=_key_policy(context),
            tags=naming.tags_with(Name=naming.physical("key")),
            opts=child,
        )
        alias = aws.kms.Alias(
            f"{name}-key-alias",
            name=f"alias/{naming.physical('key')}",
            target_key_id=key.key_id,
            opts=child,
        )
        table = aws.dynamodb.Table(
            f"{name}-sessions",
            name=naming.physical("story-sessions"),
            billing_mode="PAY_PER_REQUEST",
            hash_key="session_id",
            range_key="timestamp",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="session_id", type="S"),
                aws.dynamodb.TableAttributeArgs(name="timestamp", type="N"),
                aws.dynamodb.TableAttributeArgs(name="user_id", type="S"),
            ],
            global_secondary_indexes=[
                aws.dynamodb.TableGlobalSecondaryIndexArgs(
                    name=SESSION_INDEX,
                    key_schemas=[
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name="user_id", key_type="HASH"
                        ),
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name="timestamp", key_type="RANGE"
                        ),
                    ],
                    projection_type="ALL",
                )
            ],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name="expires_at", enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(
                enabled=True, kms_key_arn=key.arn
            ),
            deletion_protection_enabled=args.deletion_protection,
            tags=naming.tags_with(Name=naming.physical("story-sessions")),
            opts=child,
        )

        self.key_arn = key.arn
        self.key_id = key.key_id
        self.key_alias = alias.name
        self.table_name = table.name
        self.table_arn = table.arn
        self.register_outputs(
            {
                "key_arn": self.key_arn,
                "key_id": self.key_id,
                "key_alias": self.key_alias,
                "table_name": self.table_name,
                "table_arn": self.table_arn,
            }
        )


def _key_policy(context: AwsContext) -> pulumi.Output[str]:
    """The key policy: the account administers the key through IAM; CloudWatch
    Logs may use it for this account's log groups only (a log group encrypted
    with a key whose policy lacks this statement cannot be created); EventBridge
    may use it for this account's event buses and for the encrypted queue it
    dead-letters to. Services that use the key on a caller's behalf (DynamoDB,
    SQS, Secrets Manager) are authorised through the caller's IAM policy instead."""
    this_accounts_events = {
        "StringEquals": {"aws:SourceAccount": context.account_id},
        "ArnLike": {"aws:SourceArn": context.arn("events", "*")},
    }
    return pulumi.Output.json_dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdministersKeyThroughIam",
                    "Effect": "Allow",
                    "Principal": {"AWS": context.arn("iam", "root", regional=False)},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchLogsEncryptsThisAccountsLogGroups",
                    "Effect": "Allow",
                    "Principal": {"Service": context.service_principal("logs")},
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": context.arn("logs", "log-group:*")
                        }
                    },
                },
                {
                    "Sid": "EventBridgeEncryptsThisAccountsEvents",
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": ["kms:DescribeKey", "kms:GenerateDataKey", "kms:Decrypt"],
                    "Resource": "*",
                    "Condition": this_accounts_events,
                },
            ],
        }
    )
