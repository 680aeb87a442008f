"""router.py on simulated time: the deadline, each attempt's budget, hedging and Retry-After.

`Sim` is a monotonic clock that moves only while the router waits for an attempt
(it replaces `_Inbox.get`, the router's one wait, for the test) or sleeps (the
`sleep` seam, for Retry-After). A `SimProvider` answers, fails or hangs at a
simulated time; its thread blocks on the clock until then. Before time moves,
`Sim` waits for every attempt thread to be either blocked on the clock or done, so
what happens at each simulated instant is settled first: every time asserted
below is exact, whatever the load on the machine, and no test sleeps.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lambdas.story_generator import router as router_module
from lambdas.story_generator.circuit import CircuitBreaker, CircuitState, MemoryCircuitStore
from lambdas.story_generator.errors import NoProviderAvailable
from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.metrics import ProviderMetrics
from lambdas.story_generator.providers import Completion, FailureKind, ProviderError
from lambdas.story_generator.router import Router
from lambdas.story_generator.settings import ProviderKind, ProviderSettings, RouterSettings
from tests.lambdas.fake_providers import BEAT, FakeClock, accept_json
from tests.lambdas.router_doubles import RecordingMetrics

REQUEST = GenerationRequest("You narrate.", (Message("user", "Begin the story."),))
# How long a test waits, in real time, for attempt threads to reach the clock.
SETTLE_S = 5.0


class Sim:
    """Simulated monotonic time, shared by a router and its `SimProvider`s.

    `running` counts the attempt threads doing real work (started, not blocked on
    the clock, not done); time only moves once it is 0. `active` counts the calls
    inside a provider (blocked or not), `most_active` its peak.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.active = 0
        self.most_active = 0
        self._running = 0
        self._wakes: list[float] = []
        self._closed = False
        self._changed = threading.Condition()

    def monotonic(self) -> float:
        """The router's `monotonic` seam."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """The router's `sleep` seam: recorded, and simulated time passes."""
        self.sleeps.append(seconds)
        self.advance_to(self.now + seconds)

    def advance_to(self, when: float) -> None:
        """Move time to `when` (never back) and wake the threads due by then."""
        with self._changed:
            self.now = max(self.now, when)
            due = [wake for wake in self._wakes if wake <= self.now]
            self._wakes = [wake for wake in self._wakes if wake > self.now]
            self._running += len(due)
            self._changed.notify_all()

    def settle(self) -> None:
        """Wait (real time, bounded) until no attempt thread is doing real work."""
        with self._changed:
            settled = self._changed.wait_for(lambda: self._running == 0, SETTLE_S)
        assert settled, "an attempt thread neither finished nor waited on the simulated clock"

    def wait(self, inbox_queue: queue.SimpleQueue[Any], timeout_s: float) -> Any:
        """`_Inbox.get`: the next outcome, simulated time passing until it comes."""
        until = self.now + timeout_s
        while True:
            self.settle()
            try:
                return inbox_queue.get_nowait()
            except queue.Empty:
                pass
            with self._changed:
                wake = min(self._wakes, default=math.inf)
            if wake > until:
                self.advance_to(until)
                raise queue.Empty
            self.advance_to(wake)

    def started(self) -> None:
        """An attempt was submitted: its thread is about to do real work."""
        with self._changed:
            self._running += 1

    def done(self) -> None:
        """An attempt thread finished (its outcome delivered)."""
        with self._changed:
            self._running -= 1
            self._changed.notify_all()

    def enter(self) -> None:
        """A provider call begins."""
        with self._changed:
            self.active += 1
            self.most_active = max(self.most_active, self.active)

    def leave(self) -> None:
        """A provider call ends."""
        with self._changed:
            self.active -= 1

    def block_until(self, when: float) -> bool:
        """In an attempt thread: wait for simulated time `when`; False once `close`d."""
        with self._changed:
            if when <= self.now:
                return True
            self._running -= 1
            self._wakes.append(when)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.now >= when or self._closed)
            return self.now >= when

    def close(self) -> None:
        """Release every thread still waiting (the test is over)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class SimWorkers:
    """Wraps a router's `_Workers` so that `Sim` knows which attempts are running."""

    def __init__(self, workers: Any, sim: Sim) -> None:
        self._workers = workers
        self._sim = sim

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on the router's workers, telling `sim` when it starts and ends."""
        self._sim.started()

        def run() -> None:
            try:
                task()
            finally:
                self._sim.done()

        self._workers.submit(run)


