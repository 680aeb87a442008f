"""Benchmark of the AI provider router against fake providers on 127.0.0.1.

Every contender runs `--runs` times (default 5) over `--requests` requests
(default 200); each row gives the spread over the runs, min / median / max, of
each run's p50 and of each run's p99, in milliseconds:
1. a provider that answers at once: a bare HTTP POST to the fake (the floor),
   `Router.generate`, `handler.lambda_handler` with a POST /stories API Gateway
   event, a plain loop over the providers (the seed's design: try each, catch and
   continue, no circuit, no deadline) and LiteLLM's Router; the overhead column is
   the median p50 minus the bare POST's median p50;
2. the first provider black-holed (accepts, never answers; its timeout 0.2 s),
   each run with fresh state: the router with and without its circuit breaker,
   the router hedging after a delay chosen from section 1's measured latency, the
   plain loop, and LiteLLM with a cool-down like the circuit's (`allowed_fails`
   2, `cooldown_time` 30 s: out after its third failure); then what hedging
   costs: extra calls with healthy providers, and at most one extra attempt at
   a time even with the smallest delay;
3. the fallback delay that circuit store writes add: a first provider that fails
   at once, a store that takes 50 ms per write (as a slow DynamoDB might), store
   writes on the request path (as before) or in the background (now): how long
   until the fallback is called, and the whole generation;
4. the cold import of the handler module in fresh interpreters, next to LiteLLM's.

Run from the repository root: `.venv/bin/python bench/router.py` (about ten
minutes; `--runs 1 --requests 50` for a quick look). LiteLLM is a bench-only extra
(`pip install -e .[bench]`); without it its rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Quiet logs: the black-holed runs would print a warning per failed attempt.
os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
# LiteLLM would fetch its model price list from GitHub on import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from lambdas.story_generator.circuit import (  # noqa: E402
    BackgroundWriter,
    CircuitBreaker,
    CircuitRecord,
    MemoryCircuitStore,
)
from lambdas.story_generator.generation import GenerationRequest, Message  # noqa: E402
from lambdas.story_generator.providers import Provider, ProviderError, build_providers  # noqa: E402
from lambdas.story_generator.providers.base import Completion, FailureKind  # noqa: E402
from lambdas.story_generator.providers.http import post_json  # noqa: E402
from lambdas.story_generator.router import Router  # noqa: E402
from tests.lambdas.fake_providers import (  # noqa: E402
    FakeProvider,
    accept_json,
    router_for,
    settings_for,
)

# The report; the EMF documents the routers write to stdout go to /dev/null (`main`).
OUT = sys.stdout
HOLE_TIMEOUT_S = 0.2
# The smallest hedge_delay_s that AI_ROUTER_CONFIG accepts.
MIN_HEDGE_DELAY_S = 0.01
# Section 3: a slow circuit store, and few enough requests that the circuit stays closed.
STORE_WRITE_S = 0.05
FALLBACK_REQUESTS = 50
NEVER_OPENS = {"circuit_failure_threshold": 100}
WARMUP = 10
REQUEST = GenerationRequest("You narrate.", (Message("user", "Begin the story."),))
Call = Callable[[], object]


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of `samples`."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def measure(call: Call, requests: int, warmup: int = WARMUP, pause_s: float = 0.0) -> list[float]:
    """Milliseconds per call, after `warmup` calls (keep-alive connections, caches).

    With `pause_s`, each call comes after that long idle, as a hedge does.
    """
    samples = []
    for _ in range(warmup):
        call()
    for _ in range(requests):
        if pause_s:
            time.sleep(pause_s)
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def say(line: str = "") -> None:
    """One line of the report."""
    print(line, file=OUT, flush=True)


@dataclass
class Spread:
    """The p50 and p99 of each run of one contender."""

    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)

    def add(self, samples: Sequence[float]) -> None:
        """One more run."""
        p50, p99 = percentiles(samples)
        self.p50s.append(p50)
        self.p99s.append(p99)

    @property
    def p50(self) -> float:
        """The median over the runs of their p50."""
        return statistics.median(self.p50s)

    @property
    def p99(self) -> float:
        """The median over the runs of their p99."""
        return statistics.median(self.p99s)


def repeat(
    make_call: Callable[[], Call | None],
    runs: int,
    requests: int,
    warmup: int,
    pause_s: float = 0.0,
) -> Spread | None:
    """`runs` runs of `requests` calls, each run with a call made afresh; None without one."""
    spread = Spread()
    for _ in range(runs):
        call = make_call()
        if call is None:
            return None
        spread.add(measure(call, requests, warmup, pause_s))
    return spread


def three(values: Sequence[float]) -> str:
    """min, median and max of `values`."""
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{low:>8.3f} {middle:>8.3f} {high:>8.3f}"


Row = tuple[str, Spread | None, str]


def print_rows(title: str, rows: list[Row], header: str = "") -> None:
    say(f"\n{title}")
    spread = "min   median      max"
    say(f"  {'':44} {'p50 ms: ' + spread:>26}  {'p99 ms: ' + spread:>26}  {header}")
    for name, runs, extra in rows:
        if runs is None:
            say(f"  {name:44} litellm not installed")
            continue
        say(f"  {name:44} {three(runs.p50s)}  {three(runs.p99s)}  {extra}")


def plain_loop(providers: tuple[Provider, ...]) -> Call:
    """The seed's design: each provider in turn, catch and continue."""

    def call() -> object:
        for provider in providers:
            try:
                return accept_json(provider.complete(REQUEST, provider.settings.timeout_s).text)
            except ProviderError:
                continue
        raise RuntimeError("All AI providers failed")

    return call


