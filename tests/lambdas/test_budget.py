"""budget.py: each reader's generations per minute and per day, in memory and in DynamoDB.

Time is a `FakeClock`; windows pass by advancing it. The DynamoDB budget runs on
moto's session table; two instances on one table are two containers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from lambdas.story_generator.api import error_response
from lambdas.story_generator.budget import (
    DynamoDBReaderBudget,
    MemoryReaderBudget,
    NoBudget,
    ReaderBudget,
    build_reader_budget,
)
from lambdas.story_generator.errors import GenerationBudgetExceeded
from lambdas.story_generator.settings import load_settings
from tests.lambdas.fake_providers import FakeClock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# 10:00:00 UTC on a day; minutes and days are aligned on the epoch.
START = 1_800_000_000 - 1_800_000_000 % 86_400 + 36_000
MakeBudget = Callable[..., ReaderBudget]


@pytest.fixture(params=["memory", "dynamodb"])
def make_budget(request: pytest.FixtureRequest) -> MakeBudget:
    """A factory of budgets of one kind; DynamoDB ones share one moto table."""
    if request.param == "memory":
        return lambda per_minute, per_day, clock: MemoryReaderBudget(
            per_minute, per_day, clock=clock
        )
    table = request.getfixturevalue("session_table")
    return lambda per_minute, per_day, clock: DynamoDBReaderBudget(
        table, per_minute, per_day, client=boto3.client("dynamodb"), clock=clock
    )


def charges(budget: ReaderBudget, reader: str, times: int) -> list[float | None]:
    """For each of `times` charges: None when accepted, else the refusal's retry_after_s."""
    outcomes: list[float | None] = []
    for _ in range(times):
        try:
            budget.charge(reader)
        except GenerationBudgetExceeded as refused:
            outcomes.append(refused.retry_after_s)
        else:
            outcomes.append(None)
    return outcomes


def test_a_reader_over_the_minute_limit_waits_for_the_next_minute(
    make_budget: MakeBudget,
) -> None:
    clock = FakeClock(START + 15)
    budget = make_budget(3, 100, clock)

    assert charges(budget, "alice", 4) == [None, None, None, 45.0], "45 s to 10:01:00"
    clock.advance(45)
    assert charges(budget, "alice", 1) == [None], "a new minute, a new count"


def test_a_reader_over_the_day_limit_waits_for_the_next_utc_day(make_budget: MakeBudget) -> None:
    clock = FakeClock(START)
    budget = make_budget(2, 3, clock)

    outcomes = []
    for _ in range(3):
        outcomes += charges(budget, "alice", 1)
        clock.advance(60)

    assert outcomes == [None, None, None]
    assert charges(budget, "alice", 1) == [14 * 3600 - 180.0], "until midnight UTC"
    clock.advance(14 * 3600 - 180)
    assert charges(budget, "alice", 1) == [None]


def test_a_refusal_by_the_minute_is_not_charged_to_the_day(make_budget: MakeBudget) -> None:
    clock = FakeClock(START)
    budget = make_budget(1, 2, clock)

    assert charges(budget, "alice", 5) == [None, 60.0, 60.0, 60.0, 60.0]
    clock.advance(60)
    assert charges(budget, "alice", 1) == [None], "the four refused requests cost no day budget"


def test_each_reader_has_its_own_budget(make_budget: MakeBudget) -> None:
    budget = make_budget(2, 100, FakeClock(START))

    assert charges(budget, "alice", 3)[-1] is not None
    assert charges(budget, "bob", 2) == [None, None], "alice's spending is not bob's"


def test_the_refusal_is_a_429_with_retry_after_and_the_limit(make_budget: MakeBudget) -> None:
    budget = make_budget(1, 100, FakeClock(START + 59.5))
    budget.charge("alice")

    with pytest.raises(GenerationBudgetExceeded) as refused:
        budget.charge("alice")

    response = error_response(refused.value)
    assert response.status == 429
    assert response.headers["Retry-After"] == "1", "whole seconds, at least 1"
    error: Any = response.body["error"]
    assert (error["code"], error["limit"], error["window"]) == (
        "generation_budget_exceeded",
        1,
        "minute",
    )
    assert "retry in 1 s" in error["message"]


def test_the_memory_budget_counts_exactly_under_concurrent_charges() -> None:
    budget = MemoryReaderBudget(10, 1000, clock=FakeClock(START))
    accepted = run_concurrently([budget], threads=32)
    assert accepted == 10, "thread-safe: ten accepted however the charges interleave"


# DynamoDB ---------------------------------------------------------------------------


def item(dynamodb: DynamoDBClient, table: str, session_id: str) -> dict[str, Any]:
    reply = dynamodb.get_item(
        TableName=table, Key={"session_id": {"S": session_id}, "timestamp": {"N": "0"}}
    )
    return {name: next(iter(value.values())) for name, value in reply["Item"].items()}


