"""circuit.py's stores: the `CircuitStore` contract, the same for memory and DynamoDB,
and what the DynamoDB store writes, reads and is built with.

moto holds the DynamoDB table; a `ScriptedClient` stands in for DynamoDB where a
reply moto never gives (unprocessed keys, a reply without `Responses`) is needed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from lambdas.story_generator import circuit as circuit_module
from lambdas.story_generator.circuit import (
    CircuitBreaker,
    CircuitRecord,
    CircuitState,
    CircuitStore,
    DynamoDBCircuitStore,
    MemoryCircuitStore,
)
from lambdas.story_generator.providers import FailureKind
from lambdas.story_generator.settings import RouterSettings
from tests.lambdas.fake_providers import FakeClock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> CircuitStore:
    """An empty store of each kind."""
    if request.param == "memory":
        return MemoryCircuitStore()
    return DynamoDBCircuitStore(
        request.getfixturevalue("session_table"), request.getfixturevalue("dynamodb")
    )


def record(store: CircuitStore, name: str = "p") -> CircuitRecord:
    """`name`'s record."""
    return store.load([name])[name]


def opened(store: CircuitStore, until: float = NOW, name: str = "p") -> CircuitStore:
    """`store` after one failure of `name` and its circuit opened until `until`."""
    store.add_failure(name, "unavailable", NOW + 86_400)
    store.open(name, until, NOW + 86_400)
    return store


def test_a_circuit_never_written_is_clean(store: CircuitStore) -> None:
    assert store.load(["p", "q"]) == {"p": CircuitRecord(), "q": CircuitRecord()}


def test_failures_add_up_and_the_last_one_is_kept(store: CircuitStore) -> None:
    first = store.add_failure("p", "timeout", NOW)
    second = store.add_failure("p", "unauthorized", NOW)

    assert (first.failures, first.last_failure) == (1, "timeout")
    assert second == CircuitRecord(failures=2, last_failure="unauthorized")
    assert record(store) == second and record(store, "q") == CircuitRecord()


def test_opening_keeps_the_count_and_a_reset_forgets_everything(store: CircuitStore) -> None:
    opened(store, until=NOW + 30.5)

    assert record(store) == CircuitRecord(
        failures=1, open_until=NOW + 30.5, last_failure="unavailable"
    )
    store.reset("p")
    assert record(store) == CircuitRecord()
    store.reset("p")  # resetting a clean circuit is no error
    assert record(store) == CircuitRecord()


def test_opening_a_circuit_never_written_opens_it(store: CircuitStore) -> None:
    store.open("p", NOW + 30, NOW + 86_400)

    assert record(store).open_until == NOW + 30


@pytest.mark.parametrize(
    ("open_until", "claimable"),
    [(NOW, True), (NOW - 10, True), (NOW + 0.5, False)],
    ids=["cooled-down-this-instant", "cooled-down", "still-cooling-down"],
)
def test_the_probe_is_claimable_once_the_cooldown_is_over(
    store: CircuitStore, open_until: float, claimable: bool
) -> None:
    opened(store, until=open_until)

    assert store.claim_probe("p", NOW, NOW + 25) is claimable
    assert record(store).probe_until == (NOW + 25 if claimable else 0.0)


def test_a_closed_circuit_has_no_probe_to_claim(store: CircuitStore) -> None:
    store.add_failure("p", "unavailable", NOW)  # counted, never opened

    assert store.claim_probe("p", NOW, NOW + 25) is False
    assert store.claim_probe("never-written", NOW, NOW + 25) is False
    assert record(store).probe_until == 0.0


@pytest.mark.parametrize(
    ("probe_until", "claimable"),
    [(NOW + 0.5, False), (NOW, True)],
    ids=["taken", "lapsed-this-instant"],
)
def test_a_taken_probe_is_free_again_once_it_lapses(
    store: CircuitStore, probe_until: float, claimable: bool
) -> None:
    opened(store, until=NOW - 30)
    assert store.claim_probe("p", NOW - 25, probe_until)

    assert store.claim_probe("p", NOW, NOW + 25) is claimable


def test_a_failure_ends_the_probe(store: CircuitStore) -> None:
    opened(store, until=NOW)
    assert store.claim_probe("p", NOW, NOW + 25)

    assert store.add_failure("p", "timeout", NOW).probe_until == 0.0
    assert record(store).probe_until == 0.0


def test_only_the_probe_claimed_until_that_time_is_released(store: CircuitStore) -> None:
    opened(store, until=NOW)
    assert store.claim_probe("p", NOW, NOW + 25)

    store.release_probe("p", NOW + 24)  # a stale release: another probe's
    assert record(store).probe_until == NOW + 25
    store.release_probe("p", NOW + 25)
    assert record(store) == CircuitRecord(
        failures=1, open_until=NOW, probe_until=0.0, last_failure="unavailable"
    )
    store.release_probe("q", NOW + 25)  # nothing to release: no error
    assert record(store, "q") == CircuitRecord()


# DynamoDB specifics -------------------------------------------------------------------


def item(dynamodb: DynamoDBClient, table: str, name: str = "p") -> dict[str, Any]:
    """The raw item of circuit `name`."""
    key = {"session_id": {"S": f"circuit#{name}"}, "timestamp": {"N": "0"}}
    return dict(dynamodb.get_item(TableName=table, Key=key).get("Item", {}))