def answer(input_tokens: int = 12, output_tokens: int = 34) -> Completion:
    """A usable reply."""
    return Completion(BEAT, input_tokens, output_tokens)


@dataclass(frozen=True)
class Step:
    """What one call does: its outcome `after_s` into the call (or at simulated time `at`)."""

    after_s: float = 0.0
    outcome: Completion | ProviderError | None = None  # None: a usable reply
    at: float | None = None


HANG = Step(math.inf)  # a black hole: only the router's own timeout ends the wait


def fails(kind: FailureKind, after_s: float = 0.0, *, retry_after_s: float | None = None) -> Step:
    """A call failing with `kind` after `after_s`."""
    return Step(after_s, ProviderError(kind, "simulated", retry_after_s))


class SimProvider:
    """A provider on simulated time: call n does `steps[n]` (the last step repeats)."""

    def __init__(
        self, sim: Sim, name: str, priority: int, *steps: Step, timeout_s: float = 5.0
    ) -> None:
        self.settings = ProviderSettings(
            name=name, kind=ProviderKind.MOCK, model="sim", priority=priority, timeout_s=timeout_s
        )
        self.calls: list[float] = []  # the simulated time of each call
        self.budgets: list[float] = []  # the timeout_s the router gave each call
        self._sim = sim
        self._steps = list(steps) or [Step()]

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        """Run the next step on simulated time."""
        sim = self._sim
        started = sim.now
        self.calls.append(started)
        self.budgets.append(timeout_s)
        step = self._steps.pop(0) if len(self._steps) > 1 else self._steps[0]
        sim.enter()
        try:
            if not sim.block_until(started + step.after_s if step.at is None else step.at):
                raise ProviderError(FailureKind.TIMEOUT, "released at the end of the test")
            outcome = step.outcome or answer()
            if isinstance(outcome, ProviderError):
                raise ProviderError(outcome.kind, outcome.message, outcome.retry_after_s)
            return outcome
        finally:
            sim.leave()


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sim]:
    """A `Sim` whose clock the router's waits move; hanging providers end at teardown."""
    clock = Sim()

    def get(inbox: Any, timeout_s: float) -> Any:
        return clock.wait(inbox._queue, timeout_s)

    monkeypatch.setattr(router_module._Inbox, "get", get)
    yield clock
    clock.close()


def sim_router(
    sim: Sim,
    *providers: SimProvider,
    metrics: ProviderMetrics | None = None,
    store: MemoryCircuitStore | None = None,
    circuit_clock: Callable[[], float] | None = None,
    **settings: Any,
) -> Router:
    """A router over `providers` on `sim`'s time (circuits on their own epoch clock)."""
    router_settings = RouterSettings(**settings)
    circuit = CircuitBreaker(
        store or MemoryCircuitStore(),
        [provider.settings.name for provider in providers],
        router_settings,
        clock=circuit_clock or FakeClock(),
    )
    router = Router(
        providers,
        router_settings,
        circuit=circuit,
        metrics=metrics or RecordingMetrics(),
        sleep=sim.sleep,
        monotonic=sim.monotonic,
    )
    router._workers = SimWorkers(router._workers, sim)  # type: ignore[assignment]
    return router


