"""router.py's verdicts: which mixes of failures are the reader's 400 and which the
service's 503, what each attempt reports (the error, the metrics, the log line), and how
`build_router` wires the circuit store and the metrics.

Fake provider servers (tests/lambdas/fake_providers.py) where the wire matters; `Stub`
providers, which answer at once (on a `FakeClock` they advance themselves), elsewhere.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from lambdas.story_generator import router as router_module
from lambdas.story_generator.circuit import (
    CircuitBreaker,
    CircuitState,
    DynamoDBCircuitStore,
    MemoryCircuitStore,
)
from lambdas.story_generator.errors import BadRequest, NoProviderAvailable
from lambdas.story_generator.generation import Generation, GenerationRequest, Message
from lambdas.story_generator.handler import build_handler
from lambdas.story_generator.metrics import Attempt, ProviderMetrics
from lambdas.story_generator.providers import Completion, FailureKind, ProviderError
from lambdas.story_generator.router import Router, build_router
from lambdas.story_generator.settings import ProviderKind, ProviderSettings, RouterSettings
from tests.lambdas.fake_providers import (
    BEAT,
    FakeClock,
    FakeProvider,
    accept_json,
    emf_documents,
    router_for,
    settings_for,
)
from tests.lambdas.router_doubles import RecordingMetrics
from tests.lambdas.story_doubles import invoke

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REQUEST = GenerationRequest("You narrate.", (Message("user", "Begin the story."),))
START = {"genre": "liminal", "premise": "The 3:07 to nowhere"}
Outcome = Completion | BaseException


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# A 400 among outages is the service's 503 ---------------------------------------------


@pytest.mark.parametrize("rejecting", ["openai", "anthropic", "bedrock"])
def test_one_provider_rejecting_the_request_while_the_others_are_down_is_a_503(
    fake_provider: Callable[[str], FakeProvider], rejecting: str
) -> None:
    fakes = {kind: fake_provider(kind) for kind in ("openai", "anthropic", "bedrock")}
    fakes["openai"].fail(503, "", "Service unavailable")
    fakes["anthropic"].fail(529, "overloaded_error", "Overloaded")
    fakes["bedrock"].fail(500, "InternalServerException", "Internal")
    fakes[rejecting].fail(400, "invalid_request_error", "Invalid input")
    if rejecting == "bedrock":
        fakes["bedrock"].fail(400, "ValidationException", "Malformed input request")
    router = router_for(*(fake.entry(priority=i) for i, fake in enumerate(fakes.values(), 1)))

    with pytest.raises(NoProviderAvailable) as raised:
        router.generate(REQUEST, accept_json)

    expected = {"openai": "unavailable", "anthropic": "unavailable", "bedrock": "unavailable"}
    assert raised.value.failures == {**expected, rejecting: "bad_request"}, (
        "the others may well answer the same request later: not the reader's fault"
    )
    assert (raised.value.status, raised.value.code) == (503, "no_provider_available")
    assert raised.value.retry_after_s == 1.0


def test_a_400_and_a_refused_connection_through_the_handler_is_a_503(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    fake_openai.fail(400, "invalid_request_error", "Invalid input")
    fake_anthropic.fail(503, "overloaded_error", "Busy")
    handler = build_handler(
        settings_for(
            fake_openai.entry(),
            fake_anthropic.entry(priority=2),
            {
                "name": "unreachable",
                "kind": "openai",
                "model": "gpt-test",
                "priority": 3,
                "endpoint_url": closed_port_url(),
            },
        )
    )

    reply = invoke(handler, "POST", "/stories", START)

    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.body["error"]["code"] == "no_provider_available"
    assert reply.body["error"]["providers"] == {
        "openai": "bad_request",
        "anthropic": "unavailable",
        "unreachable": "connection",
    }


class Stub:
    """A provider without a server: call n returns or raises `outcomes[n]` (the last repeats).

    With a `clock`, each call first advances it by `takes_s`.
    """

    def __init__(
        self,
        name: str,
        priority: int,
        *outcomes: Outcome,
        clock: FakeClock | None = None,
        takes_s: float = 0.0,
        **settings: Any,
    ) -> None:
        self.settings = ProviderSettings(
            name=name, kind=ProviderKind.MOCK, model=f"{name}-model", priority=priority, **settings
        )
        self.calls = 0
        self._outcomes = list(outcomes) or [Completion(BEAT, 12, 34)]
        self._clock = clock
        self._takes_s = takes_s

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        """The next outcome."""
        self.calls += 1
        if self._clock is not None:
            self._clock.advance(self._takes_s)
        outcome = self._outcomes.pop(0) if len(self._outcomes) > 1 else self._outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def error(kind: FailureKind) -> ProviderError:
    """A provider's failure of `kind`."""
    return ProviderError(kind, f"simulated {kind.value}")


