"""circuit.py at its edges: the threshold, the cool-downs and the cache period to the
second, the background writer's bound, and the log lines operators search for.

Time is a `FakeClock`; store writes that must stay queued wait on `BlockingStore`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from lambdas.story_generator.circuit import (
    BackgroundWriter,
    CircuitBreaker,
    CircuitRecord,
    CircuitState,
    MemoryCircuitStore,
)
from lambdas.story_generator.providers import FailureKind
from lambdas.story_generator.settings import RouterSettings
from tests.lambdas.fake_providers import FakeClock
from tests.lambdas.router_doubles import BlockingStore, fail


def breaker(
    store: MemoryCircuitStore | None = None,
    clock: FakeClock | None = None,
    *,
    names: tuple[str, ...] = ("p",),
    writer: BackgroundWriter | None = None,
    **settings: float,
) -> CircuitBreaker:
    """A breaker over `names` with `RouterSettings(**settings)`."""
    return CircuitBreaker(
        store or MemoryCircuitStore(),
        names,
        RouterSettings(**settings),  # type: ignore[arg-type]
        clock=clock or FakeClock(),
        writer=writer,
    )


@pytest.fixture
def blocking_store() -> Iterator[BlockingStore]:
    """A `BlockingStore`, released at teardown."""
    store = BlockingStore()
    yield store
    store.release.set()


# The threshold and the cool-downs -----------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_the_circuit_opens_at_exactly_the_threshold(threshold: int) -> None:
    store = MemoryCircuitStore()
    circuit = breaker(store, circuit_failure_threshold=threshold)

    fail(circuit, threshold - 1)
    assert circuit.allow("p"), f"{threshold - 1} of {threshold}: closed"
    assert not store.load(["p"])["p"].open_until
    fail(circuit, 1)

    assert not circuit.allow("p"), f"{threshold} of {threshold}: open"
    assert store.load(["p"])["p"].open_until, "open in the store too"


@pytest.mark.parametrize("threshold", [2, 4])
def test_the_store_count_opens_the_circuit_at_exactly_the_threshold(threshold: int) -> None:
    """Each container fails once: the ADD's count decides, for every container."""
    store = MemoryCircuitStore()
    clock = FakeClock()
    containers = [breaker(store, clock, circuit_failure_threshold=threshold) for _ in range(4)]
    for circuit in containers[: threshold - 1]:
        fail(circuit, 1)
    assert not store.load(["p"])["p"].open_until, "one short of the threshold"

    fail(containers[threshold - 1], 1)

    assert store.load(["p"])["p"].open_until == clock.now + 30
    assert not containers[threshold - 1].allow("p"), "the last container's view is the store's"


@pytest.mark.parametrize(
    ("kind", "cooldown_s"),
    [(FailureKind.UNAVAILABLE, 7.0), (FailureKind.MODEL_NOT_FOUND, 120.0)],
    ids=["unhealthy", "misconfigured"],
)
def test_the_cooldown_ends_exactly_on_time(kind: FailureKind, cooldown_s: float) -> None:
    clock = FakeClock()
    circuit = breaker(
        clock=clock,
        circuit_failure_threshold=1,
        circuit_cooldown_s=7.0,
        misconfigured_cooldown_s=120.0,
    )
    fail(circuit, 1, kind)

    clock.advance(cooldown_s - 0.001)
    assert circuit.states() == {"p": CircuitState.OPEN} and not circuit.allow("p")
    clock.advance(0.001)

    assert circuit.states() == {"p": CircuitState.HALF_OPEN}
    assert circuit.allow("p"), "the cool-down is over at its last instant"


def test_a_misconfiguration_opens_the_circuit_at_the_first_failure_whatever_the_threshold() -> None:
    circuit = breaker(circuit_failure_threshold=100, misconfigured_cooldown_s=60.0)

    circuit.record_failure("p", FailureKind.UNSUPPORTED_PARAMETER)

    assert not circuit.allow("p")


def test_the_record_state_at_its_edges() -> None:
    assert CircuitRecord().state(0.0) is CircuitState.CLOSED
    assert CircuitRecord(failures=5).state(1e12) is CircuitState.CLOSED, "counted, not open"
    opened = CircuitRecord(failures=3, open_until=100.0)
    assert opened.state(99.999) is CircuitState.OPEN
    assert opened.state(100.0) is CircuitState.HALF_OPEN
    assert opened.state(1e12) is CircuitState.HALF_OPEN, "half-open until a probe says"


