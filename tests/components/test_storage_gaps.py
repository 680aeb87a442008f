"""Storage: what test_storage.py leaves unchecked.

Names and tags, the key policy's administration statement, the component's
defaults, and the stack config reaching the key and the table.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.naming import Naming
from components.offline import OfflineRun, run_program, run_stack, stack_config
from components.storage import Storage, StorageArgs
from tests.components.conftest import statements

TABLE = "aws:dynamodb/table:Table"
KEY = "aws:kms/key:Key"
ALIAS = "aws:kms/alias:Alias"


def _stack(run: OfflineRun) -> str:
    return str(run.outputs["function_name"]).rsplit("-", 1)[1]


def _standalone(**args: Any) -> tuple[OfflineRun, dict[str, str]]:
    outputs: dict[str, str] = {}

    def program() -> None:
        storage = Storage("sessions", StorageArgs(naming=Naming("qa", "qa", "qa-team"), **args))
        pulumi.Output.all(
            key_arn=storage.key_arn,
            key_id=storage.key_id,
            key_alias=storage.key_alias,
            table_name=storage.table_name,
            table_arn=storage.table_arn,
        ).apply(outputs.update)

    return run_program(program, config={}, region="eu-west-1", stack="qa"), outputs


def test_the_table_and_key_are_named_and_tagged_per_stack(run: OfflineRun) -> None:
    stack = _stack(run)
    table = run.one(TABLE)
    assert table["name"] == f"liminal-transit-story-sessions-{stack}"
    assert table["tags"]["Name"] == table["name"]
    assert table["tags"]["Stack"] == stack
    key = run.one(KEY)
    assert key["tags"]["Name"] == f"liminal-transit-key-{stack}"
    assert key["tags"]["Project"] == "liminal-transit"
    assert key["description"] == (
        f"Liminal Transit {stack}: sessions, logs, queues, secrets, events"
    )
    assert run.one(ALIAS)["name"] == f"alias/liminal-transit-key-{stack}"


def test_the_table_has_no_stream_and_no_provisioned_capacity(run: OfflineRun) -> None:
    """On-demand, and nothing reads a stream: the function is the only consumer."""
    table = run.one(TABLE)
    assert not table.get("streamEnabled")
    assert table.get("readCapacity") is None and table.get("writeCapacity") is None


def test_the_account_administers_the_key_through_iam(run: OfflineRun) -> None:
    root, logs, events = statements(run.one(KEY))
    assert root == {
        "Sid": "AccountAdministersKeyThroughIam",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": ["kms:*"],
        "Resource": ["*"],
    }
    assert logs["Sid"] == "CloudWatchLogsEncryptsThisAccountsLogGroups"
    assert logs["Action"] == [
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*",
        "kms:Describe*",
    ]
    assert logs["Resource"] == ["*"]
    assert events["Sid"] == "EventBridgeEncryptsThisAccountsEvents"
    assert events["Resource"] == ["*"]
    assert json.loads(run.one(KEY)["policy"])["Version"] == "2012-10-17"


def test_a_standalone_storage_protects_nothing_and_keeps_a_deleted_key_30_days() -> None:
    run, _ = _standalone()
    assert run.one(TABLE)["deletionProtectionEnabled"] is False
    assert run.one(KEY)["deletionWindowInDays"] == 30
    assert run.one(KEY)["enableKeyRotation"] is True


def test_the_storage_args_reach_the_table_and_key() -> None:
    run, _ = _standalone(deletion_protection=True, kms_deletion_window_days=10)
    assert run.one(TABLE)["deletionProtectionEnabled"] is True
    assert run.one(KEY)["deletionWindowInDays"] == 10


def test_the_storage_outputs_are_its_key_and_table() -> None:
    run, outputs = _standalone()
    key_id = outputs["key_id"]
    table = "liminal-transit-story-sessions-qa"
    assert outputs == {
        "key_arn": f"arn:aws:kms:eu-west-1:123456789012:key/{key_id}",
        "key_id": key_id,
        "key_alias": "alias/liminal-transit-key-qa",
        "table_name": table,
        "table_arn": f"arn:aws:dynamodb:eu-west-1:123456789012:table/{table}",
    }
    assert run.one(ALIAS)["targetKeyId"] == key_id
    assert run.one(TABLE)["serverSideEncryption"]["kmsKeyArn"] == outputs["key_arn"]


@pytest.mark.parametrize(
    ("protection", "window"), [(True, 12), (False, 30)], ids=["protected", "unprotected"]
)
def test_the_stack_config_reaches_the_table_and_key(protection: bool, window: int) -> None:
    storage = json.loads(stack_config("dev")["liminal-transit:storage"])
    storage.update(deletionProtection=protection, kmsDeletionWindowDays=window)

    run = run_stack("dev", overrides={"liminal-transit:storage": storage})

    assert run.one(TABLE)["deletionProtectionEnabled"] is protection
    assert run.one(KEY)["deletionWindowInDays"] == window