def fails_with(router: Router) -> NoProviderAvailable:
    """The `NoProviderAvailable` that one generation raises."""
    with pytest.raises(NoProviderAvailable) as raised:
        router.generate(REQUEST, accept_json)
    return raised.value


# The deadline and each attempt's budget -----------------------------------------------


@pytest.mark.parametrize("deadline_s", [1.0, 28.0], ids=["shortest", "longest"])
def test_the_deadline_ends_the_generation_exactly_on_time(sim: Sim, deadline_s: float) -> None:
    primary = SimProvider(sim, "primary", 1, HANG, timeout_s=28.0)
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, deadline_s=deadline_s)

    error = fails_with(router)

    assert sim.now == deadline_s, "the black hole was abandoned at the deadline, not later"
    assert primary.budgets == [deadline_s], "the attempt got what was left of the deadline"
    assert secondary.calls == [], "nothing left to start the secondary with"
    assert error.failures == {"primary": "timeout", "secondary": "deadline_exceeded"}


def test_each_attempt_gets_its_own_timeout_or_what_is_left_of_the_deadline(sim: Sim) -> None:
    first = SimProvider(sim, "first", 1, HANG, timeout_s=1.5)
    second = SimProvider(sim, "second", 2, fails(FailureKind.UNAVAILABLE, 0.25), timeout_s=9.0)
    third = SimProvider(sim, "third", 3, HANG, timeout_s=9.0)
    fourth = SimProvider(sim, "fourth", 4)
    router = sim_router(sim, first, second, third, fourth, deadline_s=4.0)

    error = fails_with(router)

    assert (first.calls, first.budgets) == ([0.0], [1.5]), "its own timeout, shorter"
    assert (second.calls, second.budgets) == ([1.5], [2.5]), "abandoned at 1.5: 2.5 s left"
    assert (third.calls, third.budgets) == ([1.75], [2.25])
    assert sim.now == 4.0 and fourth.calls == []
    assert error.failures == {
        "first": "timeout",
        "second": "unavailable",
        "third": "timeout",
        "fourth": "deadline_exceeded",
    }


# A clock started here puts the deadline (1 s later) at 2**-8, where `deadline - now`
# is exact to the bit: the time left is then exactly MIN_ATTEMPT_S (0.1 s).
EXACT_START = 2**-8 - 1.0
EXACT_DEADLINE = 2**-8


def test_an_attempt_starts_with_exactly_min_attempt_s_left_and_not_with_less(sim: Sim) -> None:
    assert EXACT_DEADLINE - (EXACT_DEADLINE - 0.1) == 0.1, "the premise of this test"
    sim.now = EXACT_START
    failing_at = EXACT_DEADLINE - 0.1
    first = SimProvider(
        sim, "first", 1, Step(at=failing_at, outcome=ProviderError(FailureKind.UNAVAILABLE, "down"))
    )
    second = SimProvider(sim, "second", 2)
    router = sim_router(sim, first, second, deadline_s=1.0)

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "second"
    assert second.budgets == [0.1], "0.1 s left: worth one more attempt"

    sim.now = EXACT_START
    late = math.nextafter(failing_at, math.inf)
    first = SimProvider(
        sim, "first", 1, Step(at=late, outcome=ProviderError(FailureKind.UNAVAILABLE, "down"))
    )
    second = SimProvider(sim, "second", 2)
    router = sim_router(sim, first, second, deadline_s=1.0)

    error = fails_with(router)

    assert second.calls == [], "a hair under 0.1 s left: not started"
    assert error.failures == {"first": "unavailable", "second": "deadline_exceeded"}


def test_the_generation_latency_is_measured_from_the_start_of_the_call(sim: Sim) -> None:
    metrics = RecordingMetrics()
    first = SimProvider(sim, "first", 1, fails(FailureKind.UNAVAILABLE, 0.5))
    second = SimProvider(sim, "second", 2, Step(0.25, answer(40, 5)))
    router = sim_router(sim, first, second, metrics=metrics)

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.latency_ms == 750.0, "0.5 s on the first, 0.25 s on the second"
    assert [(a.provider, a.latency_ms, a.success, a.fallback) for a in metrics.attempts] == [
        ("first", 500.0, False, False),
        ("second", 250.0, True, True),
    ]
    assert (generation.input_tokens, generation.output_tokens) == (40, 5)


