"""router.py: fallback by failure category, one deadline, Retry-After, context windows, hedging.

The providers are fake servers on 127.0.0.1, or `Scripted` providers (no server)
where a test must control exactly when each attempt ends. Real time is never
asserted except as lower bounds that the router's own timeouts guarantee; the
exact timings (deadline, hedge delay, Retry-After) are asserted on simulated time
in test_router_timing.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambdas.story_generator.circuit import (
    CircuitBreaker,
    CircuitRecord,
    CircuitState,
    MemoryCircuitStore,
)
from lambdas.story_generator.errors import BadRequest, NoProviderAvailable
from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.metrics import ProviderMetrics
from lambdas.story_generator.providers import Completion, FailureKind, ProviderError
from lambdas.story_generator.router import LATENCY_MIN_SAMPLES, LATENCY_WINDOW, Router
from lambdas.story_generator.settings import ProviderKind, ProviderSettings, RouterSettings
from tests.lambdas.fake_providers import (
    BEAT,
    FakeClock,
    FakeProvider,
    Kind,
    accept_json,
    emf_documents,
    router_for,
)
from tests.lambdas.router_doubles import RecordingMetrics

REQUEST = GenerationRequest("You narrate.", (Message("user", "Begin the story."),))
MOCK = {"name": "mock", "kind": "mock", "priority": 50}
MakeFake = Callable[[Kind], FakeProvider]


def record(router: Router, store: MemoryCircuitStore, name: str) -> CircuitRecord:
    """`name`'s record in `store`, once the router's circuit writes are flushed."""
    assert router.circuit.flush(5), "the circuit writes reached the store"
    return store.load([name])[name]


# The same kind of failure, in each provider's own words.
FAILURES: dict[str, dict[Kind, Callable[[FakeProvider], object]]] = {
    "server-error": {
        "openai": lambda fake: fake.fail(503, "", "Service unavailable"),
        "anthropic": lambda fake: fake.fail(529, "overloaded_error", "Overloaded"),
        "bedrock": lambda fake: fake.fail(503, "ServiceUnavailableException", "Unavailable"),
    },
    "throttled": {
        "openai": lambda fake: fake.fail(429, "rate_limit_exceeded", "Slow down"),
        "anthropic": lambda fake: fake.fail(429, "rate_limit_error", "Slow down"),
        "bedrock": lambda fake: fake.fail(429, "ThrottlingException", "Slow down"),
    },
    "unauthorized": {
        "openai": lambda fake: fake.fail(401, "invalid_api_key", "Bad key"),
        "anthropic": lambda fake: fake.fail(401, "authentication_error", "Bad key"),
        "bedrock": lambda fake: fake.fail(403, "AccessDeniedException", "Denied"),
    },
    "model-not-found": {
        "openai": lambda fake: fake.fail(404, "model_not_found", "No such model"),
        "anthropic": lambda fake: fake.fail(404, "not_found_error", "No such model"),
        "bedrock": lambda fake: fake.fail(404, "ResourceNotFoundException", "No such model"),
    },
    "quota": {
        "openai": lambda fake: fake.fail(429, "insufficient_quota", "Out of quota"),
        "anthropic": lambda fake: fake.fail(402, "billing_error", "Out of credit"),
    },
    "context": {
        "openai": lambda fake: fake.fail(400, "context_length_exceeded", "Too long"),
        "anthropic": lambda fake: fake.fail(400, "invalid_request_error", "prompt is too long"),
        "bedrock": lambda fake: fake.fail(400, "ValidationException", "Input is too long"),
    },
    "truncated": dict.fromkeys(
        ("openai", "anthropic", "bedrock"), lambda f: f.reply(truncated=True)
    ),
    "empty": dict.fromkeys(("openai", "anthropic", "bedrock"), lambda f: f.reply("  ")),
    "malformed": dict.fromkeys(("openai", "anthropic", "bedrock"), lambda f: f.reply("Once upon")),
    "closed-mid-reply": dict.fromkeys(
        ("openai", "anthropic", "bedrock"), lambda f: f.close_mid_reply()
    ),
    "not-the-api-format": dict.fromkeys(
        ("openai", "anthropic", "bedrock"), lambda f: f.send(200, b"<html>proxy</html>")
    ),
    "bad-request": {
        "openai": lambda fake: fake.fail(400, "invalid_request_error", "Invalid input"),
        "anthropic": lambda fake: fake.fail(400, "invalid_request_error", "messages: bad text"),
        "bedrock": lambda fake: fake.fail(400, "ValidationException", "Malformed input request"),
    },
    "content-filtered": {
        "openai": lambda fake: fake.send(200, openai_reply("", finish_reason="content_filter")),
        "anthropic": lambda fake: fake.send(200, anthropic_reply("", stop_reason="refusal")),
        "bedrock": lambda fake: fake.send(
            200, bedrock_reply("", stop_reason="guardrail_intervened")
        ),
    },
}
UNHEALTHY = ["server-error", "throttled", "closed-mid-reply", "not-the-api-format"]
MISCONFIGURED = ["unauthorized", "model-not-found", "quota"]
# Caused by the request: a provider that works answered this prompt with nothing usable.
REQUEST_CAUSED = ["truncated", "empty", "malformed", "bad-request", "content-filtered", "context"]


def openai_reply(text: str, *, finish_reason: str) -> bytes:
    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    return json.dumps({"choices": [choice], "usage": {}}).encode()


def anthropic_reply(text: str, *, stop_reason: str) -> bytes:
    content = [{"type": "text", "text": text}] if text else []
    return json.dumps({"content": content, "stop_reason": stop_reason, "usage": {}}).encode()


def bedrock_reply(text: str, *, stop_reason: str) -> bytes:
    message = {"role": "assistant", "content": [{"text": text}] if text else []}
    return json.dumps({"output": {"message": message}, "stopReason": stop_reason}).encode()


def cases(*failures: str) -> list[Any]:
    """(failure, provider kind) parameters: of `failures`, or all."""
    return [
        pytest.param(failure, kind, id=f"{failure}-{kind}")
        for failure, by_kind in FAILURES.items()
        for kind in by_kind
        if not failures or failure in failures
    ]


def failing(fake_provider: MakeFake, failure: str, kind: Kind) -> FakeProvider:
    """A fake `kind` provider that fails with `failure` in its own words."""
    fake = fake_provider(kind)
    FAILURES[failure][kind](fake)
    return fake


@pytest.mark.parametrize(("failure", "kind"), cases())
def test_every_failure_moves_on_to_the_next_provider(
    fake_provider: MakeFake, failure: str, kind: Kind
) -> None:
    fake = failing(fake_provider, failure, kind)
    router = router_for(fake.entry(priority=1), MOCK)

    beat, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "mock" and generation.fallback
    assert set(beat) == {"text", "choices"}
    assert len(fake.requests) == 1, "no provider is called twice without a Retry-After"


@pytest.mark.parametrize(("failure", "kind"), cases(*UNHEALTHY))
def test_an_unhealthy_provider_counts_one_failure_towards_its_circuit(
    fake_provider: MakeFake, failure: str, kind: Kind
) -> None:
    fake = failing(fake_provider, failure, kind)
    store = MemoryCircuitStore()
    router = router_for(fake.entry(), MOCK, store=store)

    router.generate(REQUEST, accept_json)

    circuit = record(router, store, kind)
    assert circuit.failures == 1 and not circuit.open_until, "below the threshold it stays closed"


@pytest.mark.parametrize(("failure", "kind"), cases(*MISCONFIGURED))
def test_a_misconfigured_provider_is_skipped_for_the_longer_cooldown(
    fake_provider: MakeFake, failure: str, kind: Kind
) -> None:
    fake = failing(fake_provider, failure, kind)
    clock = FakeClock()
    store = MemoryCircuitStore()
    router = router_for(
        fake.entry(), MOCK, store=store, clock=clock, router={"misconfigured_cooldown_s": 600}
    )

    router.generate(REQUEST, accept_json)
    clock.advance(599)
    _, generation = router.generate(REQUEST, accept_json)

    assert record(router, store, kind).open_until == pytest.approx(clock.now - 599 + 600)
    assert len(fake.requests) == 1, "skipped at once, without waiting for the threshold"
    assert generation.provider == "mock"


@pytest.mark.parametrize(("failure", "kind"), cases(*REQUEST_CAUSED))
def test_a_failure_the_request_caused_never_counts_towards_the_circuit(
    fake_provider: MakeFake, failure: str, kind: Kind
) -> None:
    fake = failing(fake_provider, failure, kind)
    store = MemoryCircuitStore()
    router = router_for(fake.entry(), MOCK, store=store, router={"circuit_failure_threshold": 2})

    answered_by = [router.generate(REQUEST, accept_json)[1].provider for _ in range(5)]

    assert answered_by == ["mock"] * 5, "each request fell back to the next provider"
    assert len(fake.requests) == 5, "still called: its circuit never opened"
    assert record(router, store, kind) == CircuitRecord(), (
        "the provider works; this request provoked the failure, and counting it would let "
        "one reader open a circuit every reader shares"
    )


def test_a_prompt_that_cannot_be_encoded_fails_before_any_provider_is_called(
    fake_provider: MakeFake,
) -> None:
    fakes = [fake_provider(kind) for kind in ("openai", "anthropic", "bedrock")]
    store = MemoryCircuitStore()
    router = router_for(
        *(fake.entry(priority=i + 1) for i, fake in enumerate(fakes)),
        {**MOCK, "priority": 4},
        store=store,
        router={"circuit_failure_threshold": 1},
    )
    lone_surrogate = GenerationRequest("You narrate.", (Message("user", "Premise: \ud800"),))

    with pytest.raises(BadRequest) as raised:
        router.generate(lone_surrogate, accept_json)

    assert raised.value.code == "rejected_by_providers"
    assert raised.value.details["providers"] == dict.fromkeys(
        ("openai", "anthropic", "bedrock", "mock"), "unencodable"
    )
    assert [len(fake.requests) for fake in fakes] == [0, 0, 0], "refused before sending"
    assert router.circuit.flush(5)
    assert store.load(["openai", "mock"]) == {"openai": CircuitRecord(), "mock": CircuitRecord()}


def test_an_encoding_error_raised_inside_a_client_is_the_requests_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryCircuitStore()
    router = router_for(
        {"name": "first", "kind": "mock", "priority": 1},
        MOCK,
        store=store,
        router={"circuit_failure_threshold": 1},
    )

    def encodes(request: GenerationRequest, timeout_s: float) -> Completion:
        "\ud800".encode()  # as an SDK serialising the payload would
        raise AssertionError("unreachable")

    monkeypatch.setattr(router.providers[0], "complete", encodes)

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "mock"
    assert record(router, store, "first") == CircuitRecord(), "UnicodeEncodeError: not counted"


def half_open(fake: FakeProvider, clock: FakeClock, store: MemoryCircuitStore) -> Router:
    """A router whose `fake` primary failed once (threshold 1) and has cooled down."""
    router = router_for(
        fake.entry(),
        MOCK,
        store=store,
        clock=clock,
        router={"circuit_failure_threshold": 1, "circuit_cooldown_s": 30},
    )
    fake.fail(503, "", "Down", times=1)
    router.generate(REQUEST, accept_json)
    assert router.circuit_states()["openai"] is CircuitState.OPEN
    clock.advance(31)
    return router


def test_a_probe_the_model_answers_unusably_closes_the_circuit(fake_openai: FakeProvider) -> None:
    store = MemoryCircuitStore()
    router = half_open(fake_openai, FakeClock(), store)
    fake_openai.reply("Not JSON at all", times=1)

    _, generation = router.generate(REQUEST, accept_json)  # the probe: a malformed reply

    assert generation.provider == "mock"
    assert router.circuit_states()["openai"] is CircuitState.CLOSED, (
        "the model wrote a reply: its generation works"
    )
    assert record(router, store, "openai") == CircuitRecord()
    assert router.generate(REQUEST, accept_json)[1].provider == "openai"


def test_a_probe_refused_as_a_bad_request_is_given_back_to_the_next_call(
    fake_openai: FakeProvider,
) -> None:
    store = MemoryCircuitStore()
    router = half_open(fake_openai, FakeClock(), store)
    fake_openai.fail(400, "invalid_request_error", "Invalid input", times=1)

    _, refused = router.generate(REQUEST, accept_json)  # the probe: this request's 400
    state = router.circuit_states()["openai"]
    _, probed = router.generate(REQUEST, accept_json)

    assert refused.provider == "mock"
    assert state is CircuitState.HALF_OPEN, "a 400 says nothing of generation: not closed"
    assert probed.provider == "openai", (
        "the probe was given back: kept until it lapsed, a reader sending such requests "
        "could hold it and keep the circuit from closing"
    )
    assert router.circuit_states()["openai"] is CircuitState.CLOSED


def test_bad_requests_between_failures_do_not_keep_a_failing_circuit_closed(
    fake_openai: FakeProvider,
) -> None:
    store = MemoryCircuitStore()
    router = router_for(fake_openai.entry(), MOCK, store=store)
    for _ in range(2):
        fake_openai.fail(503, "", "Down", times=1)
        router.generate(REQUEST, accept_json)
        fake_openai.fail(400, "invalid_request_error", "Invalid input", times=1)
        router.generate(REQUEST, accept_json)
    fake_openai.fail(503, "", "Down", times=1)

    router.generate(REQUEST, accept_json)

    assert router.circuit_states()["openai"] is CircuitState.OPEN, (
        "three failures, the 400s in between no success: one reader's 400s cannot hold the "
        "circuit of a failing provider closed"
    )


def test_when_every_provider_fails_the_error_names_each_failure(fake_provider: MakeFake) -> None:
    openai = fake_provider("openai").fail(503, "", "Down")
    anthropic = fake_provider("anthropic").fail(401, "authentication_error", "Bad key")
    bedrock = fake_provider("bedrock").fail(429, "ThrottlingException", "Slow down")
    router = router_for(openai.entry(), anthropic.entry(priority=2), bedrock.entry(priority=3))

    with pytest.raises(NoProviderAvailable) as raised:
        router.generate(REQUEST, accept_json)

    error = raised.value
    assert error.status == 503
    assert error.failures == {
        "openai": "unavailable",
        "anthropic": "unauthorized",
        "bedrock": "throttled",
    }
    assert error.retry_after_s == 1.0, "two circuits are still closed: retry soon"


def test_retry_after_is_the_time_until_the_earliest_circuit_probe(fake_provider: MakeFake) -> None:
    openai = fake_provider("openai").fail(500, "", "Down")
    anthropic = fake_provider("anthropic").fail(401, "authentication_error", "Bad key")
    clock = FakeClock()
    router = router_for(
        openai.entry(),
        anthropic.entry(priority=2),
        clock=clock,
        router={"circuit_failure_threshold": 1, "circuit_cooldown_s": 40},
    )
    with pytest.raises(NoProviderAvailable):
        router.generate(REQUEST, accept_json)
    clock.advance(10)

    with pytest.raises(NoProviderAvailable) as raised:
        router.generate(REQUEST, accept_json)

    assert raised.value.failures == {"openai": "circuit_open", "anthropic": "circuit_open"}
    assert raised.value.retry_after_s == pytest.approx(30), "openai probes again in 40 - 10 s"


def test_a_short_retry_after_is_honoured_once_on_the_same_provider(
    fake_openai: FakeProvider,
) -> None:
    fake_openai.fail(429, "rate_limit_exceeded", "Slow down", headers={"retry-after": "1"}, times=1)
    waits: list[float] = []
    router = router_for(fake_openai.entry(), MOCK, sleep=waits.append)

    _, generation = router.generate(REQUEST, accept_json)

    assert waits == [1.0]
    assert generation.provider == "openai" and not generation.fallback
    assert len(fake_openai.requests) == 2


def test_retry_after_is_honoured_only_once(fake_openai: FakeProvider) -> None:
    fake_openai.fail(503, "", "Busy", headers={"retry-after": "0"})
    waits: list[float] = []

    _, generation = router_for(fake_openai.entry(), MOCK, sleep=waits.append).generate(
        REQUEST, accept_json
    )

    assert waits == [0.0] and len(fake_openai.requests) == 2
    assert generation.provider == "mock"


@pytest.mark.parametrize(
    ("retry_after", "deadline_s"),
    [("30", 25.0), ("2", 1.0)],
    ids=["longer-than-a-short-wait", "does-not-fit-in-the-deadline"],
)
def test_a_retry_after_that_does_not_fit_moves_on(
    fake_openai: FakeProvider, retry_after: str, deadline_s: float
) -> None:
    fake_openai.fail(429, "rate_limit_exceeded", "Slow down", headers={"retry-after": retry_after})
    waits: list[float] = []
    router = router_for(
        fake_openai.entry(), MOCK, sleep=waits.append, router={"deadline_s": deadline_s}
    )

    _, generation = router.generate(REQUEST, accept_json)

    assert waits == [] and len(fake_openai.requests) == 1
    assert generation.provider == "mock"


def long_request(characters: int) -> GenerationRequest:
    return GenerationRequest("", (Message("user", "x" * characters),))


def test_a_provider_whose_context_window_is_too_small_is_not_called(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    router = router_for(
        fake_openai.entry(context_window=1000, max_tokens=100),
        fake_anthropic.entry(priority=2, context_window=200_000),
    )

    _, generation = router.generate(long_request(8000), accept_json)

    assert fake_openai.requests == [], "about 2000 tokens cannot fit a 1000-token window"
    assert generation.provider == "anthropic"


def test_a_prompt_too_long_for_every_window_fails_at_once_with_400(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    router = router_for(
        fake_openai.entry(context_window=1000),
        fake_anthropic.entry(priority=2, context_window=2000),
    )

    with pytest.raises(BadRequest) as raised:
        router.generate(long_request(40_000), accept_json)

    assert raised.value.code == "prompt_too_large"
    assert fake_openai.requests == [] and fake_anthropic.requests == []


def test_a_context_error_moves_on_to_a_provider_with_a_larger_window(
    fake_provider: MakeFake,
) -> None:
    openai = fake_provider("openai").fail(400, "context_length_exceeded", "Too long")
    anthropic = fake_provider("anthropic")
    bedrock = fake_provider("bedrock")
    router = router_for(
        openai.entry(context_window=8000),
        anthropic.entry(priority=2, context_window=4000),
        bedrock.entry(priority=3, context_window=200_000),
    )

    _, generation = router.generate(REQUEST, accept_json)

    assert anthropic.requests == [], "a smaller window than one already too small is skipped"
    assert generation.provider == "bedrock"


@pytest.mark.parametrize(
    ("openai_says", "anthropic_says", "code"),
    [
        (
            (400, "context_length_exceeded", "Too long"),
            (400, "invalid_request_error", "prompt is too long: 9 tokens > 8 maximum"),
            "prompt_too_large",
        ),
        (
            (400, "invalid_value", "Bad input"),
            (422, "invalid_request_error", "Bad input"),
            "rejected_by_providers",
        ),
    ],
    ids=["prompt-too-long", "invalid"],
)
def test_a_request_every_provider_rejects_is_a_400(
    fake_openai: FakeProvider,
    fake_anthropic: FakeProvider,
    openai_says: tuple[int, str, str],
    anthropic_says: tuple[int, str, str],
    code: str,
) -> None:
    fake_openai.fail(*openai_says)
    fake_anthropic.fail(*anthropic_says)
    router = router_for(fake_openai.entry(), fake_anthropic.entry(priority=2))

    with pytest.raises(BadRequest) as raised:
        router.generate(REQUEST, accept_json)

    assert raised.value.code == code, "retrying elsewhere cannot help: the reader must change it"


def test_unusable_replies_from_every_provider_are_a_400_and_an_outage_a_503(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    fake_openai.reply("Once upon a time")
    fake_anthropic.reply("  ")
    router = router_for(fake_openai.entry(), fake_anthropic.entry(priority=2))

    with pytest.raises(BadRequest) as rejected:
        router.generate(REQUEST, accept_json)
    fake_anthropic.fail(529, "overloaded_error", "Overloaded")
    with pytest.raises(NoProviderAvailable) as unavailable:
        router.generate(REQUEST, accept_json)

    assert rejected.value.code == "rejected_by_providers"
    assert rejected.value.details["providers"] == {"openai": "malformed", "anthropic": "empty"}
    assert unavailable.value.failures == {"openai": "malformed", "anthropic": "unavailable"}, (
        "one provider down: the request may well succeed later"
    )


def test_a_reply_the_caller_rejects_counts_its_tokens_and_moves_on(
    fake_openai: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_openai.reply("I would rather not.", input_tokens=40, output_tokens=5)

    _, generation = router_for(fake_openai.entry(), MOCK).generate(REQUEST, accept_json)

    assert generation.provider == "mock"
    rejected, _ = emf_documents(capsys.readouterr().out)
    assert rejected["FailureKind"] == "malformed"
    assert (rejected["InputTokens"], rejected["OutputTokens"]) == ([40.0], [5.0]), (
        "tokens were paid"
    )


def test_a_hedged_request_keeps_whichever_answers_first(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over the wire; the exact hedge time is asserted on simulated time (test_router_timing)."""
    fake_openai.hang()
    router = router_for(
        fake_openai.entry(timeout_s=20),
        fake_anthropic.entry(priority=2),
        router={"hedge_delay_s": 0.05},
    )

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "anthropic" and generation.fallback
    recorded = [document["Provider"] for document in emf_documents(capsys.readouterr().out)]
    assert recorded == ["anthropic"], (
        "the hanging primary has no outcome yet: its 20 s timeout was not awaited"
    )
    # Its request may still be on the way when the hedge's answer is in (a loaded machine).
    assert fake_openai.wait_for_requests(1), "the primary was called"
    assert len(fake_openai.requests) == 1