def litellm_router(providers: list[tuple[str, float]], **options: object) -> Call | None:
    """LiteLLM's Router over the same fakes (OpenAI wire format), fallbacks in order."""
    try:
        litellm: Any = importlib.import_module("litellm")
    except ImportError:
        return None
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    model_list: list[dict[str, Any]] = [
        {
            "model_name": f"provider-{index}",
            "litellm_params": {
                "model": "openai/gpt-test",
                "api_base": f"{url}/v1",
                "api_key": "sk-test",
                "timeout": timeout_s,
                "max_retries": 0,
            },
        }
        for index, (url, timeout_s) in enumerate(providers)
    ]
    fallbacks = [{"provider-0": [f"provider-{i}" for i in range(1, len(providers))]}]
    router = litellm.Router(model_list=model_list, fallbacks=fallbacks, num_retries=0, **options)

    def call() -> object:
        reply: Any = router.completion(
            model="provider-0", messages=[{"role": "user", "content": "Begin the story."}]
        )
        return accept_json(reply.choices[0].message.content)

    return call


def handler_call(entries: list[Mapping[str, object]]) -> Call:
    """`handler.lambda_handler` with a POST /stories event, the container built from env."""
    os.environ.update(
        {"ENVIRONMENT": "dev", "AI_PROVIDER_CONFIG": json.dumps(entries), "OPENAI_API_KEY": "x"}
    )
    for name in ("SESSION_TABLE_NAME", "EVENTS_ENABLED", "AI_ROUTER_CONFIG"):
        os.environ.pop(name, None)
    from lambdas.devserver import LocalContext, proxy_event
    from lambdas.story_generator import handler

    handler._container.cache_clear()
    body = json.dumps({"genre": "mystery"}).encode()
    # The reader as API Gateway's Cognito authorizer would pass it.
    event = proxy_event(
        "POST", "/stories", [("Content-Type", "application/json")], body, claims={"sub": "bench"}
    )
    context: Any = LocalContext()

    def call() -> object:
        reply = handler.lambda_handler(event, context)
        if reply["statusCode"] != 201:
            raise RuntimeError(f"POST /stories answered {reply['statusCode']}: {reply['body']}")
        return reply

    return call


def generate(router: Router) -> Call:
    return lambda: router.generate(REQUEST, accept_json)


class AlwaysClosed(CircuitBreaker):
    """A breaker that never skips a provider: the router's deadline handling alone."""

    def allow(self, name: str) -> bool:
        """Every provider may always be called."""
        return True

    def record_failure(self, name: str, kind: FailureKind) -> None:
        """Failures are not counted."""


class InlineWriter(BackgroundWriter):
    """The circuit store writes as they were before: on the request path, at once."""

    def submit(self, task: Callable[[], None]) -> bool:
        """Run `task` now."""
        task()
        return True


class SlowStore(MemoryCircuitStore):
    """A circuit store whose every write takes `STORE_WRITE_S` (reads are at once)."""

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        """Count a failure, slowly."""
        time.sleep(STORE_WRITE_S)
        return super().add_failure(name, failure, expires_at)

    def open(self, name: str, until: float, expires_at: float) -> None:
        """Open the circuit, slowly."""
        time.sleep(STORE_WRITE_S)
        super().open(name, until, expires_at)

    def reset(self, name: str) -> None:
        """Close the circuit, slowly."""
        time.sleep(STORE_WRITE_S)
        super().reset(name)


