"""Storage: the customer-managed key and the story-session table, per stack."""

from __future__ import annotations

import pulumi

from components.naming import Naming
from components.offline import OfflineRun, run_program
from components.storage import Storage, StorageArgs
from tests.components.conftest import statements

TABLE = "aws:dynamodb/table:Table"
KEY = "aws:kms/key:Key"


def test_key_is_customer_managed_with_rotation_and_alias(run: OfflineRun) -> None:
    key = run.one(KEY)
    assert key["enableKeyRotation"] is True
    alias = run.one("aws:kms/alias:Alias")
    assert alias["name"].startswith("alias/liminal-transit-key-")
    assert alias["targetKeyId"] == run.outputs["key_arn"].rsplit("/", 1)[1]


def test_key_policy_lets_cloudwatch_logs_use_it_for_this_account_only(run: OfflineRun) -> None:
    logs = next(s for s in statements(run.one(KEY)) if "Service" in s.get("Principal", {}))
    assert logs["Principal"]["Service"] == "logs.us-east-1.amazonaws.com"
    context = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert context == "arn:aws:logs:us-east-1:123456789012:log-group:*"


def test_key_deletion_window_is_longest_in_production(stack_runs: dict[str, OfflineRun]) -> None:
    windows = {s: r.one(KEY)["deletionWindowInDays"] for s, r in stack_runs.items()}
    assert windows == {"dev": 7, "staging": 7, "production": 30}


def test_table_keys_index_and_ttl_follow_the_design(run: OfflineRun) -> None:
    table = run.one(TABLE)
    assert (table["hashKey"], table["rangeKey"]) == ("session_id", "timestamp")
    types = {a["name"]: a["type"] for a in table["attributes"]}
    assert types == {"session_id": "S", "timestamp": "N", "user_id": "S"}
    (index,) = table["globalSecondaryIndexes"]
    assert index["name"] == "UserStoryIndex"
    assert [(k["attributeName"], k["keyType"]) for k in index["keySchemas"]] == [
        ("user_id", "HASH"),
        ("timestamp", "RANGE"),
    ]
    assert index["projectionType"] == "ALL"
    assert table["ttl"] == {"attributeName": "expires_at", "enabled": True}


def test_table_is_on_demand_recoverable_and_encrypted_with_the_key(run: OfflineRun) -> None:
    table = run.one(TABLE)
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["pointInTimeRecovery"]["enabled"] is True
    assert table["serverSideEncryption"] == {"enabled": True, "kmsKeyArn": run.outputs["key_arn"]}


def test_only_production_protects_the_table_from_deletion(
    stack_runs: dict[str, OfflineRun],
) -> None:
    protection = {s: r.one(TABLE)["deletionProtectionEnabled"] for s, r in stack_runs.items()}
    assert protection == {"dev": False, "staging": False, "production": True}


def test_storage_builds_alone_in_another_program() -> None:
    """Another stack can take just the Storage component, with its own small args."""
    outputs: dict[str, str] = {}

    def program() -> None:
        storage = Storage("sessions", StorageArgs(naming=Naming("qa", "qa", "qa-team")))
        pulumi.Output.all(storage.table_name, storage.key_alias).apply(
            lambda values: outputs.update(table=values[0], alias=values[1])
        )

    run = run_program(program, config={}, region="eu-west-1", stack="qa")
    assert outputs == {
        "table": "liminal-transit-story-sessions-qa",
        "alias": "alias/liminal-transit-key-qa",
    }
    component = run.one("liminal:storage:Storage")
    assert {r.type for r in run.children(component)} == {TABLE, KEY, "aws:kms/alias:Alias"}
    key_logs = statements(run.one(KEY))[1]
    assert key_logs["Principal"]["Service"] == "logs.eu-west-1.amazonaws.com"


def test_eventbridge_may_use_the_key_for_this_accounts_events_only(run: OfflineRun) -> None:
    """The bus is encrypted with the key, and EventBridge dead-letters to an encrypted queue."""
    events = next(
        s for s in statements(run.one(KEY)) if s["Principal"] == {"Service": "events.amazonaws.com"}
    )
    assert sorted(events["Action"]) == ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
    assert events["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:*"},
    }
