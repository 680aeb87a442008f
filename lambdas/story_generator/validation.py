"""Validation of JSON values against a small JSON Schema subset, with errors that say what to fix.

The Lambda is the only validator of request bodies: API Gateway checks required
parameters only, so a bad body gets the same answer from the deployed API, from
`make dev` and from an EventBridge request. The request schemas (in `story.py`)
are Python dicts written with the draft-4 keywords API Gateway's models accept
(`type`, `properties`, `required`, `additionalProperties`, `minLength`,
`maxLength`, `pattern`, `enum`, `minimum`, `maximum`, `minItems`, `maxItems`,
`items`), as `openapi.yaml` documents them (imported as models); a test keeps the
two equal. Each failure is a 400 whose code names the broken constraint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any, NoReturn

from .errors import BadRequest

Schema = Mapping[str, Any]

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
}


def validate(value: object, schema: Schema, path: str = "") -> None:
    """Raise `BadRequest` naming the first place where `value` does not match `schema`.

    `path` is the location of `value` in the document (empty for the whole body);
    errors carry it as `details["field"]`.
    """
    expected = schema.get("type")
    if expected is not None and not _has_type(value, expected):
        _fail(path, f"must be {_TYPE_NAMES[expected]}", code="invalid_type")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(option) for option in schema["enum"])
        _fail(path, f"must be one of: {allowed}", code="invalid_value")
    if isinstance(value, str):
        _validate_string(value, schema, path)
    elif isinstance(value, int) and not isinstance(value, bool):
        _validate_integer(value, schema, path)
    elif isinstance(value, list):
        _validate_array(value, schema, path)
    elif isinstance(value, dict):
        _validate_object(value, schema, path)


def _has_type(value: object, expected: str) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    python_type = {"object": dict, "array": list, "string": str, "boolean": bool}[expected]
    return isinstance(value, python_type)


def _validate_string(value: str, schema: Schema, path: str) -> None:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(value) < low or (high is not None and len(value) > high):
        span = f"{low} to {high} characters long" if high is not None else f"at least {low} long"
        _fail(path, f"must be {span} (got {len(value)})", code="invalid_length")
    if "pattern" in schema and _pattern(schema["pattern"]).search(value) is None:
        _fail(path, f"must match the pattern {schema['pattern']}", code="invalid_format")


def _validate_integer(value: int, schema: Schema, path: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(path, f"must be between {low} and {high} (got {value})", code="out_of_range")


def _validate_array(value: list[object], schema: Schema, path: str) -> None:
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if len(value) < low or (high is not None and len(value) > high):
        _fail(path, f"must hold {low} to {high} items (got {len(value)})", code="invalid_length")
    if "items" in schema:
        for index, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{index}]")


def _validate_object(value: dict[object, object], schema: Schema, path: str) -> None:
    properties: Mapping[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            _fail(_join(path, name), "is required", code="missing_field")
    if schema.get("additionalProperties", True) is False:
        for name in value:
            if name not in properties:
                allowed = ", ".join(properties)
                _fail(
                    _join(path, str(name)),
                    f"is not a known field (allowed: {allowed})",
                    code="unknown_field",
                )
    for name, subschema in properties.items():
        if name in value:
            validate(value[name], subschema, _join(path, name))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fail(path: str, problem: str, *, code: str) -> NoReturn:
    subject = f"`{path}`" if path else "The request body"
    raise BadRequest(f"{subject} {problem}.", code=code, details={"field": path or "body"})


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    """A schema pattern compiled with ECMA-262 semantics, cached per container.

    In JSON Schema (as in JavaScript) a final `$` matches only at the very end,
    where Python's also matches before a trailing newline: `\\Z` is the same anchor.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.compile(pattern)
