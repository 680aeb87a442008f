"""Routes each generation across the AI providers, in priority order, within one deadline.

Every failure is classified (`FailureKind.category`):
- unhealthy (timeout, connection, 408/429/5xx/529, throttling, a malformed, empty
  or truncated reply): move to the next provider; counts towards its circuit;
- misconfigured (401/403, unknown model, exhausted quota or spend cap): move to
  the next provider; its circuit opens for `misconfigured_cooldown_s`;
- the request does not suit the provider (context window, 400): move to the next
  provider (for a context window, one with a larger window); no circuit change.
A prompt that no provider can take fails with 400 (`errors.BadRequest`) at once;
when every provider fails otherwise, `errors.NoProviderAvailable` (503) names each
provider's failure and when to retry.

Each attempt runs in a worker thread and gets at most `min(timeout_s, time left)`.
The router waits for the thread only that long, so the deadline holds even when a
server dribbles bytes; a thread that outlives its budget is abandoned (its reply,
if any, is ignored), never awaited. A timeout is never retried on the same
provider; a 429/503 with a short Retry-After that fits in the time left is retried
once. With `hedge_delay_s` set, a provider that has not answered within the delay
gets company from the next one, and the first usable reply wins.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aws_lambda_powertools import Logger

from .circuit import (
    CircuitBreaker,
    CircuitState,
    CircuitStore,
    DynamoDBCircuitStore,
    MemoryCircuitStore,
)
from .errors import BadRequest, NoProviderAvailable
from .generation import Generation, GenerationRequest, MalformedReply
from .metrics import Attempt, ProviderMetrics
from .providers import build_providers
from .providers.base import Completion, FailureCategory, FailureKind, Provider, ProviderError
from .settings import RouterSettings, Settings

T = TypeVar("T")
logger = Logger(child=True)

# A Retry-After longer than this moves on to the next provider instead of waiting.
MAX_RETRY_AFTER_S = 2.0
# Less time than this left is not worth starting (or waiting for) an attempt.
MIN_ATTEMPT_S = 0.1

_Outcome = Completion | ProviderError


class Router:
    """Sends a `GenerationRequest` to the first provider that gives a usable reply."""

    def __init__(
        self,
        providers: Iterable[Provider],
        settings: RouterSettings,
        *,
        circuit: CircuitBreaker,
        metrics: ProviderMetrics,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.providers = tuple(sorted(providers, key=lambda provider: provider.settings.priority))
        if not self.providers:
            raise ValueError("a router needs at least one provider")
        self.settings = settings
        self.circuit = circuit
        self.metrics = metrics
        self._sleep = sleep
        # Per-container cache: the worker threads that run attempts.
        self._workers = _Workers()

    def generate(
        self, request: GenerationRequest, accept: Callable[[str], T]
    ) -> tuple[T, Generation]:
        """The first reply that `accept` takes, and how it was obtained.

        `accept` parses the reply text and raises `MalformedReply` to reject it (that
        provider's failure). Raises `errors.BadRequest` when no provider can take the
        prompt and `errors.NoProviderAvailable` when every provider failed.
        """
        return _Call(self, request, accept).run()

    def circuit_states(self) -> dict[str, CircuitState]:
        """Each provider's circuit state, for `GET /health`."""
        return self.circuit.states()


def build_router(
    settings: Settings,
    *,
    circuit_store: CircuitStore | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Router:
    """The router of `settings`, created once per container.

    The circuit state is shared through the session table when one is configured,
    and kept in memory otherwise (local runs). `clock` (epoch seconds, for the
    circuits) and `sleep` (for Retry-After) are seams for tests.
    """
    providers = build_providers(settings)
    if circuit_store is None:
        table = settings.session_table_name
        circuit_store = DynamoDBCircuitStore(table) if table else MemoryCircuitStore()
    names = [provider.settings.name for provider in providers]
    circuit = CircuitBreaker(circuit_store, names, settings.router, clock=clock)
    metrics = ProviderMetrics(settings.environment)
    return Router(providers, settings.router, circuit=circuit, metrics=metrics, sleep=sleep)


class _Workers:
    """Daemon threads that run attempts: an idle one is reused, else a new one starts.

    A thread stuck on a provider that never answers is simply not idle, so it never
    delays another attempt; being a daemon, it never delays the interpreter's exit.
    Reuse saves starting a thread per attempt on the warm path.
    """

    MAX_IDLE = 4

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on an idle worker, or on a new one when none is idle."""
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._tasks.put(task)
        if spawn:
            threading.Thread(target=self._work, name="ai-attempt", daemon=True).start()

    def _work(self) -> None:
        while True:
            self._tasks.get()()
            with self._lock:
                if self._idle >= self.MAX_IDLE:
                    return
                self._idle += 1


@dataclass(slots=True)
class _Attempt:
    id: int
    provider: Provider
    started: float
    timeout_at: float
    fallback: bool
    hedged: bool = False


def _run(
    provider: Provider,
    request: GenerationRequest,
    timeout_s: float,
    attempt_id: int,
    results: queue.SimpleQueue[tuple[int, _Outcome]],
) -> None:
    """The body of an attempt's worker thread: its outcome goes to `results`."""
    outcome: _Outcome
    try:
        outcome = provider.complete(request, timeout_s)
    except ProviderError as error:
        outcome = error
    # A bug in one client must cost that attempt only, never the whole call.
    except Exception as error:
        logger.exception("provider client raised", extra={"provider": provider.settings.name})
        outcome = ProviderError(FailureKind.MALFORMED, f"{type(error).__name__}: {error}")
    results.put((attempt_id, outcome))


class _Call(Generic[T]):
    """The state of one `Router.generate` call."""

    def __init__(
        self, router: Router, request: GenerationRequest, accept: Callable[[str], T]
    ) -> None:
        self.router = router
        self.request = request
        self.accept = accept
        self.started = time.monotonic()
        self.deadline = self.started + router.settings.deadline_s
        self.estimated_tokens = request.estimated_input_tokens()
        self.pending = deque(router.providers)
        self.in_flight: dict[int, _Attempt] = {}
        self.results: queue.SimpleQueue[tuple[int, _Outcome]] = queue.SimpleQueue()
        self.attempt_ids = itertools.count(1)
        self.failures: dict[str, FailureKind] = {}
        self.retried: set[str] = set()
        # The largest context window a provider said the prompt does not fit.
        self.too_small_window = 0

    def run(self) -> tuple[T, Generation]:
        if not any(self._fits(provider) for provider in self.pending):
            raise self._prompt_too_large()
        while True:
            if not self.in_flight and not self._start_next():
                raise self._exhausted()
            settled = self._wait()
            if settled is not None:
                accepted = self._settle(*settled)
                if accepted is not None:
                    return accepted

    def _fits(self, provider: Provider) -> bool:
        window = provider.settings.context_window
        if window is None:
            return True
        needed = self.estimated_tokens + provider.settings.max_tokens
        return needed <= window and window > self.too_small_window

    def _start_next(self) -> bool:
        """Start the next provider that may be called; False when none is left."""
        while self.pending:
            provider = self.pending.popleft()
            name = provider.settings.name
            remaining = self.deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_S:
                for skipped in (provider, *self.pending):
                    self.failures.setdefault(skipped.settings.name, FailureKind.DEADLINE_EXCEEDED)
                self.pending.clear()
                return False
            if not self._fits(provider):
                self.failures.setdefault(name, FailureKind.CONTEXT_EXCEEDED)
            elif not self.router.circuit.allow(name):
                self.failures.setdefault(name, FailureKind.CIRCUIT_OPEN)
            else:
                self._launch(provider, min(provider.settings.timeout_s, remaining))
                return True
        return False

    def _launch(self, provider: Provider, timeout_s: float) -> None:
        now = time.monotonic()
        attempt = _Attempt(
            id=next(self.attempt_ids),
            provider=provider,
            started=now,
            timeout_at=now + timeout_s,
            # Any provider but the primary is a fallback, also when the primary
            # was skipped (open circuit, context window): the fallback rate
            # must show a long outage of the primary, not only its first minutes.
            fallback=provider is not self.router.providers[0],
        )
        self.in_flight[attempt.id] = attempt
        self.router._workers.submit(
            functools.partial(_run, provider, self.request, timeout_s, attempt.id, self.results)
        )

    def _hedge_at(self) -> float | None:
        """When to start the next provider alongside the only one in flight, if at all."""
        delay = self.router.settings.hedge_delay_s
        if delay is None or len(self.in_flight) != 1 or not self.pending:
            return None
        (attempt,) = self.in_flight.values()
        return None if attempt.hedged else attempt.started + delay

    def _wait(self) -> tuple[_Attempt, _Outcome] | None:
        """The next attempt to finish, or None after a timeout or a hedge."""
        wake = min(attempt.timeout_at for attempt in self.in_flight.values())
        hedge_at = self._hedge_at()
        if hedge_at is not None:
            wake = min(wake, hedge_at)
        try:
            attempt_id, outcome = self.results.get(timeout=max(0.0, wake - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for attempt in [a for a in self.in_flight.values() if a.timeout_at <= now]:
                # Abandoned: its thread ends on its own; whatever it returns is ignored.
                del self.in_flight[attempt.id]
                budget = attempt.timeout_at - attempt.started
                self._fail(
                    attempt, ProviderError(FailureKind.TIMEOUT, f"no reply within {budget:.2f} s")
                )
            if hedge_at is not None and hedge_at <= now and len(self.in_flight) == 1:
                (attempt,) = self.in_flight.values()
                attempt.hedged = True
                self._start_next()
            return None
        attempt_or_none = self.in_flight.pop(attempt_id, None)
        if attempt_or_none is None:  # the late reply of an abandoned attempt
            return None
        return attempt_or_none, outcome

    def _settle(self, attempt: _Attempt, outcome: _Outcome) -> tuple[T, Generation] | None:
        """The accepted reply, or None after recording why the attempt failed."""
        if isinstance(outcome, ProviderError):
            self._fail(attempt, outcome)
            return None
        settings = attempt.provider.settings
        try:
            if outcome.truncated:
                raise ProviderError(
                    FailureKind.TRUNCATED, f"cut at max_tokens {settings.max_tokens}"
                )
            if not outcome.text.strip():
                raise ProviderError(FailureKind.EMPTY, "the reply has no text")
            try:
                value = self.accept(outcome.text)
            except MalformedReply as error:
                raise ProviderError(FailureKind.MALFORMED, str(error)) from None
        except ProviderError as error:
            self._fail(attempt, error, outcome)
            return None
        now = time.monotonic()
        cost = settings.cost_usd(outcome.input_tokens, outcome.output_tokens)
        self._record(attempt, now, success=True, completion=outcome)
        self.router.circuit.record_success(settings.name)
        # Attempts still in flight (hedging) are abandoned with their threads.
        self.in_flight.clear()
        return value, Generation(
            text=outcome.text,
            provider=settings.name,
            model=settings.model,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            latency_ms=(now - self.started) * 1000,
            cost_usd=cost,
            fallback=attempt.fallback,
        )

    def _fail(
        self, attempt: _Attempt, error: ProviderError, completion: Completion | None = None
    ) -> None:
        settings = attempt.provider.settings
        now = time.monotonic()
        self.failures[settings.name] = error.kind
        self._record(attempt, now, success=False, completion=completion, failure=error.kind)
        logger.warning(
            "provider failed",
            extra={
                "provider": settings.name,
                "failure": error.kind.value,
                "detail": error.message,
                "latency_ms": round((now - attempt.started) * 1000, 1),
            },
        )
        category = error.kind.category
        if category in (FailureCategory.UNHEALTHY, FailureCategory.MISCONFIGURED):
            self.router.circuit.record_failure(settings.name, error.kind)
        if error.kind is FailureKind.CONTEXT_EXCEEDED and settings.context_window:
            self.too_small_window = max(self.too_small_window, settings.context_window)
        if self._may_retry(attempt.provider, error):
            self.retried.add(settings.name)
            self.router._sleep(error.retry_after_s or 0.0)
            self.pending.appendleft(attempt.provider)

    def _may_retry(self, provider: Provider, error: ProviderError) -> bool:
        """Once, after a short Retry-After that leaves time for the attempt, if alone."""
        wait = error.retry_after_s
        return (
            wait is not None
            and wait <= MAX_RETRY_AFTER_S
            and wait + MIN_ATTEMPT_S <= self.deadline - time.monotonic()
            and provider.settings.name not in self.retried
            and not self.in_flight
        )

    def _record(
        self,
        attempt: _Attempt,
        now: float,
        *,
        success: bool,
        completion: Completion | None,
        failure: FailureKind | None = None,
    ) -> None:
        settings = attempt.provider.settings
        input_tokens = completion.input_tokens if completion else 0
        output_tokens = completion.output_tokens if completion else 0
        self.router.metrics.record(
            Attempt(
                provider=settings.name,
                model=settings.model,
                latency_ms=(now - attempt.started) * 1000,
                success=success,
                fallback=attempt.fallback,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=settings.cost_usd(input_tokens, output_tokens),
                failure=failure.value if failure else None,
            )
        )

    def _prompt_too_large(self) -> BadRequest:
        windows = {
            provider.settings.name: provider.settings.context_window
            for provider in self.router.providers
        }
        return BadRequest(
            "The story so far is too long for every AI provider's context window; "
            "start a new story.",
            code="prompt_too_large",
            details={"estimated_tokens": self.estimated_tokens, "context_windows": windows},
        )

    def _exhausted(self) -> BadRequest | NoProviderAvailable:
        if all(kind.category is FailureCategory.REQUEST for kind in self.failures.values()):
            if all(kind is FailureKind.CONTEXT_EXCEEDED for kind in self.failures.values()):
                return self._prompt_too_large()
            return BadRequest(
                "Every AI provider rejected this request as invalid; change the input.",
                code="rejected_by_providers",
                details={"providers": {name: kind.value for name, kind in self.failures.items()}},
            )
        logger.error(
            "no provider available",
            extra={"failures": {name: kind.value for name, kind in self.failures.items()}},
        )
        return NoProviderAvailable(self.failures, self.router.circuit.retry_after_s())