# Hedging ------------------------------------------------------------------------------


@pytest.mark.parametrize("hedge_delay_s", [0.05, 0.1, 2.0])
def test_the_hedge_starts_exactly_at_the_hedge_delay(sim: Sim, hedge_delay_s: float) -> None:
    primary = SimProvider(sim, "primary", 1, HANG)
    secondary = SimProvider(sim, "secondary", 2, Step(0.25))
    router = sim_router(sim, primary, secondary, hedge_delay_s=hedge_delay_s)

    _, generation = router.generate(REQUEST, accept_json)

    assert secondary.calls == [hedge_delay_s], "joined after the hedge delay, not before or later"
    assert sim.now == hedge_delay_s + 0.25, "the hedge's answer was taken as soon as it came"
    assert generation.latency_ms == pytest.approx((hedge_delay_s + 0.25) * 1000)
    assert (generation.provider, generation.fallback) == ("secondary", True)
    assert primary.calls == [0.0] and sim.active == 1, "the primary is left running, not awaited"


def test_without_a_hedge_delay_the_router_waits_for_the_primarys_timeout(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, HANG, timeout_s=3.0)
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary)

    _, generation = router.generate(REQUEST, accept_json)

    assert secondary.calls == [3.0], "started only once the primary was abandoned"
    assert generation.provider == "secondary"


def test_a_primary_that_answers_before_the_hedge_delay_is_never_hedged(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, Step(0.5))
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, hedge_delay_s=0.5)

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "primary" and not generation.fallback
    assert secondary.calls == [], "its reply came at the hedge delay itself: it is taken first"


def test_a_hedge_delay_of_zero_hedges_at_once(sim: Sim) -> None:
    """Not a value AI_ROUTER_CONFIG accepts (0.01 at least), but the router's contract holds."""
    first = SimProvider(sim, "first", 1, HANG)
    second = SimProvider(sim, "second", 2, Step(0.5))
    third = SimProvider(sim, "third", 3)
    router = sim_router(sim, first, second, third, hedge_delay_s=0.0)

    _, generation = router.generate(REQUEST, accept_json)

    assert second.calls == [0.0], "hedged with no delay"
    assert third.calls == [], "and still only one extra attempt"
    assert generation.provider == "second" and sim.most_active == 2


def test_hedging_starts_one_extra_attempt_and_never_a_third_while_two_run(sim: Sim) -> None:
    first = SimProvider(sim, "first", 1, Step(3.0))
    second = SimProvider(sim, "second", 2, Step(3.0))
    third = SimProvider(sim, "third", 3)
    router = sim_router(sim, first, second, third, hedge_delay_s=0.05)

    _, generation = router.generate(REQUEST, accept_json)

    assert (first.calls, second.calls, third.calls) == ([0.0], [0.05], [])
    assert sim.most_active == 2, "three slow providers, two attempts at once at most"
    assert generation.provider == "first" and sim.now == 3.0


def test_the_third_provider_starts_once_one_of_the_two_running_ends(sim: Sim) -> None:
    first = SimProvider(sim, "first", 1, fails(FailureKind.UNAVAILABLE, 1.0))
    second = SimProvider(sim, "second", 2, Step(3.0))
    third = SimProvider(sim, "third", 3, Step(0.5))
    router = sim_router(sim, first, second, third, hedge_delay_s=0.05)

    _, generation = router.generate(REQUEST, accept_json)

    assert (first.calls, second.calls, third.calls) == ([0.0], [0.05], [1.0])
    assert sim.most_active == 2
    assert generation.provider == "third" and sim.now == 1.5


