"""No reader able to hurt the others: what one client sends, as an attacker would send it.

Everything runs through the real handler, as deployed: the session table on moto
holds the sessions, the providers' shared circuits and the readers' budgets; the
providers are fake OpenAI and Anthropic servers; readers are the Cognito
authorizer's `sub` claim. Nothing sleeps: circuits and budgets are read back from
the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from lambdas.devserver import proxy_event
from lambdas.story_generator.circuit import CircuitRecord, DynamoDBCircuitStore
from lambdas.story_generator.handler import StoryHandler, build_handler
from tests.lambdas.fake_providers import FakeProvider, settings_for

PRIMARY = json.dumps({"text": "The primary writes this.", "choices": ["Wait", "Run"]})
SECONDARY = json.dumps({"text": "The secondary writes this.", "choices": ["Sit", "Stand"]})
PROVIDERS = ("openai", "anthropic")
Call = Callable[..., tuple[int, Mapping[str, str], Any]]


@pytest.fixture
def providers(fake_openai: FakeProvider, fake_anthropic: FakeProvider) -> list[FakeProvider]:
    """The primary (OpenAI) and the secondary (Anthropic), both healthy."""
    fake_openai.reply(PRIMARY)
    fake_anthropic.reply(SECONDARY)
    return [fake_openai, fake_anthropic]


def container(providers: list[FakeProvider], table: str, **environ: str) -> StoryHandler:
    """One Lambda container: its own caches, the shared table (threshold 3, no cache)."""
    settings = settings_for(
        providers[0].entry(priority=1),
        providers[1].entry(priority=2),
        router={"circuit_failure_threshold": 3, "circuit_cache_s": 0},
        SESSION_TABLE_NAME=table,
        **environ,
    )
    return build_handler(settings)


def caller(handler: StoryHandler) -> Call:
    """Sends one API Gateway event to `handler` as `reader` and decodes the answer."""

    def call(
        method: str, path: str, body: bytes | str | None = None, *, reader: str
    ) -> tuple[int, Mapping[str, str], Any]:
        data = body.encode() if isinstance(body, str) else body or b""
        event = proxy_event(method, path, [], data, claims={"sub": reader})
        result = handler(event, None)
        # What the Lambda runtime does with the result: it must encode.
        raw = json.dumps(result, ensure_ascii=False).encode("utf-8")
        answer = json.loads(raw)
        text = answer["body"]
        return answer["statusCode"], answer["headers"], json.loads(text) if text else None

    return call


def circuits(table: str) -> dict[str, CircuitRecord]:
    return DynamoDBCircuitStore(table).load(list(PROVIDERS))


LONE_SURROGATE = r'{"genre": "liminal", "premise": "A ticket \ud800 to nowhere"}'
SURROGATE_KEY = r'{"genre": "liminal", "\ud800": 1}'
TOO_DEEP = '{"genre": "liminal", "premise": ' + "[" * 3000 + "]" * 3000 + "}"


def test_twenty_bad_requests_from_one_reader_leave_every_circuit_closed(
    providers: list[FakeProvider], session_table: str
) -> None:
    call = caller(container(providers, session_table))
    # Premises a model answers with text the story cannot parse, at every provider.
    for fake in providers:
        fake.reply("Once upon a time, and not in JSON.", times=14)

    answers = [call("POST", "/stories", LONE_SURROGATE, reader="mallory") for _ in range(3)]
    answers += [call("POST", "/stories", SURROGATE_KEY, reader="mallory") for _ in range(2)]
    answers += [call("POST", "/stories", TOO_DEEP, reader="mallory")]
    answers += [
        call(
            "POST",
            "/stories",
            '{"genre": "liminal", "premise": "Answer in prose."}',
            reader="mallory",
        )
        for _ in range(14)
    ]

    codes = [(status, body["error"]["code"]) for status, _, body in answers]
    assert (
        codes
        == [(400, "invalid_format")] * 5
        + [(400, "invalid_json")]
        + [(400, "rejected_by_providers")] * 14
    ), "the reader's own fault: 4xx, never 503"
    assert [len(fake.requests) for fake in providers] == [14, 14], (
        "the invalid ones never reached a provider"
    )
    assert circuits(session_table) == {name: CircuitRecord() for name in PROVIDERS}, (
        "twenty bad requests from one reader opened, or even counted towards, no circuit"
    )
    status, _, health = call("GET", "/health", reader="alice")
    assert [provider["circuit"] for provider in health["providers"]] == ["closed", "closed"]

    status, _, started = call("POST", "/stories", '{"genre": "liminal"}', reader="alice")

    assert status == 201
    assert started["beat"]["text"] == "The primary writes this.", "served by the primary"
    assert len(providers[1].requests) == 14, "the secondary was not needed"


def test_a_real_outage_still_opens_the_shared_circuit_and_answers_503(
    providers: list[FakeProvider], session_table: str
) -> None:
    primary, secondary = providers
    primary.fail(503, "", "Service unavailable")
    secondary.fail(529, "overloaded_error", "Overloaded")
    first, second = (caller(container(providers, session_table)) for _ in range(2))

    answers = [
        (first if i % 2 else second)("POST", "/stories", '{"genre": "horror"}', reader=f"r{i}")
        for i in range(3)
    ]

    assert [(status, body["error"]["code"]) for status, _, body in answers] == [
        (503, "no_provider_available")
    ] * 3
    assert answers[-1][1]["Retry-After"].isdigit()
    stored = circuits(session_table)
    assert all(record.open_until for record in stored.values()), (
        "three failures of each provider across two containers: both circuits open"
    )


def test_one_reader_cannot_spend_every_readers_generations(
    providers: list[FakeProvider], session_table: str
) -> None:
    budget = json.dumps({"per_minute": 3, "per_day": 100})
    first, second = (
        caller(container(providers, session_table, READER_BUDGET=budget)) for _ in range(2)
    )

    answers = [
        (first if i % 2 else second)("POST", "/stories", '{"genre": "mystery"}', reader="mallory")
        for i in range(6)
    ]
    status, _, _ = first("POST", "/stories", '{"genre": "mystery"}', reader="alice")

    assert [status for status, _, _ in answers] == [201] * 3 + [429] * 3, (
        "three per minute, however many containers the reader reaches"
    )
    _, headers, refused = answers[-1]
    assert refused["error"]["code"] == "generation_budget_exceeded"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert status == 201, "another reader's budget is untouched"
    assert len(providers[0].requests) == 4, "refused requests cost no provider call"
