"""openapi.yaml against the handler's real behaviour.

The document must be valid OpenAPI 3.0, keep to what API Gateway's models
accept (it imports the schemas as models), hold the request schemas the Lambda
validates with, and describe what the handler does: for each operation, requests derived from the
schemas (valid ones, and one invalid one per constraint) get a documented status
and a body that matches the documented response schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from lambdas.story_generator import api
from lambdas.story_generator.errors import GenerationBudgetExceeded, NoProviderAvailable
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.sessions import SESSION_ID_PATTERN
from lambdas.story_generator.settings import load_settings
from lambdas.story_generator.story import (
    CHOICE_SCHEMA,
    CURSOR_SCHEMA,
    IDEMPOTENCY_KEY_SCHEMA,
    LIST_LIMIT_SCHEMA,
    START_STORY_SCHEMA,
)
from tests.lambdas.story_doubles import FakeRouter, Gate, RecordingBudget, Reply, invoke

DOCUMENT_PATH = Path(api.__file__).with_name("openapi.yaml")
DOCUMENT: dict[str, Any] = yaml.safe_load(DOCUMENT_PATH.read_text())
# What API Gateway's models support (JSON Schema draft 4, a subset), plus references
# and annotations.
API_GATEWAY_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "items",
    "$ref",
    "description",
}
UNKNOWN_SESSION = "0badc0de-0000-4000-8000-00000000abcd"


def resolve(node: Any) -> Any:
    """`node` with every `$ref` into this document replaced by its target."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = DOCUMENT
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {key: resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item) for item in node]
    return node


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, resolve(operation)


OPERATIONS = {
    operation["operationId"]: (method, path, operation) for method, path, operation in operations()
}


def request_schema(operation_id: str) -> dict[str, Any]:
    """The (resolved) JSON body schema of an operation."""
    body: dict[str, Any] = OPERATIONS[operation_id][2]["requestBody"]
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema


# --- the document itself -----------------------------------------------------------------


