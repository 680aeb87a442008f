"""Concurrent duplicates pay for one generation, on moto DynamoDB, through the handler.

Each request runs in its own handler (as in its own Lambda container) on its own
thread; all share the table and one fake generator that counts its calls. The first
request of a kind takes its claim (a keyed start) or its lease (a choice) with one
conditional write; the duplicates get the stored answer once there is one, or a 409
`request_in_progress` with Retry-After meanwhile.

moto evaluates a write's condition and stores the item without a lock in between, so
the handlers' DynamoDB client is `SerialisedDynamoDB`: it makes each call atomic, as
DynamoDB does, and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from lambdas.story_generator import handler as handler_module
from lambdas.story_generator.errors import NoProviderAvailable
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.settings import load_settings
from tests.lambdas.aws_fixtures import Reader
from tests.lambdas.story_doubles import FakeRouter, Gate, RecordingBudget, Reply, invoke

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PARALLEL = 50
START = {"genre": "liminal", "premise": "The night bus"}


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def budget() -> RecordingBudget:
    return RecordingBudget()


@pytest.fixture
def containers(
    session_table: str,
    serialised_dynamodb: DynamoDBClient,
    router: FakeRouter,
    budget: RecordingBudget,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[], StoryHandler]:
    """Builds a new handler, as a new container would, on the shared table and generator."""
    real = handler_module.aws_client

    def client(service: Any, **options: Any) -> Any:
        return serialised_dynamodb if service == "dynamodb" else real(service, **options)

    monkeypatch.setattr(handler_module, "aws_client", client)
    settings = load_settings({"SESSION_TABLE_NAME": session_table})
    return lambda: build_handler(settings, generator=router, budget=budget)


@pytest.fixture
def alice(sign_in: Callable[[str], Reader]) -> Reader:
    return sign_in("alice")


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(PARALLEL) as executor:
        yield executor


def send_all(
    pool: ThreadPoolExecutor,
    containers: Callable[[], StoryHandler],
    reader: Reader,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str] | None = None,
) -> list[Future[Reply]]:
    handlers = [containers() for _ in range(PARALLEL)]
    return [
        pool.submit(invoke, handler, method, path, body, headers, claims=reader.claims)
        for handler in handlers
    ]


def held_until_the_others_answer(futures: list[Future[Reply]], gate: Gate) -> list[Reply]:
    """The replies, the generation held until every other request has answered."""
    replies = []
    for future in as_completed(futures, timeout=60):
        replies.append(future.result())
        if len(replies) == len(futures) - 1:
            gate.open()
    return replies


def test_parallel_identical_choices_cause_one_generation(
    pool: ThreadPoolExecutor,
    containers: Callable[[], StoryHandler],
    router: FakeRouter,
    budget: RecordingBudget,
    alice: Reader,
) -> None:
    session_id = invoke(containers(), "POST", "/stories", START, claims=alice.claims).body[
        "session_id"
    ]
    gate = Gate()
    router.before_reply = gate
    path = f"/stories/{session_id}/choices"
    replies = held_until_the_others_answer(
        send_all(pool, containers, alice, "POST", path, {"beat": 0, "choice": 1}), gate
    )
    assert len(router.requests) == 2, "the start, and one generation for 50 identical choices"
    assert len(budget.charged) == 2, "the duplicates are not charged"
    busy = [reply for reply in replies if reply.status == 409]
    done = [reply for reply in replies if reply.status == 200]
    assert (len(busy), len(done)) == (PARALLEL - 1, 1), [reply.status for reply in replies]
    assert {reply.body["error"]["code"] for reply in busy} == {"request_in_progress"}
    assert {reply.headers["Retry-After"] for reply in busy} == {"3"}
    retried = invoke(containers(), "POST", path, {"beat": 0, "choice": 1}, claims=alice.claims)
    assert retried.body == done[0].body and len(router.requests) == 2, "then the stored beat"


def test_parallel_identical_keyed_starts_cause_one_generation(
    pool: ThreadPoolExecutor,
    containers: Callable[[], StoryHandler],
    router: FakeRouter,
    alice: Reader,
) -> None:
    gate = Gate()
    router.before_reply = gate
    key = {"Idempotency-Key": "start-once"}
    replies = held_until_the_others_answer(
        send_all(pool, containers, alice, "POST", "/stories", START, key), gate
    )
    assert len(router.requests) == 1
    created = [reply for reply in replies if reply.status == 201]
    busy = [reply for reply in replies if reply.status == 409]
    assert (len(created), len(busy)) == (1, PARALLEL - 1), [reply.status for reply in replies]
    assert {reply.body["error"]["code"] for reply in busy} == {"request_in_progress"}
    retried = invoke(containers(), "POST", "/stories", START, key, claims=alice.claims)
    assert (retried.status, retried.body) == (201, created[0].body)
    listed = invoke(containers(), "GET", "/stories", claims=alice.claims).body["stories"]
    assert [story["session_id"] for story in listed] == [created[0].body["session_id"]]


def test_free_running_identical_choices_cause_one_generation(
    pool: ThreadPoolExecutor,
    containers: Callable[[], StoryHandler],
    router: FakeRouter,
    alice: Reader,
) -> None:
    session_id = invoke(containers(), "POST", "/stories", START, claims=alice.claims).body[
        "session_id"
    ]
    path = f"/stories/{session_id}/choices"
    futures = send_all(pool, containers, alice, "POST", path, {"beat": 0, "choice": 2})
    replies = [future.result(timeout=60) for future in futures]
    assert len(router.requests) == 2
    beats = {str(reply.body) for reply in replies if reply.status == 200}
    assert len(beats) == 1, "whoever answers 200 answers the one stored beat"
    assert all(
        reply.status == 200 or reply.body["error"]["code"] == "request_in_progress"
        for reply in replies
    )


def test_two_different_starts_on_one_key_never_share_a_story(
    pool: ThreadPoolExecutor,
    containers: Callable[[], StoryHandler],
    router: FakeRouter,
    alice: Reader,
) -> None:
    gate = Gate()
    router.before_reply = gate
    key = {"Idempotency-Key": "one-key"}
    first = pool.submit(invoke, containers(), "POST", "/stories", START, key, claims=alice.claims)
    assert gate.entered.wait(10)
    other = invoke(containers(), "POST", "/stories", {"genre": "horror"}, key, claims=alice.claims)
    gate.open()
    assert first.result(timeout=10).status == 201
    assert (other.status, other.body["error"]["code"]) == (409, "idempotency_key_reused")
    again = invoke(containers(), "POST", "/stories", {"genre": "horror"}, key, claims=alice.claims)
    assert (again.status, again.body["error"]["code"]) == (409, "idempotency_key_reused")


def raw_items(table: str, key: str) -> list[dict[str, Any]]:
    return boto3.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="session_id = :id",
        ExpressionAttributeValues={":id": {"S": key}},
        ConsistentRead=True,
    )["Items"]


def test_a_failed_generation_leaves_the_table_exactly_as_it_was(
    containers: Callable[[], StoryHandler], router: FakeRouter, session_table: str, alice: Reader
) -> None:
    session_id = invoke(containers(), "POST", "/stories", START, claims=alice.claims).body[
        "session_id"
    ]
    before = raw_items(session_table, session_id)
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=5)
    path = f"/stories/{session_id}/choices"
    assert (
        invoke(containers(), "POST", path, {"beat": 0, "choice": 0}, claims=alice.claims).status
        == 503
    )
    assert raw_items(session_table, session_id) == before, "the lease was given back"
    key = {"Idempotency-Key": "k"}
    failed = invoke(containers(), "POST", "/stories", START, key, claims=alice.claims)
    assert failed.status == 503
    scanned = boto3.client("dynamodb").scan(TableName=session_table)["Items"]
    assert not [item for item in scanned if item["session_id"]["S"].startswith("idem#")], (
        "the claim was given back"
    )
    router.fail = None
    assert (
        invoke(containers(), "POST", path, {"beat": 0, "choice": 1}, claims=alice.claims).status
        == 200
    )
    assert invoke(containers(), "POST", "/stories", START, key, claims=alice.claims).status == 201