def test_a_hedge_that_fails_leaves_the_primary_alone_until_it_ends(sim: Sim) -> None:
    first = SimProvider(sim, "first", 1, HANG, timeout_s=1.0)
    second = SimProvider(sim, "second", 2, fails(FailureKind.UNAVAILABLE, 0.05))
    third = SimProvider(sim, "third", 3)
    router = sim_router(sim, first, second, third, hedge_delay_s=0.05)

    _, generation = router.generate(REQUEST, accept_json)

    assert (first.calls, second.calls, third.calls) == ([0.0], [0.05], [1.0]), (
        "one hedge per attempt: the third waits for the first's timeout"
    )
    assert generation.provider == "third"


def test_with_hedging_every_provider_is_called_once_per_generation_at_most(sim: Sim) -> None:
    providers = [
        SimProvider(sim, f"p{priority}", priority, fails(FailureKind.TIMEOUT, 0.3))
        for priority in range(1, 5)
    ]
    router = sim_router(sim, *providers, hedge_delay_s=0.01)

    error = fails_with(router)

    assert [len(provider.calls) for provider in providers] == [1, 1, 1, 1]
    assert sim.most_active == 2
    assert error.failures == dict.fromkeys(("p1", "p2", "p3", "p4"), "timeout")


def serve(sim: Sim, router: Router, count: int) -> None:
    """`count` generations, each answered by the router's first provider."""
    for _ in range(count):
        assert router.generate(REQUEST, accept_json)[1].provider == "primary"


def test_the_router_hedges_at_the_measured_p95_before_the_configured_cap(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, *[Step(0.25)] * 20, HANG, timeout_s=24.0)
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, hedge_delay_s=20.0)
    serve(sim, router, 20)
    started = sim.now

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "secondary"
    assert secondary.calls == [started + 0.25], "hedged at the p95 of 20 replies of 0.25 s"


def test_below_20_samples_the_configured_hedge_delay_applies(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, *[Step(0.25)] * 19, HANG, timeout_s=24.0)
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, hedge_delay_s=2.0)
    serve(sim, router, 19)
    started = sim.now

    router.generate(REQUEST, accept_json)

    assert secondary.calls == [started + 2.0]


def test_the_configured_hedge_delay_caps_a_slower_p95(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, *[Step(0.5)] * 20, HANG, timeout_s=24.0)
    secondary = SimProvider(sim, "secondary", 2)
    # The 20 slow replies are themselves hedged at 0.25 s: the secondary loses each race.
    secondary_steps = [Step(1.0)] * 20 + [Step()]
    secondary = SimProvider(sim, "secondary", 2, *secondary_steps)
    router = sim_router(sim, primary, secondary, hedge_delay_s=0.25)
    serve(sim, router, 20)
    started = sim.now

    router.generate(REQUEST, accept_json)

    assert router.hedge_delay_s("primary") == 0.25
    assert secondary.calls[-1] == started + 0.25


# What an attempt a hedge beat still records -------------------------------------------


@pytest.mark.parametrize(
    ("answers_after_s", "success"),
    [(3.0, True), (5.0, True), (5.5, False)],
    ids=["before-its-timeout", "at-its-timeout", "after-its-timeout"],
)
def test_the_late_reply_of_a_beaten_attempt_counts_against_its_own_timeout(
    sim: Sim, answers_after_s: float, success: bool
) -> None:
    metrics = RecordingMetrics()
    store = MemoryCircuitStore()
    primary = SimProvider(sim, "primary", 1, Step(answers_after_s), timeout_s=5.0)
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, metrics=metrics, store=store, hedge_delay_s=0.5)
    router.circuit.record_failure("primary", FailureKind.UNAVAILABLE)

    assert router.generate(REQUEST, accept_json)[1].provider == "secondary"
    sim.advance_to(answers_after_s)
    sim.settle()
    assert router.circuit.flush(5)

    (late,) = [attempt for attempt in metrics.attempts if attempt.provider == "primary"]
    assert (late.success, late.latency_ms) == (success, answers_after_s * 1000)
    assert late.failure == (None if success else "timeout")
    failures = store.load(["primary"])["primary"].failures
    assert failures == (0 if success else 2), "a success resets the count, a timeout adds one"
    samples = list(router._latencies["primary"]._samples)
    assert samples == ([answers_after_s] if success else []), "only a success is a latency"


