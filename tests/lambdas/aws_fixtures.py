"""moto fixtures for the Lambda tests: DynamoDB, Secrets Manager, EventBridge, SQS and
the readers' Cognito user pool.

Every fixture runs inside one `mock_aws` context (`aws`), with fake credentials and
a fixed region, so no test can reach a real AWS account.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
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


FAKE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@pytest.fixture(scope="session")
def _boto3_session() -> boto3.Session:
    """The default boto3 session inside every `aws` test: made once, with fake credentials.

    `mock_aws` gives each test a new default session, so that no client uses
    credentials found before the mock. A new session costs about 70 ms, most of a
    moto test's setup: its first client reads botocore's service models and
    endpoints from disk again, and it registers every built-in handler. This one is
    made once. Its credentials are resolved here, under `mock_aws`, as a new session's
    would be in a test, and botocore keeps them: they never come from the machine.
    It holds no AWS state (that lives in moto's backends, which `aws` resets for every
    test), and each fixture still makes its own clients.
    """
    with pytest.MonkeyPatch.context() as environment:
        for name, value in FAKE_ENVIRONMENT.items():
            environment.setenv(name, value)
        with mock_aws():
            session = boto3.Session()
            credentials = session.get_credentials()
            assert credentials is not None
            assert credentials.access_key == os.environ["AWS_ACCESS_KEY_ID"], "a fake key"
    return session


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, _boto3_session: boto3.Session) -> Iterator[None]:
    """A moto-mocked AWS with fake credentials in `REGION`: a new, empty account per test.

    `mock_aws` resets every moto backend when it starts and again when it stops, so
    nothing a test creates (tables and items, secrets, buses, queues and messages,
    user pools) is there for the next one (tests/lambdas/test_fixture_isolation.py).
    Resetting costs a few milliseconds, less than the table or bus a shared account
    would have to empty; only the boto3 session (`_boto3_session`) is shared.
    """
    for name, value in FAKE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        # mock_aws has patched the default session to None and puts back what was
        # there before when it stops: the shared session is the default only inside.
        boto3.DEFAULT_SESSION = _boto3_session
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


class SerialisedDynamoDB:
    """A DynamoDB client whose calls moto runs one at a time, as DynamoDB makes them atomic.

    moto 5 evaluates a write's condition and then stores the item with no lock
    between the two (`moto.dynamodb.models.table.Table.put_item`), and applies a
    transaction's items one by one while other threads read: under threads, two
    conditional writes can both pass. DynamoDB makes each conditional write, and
    each transaction, atomic; the lock gives moto that atomicity. It does not
    order the callers, and the code under test is the code that runs in Lambda.
    """

    _lock = threading.Lock()

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


@pytest.fixture
def serialised_dynamodb(dynamodb: DynamoDBClient) -> DynamoDBClient:
    """`dynamodb`, its calls made one at a time (see `SerialisedDynamoDB`)."""
    client: DynamoDBClient = SerialisedDynamoDB(dynamodb)  # type: ignore[assignment]
    return client


@dataclass(frozen=True)
class Reader:
    """A signed-in reader: the ID token moto's Cognito issued, and the claims in it."""

    username: str
    id_token: str
    claims: Mapping[str, str]

    @property
    def sub(self) -> str:
        """The reader id the story service must use."""
        return self.claims["sub"]


def token_claims(id_token: str) -> dict[str, str]:
    """The claims of a JWT as API Gateway's Cognito authorizer passes them to the Lambda.

    The payload is decoded without verification (API Gateway verified the signature)
    and, as the authorizer does, every value becomes a string.
    """
    payload = id_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in claims.items()
    }


READER_NAMES = ("alice", "bob", "carol")


@pytest.fixture(scope="session")
def issued_readers() -> dict[str, Reader]:
    """`READER_NAMES` signed in to a moto Cognito user pool and client, once per session.

    Each is created (confirmed, with a permanent password) and takes the IdToken of an
    ADMIN_USER_PASSWORD_AUTH sign-in. Tokens are plain strings, so they outlive the
    pool's own mock (making a pool costs moto a key pair: a third of a second).
    """
    with mock_aws():
        cognito = boto3.client(
            "cognito-idp",
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        pool_id = cognito.create_user_pool(PoolName="liminal-transit-readers-test")["UserPool"][
            "Id"
        ]
        client_id = cognito.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="reader-web",
            ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        readers = {}
        for username in READER_NAMES:
            password = f"Reader-pass-{username}-1!"
            cognito.admin_create_user(
                UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS"
            )
            cognito.admin_set_user_password(
                UserPoolId=pool_id, Username=username, Password=password, Permanent=True
            )
            result = cognito.admin_initiate_auth(
                UserPoolId=pool_id,
                ClientId=client_id,
                AuthFlow="ADMIN_USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": username, "PASSWORD": password},
            )["AuthenticationResult"]
            token = result["IdToken"]
            readers[username] = Reader(username, token, token_claims(token))
    return readers


@pytest.fixture
def sign_in(issued_readers: dict[str, Reader]) -> Callable[[str], Reader]:
    """The signed-in `Reader` of one of `READER_NAMES` (tokens issued by moto's Cognito)."""
    return issued_readers.__getitem__
