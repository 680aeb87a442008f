"""LiminalPlatform and the conventions every component follows."""

from __future__ import annotations

import re
from pathlib import Path

from components.offline import OfflineRun

COMPONENTS_DIR = Path(__file__).resolve().parents[2] / "components"
TAG_KEYS = {"Project", "Environment", "Stack", "ManagedBy", "CostCenter"}
# Resource types whose AWS API takes no tags.
UNTAGGABLE = {
    "aws:kms/alias:Alias",
    "aws:sqs/queuePolicy:QueuePolicy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:lambda/alias:Alias",
    "aws:lambda/permission:Permission",
    "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig",
    "aws:cloudwatch/eventTarget:EventTarget",
    "aws:apigateway/account:Account",
    "aws:apigateway/deployment:Deployment",
    "aws:apigateway/methodSettings:MethodSettings",
    "aws:apigateway/basePathMapping:BasePathMapping",
    "aws:cognito/userPoolClient:UserPoolClient",
    "aws:cognito/userPoolDomain:UserPoolDomain",
    "aws:cognito/identityProvider:IdentityProvider",
}


def test_stack_exports_what_operators_need(run: OfflineRun) -> None:
    assert {"api_url", "table_name", "function_name", "alias_arn", "key_arn"} <= set(run.outputs)
    assert run.outputs["table_name"].startswith("liminal-transit-story-sessions-")


def test_components_use_the_liminal_module_name_token(run: OfflineRun) -> None:
    components = [r for r in run.resources if not r.custom]
    assert {r.type for r in components} == {
        "liminal:platform:LiminalPlatform",
        "liminal:identity:ReaderIdentity",
        "liminal:storage:Storage",
        "liminal:story_generator:StoryGenerator",
        "liminal:story_api:StoryApi",
    }
    for component in components:
        match = re.fullmatch(r"liminal:([a-z_]+):([A-Za-z]+)", component.type)
        assert match, component.type
        assert (COMPONENTS_DIR / f"{match.group(1)}.py").is_file(), component.type


def test_every_resource_belongs_to_a_component(run: OfflineRun) -> None:
    platform = run.one("liminal:platform:LiminalPlatform")
    for resource in run.resources:
        if resource is platform:
            continue
        assert resource.parent_urn is not None, resource.name
        parent = run.by_urn(resource.parent_urn)
        assert not parent.custom, f"{resource.name} is parented to a resource, not a component"
        assert resource.name.startswith(parent.name), "child names derive from the component"


def test_every_taggable_resource_carries_the_common_tags(run: OfflineRun) -> None:
    environment = run.outputs["function_name"].rsplit("-", 1)[1]
    for resource in run.resources:
        if not resource.custom or resource.type in UNTAGGABLE:
            continue
        tags = resource.get("tags") or {}
        assert set(tags) >= TAG_KEYS, (
            f"{resource.type} {resource.name} lacks {TAG_KEYS - set(tags)}"
        )
        assert tags["Environment"] == environment
        assert tags["Stack"] == environment, "the three stacks are named after their environment"
        assert tags["Project"] == "liminal-transit"
        assert tags["ManagedBy"] == "pulumi"


def test_cost_center_comes_from_the_stack(stack_runs: dict[str, OfflineRun]) -> None:
    centers = {
        stack: run.one("aws:dynamodb/table:Table")["tags"]["CostCenter"]
        for stack, run in stack_runs.items()
    }
    assert centers == {
        "dev": "development",
        "staging": "pre-production",
        "production": "production",
    }


def test_every_log_group_has_a_retention_and_the_key(run: OfflineRun) -> None:
    for group in run.of_type("aws:cloudwatch/logGroup:LogGroup"):
        assert group["retentionInDays"] > 0, group.name
        assert group["kmsKeyId"] == run.outputs["key_arn"], group.name
