"""IAM policy documents shared by the components.

Documents are plain dicts that may hold Outputs; ``document`` turns them into
JSON with ``Output.json_dumps`` so that ARNs known only at deploy time fit in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[pulumi.Input[str]],
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``Allow`` statement."""
    result: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": list(resources),
    }
    if condition:
        result["Condition"] = dict(condition)
    return result


def document(statements: Sequence[Mapping[str, Any]]) -> pulumi.Output[str]:
    """A policy document from statements that may contain Outputs."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str) -> str:
    """The trust policy that lets one AWS service principal assume a role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def deny_insecure_transport(
    service_actions: str, resource_arns: Sequence[pulumi.Input[str]]
) -> dict[str, Any]:
    """The resource-policy statement that refuses any request not made over TLS.

    ``service_actions`` is the service's action wildcard, such as ``sqs:*``:
    a Deny on every action is the point of this statement.
    """
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": service_actions,
        "Resource": list(resource_arns),
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