class Attempts:
    """Wraps a router's providers to see each generation's attempts (start and end)."""

    def __init__(self, router: Router) -> None:
        # Each generation sends its own request object: an attempt is known by it,
        # even when its thread starts after its generation has returned.
        self.requests: dict[int, tuple[int, GenerationRequest]] = {}
        self.spans: list[tuple[int, str, float, float]] = []  # generation, provider, start, end
        self.bounds: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()
        for provider in router.providers:
            self._wrap(provider)

    def _wrap(self, provider: Provider) -> None:
        complete = provider.complete

        def timed(request: GenerationRequest, timeout_s: float) -> Completion:
            generation, started = self.requests[id(request)][0], time.perf_counter()
            try:
                return complete(request, timeout_s)
            finally:
                with self._lock:
                    span = (generation, provider.settings.name, started, time.perf_counter())
                    self.spans.append(span)

        setattr(provider, "complete", timed)  # noqa: B010 (a method, on the instance)

    def call(self, router: Router) -> Call:
        """`router.generate`, each call with a request of its own."""

        def call() -> object:
            generation = len(self.bounds) + 1
            request = GenerationRequest(REQUEST.system, REQUEST.messages)
            self.requests[id(request)] = (generation, request)
            started = time.perf_counter()
            try:
                return router.generate(request, accept_json)
            finally:
                self.bounds[generation] = (started, time.perf_counter())

        return call

    def calls(self, name: str) -> int:
        """How many attempts `name` got (finished ones)."""
        return sum(1 for span in self.spans if span[1] == name)

    def most_at_once(self) -> int:
        """The most attempts of one generation running together before it returned."""
        most = 0
        for generation, (_, ended) in self.bounds.items():
            edges = sorted(
                edge
                for g, _, start, end in self.spans
                if g == generation
                for edge in ((start, 1), (min(end, ended), -1))
            )
            running = 0
            for _, change in edges:
                running += change
                most = max(most, running)
        return most


def instant_provider(fake: FakeProvider, runs: int, requests: int) -> Spread:
    """Section 1; returns the router's spread, the latency hedging is chosen from."""
    entry = fake.entry(timeout_s=5.0)
    url = f"{fake.url}/v1/chat/completions"
    payload = {"model": "gpt-test", "messages": [{"role": "user", "content": "Begin the story."}]}
    headers = {"authorization": "Bearer x"}
    router = router_for(entry)
    litellm_call = litellm_router([(fake.url, 5.0)])
    contenders: list[tuple[str, Callable[[], Call | None]]] = [
        ("bare HTTP POST to the fake (floor)", lambda: lambda: post_json(url, payload, headers, 5)),
        ("router.generate", lambda: generate(router)),
        ("handler.lambda_handler POST /stories", lambda: handler_call([entry])),
        ("plain loop (seed design)", lambda: plain_loop(build_providers(settings_for(entry)))),
        ("LiteLLM Router", lambda: litellm_call),
    ]
    spreads = [(name, repeat(make, runs, requests, WARMUP)) for name, make in contenders]
    floor, router_spread = spreads[0][1], spreads[1][1]
    assert floor is not None and router_spread is not None
    rows: list[Row] = [
        (name, spread, f"{spread.p50 - floor.p50:>8.3f}" if spread else "")
        for name, spread in spreads
    ]
    title = f"1. Provider answers at once ({runs} runs of {requests} requests)"
    print_rows(title, rows, "overhead: median p50 - floor's")
    return router_spread


