"""Routes each generation across the AI providers, in priority order, within one deadline.

Every failure is classified (`FailureKind.category`), and only the provider's own
failures ever touch its circuit, which every reader shares:
- unhealthy (timeout, connection, 408/429/5xx/529, Bedrock throttling or model not
  ready, a 200 reply not in the API's format): move to the next provider; counts
  towards its circuit;
- misconfigured (401/403, unknown model, exhausted quota or spend cap, a refused
  parameter): move to the next provider; its circuit opens for
  `misconfigured_cooldown_s`;
- caused by the request (context window, the provider's 400 for this prompt, a reply
  the caller cannot parse, an empty or truncated reply, content filtering, a prompt
  that cannot be encoded): move to the next provider (for a context window, one with
  a larger window); never counted, so that no reader's requests, however crafted,
  can open a circuit for the others. When the model did write a reply (unparsable,
  empty, truncated, filtered), its generation works: that resets its circuit as a
  success does. Otherwise a half-open probe spent on the request is given back;
- a bug of our client (an unexpected exception): move on; no circuit change (a
  probe is given back).
A prompt that no provider can take fails with 400 (`errors.BadRequest`) at once, as
does a request that every provider failed because of the request itself
(`rejected_by_providers`); when providers failed otherwise,
`errors.NoProviderAvailable` (503) names each provider's failure and when to retry.

Each attempt runs in a worker thread and gets at most `min(timeout_s, time left)`.
The router waits for the thread only that long, so the deadline holds even when a
server dribbles bytes; a thread that outlives its budget is abandoned (its reply,
if any, is ignored), never awaited. A timeout is never retried on the same
provider; a 429/503 with a short Retry-After that fits in the time left is retried
once.

Hedging (`hedge_delay_s` set): when the only attempt in flight has not answered
within its hedge delay, the next provider starts alongside it and the first usable
reply wins. So at most two attempts run at once, and each provider is called at
most once per generation (plus a Retry-After retry), however small the delay. The
delay is chosen from measured latency: the p95 of the provider's last
`LATENCY_WINDOW` successful attempts in this container, once there are
`LATENCY_MIN_SAMPLES` of them, capped by `hedge_delay_s` (alone before that). A
provider is thus hedged about one call in twenty while its latency holds, and
never later than configured. An attempt that a hedge beat is left running, not
forgotten: its outcome, when it comes, still goes to the metrics, the circuit and
(a success) the latency window, so a black-holed primary still opens its circuit
while hedges answer for it, and the latencies a hedge cut short still count.

Circuit outcomes are recorded without waiting for the circuit store (see
circuit.py): a failing provider's fallback starts at once. `generate` ends by
waiting at most `CIRCUIT_FLUSH_S` for the store writes it queued, which by then
have usually overlapped a fallback attempt, so that the container, frozen once
the invocation returns, holds back none of them.
"""

from __future__ import annotations

import functools
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aws_lambda_powertools import Logger