def test_a_late_reply_cut_short_is_recorded_as_truncated_yet_closes_the_circuit(
    sim: Sim,
) -> None:
    metrics = RecordingMetrics()
    store = MemoryCircuitStore()
    cut = Completion(BEAT, 40, 1024, truncated=True)
    primary = SimProvider(sim, "primary", 1, Step(2.0, cut))
    router = sim_router(
        sim,
        primary,
        SimProvider(sim, "secondary", 2),
        metrics=metrics,
        store=store,
        hedge_delay_s=0.5,
    )
    router.circuit.record_failure("primary", FailureKind.UNAVAILABLE)

    router.generate(REQUEST, accept_json)
    sim.advance_to(2.0)
    sim.settle()
    assert router.circuit.flush(5)

    (late,) = [attempt for attempt in metrics.attempts if attempt.provider == "primary"]
    assert (late.success, late.failure, late.output_tokens) == (False, "truncated", 1024)
    assert store.load(["primary"])["primary"].failures == 0, "the model wrote: it works"


def test_a_reply_that_comes_with_the_winning_one_is_still_recorded(sim: Sim) -> None:
    metrics = RecordingMetrics()
    first = SimProvider(sim, "first", 1, Step(1.0, answer(1, 2)))
    second = SimProvider(sim, "second", 2, Step(0.5, answer(3, 4)))
    router = sim_router(sim, first, second, metrics=metrics, hedge_delay_s=0.5)

    _, generation = router.generate(REQUEST, accept_json)
    sim.settle()

    assert sim.now == 1.0 and generation.provider in {"first", "second"}
    assert sorted((a.provider, a.success, a.input_tokens) for a in metrics.attempts) == [
        ("first", True, 1),
        ("second", True, 3),
    ], "both replies came at 1.0 s: the one not taken is recorded as it closes the call"
    assert [list(router._latencies[name]._samples) for name in ("first", "second")] == [
        [1.0],
        [0.5],
    ]


def test_an_abandoned_attempt_is_logged_as_a_timeout_of_its_budget(
    sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    primary = SimProvider(sim, "primary", 1, HANG, timeout_s=1.5)
    router = sim_router(sim, primary, SimProvider(sim, "secondary", 2))

    with caplog.at_level(logging.WARNING):
        router.generate(REQUEST, accept_json)

    (logged,) = [r for r in caplog.records if r.getMessage() == "provider failed"]
    assert (logged.provider, logged.failure) == ("primary", "timeout")
    assert (logged.detail, logged.latency_ms) == ("no reply within 1.50 s", 1500.0)


# Retry-After --------------------------------------------------------------------------


def throttled(retry_after_s: float, after_s: float = 0.0) -> Step:
    """A 429 with `Retry-After: retry_after_s`."""
    return fails(FailureKind.THROTTLED, after_s, retry_after_s=retry_after_s)


@pytest.mark.parametrize(
    ("retry_after_s", "deadline_s"),
    [(1.9, 2.0), (2.0, 2.1), (2.0, 25.0), (0.5, 25.0)],
    ids=["fits-exactly", "longest-fitting-exactly", "longest", "short"],
)
def test_a_retry_after_that_fits_is_slept_exactly_then_retried(
    sim: Sim, retry_after_s: float, deadline_s: float
) -> None:
    assert retry_after_s + 0.1 <= deadline_s, "the premise: it fits, with MIN_ATTEMPT_S to spare"
    primary = SimProvider(sim, "primary", 1, throttled(retry_after_s), Step())
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, deadline_s=deadline_s)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [retry_after_s]
    assert primary.calls == [0.0, retry_after_s], "retried once the wait was over"
    assert primary.budgets[1] == pytest.approx(min(5.0, deadline_s - retry_after_s))
    assert (generation.provider, secondary.calls) == ("primary", [])