def test_retry_after_is_the_earliest_end_of_a_cooldown() -> None:
    clock = FakeClock()
    circuit = breaker(
        clock=clock,
        names=("p", "q"),
        circuit_failure_threshold=1,
        circuit_cooldown_s=50.0,
        misconfigured_cooldown_s=20.0,
    )
    circuit.record_failure("p", FailureKind.TIMEOUT)
    circuit.record_failure("q", FailureKind.UNAUTHORIZED)
    clock.advance(5)

    assert circuit.retry_after_s() == 15.0, "q probes first, 20 - 5 s from now"
    clock.advance(15)
    assert circuit.retry_after_s() == 1.0, "q half-open now: retry at once (1 s at least)"
    assert breaker(names=()).retry_after_s() == 1.0, "no provider: the floor"


# The cache ----------------------------------------------------------------------------


class CountingStore(MemoryCircuitStore):
    """Counts `load` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, names: object) -> dict[str, CircuitRecord]:  # type: ignore[override]
        self.loads += 1
        return super().load(names)  # type: ignore[arg-type]


@pytest.mark.parametrize("cache_s", [0.5, 2.0, 10.0])
def test_the_view_is_read_again_exactly_when_circuit_cache_s_has_passed(cache_s: float) -> None:
    store = CountingStore()
    clock = FakeClock()
    circuit = breaker(store, clock, circuit_cache_s=cache_s)
    circuit.allow("p")

    clock.advance(cache_s - 0.001)
    circuit.allow("p")
    circuit.states()
    assert store.loads == 1, "still fresh"
    clock.advance(0.001)
    circuit.allow("p")

    assert store.loads == 2


def test_with_no_cache_every_call_reads_the_store() -> None:
    store = CountingStore()
    circuit = breaker(store, circuit_cache_s=0.0)

    for _ in range(3):
        circuit.allow("p")

    assert store.loads == 3


def test_a_lost_probe_race_reads_the_store_again_at_the_next_call() -> None:
    """The winner may close the circuit at once: the loser must not wait a cache period."""
    store = CountingStore()
    clock = FakeClock()
    winner = breaker(store, clock, circuit_failure_threshold=1, circuit_cache_s=10.0)
    loser = breaker(store, clock, circuit_failure_threshold=1, circuit_cache_s=10.0)
    fail(winner, 1)
    clock.advance(30)
    loser.states()  # a half-open view, cached for 10 s
    assert winner.allow("p") is True
    loads = store.loads
    winner.record_success("p")
    assert winner.flush(5)

    # The loser's cached view is half-open without a probe: it tries to claim, and fails.
    assert not loser.allow("p")
    assert loser.allow("p"), "re-read at once: the circuit is closed"
    assert store.loads == loads + 1


# Successes ----------------------------------------------------------------------------


class ResetCountingStore(MemoryCircuitStore):
    """Counts `reset` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def reset(self, name: str) -> None:
        self.resets += 1
        super().reset(name)


def test_a_success_writes_to_the_store_only_when_the_circuit_was_not_clean() -> None:
    store = ResetCountingStore()
    circuit = breaker(store)

    circuit.record_success("p")
    assert circuit.flush(5) and store.resets == 0, "a healthy provider costs no write"
    fail(circuit, 1)
    circuit.record_success("p")
    circuit.record_success("p")
    assert circuit.flush(5)

    assert store.resets == 1
    assert store.load(["p"])["p"] == CircuitRecord()


# The background writer ----------------------------------------------------------------


def test_the_default_writer_queues_64_writes_and_drops_the_65th(
    blocking_store: BlockingStore, caplog: pytest.LogCaptureFixture
) -> None:
    circuit = breaker(blocking_store)

    with caplog.at_level(logging.WARNING):
        for _ in range(64):
            circuit.record_failure("p", FailureKind.UNAVAILABLE)
        assert "circuit store write dropped" not in caplog.text, "64 wait"
        circuit.record_failure("p", FailureKind.UNAVAILABLE)

    (dropped,) = [r for r in caplog.records if "circuit store write dropped" in r.getMessage()]
    assert (dropped.provider, dropped.capacity) == ("p", 64)
    assert dropped.getMessage() == (
        "circuit store write dropped: too many queued; counted in this container only"
    )
    blocking_store.release.set()
    assert circuit.flush(5)
    assert blocking_store.load(["p"])["p"].failures == 64