def test_dynamodb_counters_are_items_keyed_by_reader_and_window_with_a_ttl(
    dynamodb: DynamoDBClient, session_table: str
) -> None:
    clock = FakeClock(START + 15)
    budget = DynamoDBReaderBudget(session_table, 5, 50, client=dynamodb, clock=clock)

    budget.charge("reader-1")
    budget.charge("reader-1")

    minute, day = START // 60, START // 86_400
    assert item(dynamodb, session_table, f"budget#reader-1#m{minute}") == {
        "session_id": f"budget#reader-1#m{minute}",
        "timestamp": "0",
        "generations": "2",
        "expires_at": str((minute + 1) * 60 + 300),
    }
    assert item(dynamodb, session_table, f"budget#reader-1#d{day}")["expires_at"] == str(
        (day + 1) * 86_400 + 300
    ), "a little after the window: the table does not keep them"


def test_two_containers_share_one_readers_budget(
    dynamodb: DynamoDBClient, session_table: str
) -> None:
    clock = FakeClock(START)
    containers = [
        DynamoDBReaderBudget(session_table, 4, 100, client=boto3.client("dynamodb"), clock=clock)
        for _ in range(2)
    ]

    outcomes = [charges(containers[i % 2], "alice", 1)[0] for i in range(6)]

    assert outcomes == [None, None, None, None, 60.0, 60.0], (
        "four in all, not four per container: a reader gains nothing from reaching several"
    )


class AtomicUpdates:
    """A DynamoDB client whose update_item calls apply one at a time.

    DynamoDB applies concurrent updates of one item atomically; moto, in one process
    with threads, can lose some. The lock gives the tests DynamoDB's guarantee back.
    """

    _lock = threading.Lock()

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client

    def update_item(self, **arguments: Any) -> Any:
        with self._lock:
            return self._client.update_item(**arguments)


def run_concurrently(budgets: list[Any], threads: int) -> int:
    """How many of `threads` charges for one reader, released at once, are accepted."""
    barrier = threading.Barrier(threads)
    accepted: list[bool] = []

    def charge(budget: ReaderBudget) -> None:
        barrier.wait(5)
        try:
            budget.charge("alice")
        except GenerationBudgetExceeded:
            accepted.append(False)
        else:
            accepted.append(True)

    workers = [
        threading.Thread(target=charge, args=(budgets[i % len(budgets)],)) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert len(accepted) == threads, "every charge came back"
    return sum(accepted)


def test_concurrent_charges_in_two_containers_never_exceed_the_limit(
    session_table: str,
) -> None:
    clock = FakeClock(START)
    containers = [
        DynamoDBReaderBudget(
            session_table,
            10,
            1000,
            client=AtomicUpdates(boto3.client("dynamodb")),  # type: ignore[arg-type]
            clock=clock,
        )
        for _ in range(2)
    ]

    assert run_concurrently(containers, threads=32) == 10


class FailingClient:
    """A DynamoDB client that is down: every call raises, and is counted."""

    def __init__(self) -> None:
        self.calls = 0

    def update_item(self, **arguments: Any) -> Any:
        self.calls += 1
        raise ConnectionError("DynamoDB is unreachable")


def test_a_failing_table_fails_open_to_this_containers_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START)
    client = FailingClient()
    budget = DynamoDBReaderBudget(
        "table",
        2,
        100,
        client=client,  # type: ignore[arg-type]
        clock=clock,
    )

    with caplog.at_level("WARNING"):
        outcomes = charges(budget, "alice", 3)

    assert outcomes == [None, None, 60.0], (
        "never a 429 for a DynamoDB blip, yet not unlimited: this container still counts"
    )
    assert client.calls == 1, "left alone for a while after failing: no wait on every charge"
    assert "reader budget store failed" in caplog.text
    clock.advance(60)
    budget.charge("alice")
    assert client.calls == 2, "tried again once the back-off is over"


def test_no_budget_accepts_everything() -> None:
    budget = NoBudget()
    for _ in range(1000):
        budget.charge("alice")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_minute"):
        MemoryReaderBudget(0, 10)
    with pytest.raises(ValueError, match="per_day"):
        DynamoDBReaderBudget("table", 1, -1)
    with pytest.raises(ValueError, match="reader_id"):
        MemoryReaderBudget(1, 1).charge("")


def test_build_reader_budget_follows_the_settings() -> None:
    limits = json.dumps({"per_minute": 5, "per_day": 50})
    assert isinstance(build_reader_budget(load_settings({})), NoBudget)
    assert isinstance(
        build_reader_budget(load_settings({"READER_BUDGET": limits})), MemoryReaderBudget
    )
    assert isinstance(
        build_reader_budget(
            load_settings({"READER_BUDGET": limits, "SESSION_TABLE_NAME": "sessions"})
        ),
        DynamoDBReaderBudget,
    )
