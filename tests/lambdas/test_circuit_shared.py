"""circuit.py across containers: one half-open probe among all of them, on either store,
and a store that was unreachable taken back into use once it answers again.

Each "container" is its own `CircuitBreaker` (and, for DynamoDB, its own
`DynamoDBCircuitStore` on the one moto table). Time is a `FakeClock`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import EndpointConnectionError

from lambdas.story_generator.circuit import (
    CircuitBreaker,
    CircuitRecord,
    CircuitState,
    CircuitStore,
    DynamoDBCircuitStore,
    MemoryCircuitStore,
)
from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers import FailureKind
from lambdas.story_generator.settings import RouterSettings
from tests.lambdas.fake_providers import FakeClock, FakeProvider, router_for

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REQUEST = GenerationRequest("", (Message("user", "Begin."),))
MOCK = {"name": "mock", "kind": "mock", "priority": 50}
# Threshold 3, cool-down 30 s, probes lapse after the 25 s deadline, views cached 2 s.
SETTINGS = RouterSettings(
    deadline_s=25.0, circuit_failure_threshold=3, circuit_cooldown_s=30.0, circuit_cache_s=2.0
)
NewStore = Callable[[], CircuitStore]


class Unreachable:
    """Wraps a store or a DynamoDB client: every method call raises while `down`.

    Calls are made one at a time (one lock for every instance), as DynamoDB makes
    each conditional write atomic and moto does not. (`aws_fixtures.SerialisedDynamoDB`
    cannot serve here: it wraps the client's `exceptions` attribute as a method too,
    so that `except client.exceptions.ConditionalCheckFailedException` raises
    AttributeError.) `calls` counts the method calls that reached the wrapped object.
    Never wrap one `Unreachable` in another: the lock is not reentrant.
    """

    _lock = threading.Lock()

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped
        self.down = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._wrapped, name)
        if not callable(attribute):
            return attribute  # a client's `exceptions`

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise EndpointConnectionError(endpoint_url="https://dynamodb.invalid")
            with self._lock:
                self.calls += 1
                return attribute(*args, **kwargs)

        return call


@pytest.fixture(params=["memory", "dynamodb"])
def new_store(request: pytest.FixtureRequest) -> NewStore:
    """Each call: one container's handle on the one shared store (memory or moto DynamoDB)."""
    if request.param == "memory":
        shared = MemoryCircuitStore()
        return lambda: shared
    table = request.getfixturevalue("session_table")
    client = Unreachable(request.getfixturevalue("dynamodb"))
    return lambda: DynamoDBCircuitStore(table, client)  # type: ignore[arg-type]


