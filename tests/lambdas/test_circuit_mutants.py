"""circuit.py where the other circuit tests leave it loose: this container's view of a
probe, the bookkeeping of queued writes, and the exact requests of the DynamoDB store.

- A container's view says whether it holds the half-open probe: once it claims one,
  once a failure ends it and once it gives it back, even while the store is down (its
  view alone decides then) and whatever the clock reads (0 means "no probe" at any
  time, a clock that starts at zero included).
- The writes queued for a provider keep a re-read, and the result of an earlier write,
  from overwriting the view with what the store held before them; a write dropped, or
  one that raises, leaves that bookkeeping and the view as they were.
- A probe that lapsed is not given back: no store write.
- The DynamoDB store sends exactly its documented requests (`Stubber`), and reads
  replies that DynamoDB should never send (an update without `Attributes`, unprocessed
  keys the load never asked for) as clean, or leaves them out, rather than fail.

Time is a `FakeClock`; a write that must stay queued waits on a `BlockingStore`, and a
store that is down is an `OutageStore`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.story_generator.circuit import (
    BackgroundWriter,
    CircuitBreaker,
    CircuitRecord,
    CircuitState,
    CircuitStore,
    DynamoDBCircuitStore,
    MemoryCircuitStore,
)
from lambdas.story_generator.providers import FailureKind
from lambdas.story_generator.settings import RouterSettings
from tests.lambdas.aws_fixtures import REGION
from tests.lambdas.fake_providers import FakeClock
from tests.lambdas.router_doubles import BlockingStore, fail
from tests.lambdas.test_circuit_stores import ScriptedClient, key

NOW = 1_800_000_000.0
TABLE = "liminal-transit-story-sessions-test"
# Threshold 3, cool-down 30 s, probes lapse after the 25 s deadline, views cached 2 s.
SETTINGS = RouterSettings(
    deadline_s=25.0, circuit_failure_threshold=3, circuit_cooldown_s=30.0, circuit_cache_s=2.0
)


def breaker(
    store: CircuitStore,
    clock: FakeClock,
    *,
    names: tuple[str, ...] = ("p",),
    writer: BackgroundWriter | None = None,
    **settings: Any,
) -> CircuitBreaker:
    """A breaker over `names` with `SETTINGS` changed by `settings`."""
    return CircuitBreaker(store, names, replace(SETTINGS, **settings), clock=clock, writer=writer)


@pytest.fixture
def blocking_store() -> Iterator[BlockingStore]:
    """A `BlockingStore`, released at teardown."""
    store = BlockingStore()
    yield store
    store.release.set()


class OutageStore(MemoryCircuitStore):
    """Every call raises while `down` (DynamoDB unreachable, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _reach(self) -> None:
        if self.down:
            raise ConnectionError("the store is unreachable")

    def load(self, names: Sequence[str]) -> dict[str, CircuitRecord]:
        self._reach()
        return super().load(names)

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        self._reach()
        return super().add_failure(name, failure, expires_at)

    def open(self, name: str, until: float, expires_at: float) -> None:
        self._reach()
        super().open(name, until, expires_at)

    def reset(self, name: str) -> None:
        self._reach()
        super().reset(name)

    def claim_probe(self, name: str, now: float, until: float) -> bool:
        self._reach()
        return super().claim_probe(name, now, until)

    def release_probe(self, name: str, until: float) -> None:
        self._reach()
        super().release_probe(name, until)


class ClaimFailingStore(MemoryCircuitStore):
    """Reads and failure writes work; taking the probe raises (throttled, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    def claim_probe(self, name: str, now: float, until: float) -> bool:
        self.claims += 1
        raise RuntimeError("throttled")


class ReleaseCountingStore(MemoryCircuitStore):
    """Counts the `release_probe` writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.releases = 0

    def release_probe(self, name: str, until: float) -> None:
        self.releases += 1
        super().release_probe(name, until)


class UnprintableError(Exception):
    """An error whose message cannot even be formatted (a bug of the store)."""

    def __str__(self) -> str:
        raise ValueError("no message")


class BuggyStore(MemoryCircuitStore):
    """Its failure writes raise an `UnprintableError`: past the guard that logs store failures."""

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        raise UnprintableError


# This container's view of the probe ---------------------------------------------------


def test_while_the_store_cannot_take_the_probe_this_container_lets_one_probe_through() -> None:
    clock = FakeClock()
    store = ClaimFailingStore()
    circuit = breaker(store, clock)
    fail(circuit, 3)
    clock.advance(30)

    assert circuit.allow("p"), "the store failed: this container's view (free) decides"
    assert not circuit.allow("p"), "and its view now holds that probe"
    clock.advance(1)
    assert not circuit.allow("p"), "for as long as the probe runs"
    assert store.claims == 1, "the store was asked once"


def test_a_failed_probe_ends_this_containers_probe_so_it_probes_after_the_next_cooldown() -> None:
    """The store is down from the failed probe on: only this container's view decides."""
    clock = FakeClock()
    switch = OutageStore()
    # The cool-down (10 s) ends before a probe would lapse (the 25 s deadline).
    circuit = breaker(switch, clock, circuit_cooldown_s=10.0)
    fail(circuit, 3)
    clock.advance(10)
    assert circuit.allow("p"), "the probe"
    switch.down = True

    circuit.record_failure("p", FailureKind.TIMEOUT)
    assert circuit.flush(5)
    assert circuit.states() == {"p": CircuitState.OPEN}
    clock.advance(10)

    assert circuit.states() == {"p": CircuitState.HALF_OPEN}
    assert circuit.allow("p"), "the failure ended the probe: the next one goes"


def test_a_failure_leaves_no_probe_even_on_a_clock_that_starts_at_zero() -> None:
    clock = FakeClock(0.0)
    switch = OutageStore()
    switch.down = True  # this container's view alone decides
    circuit = breaker(
        switch,
        clock,
        circuit_failure_threshold=1,
        circuit_cooldown_s=0.25,
    )

    circuit.record_failure("p", FailureKind.UNAVAILABLE)
    assert circuit.flush(5)
    clock.advance(0.25)

    assert circuit.states() == {"p": CircuitState.HALF_OPEN}
    assert circuit.allow("p"), "no probe was ever taken: a quarter second in, it goes"


def test_a_probe_given_back_is_free_at_once_even_on_a_clock_that_starts_at_zero() -> None:
    clock = FakeClock(0.0)
    circuit = breaker(
        MemoryCircuitStore(), clock, circuit_failure_threshold=1, circuit_cooldown_s=0.25
    )
    fail(circuit, 1)
    clock.advance(0.25)
    assert circuit.allow("p")

    circuit.release_probe("p")
    assert circuit.flush(5)

    assert circuit.allow("p"), "given back: the next call probes, a quarter second in"


@pytest.mark.parametrize("lapsed_s", [25.0, 40.0], ids=["lapsed-this-instant", "lapsed"])
def test_a_probe_that_lapsed_is_not_given_back(lapsed_s: float) -> None:
    clock = FakeClock()
    store = ReleaseCountingStore()
    circuit = breaker(store, clock)
    fail(circuit, 3)
    clock.advance(30)
    assert circuit.allow("p")
    clock.advance(lapsed_s)

    circuit.release_probe("p")
    assert circuit.flush(5)

    assert store.releases == 0, "the probe is free already: no store write"
    assert store.load(["p"])["p"].probe_until == NOW + 30 + 25


def test_a_probe_given_back_with_other_writes_queued_is_free_at_once_once_written(
    blocking_store: BlockingStore,
) -> None:
    """The view is read again while the release still waits: it must keep the release."""
    clock = FakeClock()
    circuit = breaker(blocking_store, clock, names=("p", "q"))
    blocking_store.open("p", NOW, NOW + 86_400)
    assert circuit.allow("p"), "the probe"
    circuit.record_failure("q", FailureKind.UNAVAILABLE)  # its write waits in the store
    circuit.release_probe("p")  # queued behind it
    clock.advance(2)
    assert circuit.states() == {"p": CircuitState.HALF_OPEN, "q": CircuitState.CLOSED}

    blocking_store.release.set()
    assert circuit.flush(5)

    assert blocking_store.load(["p"])["p"].probe_until == 0.0, "given back in the store"
    assert circuit.allow("p"), "and in this view: the next call probes without waiting"


# Queued writes and this container's view ----------------------------------------------


def test_a_success_queued_behind_a_failures_write_keeps_the_view_closed(
    blocking_store: BlockingStore,
) -> None:
    clock = FakeClock()
    circuit = breaker(blocking_store, clock, circuit_failure_threshold=1)
    assert circuit.states() == {"p": CircuitState.CLOSED}, "read: cached for 2 s"
    circuit.record_failure("p", FailureKind.UNAVAILABLE)  # opens; its write waits
    circuit.record_success("p")  # closes; its reset is queued behind

    blocking_store.release.set()
    assert circuit.flush(5)

    assert blocking_store.load(["p"])["p"] == CircuitRecord(), "reset in the store"
    assert circuit.states() == {"p": CircuitState.CLOSED}, "the failure's result came too late"
    assert circuit.allow("p")


def test_a_write_dropped_behind_another_providers_leaves_its_view_following_the_store(
    blocking_store: BlockingStore,
) -> None:
    clock = FakeClock()
    circuit = breaker(blocking_store, clock, names=("p", "q"), writer=BackgroundWriter(capacity=1))
    circuit.record_failure("q", FailureKind.UNAVAILABLE)  # the one write that may wait
    circuit.record_failure("p", FailureKind.UNAVAILABLE)  # dropped
    blocking_store.release.set()
    assert circuit.flush(5)
    blocking_store.open("p", NOW + 30, NOW + 86_400)  # another container opened it

    assert circuit.states() == {"p": CircuitState.OPEN, "q": CircuitState.CLOSED}, (
        "no write of p is queued: its view is the store's"
    )


def test_a_write_that_raises_past_the_store_guard_leaves_this_containers_view(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    circuit = breaker(BuggyStore(), clock, circuit_failure_threshold=1)
    assert circuit.states() == {"p": CircuitState.CLOSED}, "read: cached for 2 s"

    with caplog.at_level(logging.ERROR):
        circuit.record_failure("p", FailureKind.UNAVAILABLE)
        assert circuit.flush(5), "the write raised and is done with"

    assert [r.getMessage() for r in caplog.records] == ["circuit write raised"]

    assert circuit.states() == {"p": CircuitState.OPEN}, "the failure still counts here"
    assert not circuit.allow("p")


# The DynamoDB store's requests --------------------------------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[DynamoDBCircuitStore, Stubber]]:
    """A DynamoDB store whose client answers only what the test queued on the stub."""
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        yield DynamoDBCircuitStore(TABLE, client), stub
        stub.assert_no_pending_responses()


ADD_FAILURE = {
    "TableName": TABLE,
    "Key": key("p"),
    "UpdateExpression": (
        "ADD failures :one SET last_failure = :failure, probe_until = :zero, "
        "expires_at = :expires_at"
    ),
    "ExpressionAttributeValues": {
        ":one": {"N": "1"},
        ":zero": {"N": "0"},
        ":failure": {"S": "timeout"},
        ":expires_at": {"N": str(int(NOW) + 86_400)},
    },
    "ReturnValues": "ALL_NEW",
}


def test_a_failure_is_one_atomic_add_whose_new_item_is_the_record(
    stubbed: tuple[DynamoDBCircuitStore, Stubber],
) -> None:
    store, stub = stubbed
    item = {
        **key("p"),
        "failures": {"N": "4"},
        "open_until": {"N": "1800000030.5"},
        "probe_until": {"N": "0"},
        "last_failure": {"S": "timeout"},
        "expires_at": {"N": str(int(NOW) + 86_400)},
    }
    stub.add_response("update_item", {"Attributes": item}, ADD_FAILURE)

    assert store.add_failure("p", "timeout", NOW + 86_400.75) == CircuitRecord(
        4, 1_800_000_030.5, 0.0, "timeout"
    )


def test_a_failure_reply_without_attributes_reads_as_a_clean_record(
    stubbed: tuple[DynamoDBCircuitStore, Stubber],
) -> None:
    store, stub = stubbed
    stub.add_response("update_item", {}, ADD_FAILURE)

    assert store.add_failure("p", "timeout", NOW + 86_400.75) == CircuitRecord()


def test_opening_is_one_update_of_open_until_and_the_ttl(
    stubbed: tuple[DynamoDBCircuitStore, Stubber],
) -> None:
    store, stub = stubbed
    stub.add_response(
        "update_item",
        {},
        {
            "TableName": TABLE,
            "Key": key("p"),
            "UpdateExpression": "SET open_until = :until, expires_at = :expires_at",
            "ExpressionAttributeValues": {
                ":until": {"N": repr(NOW + 30.25)},
                ":expires_at": {"N": str(int(NOW) + 86_401)},
            },
        },
    )

    store.open("p", NOW + 30.25, NOW + 86_401.5)


CLAIM_PROBE = {
    "TableName": TABLE,
    "Key": key("p"),
    "UpdateExpression": "SET probe_until = :until",
    "ConditionExpression": (
        "open_until > :zero AND open_until <= :now AND "
        "(attribute_not_exists(probe_until) OR probe_until <= :now)"
    ),
    "ExpressionAttributeValues": {
        ":until": {"N": repr(NOW + 25)},
        ":now": {"N": repr(NOW)},
        ":zero": {"N": "0"},
    },
}


def test_claiming_the_probe_is_one_conditional_write_that_only_one_caller_wins(
    stubbed: tuple[DynamoDBCircuitStore, Stubber],
) -> None:
    store, stub = stubbed
    stub.add_response("update_item", {}, CLAIM_PROBE)
    stub.add_client_error(
        "update_item", "ConditionalCheckFailedException", "refused", expected_params=CLAIM_PROBE
    )

    assert store.claim_probe("p", NOW, NOW + 25) is True
    assert store.claim_probe("p", NOW, NOW + 25) is False


def test_giving_the_probe_back_is_one_conditional_write_on_that_probe(
    stubbed: tuple[DynamoDBCircuitStore, Stubber],
) -> None:
    store, stub = stubbed
    release = {
        "TableName": TABLE,
        "Key": key("p"),
        "UpdateExpression": "SET probe_until = :zero",
        "ConditionExpression": "probe_until = :until",
        "ExpressionAttributeValues": {":until": {"N": repr(NOW + 25)}, ":zero": {"N": "0"}},
    }
    stub.add_response("update_item", {}, release)
    stub.add_client_error(
        "update_item", "ConditionalCheckFailedException", "refused", expected_params=release
    )

    store.release_probe("p", NOW + 25)
    store.release_probe("p", NOW + 25)  # another probe since: refused, and no error


def test_unprocessed_keys_the_load_did_not_ask_for_are_ignored() -> None:
    client = ScriptedClient(
        {
            "Responses": {"table": [{**key("p"), "failures": {"N": "2"}}]},
            "UnprocessedKeys": {"table": {"Keys": [key("q")]}},
        }
    )
    store = DynamoDBCircuitStore("table", client)  # type: ignore[arg-type]

    assert store.load(["p"]) == {"p": CircuitRecord(failures=2)}
