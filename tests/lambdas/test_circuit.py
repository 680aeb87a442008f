"""circuit.py: open after N failures, one half-open probe, state shared through DynamoDB,
store writes off the request path.

Time is a `FakeClock`: cool-downs pass by advancing it, never by sleeping. Store
writes that must still be pending wait on an event the test sets (`BlockingStore`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from lambdas.story_generator.circuit import (
    BackgroundWriter,
    CircuitBreaker,
    CircuitRecord,
    CircuitState,
    DynamoDBCircuitStore,
    MemoryCircuitStore,
)
from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.providers import Completion, FailureCategory, FailureKind
from lambdas.story_generator.router import Router
from lambdas.story_generator.settings import RouterSettings
from tests.lambdas.fake_providers import FakeClock, FakeProvider, router_for
from tests.lambdas.router_doubles import BlockingStore, fail

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REQUEST = GenerationRequest("", (Message("user", "Begin."),))
MOCK = {"name": "mock", "kind": "mock", "priority": 50}
SETTINGS = RouterSettings(
    circuit_failure_threshold=3,
    circuit_cooldown_s=30,
    misconfigured_cooldown_s=300,
    circuit_cache_s=2,
)
ROUTER_CONFIG = {"circuit_failure_threshold": 2, "circuit_cooldown_s": 30, "circuit_cache_s": 2}


def breaker(
    store: MemoryCircuitStore | DynamoDBCircuitStore,
    clock: FakeClock,
    names: Sequence[str] = ("p",),
) -> CircuitBreaker:
    return CircuitBreaker(store, names, SETTINGS, clock=clock)


def assert_open_for(circuit: CircuitBreaker, clock: FakeClock, seconds: float) -> None:
    """`p` is skipped for `seconds`, then probed."""
    assert not circuit.allow("p")
    clock.advance(seconds - 1)
    assert not circuit.allow("p"), "still cooling down"
    clock.advance(2)
    assert circuit.allow("p"), "cooled down: the probe goes through"


def test_a_circuit_opens_at_the_threshold_of_consecutive_failures() -> None:
    circuit = breaker(MemoryCircuitStore(), FakeClock())

    fail(circuit, 2)
    assert circuit.allow("p"), "2 failures of 3: still closed"
    fail(circuit, 1)

    assert not circuit.allow("p")
    assert circuit.states() == {"p": CircuitState.OPEN}


@pytest.mark.parametrize(
    "kind",
    [
        kind
        for kind in FailureKind
        if kind.category not in {FailureCategory.UNHEALTHY, FailureCategory.MISCONFIGURED}
    ],
)
def test_failures_that_are_not_the_providers_own_never_count(kind: FailureKind) -> None:
    store = MemoryCircuitStore()
    circuit = breaker(store, FakeClock())

    fail(circuit, 10, kind)

    assert circuit.allow("p") and circuit.states() == {"p": CircuitState.CLOSED}
    assert store.load(["p"]) == {"p": CircuitRecord()}, (
        f"{kind.value}: a request (or our bug) caused it; one reader must not open the circuit"
    )


def test_a_success_resets_the_consecutive_count() -> None:
    circuit = breaker(MemoryCircuitStore(), FakeClock())

    fail(circuit, 2)
    circuit.record_success("p")
    fail(circuit, 2)

    assert circuit.allow("p")


def test_after_the_cooldown_exactly_one_probe_is_let_through() -> None:
    clock = FakeClock()
    circuit = breaker(MemoryCircuitStore(), clock)
    fail(circuit, 3)

    clock.advance(29.9)
    assert not circuit.allow("p"), "still cooling down"
    clock.advance(0.2)

    assert circuit.states() == {"p": CircuitState.HALF_OPEN}
    assert circuit.allow("p"), "the probe"
    assert not circuit.allow("p"), "only one probe at a time"


def probing(clock: FakeClock) -> CircuitBreaker:
    """A breaker whose circuit `p` opened, cooled down and let its probe through."""
    circuit = breaker(MemoryCircuitStore(), clock)
    fail(circuit, 3)
    clock.advance(31)
    assert circuit.allow("p")
    return circuit


def test_a_successful_probe_closes_the_circuit() -> None:
    circuit = probing(FakeClock())

    circuit.record_success("p")

    assert circuit.states() == {"p": CircuitState.CLOSED}
    assert circuit.allow("p") and circuit.allow("p")


def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    clock = FakeClock()
    circuit = probing(clock)

    fail(circuit, 1)

    assert_open_for(circuit, clock, 30)


def test_a_misconfigured_provider_opens_at_once_for_the_longer_cooldown() -> None:
    clock = FakeClock()
    circuit = breaker(MemoryCircuitStore(), clock)

    fail(circuit, 1, FailureKind.UNAUTHORIZED)

    assert_open_for(circuit, clock, 300)


def test_retry_after_is_the_wait_until_the_earliest_probe_and_at_least_one_second() -> None:
    clock = FakeClock()
    circuit = breaker(MemoryCircuitStore(), clock, names=("p", "q"))
    fail(circuit, 3)
    circuit.record_failure("q", FailureKind.QUOTA_EXHAUSTED)
    clock.advance(10)

    assert circuit.retry_after_s() == pytest.approx(20)
    clock.advance(19.5)
    assert circuit.retry_after_s() == 1.0


def test_the_router_skips_an_open_circuit_and_probes_it_after_the_cooldown(
    fake_openai: FakeProvider,
) -> None:
    fake_openai.fail(500, "", "Down")
    clock = FakeClock()
    router = router_for(fake_openai.entry(), MOCK, clock=clock, router=ROUTER_CONFIG)

    for _ in range(3):
        router.generate(REQUEST, str)
    assert len(fake_openai.requests) == 2, "open after 2 failures: the third call skips it"

    fake_openai.reply()
    clock.advance(31)
    _, probe = router.generate(REQUEST, str)
    _, after = router.generate(REQUEST, str)

    assert (probe.provider, after.provider) == ("openai", "openai"), "probe succeeded: closed"
    assert router.circuit_states() == {"openai": CircuitState.CLOSED, "mock": CircuitState.CLOSED}


def test_answers_from_a_secondary_while_the_primary_is_open_count_as_fallbacks(
    fake_openai: FakeProvider,
) -> None:
    """A long outage of the primary must keep the fallback rate up, not only its start."""
    fake_openai.fail(500, "", "Down")
    router = router_for(fake_openai.entry(), MOCK, clock=FakeClock(), router=ROUTER_CONFIG)
    for _ in range(2):
        router.generate(REQUEST, str)
    assert router.circuit_states()["openai"] is CircuitState.OPEN

    _, generation = router.generate(REQUEST, str)

    assert len(fake_openai.requests) == 2, "the open primary was not called"
    assert (generation.provider, generation.fallback) == ("mock", True)


def test_circuit_state_is_shared_by_containers_through_the_session_table(
    session_table: str, dynamodb: DynamoDBClient, fake_openai: FakeProvider
) -> None:
    fake_openai.fail(503, "", "Down")
    clock = FakeClock()

    def container() -> Router:
        store = DynamoDBCircuitStore(session_table, dynamodb)
        return router_for(fake_openai.entry(), MOCK, store=store, clock=clock, router=ROUTER_CONFIG)

    first, second = container(), container()
    for _ in range(2):
        first.generate(REQUEST, str)

    _, generation = second.generate(REQUEST, str)

    assert len(fake_openai.requests) == 2, "the second container never called the open provider"
    assert generation.provider == "mock"
    item = dynamodb.get_item(
        TableName=session_table,
        Key={"session_id": {"S": "circuit#openai"}, "timestamp": {"N": "0"}},
    )["Item"]
    assert item["failures"] == {"N": "2"} and "expires_at" in item, "TTL set on circuit items"

    fake_openai.reply()
    clock.advance(31)
    second.generate(REQUEST, str)  # the probe closes the circuit
    clock.advance(2.1)  # the first container's cache expires

    assert first.circuit_states()["openai"] is CircuitState.CLOSED


def test_only_one_container_wins_the_half_open_probe(
    session_table: str, dynamodb: DynamoDBClient
) -> None:
    clock = FakeClock()
    first = breaker(DynamoDBCircuitStore(session_table, dynamodb), clock)
    second = breaker(DynamoDBCircuitStore(session_table, dynamodb), clock)
    fail(first, 3)
    clock.advance(31)

    assert [first.allow("p"), second.allow("p")] == [True, False]


@pytest.mark.parametrize("where", ["memory", "dynamodb"])
def test_a_probe_given_back_is_free_for_any_container(
    where: str, request: pytest.FixtureRequest
) -> None:
    clock = FakeClock()
    if where == "memory":
        store: MemoryCircuitStore | DynamoDBCircuitStore = MemoryCircuitStore()
    else:
        store = DynamoDBCircuitStore(
            request.getfixturevalue("session_table"), request.getfixturevalue("dynamodb")
        )
    first, second = breaker(store, clock), breaker(store, clock)
    fail(first, 3)
    clock.advance(31)
    assert first.allow("p") and not second.allow("p"), "the first holds the probe"

    first.release_probe("p")
    assert first.flush(5)

    assert first.states() == {"p": CircuitState.HALF_OPEN}, "given back, not closed"
    clock.advance(2.1)  # the second container's cached view expires (circuit_cache_s)
    assert second.allow("p"), "the next call, in any container, probes"
    assert not first.allow("p"), "and holds it alone"


def test_giving_back_a_probe_frees_only_the_one_claimed() -> None:
    clock = FakeClock()
    store = MemoryCircuitStore()
    first, second = breaker(store, clock), breaker(store, clock)
    fail(first, 3)
    clock.advance(31)
    assert first.allow("p")
    clock.advance(26)  # the probe lapsed (deadline 25 s): the second takes a new one
    assert second.allow("p")

    store.release_probe("p", until=clock.now - 26 + 25)

    assert store.load(["p"])["p"].probe_until == pytest.approx(clock.now + 25), (
        "a stale release leaves the new probe alone"
    )


def test_the_cache_saves_reads_for_circuit_cache_s() -> None:
    reads: list[Sequence[str]] = []

    class CountingStore(MemoryCircuitStore):
        def load(self, names: Sequence[str]) -> dict[str, CircuitRecord]:
            reads.append(names)
            return super().load(names)

    clock = FakeClock()
    circuit = breaker(CountingStore(), clock, names=("p", "q"))

    for _ in range(5):
        circuit.allow("p")
        circuit.allow("q")
    clock.advance(2)
    circuit.allow("p")

    assert len(reads) == 2, "one read for every provider per cache period"


def test_a_failing_circuit_store_never_fails_a_generation(
    dynamodb: DynamoDBClient, fake_openai: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.fail(503, "", "Down")
    missing_table = DynamoDBCircuitStore("no-such-table", dynamodb)
    router = router_for(fake_openai.entry(), MOCK, store=missing_table, router=ROUTER_CONFIG)

    with caplog.at_level(logging.WARNING):
        results = [router.generate(REQUEST, str)[1].provider for _ in range(3)]

    assert results == ["mock"] * 3
    assert "circuit store failed" in caplog.text
    assert len(fake_openai.requests) == 2, "the circuit still opened, on local state"


def test_a_failed_probe_opens_again_a_circuit_that_a_misconfiguration_opened() -> None:
    clock = FakeClock()
    circuit = breaker(MemoryCircuitStore(), clock)
    fail(circuit, 1, FailureKind.UNAUTHORIZED)
    clock.advance(301)
    assert circuit.allow("p"), "the probe"

    fail(circuit, 1, FailureKind.TIMEOUT)

    # 2 failures, below the threshold of 3: the failed probe alone must open it again.
    assert_open_for(circuit, clock, 30)


def stored(store: MemoryCircuitStore, name: str = "p") -> CircuitRecord:
    return store.load([name])[name]


def test_the_fallback_starts_before_the_failed_providers_store_write_completes(
    fake_openai: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.fail(503, "", "Down")
    store = BlockingStore()
    router = router_for(fake_openai.entry(), MOCK, store=store)
    fallback = router.providers[1]
    complete = fallback.complete
    failures_stored_when_called: list[int] = []

    def complete_and_release(request: GenerationRequest, timeout_s: float) -> Completion:
        failures_stored_when_called.append(stored(store, "openai").failures)
        store.release.set()
        return complete(request, timeout_s)

    monkeypatch.setattr(fallback, "complete", complete_and_release)

    _, generation = router.generate(REQUEST, str)

    assert generation.provider == "mock"
    assert failures_stored_when_called == [0], (
        "the fallback was called while the primary's failure was still on its way to the store"
    )
    assert router.circuit.flush(5)
    assert stored(store, "openai").failures == 1, "and the write was applied after all"


def test_a_failure_counts_here_at_once_and_in_the_store_once_flushed() -> None:
    store = BlockingStore()
    circuit = breaker(store, FakeClock())

    for _ in range(3):
        circuit.record_failure("p", FailureKind.UNAVAILABLE)

    assert not circuit.allow("p"), "open in this container at once: no write has landed yet"
    assert not circuit.flush(0), "the writes are still queued"
    assert stored(store) == CircuitRecord()
    store.release.set()
    assert circuit.flush(5), "a flush waits for the queued writes"
    record = stored(store)
    assert record.failures == 3 and record.open_until, "every failure counted, opened in the store"


def test_failures_of_two_containers_add_up_to_the_threshold_in_the_store() -> None:
    clock = FakeClock()
    store = MemoryCircuitStore()
    first, second = breaker(store, clock), breaker(store, clock)
    assert first.allow("p") and second.allow("p"), "both have read the closed circuit"

    fail(first, 2)
    fail(second, 1)

    assert not second.allow("p"), "the store's count (3, from the ADD) opened it"
    assert stored(store).failures == 3 and stored(store).open_until
    assert first.allow("p"), "within its cache period the first has not seen it yet"
    clock.advance(2)
    assert not first.allow("p"), "then it reads the open circuit"


class WriteFailingStore(MemoryCircuitStore):
    """Reads work, every write raises (throttled, say)."""

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        raise RuntimeError("throttled")

    def open(self, name: str, until: float, expires_at: float) -> None:
        raise RuntimeError("throttled")

    def reset(self, name: str) -> None:
        raise RuntimeError("throttled")


def test_a_store_whose_writes_raise_still_yields_generations(
    fake_openai: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.fail(503, "", "Down")
    router = router_for(fake_openai.entry(), MOCK, store=WriteFailingStore(), router=ROUTER_CONFIG)

    with caplog.at_level(logging.WARNING):
        results = [router.generate(REQUEST, str)[1].provider for _ in range(3)]
        assert router.circuit.flush(5), "a failed write is done with, too"

    assert results == ["mock"] * 3
    assert "circuit store failed" in caplog.text
    assert len(fake_openai.requests) == 2, "the circuit opened on this container's count"


def test_writes_beyond_the_queue_bound_are_dropped_and_counted_here_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BlockingStore()
    circuit = CircuitBreaker(
        store, ["p"], SETTINGS, clock=FakeClock(), writer=BackgroundWriter(capacity=2)
    )

    with caplog.at_level(logging.WARNING):
        for _ in range(4):  # the store is stuck: none of these may wait for it
            circuit.record_failure("p", FailureKind.UNAVAILABLE)

    assert caplog.text.count("circuit store write dropped") == 2, "2 queued, 2 dropped"
    assert not circuit.allow("p"), "this container counted all 4 failures: open"
    store.release.set()
    assert circuit.flush(5)
    assert stored(store).failures == 2, "the dropped writes never reached the store"