def container(store: CircuitStore, clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """One container's breaker over provider `p` (`SETTINGS`, changed by `settings`)."""
    return CircuitBreaker(store, ["p"], replace(SETTINGS, **settings), clock=clock)


def open_then_cool_down(circuit: CircuitBreaker, clock: FakeClock) -> None:
    """Three failures of `p` (written to the store), then the 30 s cool-down."""
    for _ in range(3):
        circuit.record_failure("p", FailureKind.UNAVAILABLE)
    assert circuit.flush(5)
    clock.advance(30)


def stored(store: CircuitStore, name: str = "p") -> CircuitRecord:
    """`name`'s record in `store`."""
    return store.load([name])[name]


# One probe across containers ----------------------------------------------------------


def test_after_the_cooldown_one_container_probes_and_the_others_see_it_open(
    new_store: NewStore,
) -> None:
    clock = FakeClock()
    first, second, third = (container(new_store(), clock) for _ in range(3))
    open_then_cool_down(first, clock)

    assert second.states() == {"p": CircuitState.HALF_OPEN}
    assert second.allow("p"), "exactly at the end of the cool-down, a probe goes"
    assert [first.allow("p"), third.allow("p")] == [False, False]
    for _ in range(3):  # each refused call re-reads the store: the probe is still taken there
        clock.advance(1)
        assert not first.allow("p") and not third.allow("p") and not second.allow("p")
    assert stored(new_store()).probe_until == clock.now - 3 + 25, "held for one deadline"


def test_a_successful_probe_closes_the_circuit_for_every_container(new_store: NewStore) -> None:
    clock = FakeClock()
    prober, other = container(new_store(), clock), container(new_store(), clock)
    open_then_cool_down(prober, clock)
    assert prober.allow("p") and not other.allow("p")
    assert not other.allow("p"), "re-read while the probe runs: still not allowed"

    prober.record_success("p")
    assert prober.flush(5)

    assert stored(new_store()) == CircuitRecord(), "the store forgets the circuit"
    clock.advance(2)  # the other container's cached view expires
    assert other.allow("p") and other.allow("p"), "closed: every call goes through"
    assert other.states() == {"p": CircuitState.CLOSED}


def test_a_failed_probe_opens_the_circuit_again_for_every_container(new_store: NewStore) -> None:
    clock = FakeClock()
    prober, other = container(new_store(), clock), container(new_store(), clock)
    open_then_cool_down(prober, clock)
    assert prober.allow("p") and not other.allow("p")

    prober.record_failure("p", FailureKind.TIMEOUT)
    assert prober.flush(5)

    record = stored(new_store())
    assert (record.failures, record.probe_until) == (4, 0.0), "counted, the probe ended"
    assert record.open_until == clock.now + 30, "a new cool-down from the failed probe"
    assert record.last_failure == "timeout"
    clock.advance(2)
    assert other.states() == {"p": CircuitState.OPEN} and not other.allow("p")
    clock.advance(28)
    assert other.allow("p"), "the next cool-down over: the other container probes this time"
    assert not prober.allow("p")


def test_a_probe_that_never_resolves_lapses_after_one_deadline(new_store: NewStore) -> None:
    clock = FakeClock()
    prober, other = container(new_store(), clock), container(new_store(), clock)
    open_then_cool_down(prober, clock)
    assert prober.allow("p")  # then its container is frozen, say

    clock.advance(24.5)
    assert not other.allow("p"), "half a second before the probe lapses"
    clock.advance(0.5)
    assert other.allow("p"), "the probe lapsed exactly one deadline after it was taken"
    assert not prober.allow("p"), "and the new one is the other container's alone"


def test_containers_racing_for_the_probe_let_exactly_one_through(new_store: NewStore) -> None:
    clock = FakeClock()
    containers = [container(new_store(), clock) for _ in range(6)]
    open_then_cool_down(containers[0], clock)
    for circuit in containers:
        assert circuit.states() == {"p": CircuitState.HALF_OPEN}, "each read the record"
    start = threading.Barrier(len(containers))
    allowed: list[bool] = []

    def race(circuit: CircuitBreaker) -> None:
        start.wait(timeout=5)
        allowed.append(circuit.allow("p"))

    threads = [threading.Thread(target=race, args=(circuit,)) for circuit in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(allowed) == [False] * 5 + [True]


def test_a_container_that_claimed_no_probe_cannot_give_one_back(new_store: NewStore) -> None:
    """The loser's view holds the winner's probe: giving that back would let a second probe go."""
    clock = FakeClock()
    winner, loser = container(new_store(), clock), container(new_store(), clock)
    open_then_cool_down(winner, clock)
    assert winner.allow("p") and not loser.allow("p")
    assert not loser.allow("p"), "re-read: the loser's view now holds the winner's probe"

    loser.release_probe("p")
    assert loser.flush(5)

    assert stored(new_store()).probe_until == clock.now + 25, "the winner's probe is untouched"
    clock.advance(2)
    assert not loser.allow("p")


def test_a_probe_is_given_back_once_only(new_store: NewStore) -> None:
    clock = FakeClock()
    prober, other = container(new_store(), clock), container(new_store(), clock)
    open_then_cool_down(prober, clock)
    assert prober.allow("p")
    prober.release_probe("p")
    assert prober.flush(5)
    assert other.allow("p"), "given back: the other container takes it"

    prober.release_probe("p")  # a second outcome of the same attempt, say
    assert prober.flush(5)

    assert stored(new_store()).probe_until == clock.now + 25, "the other's probe is untouched"


# A store that was unreachable ---------------------------------------------------------


@pytest.fixture(params=["memory", "dynamodb"])
def outage(request: pytest.FixtureRequest) -> tuple[Unreachable, CircuitStore, CircuitStore]:
    """(the switch, the store as the failing container reaches it, the store direct)."""
    if request.param == "memory":
        shared = MemoryCircuitStore()
        switch = Unreachable(shared)
        return switch, switch, shared  # type: ignore[return-value]
    table = request.getfixturevalue("session_table")
    client = request.getfixturevalue("dynamodb")
    switch = Unreachable(client)
    direct = Unreachable(client)  # never down; its calls made one at a time with the other's
    return (
        switch,
        DynamoDBCircuitStore(table, switch),  # type: ignore[arg-type]
        DynamoDBCircuitStore(table, direct),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("circuit_cache_s", "degraded_s"),
    [(0.0, 1.0), (0.5, 1.0), (2.0, 2.0), (5.0, 5.0)],
)
def test_after_a_store_failure_the_store_is_left_alone_for_max_cache_or_1_s(
    outage: tuple[Unreachable, CircuitStore, CircuitStore],
    circuit_cache_s: float,
    degraded_s: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    switch, reached, direct = outage
    clock = FakeClock()
    here = container(reached, clock, circuit_cache_s=circuit_cache_s)
    elsewhere = container(direct, clock, circuit_cache_s=circuit_cache_s)
    switch.down = True

    with caplog.at_level(logging.WARNING):
        assert here.allow("p"), "the store is down: this container's view (closed) decides"
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("circuit store failed")]
    assert "EndpointConnectionError" in warning.error

    switch.down = False
    for _ in range(3):
        elsewhere.record_failure("p", FailureKind.UNAVAILABLE)
    assert elsewhere.flush(5) and stored(direct).open_until, "another container opened it"
    calls = switch.calls
    clock.advance(degraded_s - 0.25)
    here.record_failure("p", FailureKind.UNAVAILABLE)
    assert here.flush(5)
    assert switch.calls == calls, "the write queued meanwhile was not even tried"
    assert stored(direct).failures == 3

    clock.advance(0.25)

    assert not here.allow("p"), "back on the store: the other container's open circuit"
    assert switch.calls > calls
    here.record_failure("p", FailureKind.UNAVAILABLE)
    assert here.flush(5)
    assert stored(direct).failures == 4, "and its writes reach the store again"


def test_with_no_cache_every_read_goes_to_the_store_except_while_it_is_failing(
    outage: tuple[Unreachable, CircuitStore, CircuitStore],
) -> None:
    switch, reached, _ = outage
    clock = FakeClock()
    here = container(reached, clock, circuit_cache_s=0.0)
    switch.down = True
    assert here.states() == {"p": CircuitState.CLOSED}
    switch.down = False

    clock.advance(0.75)
    here.states()
    assert switch.calls == 0, "within 1 s (the floor) of the failure, the store is left alone"
    clock.advance(0.25)
    here.states()
    here.states()

    assert switch.calls == 2, "then every read goes to it"


def test_a_router_goes_back_to_the_shared_table_once_it_answers_again(
    session_table: str, dynamodb: DynamoDBClient, fake_openai: FakeProvider
) -> None:
    fake_openai.fail(503, "", "Down")
    clock = FakeClock()
    switch = Unreachable(dynamodb)
    table = DynamoDBCircuitStore(session_table, Unreachable(dynamodb))  # type: ignore[arg-type]
    router = router_for(
        fake_openai.entry(),
        MOCK,
        store=DynamoDBCircuitStore(session_table, switch),  # type: ignore[arg-type]
        clock=clock,
        router={"circuit_failure_threshold": 2, "circuit_cache_s": 2},
    )
    other = CircuitBreaker(
        table,
        ["openai", "mock"],
        RouterSettings(circuit_failure_threshold=2, circuit_cache_s=2),
        clock=clock,
    )
    switch.down = True

    assert router.generate(REQUEST, str)[1].provider == "mock", "the store down fails nothing"
    assert stored(table, "openai") == CircuitRecord(), "the failure could not be written"
    switch.down = False
    clock.advance(2)

    assert router.generate(REQUEST, str)[1].provider == "mock"
    assert stored(table, "openai").failures == 1, "this failure was written: back on the table"
    assert router.circuit_states()["openai"] is CircuitState.CLOSED, "1 of 2 in the table"
    other.record_failure("openai", FailureKind.UNAVAILABLE)  # another container's failure
    assert other.flush(5) and stored(table, "openai").open_until, "2 of 2: open in the table"
    clock.advance(2)

    assert router.generate(REQUEST, str)[1].provider == "mock"
    assert len(fake_openai.requests) == 2, "the third generation read the open circuit"
    assert router.circuit_states()["openai"] is CircuitState.OPEN
