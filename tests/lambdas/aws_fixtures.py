"""moto fixtures for the Lambda tests: DynamoDB, Secrets Manager, EventBridge, SQS.

Every fixture runs inside one `mock_aws` context (`aws`), with fake credentials and
a fixed region, so no test can reach a real AWS account.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A moto-mocked AWS with fake credentials in `REGION`."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def dynamodb(aws: None) -> DynamoDBClient:
    """A DynamoDB client on moto."""
    return boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def session_table(dynamodb: DynamoDBClient) -> str:
    """The story-session table as the Storage component declares it; returns its name."""
    name = "liminal-transit-story-sessions-test"
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "session_id", "AttributeType": "S"},
            {"AttributeName": "timestamp", "AttributeType": "N"},
            {"AttributeName": "user_id", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "session_id", "KeyType": "HASH"},
            {"AttributeName": "timestamp", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "UserStoryIndex",
                "KeySchema": [
                    {"AttributeName": "user_id", "KeyType": "HASH"},
                    {"AttributeName": "timestamp", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    dynamodb.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
    return name


@pytest.fixture
def secretsmanager(aws: None) -> SecretsManagerClient:
    """A Secrets Manager client on moto."""
    return boto3.client("secretsmanager", region_name=REGION)


@pytest.fixture
def make_secret(secretsmanager: SecretsManagerClient) -> Any:
    """Create a secret holding a string (or a JSON object); returns its ARN."""

    def make(name: str, value: str | dict[str, str]) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return secretsmanager.create_secret(Name=name, SecretString=text)["ARN"]

    return make


@dataclass
class EventBus:
    """A custom bus whose `liminal-transit` events land in an SQS queue to read back."""

    name: str
    events: EventBridgeClient
    sqs: Any  # no SQS stubs among the dev dependencies
    queue_url: str

    def published(self) -> list[dict[str, Any]]:
        """Every event delivered so far (each an EventBridge envelope), oldest first."""
        delivered: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return delivered
            for message in batch:
                delivered.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


@pytest.fixture
def event_bus(aws: None) -> EventBus:
    """A bus with a rule like the stack's (source `liminal-transit`) targeting an SQS queue."""
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    name = "liminal-transit-test"
    events.create_event_bus(Name=name)
    queue_url = sqs.create_queue(QueueName="story-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="story-events",
        EventBusName=name,
        EventPattern=json.dumps({"source": ["liminal-transit"]}),
    )
    events.put_targets(
        Rule="story-events", EventBusName=name, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )
    return EventBus(name=name, events=events, sqs=sqs, queue_url=queue_url)
