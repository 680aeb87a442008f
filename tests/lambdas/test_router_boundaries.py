"""The router's configured limits at their exact edges: the deadline against the Lambda
timeout, the hedge delay, the latency window behind the hedge delay, the attempt threads.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from components.config import ConfigError, parse_stack_config
from components.generator_environment import function_environment
from components.offline import stack_config
from lambdas.story_generator.router import _Latencies, _Workers
from lambdas.story_generator.settings import ConfigurationError, RouterSettings, load_settings

NS = "liminal-transit"


def router_settings(**config: object) -> RouterSettings:
    """AI_ROUTER_CONFIG `config` as the function parses it."""
    return load_settings({"AI_ROUTER_CONFIG": json.dumps(config)}).router


# The deadline -------------------------------------------------------------------------


@pytest.mark.parametrize("deadline_s", [1, 28, 27.999])
def test_the_function_takes_a_deadline_from_1_to_28_s(deadline_s: float) -> None:
    assert router_settings(deadline_s=deadline_s).deadline_s == deadline_s


@pytest.mark.parametrize("deadline_s", [0.999, 28.001, 29, 0])
def test_the_function_refuses_a_deadline_outside_1_to_28_s(deadline_s: float) -> None:
    with pytest.raises(ConfigurationError, match=r"deadline_s .* use a number from 1 to 28"):
        router_settings(deadline_s=deadline_s)


def stack(**changes: dict[str, Any]) -> dict[str, str]:
    """The dev stack's raw config, with the JSON objects of `changes` merged in."""
    raw = dict(stack_config("dev"))
    for key, fields in changes.items():
        raw[f"{NS}:{key}"] = json.dumps({**json.loads(raw[f"{NS}:{key}"]), **fields})
    return raw


def function_router(raw: dict[str, str]) -> RouterSettings:
    """The router settings the function reads from the environment the stack config writes."""
    config = parse_stack_config(raw)
    environment = function_environment(
        environment="dev",
        table_name="table",
        session_ttl_days=7,
        event_bus_name="bus",
        log_level="INFO",
        ai=config.ai,
        secret_arns={},
    )
    return load_settings({k: v for k, v in environment.items() if isinstance(v, str)}).router


@pytest.mark.parametrize(
    ("timeout_s", "why"),
    [(20, "must be below"), (29, "less than 29")],
    ids=["lambda-timeout", "api-gateway-timeout"],
)
def test_a_deadline_equal_to_the_lambda_timeout_is_refused(timeout_s: int, why: str) -> None:
    raw = stack(ai={"deadlineS": timeout_s}, generator={"timeoutS": timeout_s})

    with pytest.raises(ConfigError, match=rf"ai.deadlineS = {timeout_s}\b.*{why}"):
        parse_stack_config(raw)


def test_a_deadline_just_below_the_lambda_timeout_is_what_the_function_runs_with() -> None:
    raw = stack(ai={"deadlineS": 19.999}, generator={"timeoutS": 20})

    assert function_router(raw).deadline_s == 19.999


def test_the_longest_deadline_both_sides_accept_reaches_the_function() -> None:
    raw = stack(ai={"deadlineS": 28}, generator={"timeoutS": 29})

    assert function_router(raw).deadline_s == 28.0


# The hedge delay ----------------------------------------------------------------------


@pytest.mark.parametrize("hedge_delay_s", [0, 0.009, -1])
def test_the_function_refuses_a_hedge_delay_below_10_ms(hedge_delay_s: float) -> None:
    """0 would hedge every call at once (the router allows it, see test_router_timing.py)."""
    with pytest.raises(ConfigurationError, match=r"hedge_delay_s .* use a number from 0\.01 to 28"):
        router_settings(hedge_delay_s=hedge_delay_s)


def test_the_shortest_hedge_delay_is_10_ms_and_none_means_no_hedging() -> None:
    assert router_settings(hedge_delay_s=0.01).hedge_delay_s == 0.01
    assert router_settings(hedge_delay_s=None).hedge_delay_s is None
    assert router_settings().hedge_delay_s is None


def test_the_hedge_delay_must_be_below_the_deadline() -> None:
    assert router_settings(deadline_s=10, hedge_delay_s=9.999).hedge_delay_s == 9.999
    with pytest.raises(ConfigurationError, match=r"use a delay below deadline_s \(10\)"):
        router_settings(deadline_s=10, hedge_delay_s=10)


def test_the_stacks_shortest_hedge_delay_that_the_function_takes_reaches_it() -> None:
    raw = stack(ai={"hedgeDelayS": 0.01})

    assert function_router(raw).hedge_delay_s == 0.01


# The latency window behind the hedge delay ---------------------------------------------


def latencies(*seconds: float) -> _Latencies:
    """A window holding `seconds`, oldest first."""
    window = _Latencies()
    for value in seconds:
        window.add(value)
    return window


def test_the_p95_needs_20_samples() -> None:
    assert latencies(*[0.5] * 19).quantile(0.95) is None
    assert latencies(*[0.5] * 20).quantile(0.95) == 0.5


def test_the_p95_is_the_nearest_rank() -> None:
    assert latencies(*(i / 100 for i in range(1, 21))).quantile(0.95) == 0.19
    assert latencies(*range(1, 101)).quantile(0.95) == 95
    assert latencies(*range(100, 0, -1)).quantile(0.95) == 95, "order of arrival aside"
    assert latencies(*range(1, 101)).quantile(1.0) == 100


def test_the_p95_is_of_the_last_100_samples() -> None:
    slow, fast = [10.0] * 6, [0.1] * 94
    full = latencies(*slow, *fast)
    assert full.quantile(0.95) == 10.0, "6 slow of 100: the p95 is slow"

    full.add(0.1)
    assert full.quantile(0.95) == 0.1, "the oldest slow one left the window: 5 of 100"

    assert latencies(*slow[:5], *fast, 0.1).quantile(0.95) == 0.1, "5 of 100"
    assert latencies(*slow[:5], *fast).quantile(0.95) == 10.0, "5 of 99: index 94 is slow"


# Attempt threads ----------------------------------------------------------------------


def attempt_threads() -> set[threading.Thread]:
    """The attempt threads alive now."""
    return {thread for thread in threading.enumerate() if thread.name == "ai-attempt"}


def test_a_blocked_attempt_never_holds_up_the_next_one() -> None:
    workers = _Workers()
    release, second_ran = threading.Event(), threading.Event()
    try:
        workers.submit(lambda: release.wait(5))
        workers.submit(second_ran.set)

        assert second_ran.wait(5), "the second ran while the first was blocked"
    finally:
        release.set()


def test_at_most_4_idle_attempt_threads_are_kept_and_each_is_a_daemon() -> None:
    before = attempt_threads()
    workers = _Workers()
    release = threading.Event()
    started = threading.Semaphore(0)

    def blocked() -> None:
        started.release()
        release.wait(5)

    for _ in range(8):
        workers.submit(blocked)
    for _ in range(8):
        assert started.acquire(timeout=5), "every attempt got a thread at once"
    ours = attempt_threads() - before
    assert len(ours) == 8 and all(thread.daemon for thread in ours)

    release.set()
    deadline = time.monotonic() + 5
    while len([t for t in ours if t.is_alive()]) > 4 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert len([t for t in ours if t.is_alive()]) == 4, "4 kept idle, the others ended"
    release.clear()
    for _ in range(4):
        workers.submit(blocked)
    for _ in range(4):
        assert started.acquire(timeout=5)
    try:
        spares = attempt_threads() - before - ours
        assert len(spares) == 1, "the 4 idle threads took them; taking the last started a spare"
    finally:
        release.set()