def black_holed_first_provider(
    fake: FakeProvider, healthy: Spread, runs: int, requests: int
) -> None:
    """Section 2. No warm-up: the first failures, before a circuit opens, are part of the cost.

    After each run the black hole lets its hung requests go, which ends the server
    threads they hold (and, late, the attempts still waiting on them).
    """
    # Hedge once an attempt is slower than 99 % of healthy ones (section 1), or at the
    # smallest delay the configuration allows; the router lowers it at run time to the
    # provider's p95 once it has measured enough successes.
    hedge_delay_s = max(MIN_HEDGE_DELAY_S, math.ceil(healthy.p99) / 1000)

    def entries(hole: FakeProvider) -> list[dict[str, object]]:
        return [hole.entry(name="hole", timeout_s=HOLE_TIMEOUT_S), fake.entry(priority=2)]

    def circuit_off(hole: FakeProvider) -> Router:
        router = router_for(*entries(hole))
        router.circuit = AlwaysClosed(MemoryCircuitStore(), ["hole", "openai"], router.settings)
        return router

    hedged = {"hedge_delay_s": hedge_delay_s}
    contenders: list[tuple[str, Callable[[FakeProvider], Call | None]]] = [
        ("router.generate (circuit on)", lambda hole: generate(router_for(*entries(hole)))),
        ("router.generate (circuit off)", lambda hole: generate(circuit_off(hole))),
        (
            f"router.generate (circuit on, hedge {hedge_delay_s * 1000:g} ms)",
            lambda hole: generate(router_for(*entries(hole), router=hedged)),
        ),
        (
            "plain loop (seed design)",
            lambda hole: plain_loop(build_providers(settings_for(*entries(hole)))),
        ),
        (
            "LiteLLM Router (fallbacks, cool-down)",
            lambda hole: litellm_router(
                [(hole.url, HOLE_TIMEOUT_S), (fake.url, 5.0)], allowed_fails=2, cooldown_time=30
            ),
        ),
    ]
    rows: list[Row] = []
    with FakeProvider("openai") as hole:
        hole.hang()
        for name, make in contenders:
            spread: Spread | None = Spread()
            hole_calls = []
            for _ in range(runs):
                before = len(hole.requests)
                call = make(hole)
                if call is None or spread is None:
                    spread = None
                    break
                spread.add(measure(call, requests, warmup=0))
                hole_calls.append(len(hole.requests) - before)
                hole.released.set()
                hole.released.clear()
            rows.append((name, spread, " ".join(f"{calls:>3}" for calls in hole_calls)))
    title = (
        f"2. First provider black-holed, its timeout {HOLE_TIMEOUT_S} s, second answers at once "
        f"({runs} runs of {requests} requests, each from a closed circuit)"
    )
    print_rows(title, rows, "calls to the hole, each run")
    hedged_spread = rows[2][1]
    # The secondary as the hedge finds it: called after an idle of the hedge delay.
    secondary = repeat(
        lambda: generate(router_for(fake.entry())), runs, requests, WARMUP, hedge_delay_s
    )
    assert hedged_spread is not None and secondary is not None
    excess = [p99 - hedge_delay_s * 1000 for p99 in hedged_spread.p99s]
    say(
        f"  hedge delay {hedge_delay_s * 1000:g} ms: section 1's router p99 "
        f"({healthy.p99:.3f} ms), at least the {MIN_HEDGE_DELAY_S * 1000:g} ms "
        "that AI_ROUTER_CONFIG allows"
    )
    idle = f"the secondary's p99 after a {hedge_delay_s * 1000:g} ms idle, ms"
    say(f"  {'hedged p99 minus the hedge delay, ms':44} {three(excess)}")
    say(f"  {idle:44} {three(secondary.p99s)}")
    hedging_costs(fake, hedge_delay_s, runs, requests)


def hedging_costs(fake: FakeProvider, hedge_delay_s: float, runs: int, requests: int) -> None:
    """What hedging adds with healthy providers, and that it adds one attempt at a time."""
    slow_s = 0.02
    scenarios = [
        (f"all answer at once, hedge cap {hedge_delay_s * 1000:g} ms", 0.0, hedge_delay_s),
        (
            f"all answer in {slow_s * 1000:g} ms, hedge {MIN_HEDGE_DELAY_S * 1000:g} ms",
            slow_s,
            MIN_HEDGE_DELAY_S,
        ),
    ]
    rows: list[Row] = []
    with FakeProvider("openai") as second, FakeProvider("openai") as third:
        for name, answer_s, delay_s in scenarios:
            spread = Spread()
            counts: list[list[int]] = []
            most = 0
            for fake_provider in (fake, second, third):
                fake_provider.reply(delay_s=answer_s)
            for _ in range(runs):
                router = router_for(
                    fake.entry(name="first"),
                    second.entry(name="second", priority=2),
                    third.entry(name="third", priority=3),
                    router={"hedge_delay_s": delay_s},
                )
                attempts = Attempts(router)
                spread.add(measure(attempts.call(router), requests, warmup=0))
                counts.append([attempts.calls(each) for each in ("first", "second", "third")])
                most = max(most, attempts.most_at_once())
            calls = ", ".join("/".join(map(str, run)) for run in counts)
            rows.append((name, spread, f"{most}  {calls}"))
        fake.reply()
    title = (
        f"   Hedging, what it costs: three healthy providers ({runs} runs of {requests} "
        "requests, each from a fresh router)"
    )
    print_rows(title, rows, "most at once  calls first/second/third, each run")