def stub_router(
    *providers: Stub,
    clock: FakeClock | None = None,
    metrics: ProviderMetrics | None = None,
    circuit: CircuitBreaker | None = None,
    **settings: Any,
) -> Router:
    """A router over `providers`; its monotonic clock is `clock` when given."""
    router_settings = RouterSettings(**settings)
    names = [provider.settings.name for provider in providers]
    return Router(
        providers,
        router_settings,
        circuit=circuit or CircuitBreaker(MemoryCircuitStore(), names, router_settings),
        metrics=metrics or RecordingMetrics(),
        **({"monotonic": clock} if clock else {}),
    )


def verdict(router: Router) -> BadRequest | NoProviderAvailable:
    """The error one generation raises."""
    with pytest.raises((BadRequest, NoProviderAvailable)) as raised:
        router.generate(REQUEST, accept_json)
    assert isinstance(raised.value, BadRequest | NoProviderAvailable)
    return raised.value


BAD = error(FailureKind.BAD_REQUEST)


@pytest.mark.parametrize(
    "outcomes",
    [
        [BAD, error(FailureKind.UNAVAILABLE), error(FailureKind.TIMEOUT)],
        [error(FailureKind.TIMEOUT), BAD],
        [error(FailureKind.CONNECTION), error(FailureKind.THROTTLED), BAD],
        [BAD, error(FailureKind.INVALID_RESPONSE)],
        [BAD, error(FailureKind.UNAUTHORIZED)],
        [error(FailureKind.CONTEXT_EXCEEDED), error(FailureKind.QUOTA_EXHAUSTED)],
        [BAD, RuntimeError("a bug in our client")],
        [Completion("", 1, 0), error(FailureKind.UNAVAILABLE)],
    ],
    ids=[
        "400-5xx-timeout",
        "timeout-400",
        "connection-429-400",
        "400-invalid-response",
        "400-401",
        "context-quota",
        "400-client-bug",
        "empty-5xx",
    ],
)
def test_a_request_failure_among_other_failures_is_a_503(outcomes: list[Outcome]) -> None:
    providers = [Stub(f"p{i}", i, outcome) for i, outcome in enumerate(outcomes, 1)]

    raised = verdict(stub_router(*providers))

    assert isinstance(raised, NoProviderAvailable), f"{type(raised).__name__}: {raised}"
    assert len(raised.failures) == len(outcomes)


def test_a_request_failure_next_to_an_open_circuit_is_a_503() -> None:
    first, second = Stub("first", 1, error(FailureKind.UNAUTHORIZED)), Stub("second", 2, BAD)
    router = stub_router(first, second)
    verdict(router)  # opens the first's circuit

    raised = verdict(router)

    assert isinstance(raised, NoProviderAvailable)
    assert raised.failures == {"first": "circuit_open", "second": "bad_request"}
    assert first.calls == 1


def test_a_request_failure_next_to_a_provider_skipped_for_the_deadline_is_a_503() -> None:
    clock = FakeClock(0.0)
    first = Stub("first", 1, BAD, clock=clock, takes_s=1.0)
    second = Stub("second", 2)
    raised = verdict(stub_router(first, second, clock=clock, deadline_s=1.0))

    assert isinstance(raised, NoProviderAvailable)
    assert raised.failures == {"first": "bad_request", "second": "deadline_exceeded"}
    assert second.calls == 0


@pytest.mark.parametrize(
    "outcomes",
    [
        [BAD, BAD],
        [error(FailureKind.CONTEXT_EXCEEDED), BAD],
        [error(FailureKind.CONTENT_FILTERED), Completion(BEAT, 1, 1, truncated=True)],
        [error(FailureKind.UNENCODABLE), Completion("Once upon a time", 1, 1)],
    ],
    ids=["400-400", "context-400", "filtered-truncated", "unencodable-malformed"],
)
def test_failures_all_caused_by_the_request_are_the_readers_400(outcomes: list[Outcome]) -> None:
    providers = [Stub(f"p{i}", i, outcome) for i, outcome in enumerate(outcomes, 1)]

    raised = verdict(stub_router(*providers))

    assert isinstance(raised, BadRequest)
    assert (raised.status, raised.code) == (400, "rejected_by_providers")
    assert raised.message == (
        "Every AI provider refused this request, or answered it with nothing usable; "
        "change the input (the premise, usually)."
    )
    assert list(raised.details["providers"]) == ["p1", "p2"]  # type: ignore[call-overload]


