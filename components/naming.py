"""Physical names and tags shared by every component."""

from __future__ import annotations

from dataclasses import dataclass

PROJECT = "liminal-transit"


@dataclass(frozen=True)
class Naming:
    """Names and tags of one environment of one project.

    Physical names follow the original design (``liminal-transit-<purpose>-<env>``),
    so that operators find the same names in the console, alarms and runbooks.
    """

    environment: str
    cost_center: str
    project: str = PROJECT

    def physical(self, purpose: str) -> str:
        """The physical name of the resource that serves ``purpose``."""
        return f"{self.project}-{purpose}-{self.environment}"

    @property
    def tags(self) -> dict[str, str]:
        """The tags every taggable resource carries."""
        return {
            "Project": self.project,
            "Environment": self.environment,
            "ManagedBy": "pulumi",
            "CostCenter": self.cost_center,
        }

    def tags_with(self, **extra: str) -> dict[str, str]:
        """The common tags plus resource-specific ones (``Name=...``)."""
        return {**self.tags, **extra}
