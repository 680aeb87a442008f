"""router.py where the other router tests leave it loose.

- A bug in a provider's client is logged as an error, with its traceback and the
  provider's name, not only counted as that attempt's failure.
- Latencies are measured from each attempt's own start, whatever the monotonic
  clock reads when the call begins (the other tests mostly start it at zero): the
  latency logged for a failed attempt, the budget named when an attempt is
  abandoned, and the latency window fed by the late reply of an attempt a hedge beat.
- A hedge that outlives the primary (it timed out) runs alone for its own hedge
  delay before a third provider joins it, not from the primary's timeout on.
- After the call, the outcome of an attempt that is no orphan (abandoned at its
  timeout, or already delivered) is dropped quietly, never raised in its thread.
- Taking the last idle attempt thread starts a spare, and taking any other starts none.

Simulated time (`Sim`, test_router_timing.py) and `FakeClock` where time matters;
no test sleeps, save a bounded poll for a worker thread to go idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lambdas.story_generator import router as router_module
from lambdas.story_generator.providers import Completion, FailureKind, ProviderError
from lambdas.story_generator.router import _Inbox, _Workers
from tests.lambdas.fake_providers import BEAT, FakeClock, accept_json
from tests.lambdas.router_doubles import RecordingMetrics
from tests.lambdas.test_router_boundaries import attempt_threads
from tests.lambdas.test_router_failures import REQUEST, Stub, stub_router
from tests.lambdas.test_router_timing import HANG, Sim, SimProvider, Step, answer, sim_router

# A monotonic clock far from zero: `now - started` and `now + started` differ there.
LATE_START = 1000.0


@pytest.fixture
def late_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sim]:
    """Simulated time (as test_router_timing.py's `sim`) that starts at `LATE_START`."""
    clock = Sim(LATE_START)

    def get(inbox: _Inbox, timeout_s: float) -> tuple[int, Completion | ProviderError]:
        result: tuple[int, Completion | ProviderError] = clock.wait(inbox._queue, timeout_s)
        return result

    monkeypatch.setattr(router_module._Inbox, "get", get)
    yield clock
    clock.close()


# What a client's bug logs -------------------------------------------------------------


def test_a_bug_in_a_client_is_logged_as_an_error_with_its_traceback_and_provider(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = stub_router(Stub("buggy", 1, RuntimeError("bug")), Stub("next", 2))

    with caplog.at_level(logging.ERROR):
        _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "next"
    (logged,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert logged.getMessage() == "provider client raised"
    assert vars(logged).get("provider") == "buggy"
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError


# Latencies from each attempt's own start ----------------------------------------------


def test_an_abandoned_attempt_logs_its_budget_and_latency_from_its_own_start(
    late_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    primary = SimProvider(late_sim, "primary", 1, HANG, timeout_s=1.5)
    router = sim_router(late_sim, primary, SimProvider(late_sim, "secondary", 2))

    with caplog.at_level(logging.WARNING):
        _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "secondary" and primary.calls == [LATE_START]
    (logged,) = [r for r in caplog.records if r.getMessage() == "provider failed"]
    assert (vars(logged)["provider"], vars(logged)["failure"]) == ("primary", "timeout")
    assert vars(logged)["detail"] == "no reply within 1.50 s"
    assert vars(logged)["latency_ms"] == 1500.0


def test_a_failed_attempt_logs_its_latency_from_its_own_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(LATE_START)
    failing = Stub(
        "failing",
        1,
        ProviderError(FailureKind.UNAVAILABLE, "down"),
        clock=clock,
        takes_s=0.25,
    )
    router = stub_router(failing, Stub("next", 2), clock=clock)

    with caplog.at_level(logging.WARNING):
        router.generate(REQUEST, accept_json)

    (logged,) = [r for r in caplog.records if r.getMessage() == "provider failed"]
    assert (vars(logged)["provider"], vars(logged)["latency_ms"]) == ("failing", 250.0)


def test_the_late_reply_of_a_beaten_attempt_adds_its_own_latency_to_the_window(
    late_sim: Sim,
) -> None:
    metrics = RecordingMetrics()
    primary = SimProvider(late_sim, "primary", 1, Step(3.0))
    secondary = SimProvider(late_sim, "secondary", 2)
    router = sim_router(late_sim, primary, secondary, metrics=metrics, hedge_delay_s=0.5)

    assert router.generate(REQUEST, accept_json)[1].provider == "secondary"
    late_sim.advance_to(LATE_START + 3.0)
    late_sim.settle()

    (late,) = [attempt for attempt in metrics.attempts if attempt.provider == "primary"]
    assert (late.success, late.latency_ms) == (True, 3000.0)
    assert list(router._latencies["primary"]._samples) == [3.0], "3 s from its own start"


# One hedge per attempt ----------------------------------------------------------------


def test_a_hedge_that_outlives_the_primary_runs_alone_for_its_own_hedge_delay(
    late_sim: Sim,
) -> None:
    first = SimProvider(late_sim, "first", 1, HANG, timeout_s=1.0)
    second = SimProvider(late_sim, "second", 2, Step(0.5))
    third = SimProvider(late_sim, "third", 3)
    router = sim_router(late_sim, first, second, third, hedge_delay_s=0.6)

    _, generation = router.generate(REQUEST, accept_json)

    assert second.calls == [LATE_START + 0.6]
    assert third.calls == [], (
        "the first timed out at 1.0 s, before the second's own hedge delay (1.2 s): "
        "the second ran alone, and answered at 1.1 s"
    )
    assert generation.provider == "second" and late_sim.now == LATE_START + 1.1


# Late outcomes no call awaits ---------------------------------------------------------


def test_after_the_call_an_outcome_that_is_no_orphans_is_dropped_quietly() -> None:
    late: list[object] = []
    inbox = _Inbox(lambda attempt, outcome: late.append((attempt, outcome)))
    orphan = router_module._Attempt(
        id=2, provider=Stub("hedged", 1), started=0.0, timeout_at=5.0, fallback=False
    )
    inbox.close([orphan])

    inbox.put(1, ProviderError(FailureKind.TIMEOUT, "abandoned at its timeout, replied since"))
    inbox.put(2, answer())
    inbox.put(2, Completion(BEAT, 1, 1))

    assert late == [(orphan, answer())], "the orphan's outcome only, and once"


# The spare attempt thread -------------------------------------------------------------


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (a worker thread going idle has no other signal), 5 s at most."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


def test_only_taking_the_last_idle_attempt_thread_starts_a_spare() -> None:
    before = attempt_threads()
    workers = _Workers()
    first_release, release = threading.Event(), threading.Event()
    started = threading.Semaphore(0)

    def blocked(event: threading.Event) -> Callable[[], None]:
        def task() -> None:
            started.release()
            event.wait(5)

        return task

    try:
        for _ in range(2):
            workers.submit(blocked(first_release))
        for _ in range(2):
            assert started.acquire(timeout=5)
        first_release.set()
        wait_until(lambda: workers._idle == 2)
        ours = attempt_threads() - before
        assert len(ours) == 2

        workers.submit(blocked(release))
        assert started.acquire(timeout=5)
        assert attempt_threads() - before == ours, "one idle thread left: no spare yet"

        workers.submit(blocked(release))
        assert started.acquire(timeout=5)
        assert len(attempt_threads() - before - ours) == 1, "the last one taken: a spare"
    finally:
        first_release.set()
        release.set()