def test_a_prompt_every_provider_says_is_too_long_is_prompt_too_large() -> None:
    first = Stub("first", 1, error(FailureKind.CONTEXT_EXCEEDED), context_window=9000)
    second = Stub("second", 2, error(FailureKind.CONTEXT_EXCEEDED))
    router = stub_router(first, second)

    raised = verdict(router)

    assert isinstance(raised, BadRequest) and raised.code == "prompt_too_large"
    assert raised.message == (
        "The story so far is too long for every AI provider's context window; start a new story."
    )
    assert raised.details == {
        "estimated_tokens": REQUEST.estimated_input_tokens(),
        "context_windows": {"first": 9000, "second": None},
    }


# Context windows at their edge --------------------------------------------------------


def test_a_prompt_that_exactly_fills_a_context_window_is_sent() -> None:
    needed = REQUEST.estimated_input_tokens() + 100
    exact = Stub("exact", 1, context_window=needed, max_tokens=100)
    short = Stub("short", 2, context_window=needed - 1, max_tokens=100)

    _, generation = stub_router(exact, short).generate(REQUEST, accept_json)

    assert generation.provider == "exact"
    raised = verdict(stub_router(Stub("short", 1, context_window=needed - 1, max_tokens=100)))
    assert isinstance(raised, BadRequest) and raised.code == "prompt_too_large"


def test_a_window_as_small_as_one_already_too_small_is_skipped_and_reported() -> None:
    first = Stub("first", 1, error(FailureKind.CONTEXT_EXCEEDED), context_window=8000)
    same = Stub("same", 2, context_window=8000)
    down = Stub("down", 3, error(FailureKind.UNAVAILABLE))

    raised = verdict(stub_router(first, same, down))

    assert same.calls == 0, "8000 tokens already proved too few"
    assert isinstance(raised, NoProviderAvailable)
    assert raised.failures == {
        "first": "context_exceeded",
        "same": "context_exceeded",
        "down": "unavailable",
    }


# What an attempt reports --------------------------------------------------------------


def test_the_generation_and_the_metrics_report_the_attempts_exactly() -> None:
    clock = FakeClock(0.0)
    metrics = RecordingMetrics()
    prices = {"input_price_per_1k": 3.0, "output_price_per_1k": 15.0}
    first = Stub("first", 1, error(FailureKind.UNAVAILABLE), clock=clock, takes_s=0.5, **prices)
    second = Stub("second", 2, Completion("Once upon", 7, 3), clock=clock, takes_s=0.25, **prices)
    third = Stub("third", 3, Completion(BEAT, 40, 5), clock=clock, takes_s=0.125, **prices)
    router = stub_router(first, second, third, clock=clock, metrics=metrics)

    beat, generation = router.generate(REQUEST, accept_json)

    assert beat == {"text": "The train leaves without you.", "choices": ["Wait", "Run"]}
    assert generation == Generation(
        text=BEAT,
        provider="third",
        model="third-model",
        input_tokens=40,
        output_tokens=5,
        latency_ms=875.0,
        cost_usd=(40 * 3.0 + 5 * 15.0) / 1000,
        fallback=True,
    )
    assert metrics.attempts == [
        Attempt("first", "first-model", 500.0, False, False, 0, 0, 0.0, "unavailable"),
        Attempt("second", "second-model", 250.0, False, True, 7, 3, 0.066, "malformed"),
        Attempt("third", "third-model", 125.0, True, True, 40, 5, 0.195, None),
    ]