@dataclass
class FallbackRun:
    """One run of section 3: when the fallback was called, and each whole generation."""

    called_after: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def fallback_run(
    failing: FakeProvider, fallback: FakeProvider, writer: BackgroundWriter
) -> FallbackRun:
    """`FALLBACK_REQUESTS` generations, the circuit store slow, its writes through `writer`."""
    router = router_for(failing.entry(), fallback.entry(priority=2), router=NEVER_OPENS)
    router.circuit = CircuitBreaker(
        SlowStore(), ["openai", "anthropic"], router.settings, writer=writer
    )
    run = FallbackRun()
    began = 0.0
    complete = router.providers[1].complete

    def timed(request: GenerationRequest, timeout_s: float) -> Completion:
        run.called_after.append((time.perf_counter() - began) * 1000)
        return complete(request, timeout_s)

    setattr(router.providers[1], "complete", timed)  # noqa: B010 (a method, on the instance)
    for _ in range(FALLBACK_REQUESTS):
        began = time.perf_counter()
        router.generate(REQUEST, accept_json)
        run.latencies.append((time.perf_counter() - began) * 1000)
    return run


def fallback_delay(runs: int) -> None:
    """Section 3: the time between a provider's failure and its fallback's call."""
    rows: list[Row] = []
    with FakeProvider("openai") as failing, FakeProvider("anthropic") as fallback:
        failing.fail(503, "", "Down")
        for answer_s in (0.0, 0.1):
            fallback.reply(delay_s=answer_s)
            for label, writer in (("before", InlineWriter), ("now", BackgroundWriter)):
                called_after, spread = Spread(), Spread()
                for _ in range(runs):
                    run = fallback_run(failing, fallback, writer())
                    called_after.add(run.called_after)
                    spread.add(run.latencies)
                name = f"{label}, fallback answers in {answer_s * 1000:g} ms"
                rows.append((name, spread, three(called_after.p50s)))
    title = (
        f"3. First provider fails at once (503), circuit store {STORE_WRITE_S * 1000:g} ms per "
        f"write: before, its writes on the request path; now, in the background ({runs} runs "
        f"of {FALLBACK_REQUESTS} requests; whole generation)"
    )
    print_rows(title, rows, "fallback called after, p50 ms: min median max")


def cold_import(module: str, runs: int) -> list[float] | None:
    """Milliseconds to import `module` in fresh interpreters (bytecode already cached)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            return None
        samples.append(float(result.stdout.strip().splitlines()[-1]) * 1000)
    return samples


def heaviest_imports(module: str, count: int = 8) -> list[tuple[str, float]]:
    """The top-level imports of `module` that cost most (`python -X importtime`)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    costs = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if len(name) - len(name.lstrip()) <= 3:  # direct imports of the entry module only
            costs.append((name.strip(), int(cumulative) / 1000))
    return sorted(costs, key=lambda cost: -cost[1])[:count]


def cold_imports(runs: int) -> None:
    say(f"\n4. Cold import in a fresh interpreter ({runs} runs)")
    say(f"  {'':44} {'median ms':>9} {'min ms':>9}")
    for module in ("lambdas.story_generator.handler", "lambdas.story_generator.router", "litellm"):
        samples = cold_import(module, runs)
        if samples is None:
            say(f"  import {module:37} not installed")
            continue
        say(f"  import {module:37} {statistics.median(samples):>9.1f} {min(samples):>9.1f}")
    say("  heaviest imports of the handler (cumulative ms, python -X importtime):")
    for name, cost in heaviest_imports("lambdas.story_generator.handler"):
        say(f"    {name:42} {cost:>9.1f}")


def main() -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--import-runs", type=int, default=7)
    args = parser.parse_args()
    # Late EMF documents too (attempts a hedge beat end after their call) go nowhere.
    with Path(os.devnull).open("w") as devnull, contextlib.redirect_stdout(devnull):
        with FakeProvider("openai") as fake:
            healthy = instant_provider(fake, args.runs, args.requests)
            black_holed_first_provider(fake, healthy, args.runs, args.requests)
        fallback_delay(args.runs)
        cold_imports(args.import_runs)


if __name__ == "__main__":
    main()
