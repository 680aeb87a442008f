"""Benchmark of the AI provider router against fake providers on 127.0.0.1.

For `--requests` requests each (default 200) it prints p50/p99 latency of:
1. a provider that answers at once: a bare HTTP POST to the fake (the floor),
   `Router.generate`, `handler.lambda_handler` with a POST /stories API Gateway
   event, a plain loop over the providers (the seed's design: try each, catch and
   continue, no circuit, no deadline) and LiteLLM's Router; the overhead column is
   p50 minus the bare POST's p50;
2. the first provider black-holed (accepts, never answers; its timeout 0.2 s):
   the router with and without its circuit breaker, the plain loop, LiteLLM;
3. the cold import of the handler module in fresh interpreters, next to LiteLLM's.

Run from the repository root: `.venv/bin/python bench/router.py`. LiteLLM is a
bench-only extra (`pip install -e .[bench]`); without it its rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Quiet logs: the black-holed runs would print a warning per failed attempt.
os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
# LiteLLM would fetch its model price list from GitHub on import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from lambdas.story_generator.circuit import CircuitBreaker, MemoryCircuitStore  # noqa: E402
from lambdas.story_generator.generation import GenerationRequest, Message  # noqa: E402
from lambdas.story_generator.providers import Provider, ProviderError, build_providers  # noqa: E402
from lambdas.story_generator.providers.base import FailureKind  # noqa: E402
from lambdas.story_generator.providers.http import post_json  # noqa: E402
from tests.lambdas.fake_providers import (  # noqa: E402
    FakeProvider,
    accept_json,
    router_for,
    settings_for,
)

HOLE_TIMEOUT_S = 0.2
WARMUP = 10
REQUEST = GenerationRequest("You narrate.", (Message("user", "Begin the story."),))
Call = Callable[[], object]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of `samples`."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def measure(call: Call, requests: int, warmup: int = WARMUP) -> list[float]:
    """Milliseconds per call, after `warmup` calls (keep-alive connections, caches)."""
    samples = []
    with contextlib.redirect_stdout(io.StringIO()):  # EMF documents: written, not shown
        for _ in range(warmup):
            call()
        for _ in range(requests):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


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


def litellm_router(providers: list[tuple[str, float]]) -> Call | None:
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
    router = litellm.Router(model_list=model_list, fallbacks=fallbacks, num_retries=0)

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
    body = json.dumps({"user_id": "bench", "genre": "mystery"}).encode()
    event = proxy_event("POST", "/stories", [("Content-Type", "application/json")], body)
    context: Any = LocalContext()

    def call() -> object:
        reply = handler.lambda_handler(event, context)
        if reply["statusCode"] != 201:
            raise RuntimeError(f"POST /stories answered {reply['statusCode']}: {reply['body']}")
        return reply

    return call


class AlwaysClosed(CircuitBreaker):
    """A breaker that never skips a provider: the router's deadline handling alone."""

    def allow(self, name: str) -> bool:
        """Every provider may always be called."""
        return True

    def record_failure(self, name: str, kind: FailureKind) -> None:
        """Failures are not counted."""


def print_rows(title: str, rows: list[tuple[str, list[float] | None]], floor: float | None) -> None:
    print(f"\n{title}")
    header = f"  {'':44} {'p50 ms':>9} {'p99 ms':>9}"
    print(header + (f" {'overhead p50 ms':>16}" if floor is not None else ""))
    for name, samples in rows:
        if samples is None:
            print(f"  {name:44} litellm not installed")
            continue
        p50, p99 = percentiles(samples)
        overhead = f" {p50 - floor:>16.3f}" if floor is not None else ""
        print(f"  {name:44} {p50:>9.3f} {p99:>9.3f}{overhead}")


def instant_provider(fake: FakeProvider, requests: int) -> None:
    entry = fake.entry(timeout_s=5.0)
    url = f"{fake.url}/v1/chat/completions"
    payload = {"model": "gpt-test", "messages": [{"role": "user", "content": "Begin the story."}]}
    bare = measure(lambda: post_json(url, payload, {"authorization": "Bearer x"}, 5.0), requests)
    router = router_for(entry)
    litellm_call = litellm_router([(fake.url, 5.0)])
    rows: list[tuple[str, list[float] | None]] = [
        ("bare HTTP POST to the fake (floor)", bare),
        ("router.generate", measure(lambda: router.generate(REQUEST, accept_json), requests)),
        ("handler.lambda_handler POST /stories", measure(handler_call([entry]), requests)),
        (
            "plain loop (seed design)",
            measure(plain_loop(build_providers(settings_for(entry))), requests),
        ),
        ("LiteLLM Router", measure(litellm_call, requests) if litellm_call else None),
    ]
    print_rows(f"1. Provider answers at once ({requests} requests)", rows, percentiles(bare)[0])


def black_holed_first_provider(hole: FakeProvider, fake: FakeProvider, requests: int) -> None:
    """No warm-up: the first failures, before a circuit opens, are part of the cost."""
    hole.hang()
    entries = [hole.entry(name="hole", timeout_s=HOLE_TIMEOUT_S), fake.entry(priority=2)]
    with_circuit = router_for(*entries)
    without_circuit = router_for(*entries)
    without_circuit.circuit = AlwaysClosed(
        MemoryCircuitStore(), ["hole", "openai"], without_circuit.settings
    )
    litellm_call = litellm_router([(hole.url, HOLE_TIMEOUT_S), (fake.url, 5.0)])
    loop = plain_loop(build_providers(settings_for(*entries)))
    contenders: list[tuple[str, Call | None]] = [
        ("router.generate (circuit on)", lambda: with_circuit.generate(REQUEST, accept_json)),
        ("router.generate (circuit off)", lambda: without_circuit.generate(REQUEST, accept_json)),
        ("plain loop (seed design)", loop),
        ("LiteLLM Router (fallbacks)", litellm_call),
    ]
    rows = [
        (name, measure(call, requests, warmup=0) if call else None) for name, call in contenders
    ]
    title = (
        f"2. First provider black-holed, its timeout {HOLE_TIMEOUT_S} s, "
        f"second answers at once ({requests} requests)"
    )
    print_rows(title, rows, None)


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
    print(f"\n3. Cold import in a fresh interpreter ({runs} runs)")
    print(f"  {'':44} {'median ms':>9} {'min ms':>9}")
    for module in ("lambdas.story_generator.handler", "lambdas.story_generator.router", "litellm"):
        samples = cold_import(module, runs)
        if samples is None:
            print(f"  import {module:37} not installed")
            continue
        print(f"  import {module:37} {statistics.median(samples):>9.1f} {min(samples):>9.1f}")
    print("  heaviest imports of the handler (cumulative ms, python -X importtime):")
    for name, cost in heaviest_imports("lambdas.story_generator.handler"):
        print(f"    {name:42} {cost:>9.1f}")


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--import-runs", type=int, default=7)
    args = parser.parse_args()
    with FakeProvider("openai") as fake, FakeProvider("openai") as hole:
        instant_provider(fake, args.requests)
        black_holed_first_provider(hole, fake, args.requests)
    cold_imports(args.import_runs)


if __name__ == "__main__":
    main()