def test_document_is_valid_openapi_3() -> None:
    validate_spec(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.0")


def test_request_schemas_are_the_ones_the_lambda_validates_with() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["StartStoryRequest"] == START_STORY_SCHEMA
    assert schemas["ChoiceRequest"] == CHOICE_SCHEMA
    schemas_of = {
        ("path", "session_id"): {"type": "string", "pattern": SESSION_ID_PATTERN},
        ("header", api.IDEMPOTENCY_HEADER): IDEMPOTENCY_KEY_SCHEMA,
        ("query", "limit"): LIST_LIMIT_SCHEMA,
        ("query", "cursor"): CURSOR_SCHEMA,
    }
    for method, path, operation in operations():
        for parameter in operation.get("parameters", []):
            where = (parameter["in"], parameter["name"])
            assert where in schemas_of, (method, path, where)
            assert parameter["schema"] == schemas_of[where], (method, path, where)


def test_every_story_operation_requires_a_readers_token_and_health_none() -> None:
    scheme = DOCUMENT["components"]["securitySchemes"]["readers"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert "security" not in DOCUMENT, "each operation says what it requires"
    for method, path, operation in operations():
        if path == "/health":
            assert "security" not in operation, "GET /health stays open"
            assert "401" not in operation["responses"]
        else:
            assert operation["security"] == [{"readers": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def walk_schemas(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                yield from walk_schemas(child, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk_schemas(node["items"], f"{where}[]")


def test_schemas_keep_to_what_api_gateway_models_accept() -> None:
    for name, schema in DOCUMENT["components"]["schemas"].items():
        assert re.fullmatch("[A-Za-z0-9]+", name), (
            f"API Gateway model names are alphanumeric: {name}"
        )
        for where, node in walk_schemas(schema, name):
            unsupported = set(node) - API_GATEWAY_KEYWORDS
            assert not unsupported, (
                f"{where} uses {unsupported}, which API Gateway does not support"
            )


def test_request_bodies_and_path_parameters_are_declared_for_api_gateway() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if body is not None:
                schema = body["content"]["application/json"]["schema"]
                assert body["required"] is True
                assert schema["$ref"].startswith("#/components/schemas/"), (method, path)
            declared = {
                parameter["name"]: parameter
                for parameter in operation.get("parameters", [])
                if parameter.get("in") == "path"
            }
            assert set(declared) == set(re.findall(r"{(\w+)}", path)), (method, path)
            for parameter in declared.values():
                assert parameter["required"] is True and parameter["schema"]["pattern"]
            assert all("$ref" not in parameter for parameter in operation.get("parameters", [])), (
                "API Gateway reads parameters in place"
            )


def test_every_route_of_the_handler_is_documented(handlers: dict[str, StoryHandler]) -> None:
    documented = {(method, path) for method, path, _ in operations()}
    served = {(route.method, route.template) for route in handlers["real"].app.routes}
    assert documented == served


# --- requests derived from the schemas ----------------------------------------------------

CANDIDATE_STRINGS = ["A", "x" * 20]


def valid_instance(schema: dict[str, Any]) -> Any:
    """A value that satisfies `schema`, with every optional property present."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema["type"]
    if kind == "object":
        return {name: valid_instance(child) for name, child in schema["properties"].items()}
    if kind == "integer":
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "array":
        return [valid_instance(schema["items"])] * schema.get("minItems", 0)
    return next(text for text in CANDIDATE_STRINGS if Draft4Validator(schema).is_valid(text))


def invalid_values(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """One value breaking each constraint of a scalar `schema`, named by the constraint."""
    kind = schema.get("type")
    yield "type", [] if kind != "array" else "not an array"
    if "enum" in schema:
        yield "enum", "not-" + str(schema["enum"][0])
    if "minLength" in schema and schema["minLength"] > 0:
        yield "minLength", "A" * (schema["minLength"] - 1)
    if "maxLength" in schema:
        yield "maxLength", "A" * (schema["maxLength"] + 1)
    if "pattern" in schema:
        yield "pattern", "has space"
    if "minimum" in schema:
        yield "minimum", schema["minimum"] - 1
    if "maximum" in schema:
        yield "maximum", schema["maximum"] + 1
    if kind == "integer":
        yield "type", 1.5
        yield "type", True
        yield "type", "1"


def invalid_bodies(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Bodies that each break one constraint of the object `schema`."""
    valid = valid_instance(schema)
    yield "body type", [valid]
    yield "additionalProperties", {**valid, "surprise": 1}
    for name in schema["required"]:
        yield f"{name} required", {key: value for key, value in valid.items() if key != name}
    for name, child in schema["properties"].items():
        for constraint, value in invalid_values(child):
            shown = repr(value) if len(repr(value)) <= 12 else type(value).__name__
            yield f"{name} {constraint} {shown}", {**valid, name: value}


def request_cases(operation_id: str) -> list[Any]:
    schema = request_schema(operation_id)
    return [pytest.param(case, body, id=case) for case, body in invalid_bodies(schema)]


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def handlers(session_table: str, router: FakeRouter) -> dict[str, StoryHandler]:
    """The real router with the mock provider, and a router the test controls."""
    settings = load_settings({"SESSION_TABLE_NAME": session_table})
    return {
        "real": build_handler(settings),
        "faked": build_handler(settings, generator=router),
    }


def conforms(operation_id: str, reply: Reply) -> None:
    """The reply's status is documented for the operation and its body matches the schema."""
    method, path, operation = OPERATIONS[operation_id]
    documented = operation["responses"]
    assert str(reply.status) in documented, f"{method} {path} returned undocumented {reply.status}"
    response = documented[str(reply.status)]
    schema = response["content"]["application/json"]["schema"]
    OAS30Validator(schema).validate(reply.body)
    for header, declared in response.get("headers", {}).items():
        if declared.get("required"):
            assert header in reply.headers, f"{reply.status} must carry {header}"


def start(handler: StoryHandler, body: Any = None, headers: Any = None) -> Reply:
    schema = request_schema("startStory")
    return invoke(handler, "POST", "/stories", body or valid_instance(schema), headers)


def test_start_story_valid_requests_conform(handlers: dict[str, StoryHandler]) -> None:
    schema = request_schema("startStory")
    full = valid_instance(schema)
    minimal = {name: full[name] for name in schema["required"]}
    for body in (full, minimal):
        reply = start(handlers["real"], body, {"Idempotency-Key": "key-" + str(len(body))})
        assert reply.status == 201
        conforms("startStory", reply)


@pytest.mark.parametrize(("case", "body"), request_cases("startStory"))
def test_start_story_invalid_bodies_conform(
    handlers: dict[str, StoryHandler], case: str, body: Any
) -> None:
    schema = request_schema("startStory")
    assert not Draft4Validator(schema).is_valid(body), f"the case {case} must break the schema"
    reply = start(handlers["real"], body)
    assert reply.status == 400, (case, reply.body)
    conforms("startStory", reply)


def test_start_story_error_statuses_conform(
    handlers: dict[str, StoryHandler], router: FakeRouter
) -> None:
    conforms("startStory", invoke(handlers["real"], "POST", "/stories", "{" * 9000))
    conforms("startStory", invoke(handlers["real"], "POST", "/stories", "{"))
    start(handlers["real"], headers={"Idempotency-Key": "k"})
    reused = start(handlers["real"], {"genre": "horror"}, {"Idempotency-Key": "k"})
    assert reused.status == 409
    conforms("startStory", reused)
    anonymous = invoke(handlers["real"], "POST", "/stories", {"genre": "horror"}, claims=None)
    assert anonymous.status == 401
    conforms("startStory", anonymous)
    router.fail = NoProviderAvailable({"fake": "throttled"}, retry_after_s=3)
    unavailable = start(handlers["faked"])
    assert unavailable.status == 503
    conforms("startStory", unavailable)
    router.fail = RuntimeError("internal detail")
    failed = start(handlers["faked"])
    assert failed.status == 500
    conforms("startStory", failed)


@pytest.fixture
def session_id(handlers: dict[str, StoryHandler]) -> str:
    reply = start(handlers["faked"], {"genre": "liminal"})
    return str(reply.body["session_id"])


def test_make_choice_valid_requests_conform(
    handlers: dict[str, StoryHandler], session_id: str
) -> None:
    schema = request_schema("makeChoice")
    path = f"/stories/{session_id}/choices"
    reply = invoke(handlers["real"], "POST", path, valid_instance(schema))
    assert reply.status == 200
    conforms("makeChoice", reply)


@pytest.mark.parametrize(("case", "body"), request_cases("makeChoice"))
def test_make_choice_invalid_bodies_conform(
    handlers: dict[str, StoryHandler], session_id: str, case: str, body: Any
) -> None:
    schema = request_schema("makeChoice")
    assert not Draft4Validator(schema).is_valid(body), f"the case {case} must break the schema"
    reply = invoke(handlers["real"], "POST", f"/stories/{session_id}/choices", body)
    assert reply.status == 400, (case, reply.body)
    conforms("makeChoice", reply)


def test_make_choice_error_statuses_conform(
    handlers: dict[str, StoryHandler], session_id: str, router: FakeRouter
) -> None:
    path = f"/stories/{session_id}/choices"
    cases = [
        (handlers["real"], f"/stories/{UNKNOWN_SESSION}/choices", {"beat": 0, "choice": 0}, 404),
        (handlers["real"], "/stories/not-a-session/choices", {"beat": 0, "choice": 0}, 400),
        (handlers["real"], path, "{" * 9000, 413),
    ]
    for handler, target, body, status in cases:
        reply = invoke(handler, "POST", target, body)
        assert reply.status == status, reply.body
        conforms("makeChoice", reply)
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=3)
    unavailable = invoke(handlers["faked"], "POST", path, {"beat": 0, "choice": 0})
    assert unavailable.status == 503
    conforms("makeChoice", unavailable)
    router.fail = None
    assert invoke(handlers["faked"], "POST", path, {"beat": 0, "choice": 0}).status == 200
    conflict = invoke(handlers["faked"], "POST", path, {"beat": 0, "choice": 1})
    assert conflict.status == 409
    conforms("makeChoice", conflict)


def test_get_story_conforms(handlers: dict[str, StoryHandler], session_id: str) -> None:
    invoke(handlers["real"], "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    for target, status in [
        (f"/stories/{session_id}", 200),
        (f"/stories/{UNKNOWN_SESSION}", 404),
        ("/stories/not-a-session", 400),
        (f"/stories/{UNKNOWN_SESSION.upper()}", 400),
    ]:
        reply = invoke(handlers["real"], "GET", target)
        assert reply.status == status, reply.body
        conforms("getStory", reply)
    for claims, status in [({"sub": "another-reader"}, 404), (None, 401)]:
        reply = invoke(handlers["real"], "GET", f"/stories/{session_id}", claims=claims)
        assert reply.status == status, reply.body
        conforms("getStory", reply)


def test_list_stories_conforms(handlers: dict[str, StoryHandler], session_id: str) -> None:
    start(handlers["faked"], {"genre": "horror", "premise": "A ferry", "max_beats": 3})
    first = invoke(handlers["real"], "GET", "/stories?limit=1")
    assert first.status == 200 and isinstance(first.body["next_cursor"], str)
    conforms("listStories", first)
    last = invoke(handlers["real"], "GET", f"/stories?cursor={first.body['next_cursor']}")
    assert last.status == 200 and last.body["next_cursor"] is None
    conforms("listStories", last)
    for target, status in [("/stories?limit=0", 400), ("/stories?cursor=e30", 400)]:
        reply = invoke(handlers["real"], "GET", target)
        assert reply.status == status, reply.body
        conforms("listStories", reply)
    anonymous = invoke(handlers["real"], "GET", "/stories", claims=None)
    assert anonymous.status == 401
    conforms("listStories", anonymous)


def test_in_progress_and_budget_refusals_conform(
    session_table: str, router: FakeRouter, session_id: str
) -> None:
    budget = RecordingBudget()
    handler = build_handler(
        load_settings({"SESSION_TABLE_NAME": session_table}), generator=router, budget=budget
    )
    gate = Gate()
    router.before_reply = gate
    path = f"/stories/{session_id}/choices"
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(invoke, handler, "POST", path, {"beat": 0, "choice": 0})
        assert gate.entered.wait(10)
        busy = invoke(handler, "POST", path, {"beat": 0, "choice": 0})
        gate.open()
        assert first.result(timeout=10).status == 200
    assert (busy.status, busy.body["error"]["code"]) == (409, "request_in_progress")
    conforms("makeChoice", busy)
    budget.refuse = GenerationBudgetExceeded(retry_after_s=30)
    for operation, target, body in [
        ("makeChoice", path, {"beat": 1, "choice": 0}),
        ("startStory", "/stories", {"genre": "horror"}),
    ]:
        refused = invoke(handler, "POST", target, body)
        assert refused.status == 429, refused.body
        conforms(operation, refused)


def test_get_health_conforms(handlers: dict[str, StoryHandler]) -> None:
    reply = invoke(handlers["real"], "GET", "/health")
    assert reply.status == 200
    conforms("getHealth", reply)


def test_unknown_routes_and_methods_answer_with_the_error_schema(
    handlers: dict[str, StoryHandler],
) -> None:
    error_schema = resolve(DOCUMENT["components"]["schemas"]["Error"])
    for method, target, status in [("GET", "/nowhere", 404), ("DELETE", "/stories", 405)]:
        reply = invoke(handlers["real"], method, target)
        assert reply.status == status
        OAS30Validator(error_schema).validate(reply.body)


def test_invalid_cases_cover_every_constraint() -> None:
    for operation_id in ("startStory", "makeChoice"):
        schema = request_schema(operation_id)
        used = {keyword for _, node in walk_schemas(schema, "") for keyword in node}
        cases = " ".join(param.values[0] for param in request_cases(operation_id))
        for keyword in used - {"properties"}:
            assert keyword in cases, f"no {operation_id} request breaks a {keyword} constraint"
