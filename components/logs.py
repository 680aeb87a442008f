"""Log groups: every one with the stack's retention and encrypted with the stack's key."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from .naming import Naming


def encrypted_log_group(
    resource_name: str,
    *,
    log_group_name: pulumi.Input[str],
    retention_days: int,
    key_arn: pulumi.Input[str],
    naming: Naming,
    parent: pulumi.Resource,
) -> aws.cloudwatch.LogGroup:
    """A log group created ahead of the service that writes to it.

    AWS services create the group they log to when it is missing, with no
    retention and no key: declaring it first is how it gets both.
    """
    return aws.cloudwatch.LogGroup(
        resource_name,
        name=log_group_name,
        retention_in_days=retention_days,
        kms_key_id=key_arn,
        tags=naming.tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
