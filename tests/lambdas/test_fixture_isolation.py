"""What one test writes to moto is gone for the next one (`aws_fixtures.aws`).

`aws` shares one boto3 session between tests, to save a new session's cost, and
nothing else: each test gets a new, empty moto account. The two turns below are
the same test, so whichever runs first writes (a session item, a table of its own,
an event left undelivered in the queue, a secret with a fixed name) and the other
must find none of it, whatever the order. What the first turn wrote is recorded
here, so the second also looks for those very resources by name and ARN, not only
for an empty account. Were the account shared, or not reset between tests, the
second turn would fail (its `create_secret` and `create_table` as well: the names
would be taken).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.lambdas.aws_fixtures import REGION, EventBus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PROBE = "isolation-probe"
SESSION_KEY = {"session_id": {"S": "isolation-session"}, "timestamp": {"N": "1"}}
# What each turn wrote, for the turn after it (empty if that turn runs alone).
WRITTEN: list[dict[str, str]] = []


def queued(event_bus: EventBus) -> int:
    """Messages in the bus's queue, visible or not, read without receiving them."""
    attributes = event_bus.sqs.get_queue_attributes(
        QueueUrl=event_bus.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def not_found(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as error:
        return error.response["Error"]["Code"] == "ResourceNotFoundException"
    return False


@pytest.mark.parametrize("turn", ["one", "other"])
def test_a_test_starts_with_an_empty_account_whatever_ran_before(
    turn: str,
    session_table: str,
    dynamodb: DynamoDBClient,
    event_bus: EventBus,
    make_secret: Any,
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    sqs = event_bus.sqs

    # Nothing the other turn wrote is here, by name or at all.
    for earlier in WRITTEN:
        assert not_found(secrets.describe_secret, SecretId=earlier["secret_arn"])
        assert not_found(dynamodb.describe_table, TableName=earlier["table"])
    assert dynamodb.list_tables()["TableNames"] == [session_table]
    assert dynamodb.scan(TableName=session_table)["Items"] == []
    assert "Item" not in dynamodb.get_item(TableName=session_table, Key=SESSION_KEY)
    assert secrets.list_secrets()["SecretList"] == []
    assert sqs.list_queues()["QueueUrls"] == [event_bus.queue_url]
    assert queued(event_bus) == 0
    buses = event_bus.events.list_event_buses()["EventBuses"]
    assert sorted(bus["Name"] for bus in buses) == sorted(["default", event_bus.name])
    rules = event_bus.events.list_rules(EventBusName=event_bus.name)["Rules"]
    assert [rule["Name"] for rule in rules] == ["story-events"]
    assert (os.environ["AWS_REGION"], os.environ["AWS_DEFAULT_REGION"]) == (REGION, REGION)

    # Write to every service, and leave it all for the next test to (not) see.
    dynamodb.put_item(
        TableName=session_table, Item={**SESSION_KEY, "user_id": {"S": f"reader-{turn}"}}
    )
    dynamodb.create_table(
        TableName=PROBE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    secret_arn = make_secret(PROBE, {"turn": turn})
    sqs.create_queue(QueueName=PROBE)
    reply = event_bus.events.put_events(
        Entries=[
            {
                "Source": "liminal-transit",
                "DetailType": "Isolation Probe",
                "Detail": json.dumps({"turn": turn}),
                "EventBusName": event_bus.name,
            }
        ]
    )
    assert reply["FailedEntryCount"] == 0
    assert queued(event_bus) == 1, "the event reached the queue and stays there"
    WRITTEN.append({"turn": turn, "secret_arn": secret_arn, "table": PROBE})


def test_the_shared_boto3_session_is_the_default_only_inside_aws(
    _boto3_session: boto3.Session,
) -> None:
    assert boto3.DEFAULT_SESSION is not _boto3_session


def test_inside_aws_clients_come_from_the_shared_session(
    aws: None, _boto3_session: boto3.Session
) -> None:
    assert boto3.DEFAULT_SESSION is _boto3_session
    client = boto3.client("dynamodb")
    assert client.meta.region_name == REGION
