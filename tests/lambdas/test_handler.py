"""The Lambda entry point: dispatch by event shape, configuration from the environment,
and what its cold start builds and imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from components.lambda_code import LAMBDAS_DIR
from lambdas.devserver import LocalContext, proxy_event
from lambdas.story_generator import handler as handler_module
from lambdas.story_generator.budget import DynamoDBReaderBudget, MemoryReaderBudget, NoBudget
from lambdas.story_generator.settings import ConfigurationError, load_settings
from tests.lambdas.story_doubles import READER_CLAIMS, FakeRouter, invoke


@pytest.fixture
def fresh_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty per-container cache, as in a new Lambda container."""
    for name in (
        "SESSION_TABLE_NAME",
        "AI_PROVIDER_CONFIG",
        "EVENTS_ENABLED",
        "READER_BUDGET",
        "CORS_ALLOWED_ORIGINS",
    ):
        monkeypatch.delenv(name, raising=False)
    handler_module._container.cache_clear()
    yield
    handler_module._container.cache_clear()


def api_event(method: str, path: str, body: object = None) -> dict[str, Any]:
    """A proxy event of the reader `READER`, as API Gateway's authorizer passes it."""
    data = b"" if body is None else json.dumps(body).encode()
    event = proxy_event(method, path, [("Content-Type", "application/json")], data)
    event["requestContext"]["authorizer"] = {"claims": dict(READER_CLAIMS)}
    return event