@pytest.mark.parametrize(
    ("retry_after_s", "deadline_s"),
    [
        (1.9 + 1e-9, 2.0),
        (math.nextafter(2.0, math.inf), 25.0),
        (2.5, 25.0),
        (30.0, 25.0),
    ],
    ids=["a-nanosecond-too-long-for-the-deadline", "a-hair-over-the-cap", "over-the-cap", "long"],
)
def test_a_retry_after_that_does_not_fit_is_not_slept_and_moves_on(
    sim: Sim, retry_after_s: float, deadline_s: float
) -> None:
    primary = SimProvider(sim, "primary", 1, throttled(retry_after_s), Step())
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, deadline_s=deadline_s)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [] and primary.calls == [0.0]
    assert generation.provider == "secondary" and secondary.calls == [0.0]


def test_the_retry_after_is_weighed_against_the_time_left_when_it_comes(sim: Sim) -> None:
    """1.5 s would fit in the 3 s deadline, but not in the 1.5 s left after the first failure."""
    primary = SimProvider(sim, "primary", 1, throttled(1.5, after_s=1.5), Step())
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary, deadline_s=3.0)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [] and generation.provider == "secondary"
    assert secondary.calls == [1.5]


def test_a_retry_after_is_honoured_once_per_provider(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, throttled(0.5), throttled(0.5), Step())
    secondary = SimProvider(sim, "secondary", 2, throttled(0.25), Step())
    router = sim_router(sim, primary, secondary)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [0.5, 0.25], "each provider's first Retry-After only"
    assert primary.calls == [0.0, 0.5] and secondary.calls == [0.5, 0.75]
    assert generation.provider == "secondary"


def test_a_retry_after_of_zero_retries_at_once(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, throttled(0.0), Step())
    router = sim_router(sim, primary)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [0.0] and primary.calls == [0.0, 0.0]
    assert generation.provider == "primary"


def test_a_failure_without_retry_after_is_not_retried(sim: Sim) -> None:
    primary = SimProvider(sim, "primary", 1, fails(FailureKind.UNAVAILABLE), Step())
    secondary = SimProvider(sim, "secondary", 2)
    router = sim_router(sim, primary, secondary)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [] and primary.calls == [0.0]
    assert generation.provider == "secondary"


def test_no_retry_after_wait_while_another_attempt_is_in_flight(sim: Sim) -> None:
    first = SimProvider(sim, "first", 1, Step(2.0))
    second = SimProvider(sim, "second", 2, throttled(0.1, after_s=0.05), Step())
    router = sim_router(sim, first, second, hedge_delay_s=0.5)

    _, generation = router.generate(REQUEST, accept_json)

    assert sim.sleeps == [], "sleeping would hold up the first's reply"
    assert second.calls == [0.5] and generation.provider == "first"


def test_an_open_circuit_is_skipped_without_spending_time(sim: Sim) -> None:
    circuit_clock = FakeClock()
    first = SimProvider(sim, "first", 1, fails(FailureKind.UNAUTHORIZED, 0.5))
    second = SimProvider(sim, "second", 2)
    router = sim_router(sim, first, second, circuit_clock=circuit_clock)
    router.generate(REQUEST, accept_json)
    assert router.circuit_states()["first"] is CircuitState.OPEN
    started = sim.now

    _, generation = router.generate(REQUEST, accept_json)

    assert len(first.calls) == 1 and second.calls[-1] == started
    assert (generation.provider, generation.latency_ms) == ("second", 0.0)