def test_a_dropped_write_does_not_keep_the_view_from_following_the_store(
    blocking_store: BlockingStore,
) -> None:
    clock = FakeClock()
    circuit = breaker(
        blocking_store, clock, writer=BackgroundWriter(capacity=1), circuit_failure_threshold=5
    )
    circuit.record_failure("p", FailureKind.UNAVAILABLE)
    circuit.record_failure("p", FailureKind.UNAVAILABLE)  # dropped
    blocking_store.release.set()
    assert circuit.flush(5)
    blocking_store.open("p", clock.now + 30, clock.now + 86_400)  # another container opened it

    clock.advance(2)

    assert circuit.states() == {"p": CircuitState.OPEN}, "no write of p is pending: re-read"


def test_flush_waits_for_the_queued_writes_no_longer_than_asked(
    blocking_store: BlockingStore,
) -> None:
    writer = BackgroundWriter()
    circuit = breaker(blocking_store, writer=writer)
    circuit.record_failure("p", FailureKind.UNAVAILABLE)

    assert circuit.flush(0.01) is False, "the write is stuck: a bounded wait says so"
    blocking_store.release.set()
    assert circuit.flush(5) is True
    assert writer.flush(0) is True, "nothing left"


def writer_threads() -> list[threading.Thread]:
    """The circuit writer threads alive now."""
    return [thread for thread in threading.enumerate() if thread.name == "circuit-writer"]


def test_the_writer_starts_one_daemon_thread_with_its_first_write() -> None:
    before = set(writer_threads())
    writer = BackgroundWriter()
    assert set(writer_threads()) == before, "no write, no thread"
    done = threading.Event()

    assert writer.submit(done.set) and writer.submit(lambda: None)
    assert writer.flush(5) and done.is_set()

    (thread,) = set(writer_threads()) - before
    assert thread.daemon, "never delays the interpreter's exit"


def test_a_write_that_raises_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = BackgroundWriter()
    ran = threading.Event()

    def broken() -> None:
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR):
        assert writer.submit(broken) and writer.submit(ran.set)
        assert writer.flush(5)

    assert ran.is_set()
    assert [r.getMessage() for r in caplog.records] == ["circuit write raised"]


# Log lines ----------------------------------------------------------------------------


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged so far."""
    return [record.getMessage() for record in caplog.records]


def test_opening_a_circuit_is_logged_once_with_its_provider_failure_and_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    circuit = breaker(circuit_failure_threshold=2, circuit_cooldown_s=45.0)

    with caplog.at_level(logging.INFO):
        fail(circuit, 2, FailureKind.TIMEOUT)

    (opened,) = [r for r in caplog.records if r.getMessage() == "circuit opened"]
    assert opened.levelno == logging.WARNING
    assert (opened.provider, opened.failure, opened.cooldown_s) == ("p", "timeout", 45.0)


def test_a_circuit_the_store_count_opened_is_logged_by_the_writer_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryCircuitStore()
    first = breaker(store, circuit_failure_threshold=2)
    second = breaker(store, circuit_failure_threshold=2)
    fail(first, 1)

    with caplog.at_level(logging.INFO):
        fail(second, 1, FailureKind.CONNECTION)  # 1 here, 2 in the store

    (opened,) = [r for r in caplog.records if r.getMessage() == "circuit opened"]
    assert (opened.provider, opened.failure, opened.cooldown_s) == ("p", "connection", 30.0)


def test_a_probe_and_its_success_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    circuit = breaker(clock=clock, circuit_failure_threshold=1)
    fail(circuit, 1)
    clock.advance(30)
    caplog.clear()

    with caplog.at_level(logging.INFO):
        assert circuit.allow("p")
        circuit.record_success("p")
        circuit.record_success("p")

    assert messages(caplog) == ["circuit half-open: probing provider", "circuit closed"]
    assert [r.provider for r in caplog.records] == ["p", "p"]
