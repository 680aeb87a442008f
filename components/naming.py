"""Physical names and tags shared by every component.

Physical names come from the project and the stack (``liminal-transit-<purpose>-<stack>``),
not from the environment alone, so that two stacks of one environment (``dev`` and
``dev-alice``) coexist in one account. Every purpose a component names is listed in
``PHYSICAL_NAMES`` with the rule AWS applies to that kind of name, so that a stack
whose names AWS would refuse fails before any resource is declared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROJECT = "liminal-transit"


@dataclass(frozen=True)
class NameRule:
    """What AWS accepts as the name of one kind of resource."""

    kind: str
    max_length: int
    characters: str
    """A regular expression for one allowed character, such as ``[A-Za-z0-9_-]``."""

    def problem(self, name: str) -> str | None:
        """Why AWS would refuse ``name``, or None when it accepts it."""
        if len(name) > self.max_length:
            return (
                f"{self.kind} names allow at most {self.max_length} characters, "
                f"and {name!r} has {len(name)}"
            )
        if not re.fullmatch(f"(?:{self.characters})+", name):
            return f"{self.kind} names allow only the characters {self.characters}: {name!r}"
        return None


LAMBDA_FUNCTION = NameRule("Lambda function", 64, r"[A-Za-z0-9_-]")
IAM_ROLE = NameRule("IAM role", 64, r"[A-Za-z0-9+=,.@_-]")
SQS_QUEUE = NameRule("SQS queue", 80, r"[A-Za-z0-9_-]")
DYNAMODB_TABLE = NameRule("DynamoDB table", 255, r"[A-Za-z0-9_.-]")
EVENT_BUS = NameRule("EventBridge event bus", 256, r"[A-Za-z0-9/._-]")
EVENT_RULE = NameRule("EventBridge rule", 64, r"[A-Za-z0-9._-]")
KMS_ALIAS = NameRule("KMS alias", 250, r"[A-Za-z0-9/_-]")
REST_API = NameRule("API Gateway REST API", 1024, r"[^\s]")
SECRET = NameRule("Secrets Manager secret", 512, r"[A-Za-z0-9/_+=.@-]")
USER_POOL = NameRule("Cognito user pool", 128, r"[A-Za-z0-9_\s+=,.@-]")

# Every purpose ``Naming.physical`` may be asked for, and the rule of its resource.
PHYSICAL_NAMES: dict[str, NameRule] = {
    "key": KMS_ALIAS,
    "story-sessions": DYNAMODB_TABLE,
    "story-generator": LAMBDA_FUNCTION,
    "story-generator-dlq": SQS_QUEUE,
    "story-generator-role": IAM_ROLE,
    "events": EVENT_BUS,
    "story-requests": EVENT_RULE,
    "api": REST_API,
    "apigateway-cloudwatch": IAM_ROLE,
    "readers": USER_POOL,
}
# Secrets are named as paths, ``<project>/<stack>/<purpose>``.
SECRET_NAMES = ("openai-api-key", "anthropic-api-key")

# Stack names become part of every physical name: lower-case, digits and hyphens.
STACK_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@dataclass(frozen=True)
class Naming:
    """Names and tags of one stack of one project.

    ``stack`` names the resources, ``environment`` (dev, staging, production)
    tags them; the stack is ``<environment>`` or ``<environment>-<suffix>``.
    """

    stack: str
    environment: str
    cost_center: str
    project: str = PROJECT

    def physical(self, purpose: str) -> str:
        """The physical name of the resource that serves ``purpose``.

        Raises ValueError for a purpose that is not in ``PHYSICAL_NAMES`` or a
        name AWS would refuse (``problems()`` reports those up front).
        """
        if purpose not in PHYSICAL_NAMES:
            raise ValueError(f"{purpose!r} is not a registered purpose (naming.PHYSICAL_NAMES)")
        return self._checked(f"{self.project}-{purpose}-{self.stack}", PHYSICAL_NAMES[purpose])

    def secret_name(self, purpose: str) -> str:
        """The Secrets Manager name of one of ``SECRET_NAMES``: ``<project>/<stack>/<purpose>``."""
        if purpose not in SECRET_NAMES:
            raise ValueError(f"{purpose!r} is not a registered secret (naming.SECRET_NAMES)")
        return self._checked(f"{self.project}/{self.stack}/{purpose}", SECRET)

    def problems(self) -> list[str]:
        """Every name of this stack that AWS would refuse, one line each."""
        if not STACK_NAME.match(self.stack):
            return [
                f"stack name {self.stack!r}: use lower-case letters, digits and hyphens "
                "(it becomes part of every physical name)"
            ]
        found = []
        for name_of, purposes in (
            (self.physical, PHYSICAL_NAMES),
            (self.secret_name, SECRET_NAMES),
        ):
            for purpose in purposes:
                try:
                    name_of(purpose)
                except ValueError as problem:
                    found.append(f"stack name {self.stack!r} is too long or invalid: {problem}")
        return found

    @staticmethod
    def _checked(name: str, rule: NameRule) -> str:
        problem = rule.problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @property
    def tags(self) -> dict[str, str]:
        """The tags every taggable resource carries."""
        return {
            "Project": self.project,
            "Environment": self.environment,
            "Stack": self.stack,
            "ManagedBy": "pulumi",
            "CostCenter": self.cost_center,
        }

    def tags_with(self, **extra: str) -> dict[str, str]:
        """The common tags plus resource-specific ones (``Name=...``)."""
        return {**self.tags, **extra}