from .circuit import (
    COUNTED,
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
# The longest `generate` waits for its circuit store writes: several DynamoDB round
# trips, yet little next to a generation; a write still running resumes on thaw.
CIRCUIT_FLUSH_S = 0.25
# The hedge delay follows the p95 of a provider's last LATENCY_WINDOW successful
# attempts, once there are LATENCY_MIN_SAMPLES of them.
LATENCY_WINDOW = 100
LATENCY_MIN_SAMPLES = 20
HEDGE_QUANTILE = 0.95
# Failures of the request in which the model did write a reply: its generation
# works, which for its circuit is as good as a success. (A 400 or a context error
# comes from the API's front door, which may well answer while generation is down.)
_GENERATED = frozenset(
    {
        FailureKind.MALFORMED,
        FailureKind.EMPTY,
        FailureKind.TRUNCATED,
        FailureKind.CONTENT_FILTERED,
    }
)

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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = tuple(sorted(providers, key=lambda provider: provider.settings.priority))
        if not self.providers:
            raise ValueError("a router needs at least one provider")
        self.settings = settings
        self.circuit = circuit
        self.metrics = metrics
        self._sleep = sleep
        self._monotonic = monotonic
        # Per-container caches: the worker threads that run attempts, and each
        # provider's recent latencies (for the hedge delay).
        self._workers = _Workers()
        self._latencies = {provider.settings.name: _Latencies() for provider in self.providers}

    def generate(
        self, request: GenerationRequest, accept: Callable[[str], T]
    ) -> tuple[T, Generation]:
        """The first reply that `accept` takes, and how it was obtained.

        `accept` parses the reply text and raises `MalformedReply` to reject it (that
        provider's failure). Raises `errors.BadRequest` when no provider can take the
        prompt and `errors.NoProviderAvailable` when every provider failed.
        """
        call = _Call(self, request, accept)
        try:
            return call.run()
        finally:
            call.close()
            self.circuit.flush(CIRCUIT_FLUSH_S)

    def circuit_states(self) -> dict[str, CircuitState]:
        """Each provider's circuit state, for `GET /health`."""
        return self.circuit.states()

    def hedge_delay_s(self, name: str) -> float | None:
        """How long an attempt on provider `name` runs alone before a hedge; None: never."""
        configured = self.settings.hedge_delay_s
        if configured is None:
            return None
        observed = self._latencies[name].quantile(HEDGE_QUANTILE)
        return configured if observed is None else min(configured, observed)

    def _record(
        self,
        attempt: _Attempt,
        now: float,
        *,
        completion: Completion | None,
        failure: FailureKind | None = None,
    ) -> None:
        """The attempt's metrics (a failure may still have a reply, whose tokens were paid)."""
        settings = attempt.provider.settings
        input_tokens = completion.input_tokens if completion else 0
        output_tokens = completion.output_tokens if completion else 0
        self.metrics.record(
            Attempt(
                provider=settings.name,
                model=settings.model,
                latency_ms=(now - attempt.started) * 1000,
                success=failure is None,
                fallback=attempt.fallback,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=settings.cost_usd(input_tokens, output_tokens),
                failure=failure.value if failure else None,
            )
        )

    def _late(self, attempt: _Attempt, outcome: _Outcome) -> None:
        """The outcome of an attempt left running because a hedge answered first."""
        now = self._monotonic()
        name = attempt.provider.settings.name
        completion: Completion | None
        error: ProviderError | None
        if isinstance(outcome, Completion):
            completion, error = outcome, _unusable(outcome, attempt.provider)
        else:
            completion, error = None, outcome
        if error is None and now > attempt.timeout_at:
            # What the call would have seen, had it waited.
            error = ProviderError(FailureKind.TIMEOUT, "replied after its timeout")
        self._record(attempt, now, completion=completion, failure=error.kind if error else None)
        if error is None:
            self._latencies[name].add(now - attempt.started)
        self._circuit_outcome(name, error)

    def _circuit_outcome(self, name: str, error: ProviderError | None) -> None:
        """What an attempt's outcome does to the circuit of provider `name`."""
        if error is None or error.kind in _GENERATED:
            self.circuit.record_success(name)
        elif error.kind.category in COUNTED:
            # Counted here at once; the store write happens in the background.
            self.circuit.record_failure(name, error.kind)
        else:
            # Nothing learnt of the provider: a half-open probe spent on this request is
            # given back, or a reader sending such requests could keep it taken.
            self.circuit.release_probe(name)


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
    Reuse saves starting a thread per attempt on the warm path, and taking the last
    idle thread starts a spare, so that the attempt most likely next (a fallback, a
    hedge) does not wait for a thread to start either.
    """

    MAX_IDLE = 4

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on an idle worker, or on a new one when none is idle."""
        with self._lock:
            if self._idle == 0:
                spawn = True  # the new thread takes `task`
            else:
                self._idle -= 1
                spawn = self._idle == 0
                if spawn:
                    self._idle = 1  # the spare, idle from the start
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
    # When a hedge joins it, if it is still alone then; None once hedged, or never.
    hedge_at: float | None = None


class _Latencies:
    """The latencies of a provider's last successful attempts in this container."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """One more successful attempt's latency."""
        with self._lock:
            self._samples.append(seconds)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank `q` quantile; None below `LATENCY_MIN_SAMPLES` samples."""
        with self._lock:
            ordered = sorted(self._samples)
        if len(ordered) < LATENCY_MIN_SAMPLES:
            return None
        return ordered[math.ceil(q * len(ordered)) - 1]


class _Inbox:
    """Where attempt threads leave their outcomes for the call that started them.

    Once the call is over (`close`), the outcome of an attempt it left running
    (a hedge answered first) goes to `late` instead; any other late outcome is
    dropped (an attempt abandoned at its timeout was already recorded as failed).
    """

    def __init__(self, late: Callable[[_Attempt, _Outcome], None]) -> None:
        self._queue: queue.SimpleQueue[tuple[int, _Outcome]] = queue.SimpleQueue()
        self._late = late
        self._orphans: dict[int, _Attempt] | None = None
        self._lock = threading.Lock()

    def put(self, attempt_id: int, outcome: _Outcome) -> None:
        """Deliver the outcome of attempt `attempt_id` (from its worker thread)."""
        with self._lock:
            if self._orphans is None:
                self._queue.put((attempt_id, outcome))
                return
            orphan = self._orphans.pop(attempt_id, None)
        if orphan is not None:
            self._late(orphan, outcome)

    def get(self, timeout_s: float) -> tuple[int, _Outcome]:
        """The next outcome; raises `queue.Empty` after `timeout_s`."""
        return self._queue.get(timeout=timeout_s)

    def close(self, running: Iterable[_Attempt]) -> None:
        """The call is over: `running` attempts are orphans from now on."""
        with self._lock:
            self._orphans = {attempt.id: attempt for attempt in running}
            arrived = []
            while True:
                try:
                    arrived.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # Outcomes that came in just before the call ended, unread.
            settled = [
                (self._orphans.pop(attempt_id), outcome)
                for attempt_id, outcome in arrived
                if attempt_id in self._orphans
            ]
        for attempt, outcome in settled:
            self._late(attempt, outcome)


def _run(
    provider: Provider,
    request: GenerationRequest,
    timeout_s: float,
    attempt_id: int,
    inbox: _Inbox,
) -> None:
    """The body of an attempt's worker thread: its outcome goes to `inbox`."""
    outcome: _Outcome
    try:
        outcome = provider.complete(request, timeout_s)
    except ProviderError as error:
        outcome = error
    # Text that cannot be encoded is the request's fault, wherever a client trips on it.
    except UnicodeError as error:
        outcome = ProviderError(FailureKind.UNENCODABLE, f"{type(error).__name__}: {error}")
    # A bug in one client must cost that attempt only, never the whole call.
    except Exception as error:
        logger.exception("provider client raised", extra={"provider": provider.settings.name})
        outcome = ProviderError(FailureKind.CLIENT_ERROR, f"{type(error).__name__}: {error}")
    inbox.put(attempt_id, outcome)


def _unusable(completion: Completion, provider: Provider) -> ProviderError | None:
    """Why a reply is of no use whatever the caller thinks of its text, if it is not."""
    if completion.truncated:
        return ProviderError(
            FailureKind.TRUNCATED, f"cut at max_tokens {provider.settings.max_tokens}"
        )
    if not completion.text.strip():
        return ProviderError(FailureKind.EMPTY, "the reply has no text")
    return None


class _Call(Generic[T]):
    """The state of one `Router.generate` call."""

    def __init__(
        self, router: Router, request: GenerationRequest, accept: Callable[[str], T]
    ) -> None:
        self.router = router
        self.request = request
        self.accept = accept
        self.now = router._monotonic
        self.started = self.now()
        self.deadline = self.started + router.settings.deadline_s
        self.estimated_tokens = request.estimated_input_tokens()
        self.pending = deque(router.providers)
        self.in_flight: dict[int, _Attempt] = {}
        self.inbox = _Inbox(router._late)
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

    def close(self) -> None:
        """The call is over: attempts still in flight (a hedge won) become orphans."""
        self.inbox.close(self.in_flight.values())
        self.in_flight.clear()

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
            remaining = self.deadline - self.now()
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
        now = self.now()
        hedge_delay_s = self.router.hedge_delay_s(provider.settings.name)
        attempt = _Attempt(
            id=next(self.attempt_ids),
            provider=provider,
            started=now,
            timeout_at=now + timeout_s,
            # Any provider but the primary is a fallback, also when the primary
            # was skipped (open circuit, context window): the fallback rate
            # must show a long outage of the primary, not only its first minutes.
            fallback=provider is not self.router.providers[0],
            hedge_at=None if hedge_delay_s is None else now + hedge_delay_s,
        )
        self.in_flight[attempt.id] = attempt
        self.router._workers.submit(
            functools.partial(_run, provider, self.request, timeout_s, attempt.id, self.inbox)
        )

    def _hedge_at(self) -> float | None:
        """When to start the next provider alongside the only one in flight, if at all."""
        if len(self.in_flight) != 1 or not self.pending:
            return None
        (attempt,) = self.in_flight.values()
        return attempt.hedge_at

    def _wait(self) -> tuple[_Attempt, _Outcome] | None:
        """The next attempt to finish, or None after a timeout or a hedge."""
        wake = min(attempt.timeout_at for attempt in self.in_flight.values())
        hedge_at = self._hedge_at()
        if hedge_at is not None:
            wake = min(wake, hedge_at)
        try:
            attempt_id, outcome = self.inbox.get(max(0.0, wake - self.now()))
        except queue.Empty:
            now = self.now()
            for attempt in [a for a in self.in_flight.values() if a.timeout_at <= now]:
                # Abandoned: its thread ends on its own; whatever it returns is ignored.
                del self.in_flight[attempt.id]
                budget = attempt.timeout_at - attempt.started
                self._fail(
                    attempt, ProviderError(FailureKind.TIMEOUT, f"no reply within {budget:.2f} s")
                )
            if hedge_at is not None and hedge_at <= now and len(self.in_flight) == 1:
                (attempt,) = self.in_flight.values()
                attempt.hedge_at = None
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
        error = _unusable(outcome, attempt.provider)
        if error is None:
            try:
                value = self.accept(outcome.text)
            except MalformedReply as rejected:
                error = ProviderError(FailureKind.MALFORMED, str(rejected))
        if error is not None:
            self._fail(attempt, error, outcome)
            return None
        now = self.now()
        self.router._record(attempt, now, completion=outcome)
        self.router._latencies[settings.name].add(now - attempt.started)
        self.router._circuit_outcome(settings.name, None)
        return value, Generation(
            text=outcome.text,
            provider=settings.name,
            model=settings.model,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            latency_ms=(now - self.started) * 1000,
            cost_usd=settings.cost_usd(outcome.input_tokens, outcome.output_tokens),
            fallback=attempt.fallback,
        )

    def _fail(
        self, attempt: _Attempt, error: ProviderError, completion: Completion | None = None
    ) -> None:
        settings = attempt.provider.settings
        now = self.now()
        self.failures[settings.name] = error.kind
        self.router._record(attempt, now, completion=completion, failure=error.kind)
        logger.warning(
            "provider failed",
            extra={
                "provider": settings.name,
                "failure": error.kind.value,
                "detail": error.message,
                "latency_ms": round((now - attempt.started) * 1000, 1),
            },
        )
        self.router._circuit_outcome(settings.name, error)
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
            and wait + MIN_ATTEMPT_S <= self.deadline - self.now()
            and provider.settings.name not in self.retried
            and not self.in_flight
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
                "Every AI provider refused this request, or answered it with nothing usable; "
                "change the input (the premise, usually).",
                code="rejected_by_providers",
                details={"providers": {name: kind.value for name, kind in self.failures.items()}},
            )
        logger.error(
            "no provider available",
            extra={"failures": {name: kind.value for name, kind in self.failures.items()}},
        )
        return NoProviderAvailable(self.failures, self.router.circuit.retry_after_s())
