"""Doubles shared by the router and circuit tests: a metrics sink that keeps every
attempt, a circuit store whose failure writes wait, and failures recorded and
flushed as the end of a generation flushes them.
"""

from __future__ import annotations

import threading

from lambdas.story_generator.circuit import CircuitBreaker, CircuitRecord, MemoryCircuitStore
from lambdas.story_generator.metrics import Attempt, ProviderMetrics
from lambdas.story_generator.providers import FailureKind


class RecordingMetrics(ProviderMetrics):
    """Keeps the attempts instead of printing them."""

    def __init__(self) -> None:
        super().__init__("test")
        self.attempts: list[Attempt] = []
        self._recorded = threading.Condition()

    def record(self, attempt: Attempt) -> None:
        """Keep `attempt`."""
        with self._recorded:
            self.attempts.append(attempt)
            self._recorded.notify_all()

    def wait_for(self, provider: str) -> list[Attempt]:
        """The attempts on `provider`, once there is one."""
        with self._recorded:
            self._recorded.wait_for(lambda: any(a.provider == provider for a in self.attempts), 5)
            return [attempt for attempt in self.attempts if attempt.provider == provider]


class BlockingStore(MemoryCircuitStore):
    """A store whose failure writes wait until the test sets `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        """Wait for `release`, then count the failure."""
        # Bounded, so that a router that waits for the write fails the test, not hangs it.
        self.release.wait(timeout=5)
        return super().add_failure(name, failure, expires_at)


def fail(circuit: CircuitBreaker, times: int, kind: FailureKind = FailureKind.UNAVAILABLE) -> None:
    """`times` failures of `p`, their store writes flushed as the end of a generation does."""
    for _ in range(times):
        circuit.record_failure("p", kind)
    assert circuit.flush(5), "the writes reached the store"