def test_lambda_handler_serves_the_api_from_the_environment(
    fresh_container: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")
    started = handler_module.lambda_handler(
        api_event("POST", "/stories", {"genre": "comedy"}), LocalContext()
    )
    assert started["statusCode"] == 201
    session_id = json.loads(started["body"])["session_id"]
    fetched = handler_module.lambda_handler(
        api_event("GET", f"/stories/{session_id}"), LocalContext()
    )
    assert fetched["statusCode"] == 200, "the second invocation reuses the container's store"
    health = json.loads(
        handler_module.lambda_handler(api_event("GET", "/health"), LocalContext())["body"]
    )
    assert health["environment"] == "staging"


def test_container_is_built_once(fresh_container: None) -> None:
    assert handler_module._container() is handler_module._container()


def test_bad_configuration_names_the_variable(
    fresh_container: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_TTL_DAYS", "0")
    with pytest.raises(ConfigurationError, match="SESSION_TTL_DAYS"):
        handler_module.lambda_handler(api_event("GET", "/health"), LocalContext())


@pytest.mark.parametrize("event", [{}, {"Records": []}, {"source": "aws.events"}])
def test_events_of_other_shapes_are_ignored(
    fresh_container: None, event: dict[str, object]
) -> None:
    assert handler_module.lambda_handler(event, LocalContext()) == {"status": "ignored"}


def test_without_a_table_sessions_stay_in_memory() -> None:
    generator = handler_module.build_handler(load_settings({}))
    reply = invoke(generator, "POST", "/stories", {"genre": "comedy"})
    assert reply.status == 201
    other = handler_module.build_handler(load_settings({}))
    assert invoke(other, "GET", f"/stories/{reply.body['session_id']}").status == 404, (
        "each container has its own memory"
    )


def test_with_a_table_sessions_go_to_dynamodb(session_table: str) -> None:
    generator = handler_module.build_handler(load_settings({"SESSION_TABLE_NAME": session_table}))
    reply = invoke(generator, "POST", "/stories", {"genre": "comedy"})
    items = boto3.client("dynamodb").query(
        TableName=session_table,
        KeyConditionExpression="session_id = :id",
        ExpressionAttributeValues={":id": {"S": reply.body["session_id"]}},
    )["Items"]
    assert len(items) == 2, "the header and the opening beat"


@pytest.mark.parametrize(
    ("environ", "kind"),
    [
        ({}, NoBudget),
        ({"READER_BUDGET": '{"per_minute": 1, "per_day": 5}'}, MemoryReaderBudget),
        (
            {"READER_BUDGET": '{"per_minute": 1, "per_day": 5}', "SESSION_TABLE_NAME": "t"},
            DynamoDBReaderBudget,
        ),
    ],
)
def test_the_reader_budget_follows_the_environment(
    aws: None, environ: dict[str, str], kind: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    original = handler_module.StoryService

    def recording(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs["budget"])
        return original(*args, **kwargs)

    monkeypatch.setattr(handler_module, "StoryService", recording)
    handler_module.build_handler(load_settings(environ))
    assert isinstance(built[0], kind)


def test_the_budget_refuses_generations_over_the_limit(session_table: str) -> None:
    settings = load_settings(
        {"SESSION_TABLE_NAME": session_table, "READER_BUDGET": '{"per_minute": 2, "per_day": 9}'}
    )
    handler = handler_module.build_handler(settings, generator=FakeRouter())
    session_id = invoke(handler, "POST", "/stories", {"genre": "comedy"}).body["session_id"]
    path = f"/stories/{session_id}/choices"
    assert invoke(handler, "POST", path, {"beat": 0, "choice": 0}).status == 200
    assert invoke(handler, "POST", path, {"beat": 0, "choice": 0}).status == 200, (
        "a replay is not charged"
    )
    refused = invoke(handler, "POST", path, {"beat": 1, "choice": 0})
    assert (refused.status, refused.body["error"]["code"]) == (429, "generation_budget_exceeded")
    assert int(refused.headers["Retry-After"]) >= 1
    assert invoke(handler, "GET", f"/stories/{session_id}").status == 200, "reading is free"
    other = invoke(handler, "POST", "/stories", {"genre": "comedy"}, claims={"sub": "r2"})
    assert other.status == 201, "each reader has a budget of their own"
    assert invoke(handler, "POST", path, {"beat": 1, "choice": 0}).status == 429, (
        "the refused choice was not written: the session is as it was"
    )


def test_cors_allowed_origins_reach_every_response(
    fresh_container: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", '["https://reader.example.com"]')
    event = api_event("GET", "/health")
    event["headers"]["Origin"] = "https://reader.example.com"
    result = handler_module.lambda_handler(event, LocalContext())
    assert result["headers"]["Access-Control-Allow-Origin"] == "https://reader.example.com"


def run_deployed(code: str, **environ: str) -> str:
    """Run `code` in a fresh interpreter with the package importable as the Lambda bundles it."""
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("AWS_")},
        "PYTHONPATH": str(LAMBDAS_DIR),
        "AWS_DEFAULT_REGION": "us-east-1",
        **environ,
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_the_container_is_built_in_the_lambda_init_phase() -> None:
    code = "import story_generator.handler as h; print(h._container.cache_info().currsize)"
    assert run_deployed(code, AWS_LAMBDA_FUNCTION_NAME="generator") == "1", (
        "in Lambda, importing the handler builds the container (provisioned concurrency)"
    )
    assert run_deployed(code) == "0", "elsewhere it is built on first use"


def test_the_built_handler_imports_no_tracer_nor_event_handler() -> None:
    code = (
        "import sys, story_generator.handler as h; h._container(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aws_xray_sdk' "
        "or m.startswith(('asyncio', 'aws_lambda_powertools.event_handler'))))"
    )
    loaded = run_deployed(
        code,
        AWS_LAMBDA_FUNCTION_NAME="generator",
        LAMBDA_TASK_ROOT=str(LAMBDAS_DIR),
        SESSION_TABLE_NAME="sessions",
        EVENTS_ENABLED="true",
        AI_PROVIDER_CONFIG='[{"name": "claude", "kind": "bedrock", "model": "m", "priority": 1}]',
    )
    assert loaded == "[]", f"each costs the cold start tens of ms (bench/coldstart.py): {loaded}"