def test_a_hedge_keeps_waiting_for_the_first_provider_when_the_second_fails(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    fake_openai.reply(delay_s=0.3)
    fake_anthropic.fail(503, "overloaded_error", "Busy")
    router = router_for(
        fake_openai.entry(), fake_anthropic.entry(priority=2), router={"hedge_delay_s": 0.05}
    )

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "openai" and not generation.fallback
    assert fake_anthropic.wait_for_requests(1), "the hedge was called"
    assert len(fake_anthropic.requests) == 1


def test_an_unexpected_client_error_fails_that_attempt_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryCircuitStore()
    router = router_for(
        {"name": "first", "kind": "mock", "priority": 1},
        MOCK,
        store=store,
        router={"circuit_failure_threshold": 1},
    )

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(router.providers[0], "complete", broken)

    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "mock"
    assert record(router, store, "first") == CircuitRecord(), (
        "our bug says nothing of the provider, and an input that provokes it must not open "
        "the circuit"
    )


def test_a_bug_in_every_client_is_a_503_not_the_readers_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = router_for(MOCK)

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(router.providers[0], "complete", broken)

    with pytest.raises(NoProviderAvailable) as raised:
        router.generate(REQUEST, accept_json)

    assert raised.value.failures == {"mock": "client_error"}


def test_circuit_states_are_reported_for_health(fake_openai: FakeProvider) -> None:
    fake_openai.fail(401, "invalid_api_key", "Bad key")
    router = router_for(fake_openai.entry(), MOCK)
    router.generate(REQUEST, accept_json)

    assert router.circuit_states() == {"openai": "open", "mock": "closed"}


def test_warm_calls_reuse_the_attempt_threads(fake_openai: FakeProvider) -> None:
    router = router_for(fake_openai.entry())
    router.generate(REQUEST, accept_json)
    threads = threading.active_count()

    for _ in range(10):
        router.generate(REQUEST, accept_json)

    assert threading.active_count() <= threads + 1, "no thread per attempt on the warm path"


# Hedging, with scripted providers that end exactly when the test says -------------

Script = Callable[[float], Completion]


class Scripted:
    """A provider without a server: each call runs `script(timeout_s)`."""

    def __init__(self, name: str, priority: int, script: Script, timeout_s: float = 5.0) -> None:
        self.settings = ProviderSettings(
            name=name,
            kind=ProviderKind.MOCK,
            model="scripted",
            priority=priority,
            timeout_s=timeout_s,
        )
        self.calls: list[float] = []  # time.monotonic() of each call
        self.script = script

    def complete(self, request: GenerationRequest, timeout_s: float) -> Completion:
        self.calls.append(time.monotonic())
        return self.script(timeout_s)


def answers(timeout_s: float) -> Completion:
    return Completion(BEAT, 12, 34)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so that the scripted providers still hanging end then."""
    event = threading.Event()
    yield event
    event.set()


def hangs(release: threading.Event) -> Script:
    """No reply within the timeout, as a black hole behind a real client's socket timeout."""

    def script(timeout_s: float) -> Completion:
        release.wait(timeout_s)
        raise ProviderError(FailureKind.TIMEOUT, "no reply")

    return script


class SignallingStore(MemoryCircuitStore):
    """A memory store that counts its failure and reset writes on semaphores."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = threading.Semaphore(0)
        self.resets = threading.Semaphore(0)

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        stored = super().add_failure(name, failure, expires_at)
        self.failures.release()
        return stored

    def reset(self, name: str) -> None:
        super().reset(name)
        self.resets.release()


def scripted_router(
    *providers: Scripted,
    store: MemoryCircuitStore | None = None,
    metrics: ProviderMetrics | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    **router: Any,
) -> Router:
    settings = RouterSettings(**router)
    names = [provider.settings.name for provider in providers]
    circuit = CircuitBreaker(store or MemoryCircuitStore(), names, settings)
    return Router(
        providers,
        settings,
        circuit=circuit,
        metrics=metrics or RecordingMetrics(),
        monotonic=monotonic,
    )


def test_hedging_never_runs_more_than_two_attempts_at_once(release: threading.Event) -> None:
    first = Scripted("first", 1, hangs(release), timeout_s=0.3)
    second = Scripted("second", 2, hangs(release))
    third = Scripted("third", 3, answers)
    router = scripted_router(first, second, third, hedge_delay_s=0.01)

    started = time.monotonic()
    _, generation = router.generate(REQUEST, accept_json)

    assert generation.provider == "third"
    assert [len(provider.calls) for provider in (first, second, third)] == [1, 1, 1]
    assert third.calls[0] - started >= 0.3, (
        "the third started only once the first timed out: the hedge (second) was the one extra"
    )


def test_a_tiny_hedge_delay_costs_one_extra_call_per_generation_at_most(
    release: threading.Event,
) -> None:
    hedged = threading.Event()

    def answers_once_hedged(timeout_s: float) -> Completion:
        hedged.wait(5)
        hedged.clear()
        return answers(timeout_s)

    def hangs_as_hedge(timeout_s: float) -> Completion:
        hedged.set()
        return hangs(release)(timeout_s)

    first = Scripted("first", 1, answers_once_hedged)
    second = Scripted("second", 2, hangs_as_hedge)
    third = Scripted("third", 3, answers)
    router = scripted_router(first, second, third, hedge_delay_s=0.01)

    answered_by = [router.generate(REQUEST, accept_json)[1].provider for _ in range(10)]

    assert answered_by == ["first"] * 10
    assert [len(provider.calls) for provider in (first, second, third)] == [10, 10, 0], (
        "hedged every time after 10 ms, yet each provider at most once a generation"
    )


def test_a_black_holed_primary_opens_its_circuit_while_hedges_answer_for_it(
    release: threading.Event,
) -> None:
    store = SignallingStore()
    primary = Scripted("primary", 1, hangs(release), timeout_s=0.2)
    secondary = Scripted("secondary", 2, answers)
    router = scripted_router(primary, secondary, store=store, hedge_delay_s=0.01)

    answered_by = [router.generate(REQUEST, accept_json)[1].provider for _ in range(3)]
    for _ in range(3):
        assert store.failures.acquire(timeout=5), "an abandoned attempt's timeout was counted"
    assert router.circuit.flush(5)

    assert answered_by == ["secondary"] * 3
    assert router.circuit_states()["primary"] is CircuitState.OPEN, "3 failures: open"
    router.generate(REQUEST, accept_json)
    assert len(primary.calls) == 3, "open: the black hole is no longer called"


def test_the_late_reply_of_an_attempt_a_hedge_beat_is_still_recorded() -> None:
    may_answer = threading.Event()

    def answers_late(timeout_s: float) -> Completion:
        may_answer.wait(5)
        return Completion(BEAT, 40, 5)

    store = SignallingStore()
    metrics = RecordingMetrics()
    first = Scripted("first", 1, answers_late)
    router = scripted_router(
        first, Scripted("second", 2, answers), store=store, metrics=metrics, hedge_delay_s=0.01
    )
    router.circuit.record_failure("first", FailureKind.UNAVAILABLE)

    _, generation = router.generate(REQUEST, accept_json)
    may_answer.set()

    assert generation.provider == "second"
    late = metrics.wait_for("first")
    assert [(a.success, a.input_tokens, a.output_tokens) for a in late] == [(True, 40, 5)], (
        "its tokens were paid: the metrics show it"
    )
    assert store.resets.acquire(timeout=5), "its success closed the circuit, as any success does"


def test_the_hedge_delay_is_the_p95_of_recent_successes_capped_by_the_configured_one() -> None:
    clock = FakeClock(0.0)
    latencies: list[float] = []

    def takes_the_next_latency(timeout_s: float) -> Completion:
        clock.advance(latencies.pop(0))
        return answers(timeout_s)

    # Alone, so that no hedge joins while the latencies are measured.
    router = scripted_router(
        Scripted("p", 1, takes_the_next_latency), monotonic=clock, hedge_delay_s=1.0
    )

    def serve(*seconds: float) -> float | None:
        latencies.extend(seconds)
        for _ in seconds:
            router.generate(REQUEST, accept_json)
        return router.hedge_delay_s("p")

    assert serve(*(i / 100 for i in range(1, LATENCY_MIN_SAMPLES))) == 1.0, (
        "too few samples: the configured delay"
    )
    assert serve(0.20) == pytest.approx(0.19), "the p95 of 0.01 ... 0.20"
    assert serve(*[0.05] * LATENCY_WINDOW) == pytest.approx(0.05), "of the recent samples only"
    assert serve(*[3.0] * LATENCY_WINDOW) == 1.0, "never later than configured"