def test_circuit_items_carry_a_whole_second_ttl(
    session_table: str, dynamodb: DynamoDBClient
) -> None:
    store = DynamoDBCircuitStore(session_table, dynamodb)

    store.add_failure("p", "timeout", NOW + 86_400.75)
    assert item(dynamodb, session_table)["expires_at"] == {"N": str(int(NOW) + 86_400)}
    store.open("p", NOW + 30.25, NOW + 86_401.5)

    written = item(dynamodb, session_table)
    assert written["expires_at"] == {"N": str(int(NOW) + 86_401)}, "TTL is epoch seconds"
    assert written["open_until"] == {"N": repr(NOW + 30.25)}, "to the fraction of a second"
    assert written["last_failure"] == {"S": "timeout"}


def test_the_breaker_writes_a_ttl_of_one_day_after_the_failure(
    session_table: str, dynamodb: DynamoDBClient
) -> None:
    clock = FakeClock(NOW)
    circuit = CircuitBreaker(
        DynamoDBCircuitStore(session_table, dynamodb),
        ["p"],
        RouterSettings(circuit_failure_threshold=1),
        clock=clock,
    )

    circuit.record_failure("p", FailureKind.UNAVAILABLE)
    assert circuit.flush(5)

    written = item(dynamodb, session_table)
    assert written["expires_at"] == {"N": str(int(NOW) + 86_400)}
    assert float(written["open_until"]["N"]) == NOW + 30


def test_releasing_a_probe_another_container_replaced_is_no_store_failure(
    session_table: str, dynamodb: DynamoDBClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(NOW)
    store = DynamoDBCircuitStore(session_table, dynamodb)
    circuit = CircuitBreaker(store, ["p"], RouterSettings(circuit_cache_s=0), clock=clock)
    opened(store, until=NOW)
    assert circuit.allow("p")
    store.release_probe("p", NOW + 25)
    assert store.claim_probe("p", NOW, NOW + 26), "another container's probe since"

    with caplog.at_level(logging.WARNING):
        circuit.release_probe("p")
        assert circuit.flush(5)

    assert "circuit store failed" not in caplog.text, "a failed condition is the expected case"
    assert record(store).probe_until == NOW + 26


class ScriptedClient:
    """A DynamoDB client double whose `batch_get_item` returns `reply`."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []

    def batch_get_item(self, **request: Any) -> dict[str, Any]:
        """Record `request`, return the scripted reply."""
        self.requests.append(request)
        return self.reply


def key(name: str) -> dict[str, Any]:
    """The key of circuit `name`."""
    return {"session_id": {"S": f"circuit#{name}"}, "timestamp": {"N": "0"}}


def test_keys_dynamodb_left_unprocessed_are_left_out_of_the_load() -> None:
    reply = {
        "Responses": {
            "table": [
                {
                    **key("p"),
                    "failures": {"N": "2"},
                    "open_until": {"N": "1800000030.5"},
                    "probe_until": {"N": "1800000055.5"},
                    "last_failure": {"S": "timeout"},
                }
            ]
        },
        "UnprocessedKeys": {"table": {"Keys": [key("q")]}},
    }
    client = ScriptedClient(reply)
    store = DynamoDBCircuitStore("table", client)  # type: ignore[arg-type]

    loaded = store.load(["p", "q", "r"])

    assert loaded == {
        "p": CircuitRecord(2, 1_800_000_030.5, 1_800_000_055.5, "timeout"),
        "r": CircuitRecord(),
    }, "q's state is unknown: left out, not reported clean"
    assert client.requests == [{"RequestItems": {"table": {"Keys": [key(n) for n in "pqr"]}}}]


def test_a_reply_without_responses_reads_as_clean_circuits() -> None:
    store = DynamoDBCircuitStore("table", ScriptedClient({}))  # type: ignore[arg-type]

    assert store.load(["p"]) == {"p": CircuitRecord()}


def test_an_unprocessed_key_leaves_the_breakers_view_of_that_circuit_alone() -> None:
    client = ScriptedClient({"Responses": {"table": []}})
    clock = FakeClock(NOW)
    circuit = CircuitBreaker(
        DynamoDBCircuitStore("table", client),  # type: ignore[arg-type]
        ["p", "q"],
        RouterSettings(circuit_cache_s=2),
        clock=clock,
    )
    circuit.record_failure("q", FailureKind.UNAUTHORIZED)  # its write fails: no update_item
    assert circuit.flush(5)
    clock.advance(2)  # the store is tried again
    client.reply = {"Responses": {"table": []}, "UnprocessedKeys": {"table": {"Keys": [key("q")]}}}

    assert circuit.states() == {"p": CircuitState.CLOSED, "q": CircuitState.OPEN}


def test_the_store_builds_its_own_short_client_without_retries_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    client = ScriptedClient({})

    def aws_client(*args: Any, **kwargs: Any) -> ScriptedClient:
        built.append((args, kwargs))
        return client

    monkeypatch.setattr(circuit_module, "aws_client", aws_client)
    store = DynamoDBCircuitStore("table")
    assert built == [], "nothing is built before the store is used"

    store.load(["p"])
    store.load(["p"])

    assert built == [
        (("dynamodb",), {"connect_timeout_s": 0.5, "read_timeout_s": 1.0, "attempts": 1})
    ], "built once, with the store's short timeouts and a single attempt"
    assert len(client.requests) == 2