@pytest.mark.parametrize(
    ("outcome", "failure", "detail"),
    [
        (RuntimeError("bug"), "client_error", "RuntimeError: bug"),
        (
            UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"),
            "unencodable",
            "UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' in position 0: "
            "surrogates",
        ),
        (Completion(BEAT, 1, 1, truncated=True), "truncated", "cut at max_tokens 333"),
        (Completion(" \n", 1, 1), "empty", "the reply has no text"),
        (
            Completion("Once", 1, 1),
            "malformed",
            "not JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (error(FailureKind.THROTTLED), "throttled", "simulated throttled"),
    ],
    ids=["client-bug", "unencodable", "truncated", "empty", "malformed", "throttled"],
)
def test_a_failed_attempt_is_logged_with_its_provider_failure_detail_and_latency(
    caplog: pytest.LogCaptureFixture, outcome: Outcome, failure: str, detail: str
) -> None:
    clock = FakeClock(0.0)
    failing = Stub("failing", 1, outcome, clock=clock, takes_s=0.123456, max_tokens=333)
    router = stub_router(failing, Stub("next", 2), clock=clock)

    with caplog.at_level(logging.WARNING):
        router.generate(REQUEST, accept_json)

    (logged,) = [r for r in caplog.records if r.getMessage() == "provider failed"]
    assert (logged.provider, logged.failure, logged.detail) == ("failing", failure, detail)
    assert logged.latency_ms == 123.5, "milliseconds, to a tenth"


def test_when_no_provider_is_available_the_failures_are_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = stub_router(Stub("a", 1, error(FailureKind.TIMEOUT)), Stub("b", 2, BAD))

    with caplog.at_level(logging.WARNING):
        verdict(router)

    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.getMessage() == "no provider available"
    assert logged.failures == {"a": "timeout", "b": "bad_request"}


def test_a_router_needs_a_provider() -> None:
    settings = RouterSettings()
    with pytest.raises(ValueError, match=r"^a router needs at least one provider$"):
        Router(
            [],
            settings,
            circuit=CircuitBreaker(MemoryCircuitStore(), [], settings),
            metrics=RecordingMetrics(),
        )


def test_the_providers_are_tried_in_priority_order() -> None:
    calls: list[str] = []

    class Noting(Stub):
        def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
            calls.append(self.settings.name)
            return super().complete(request, timeout_s)

    router = stub_router(Noting("c", 30, BAD), Noting("a", 10, BAD), Noting("b", 20, BAD))

    verdict(router)

    assert calls == ["a", "b", "c"]


# Every generation ends by flushing the circuit writes, boundedly -----------------------


@pytest.mark.parametrize("fails", [False, True], ids=["answered", "no-provider"])
def test_every_generation_waits_a_quarter_second_at_most_for_its_circuit_writes(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    router = stub_router(Stub("p", 1, error(FailureKind.UNAVAILABLE) if fails else answer()))
    flushes: list[float] = []
    flush = router.circuit.flush

    def recording_flush(timeout_s: float) -> bool:
        flushes.append(timeout_s)
        return flush(timeout_s)

    monkeypatch.setattr(router.circuit, "flush", recording_flush)

    if fails:
        verdict(router)
    else:
        router.generate(REQUEST, accept_json)

    assert flushes == [0.25]
    assert router_module.CIRCUIT_FLUSH_S == 0.25


def answer() -> Completion:
    """A usable reply."""
    return Completion(BEAT, 12, 34)


# build_router -------------------------------------------------------------------------


def test_with_a_session_table_the_circuits_are_shared_through_it(
    session_table: str, dynamodb: DynamoDBClient, fake_openai: FakeProvider
) -> None:
    fake_openai.fail(503, "", "Down")
    router = build_router(
        settings_for(fake_openai.entry(), SESSION_TABLE_NAME=session_table), clock=FakeClock()
    )

    with pytest.raises(NoProviderAvailable):
        router.generate(REQUEST, accept_json)
    assert router.circuit.flush(5)

    assert isinstance(router.circuit._store, DynamoDBCircuitStore)
    key = {"session_id": {"S": "circuit#openai"}, "timestamp": {"N": "0"}}
    item = dynamodb.get_item(TableName=session_table, Key=key)["Item"]
    assert item["failures"] == {"N": "1"}


def test_without_a_session_table_the_circuits_live_in_memory(fake_openai: FakeProvider) -> None:
    fake_openai.fail(401, "invalid_api_key", "Bad key")
    clock = FakeClock()
    router = build_router(settings_for(fake_openai.entry()), clock=clock)

    with pytest.raises(NoProviderAvailable):
        router.generate(REQUEST, accept_json)

    assert isinstance(router.circuit._store, MemoryCircuitStore)
    assert router.circuit_states() == {"openai": CircuitState.OPEN}
    clock.advance(300)
    assert router.circuit_states() == {"openai": CircuitState.HALF_OPEN}, "on the given clock"


def test_the_metrics_carry_the_environment(
    fake_openai: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    router = build_router(settings_for(fake_openai.entry(), ENVIRONMENT="staging"))

    router.generate(REQUEST, accept_json)

    (document,) = emf_documents(capsys.readouterr().out)
    assert (document["Environment"], document["Provider"]) == ("staging", "openai")
