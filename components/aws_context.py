"""The account, region and partition a component's resources land in."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class AwsContext:
    """Where a component deploys, as seen by the provider of its parent.

    Looked up rather than taken from config so that a component built with an
    explicit ``aws.Provider`` (the disaster-recovery region) gets that
    provider's account and region.
    """

    account_id: pulumi.Output[str]
    region: pulumi.Output[str]
    partition: pulumi.Output[str]
    dns_suffix: pulumi.Output[str]

    @classmethod
    def of(cls, parent: pulumi.Resource) -> AwsContext:
        """Look up the context through ``parent``'s provider."""
        opts = pulumi.InvokeOptions(parent=parent)
        identity = aws.get_caller_identity_output(opts=opts)
        partition = aws.get_partition_output(opts=opts)
        return cls(
            account_id=identity.account_id,
            region=aws.get_region_output(opts=opts).region,
            partition=partition.partition,
            dns_suffix=partition.dns_suffix,
        )

    def arn(
        self, service: str, resource: pulumi.Input[str], *, regional: bool = True
    ) -> pulumi.Output[str]:
        """``arn:<partition>:<service>:<region>:<account>:<resource>``."""
        region: pulumi.Input[str] = self.region if regional else ""
        return pulumi.Output.concat(
            "arn:", self.partition, ":", service, ":", region, ":", self.account_id, ":", resource
        )

    def service_principal(self, service: str) -> pulumi.Output[str]:
        """The regional service principal, such as ``logs.us-east-1.amazonaws.com``."""
        return pulumi.Output.concat(service, ".", self.region, ".", self.dns_suffix)
