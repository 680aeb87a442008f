"""Validation of JSON values against a small JSON Schema subset, with errors that say what to fix.

The Lambda is the only validator of request bodies: API Gateway checks required
parameters only, so a bad body gets the same answer from the deployed API, from
`make dev` and from an EventBridge request. The request schemas (in `story.py`)
are Python dicts written with the draft-4 keywords API Gateway's models accept
(`type`, `properties`, `required`, `additionalProperties`, `minLength`,
`maxLength`, `pattern`, `enum`, `minimum`, `maximum`, `minItems`, `maxItems`,
`items`), as `openapi.yaml` documents them (imported as models); a test keeps the
two equal. Each failure is a 400 whose code names the broken constraint.

`parse_json_body` turns a request body into the JSON value to validate. It
refuses, as 400s, what `json.loads` alone lets through or fails on in ways a
client should never be able to cause: nesting deeper than `MAX_JSON_DEPTH` (which
`json.loads` would meet with a RecursionError), numbers beyond a float, and text
that is not Unicode. A JSON string may spell a lone UTF-16 surrogate
(`"\\ud800"`), which is a Python string but no text any UTF-8 payload can carry:
such a string, anywhere, object keys included, is refused with `invalid_format`
naming the field, before it can reach a provider, a log line or a response.

Every message is encodable: a field name that echoes a client's bad text has its
lone surrogates written as `\\udXXX` escapes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, NoReturn

from .errors import BadRequest

Schema = Mapping[str, Any]

# Deeper than any request body needs (ours nest 2 levels), far below the interpreter's
# recursion limit, which `json.loads` and `validate` would otherwise meet.
MAX_JSON_DEPTH = 32
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A JSON string, skipped whole (escapes included), or a bracket. The closing quote is
# optional so that an unclosed string ends the scan in one match: required, every
# quote after it would start a scan to the end again (quadratic time).
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
}


def parse_json_body(data: bytes) -> object:
    """The JSON value of a request body, or `BadRequest`.

    `invalid_json` for bytes that are not UTF-8 (or UTF-16/32, as `json.loads`
    detects them) JSON, NaN, Infinity and numbers too large for a float included,
    or nesting arrays and objects deeper than `MAX_JSON_DEPTH`; `invalid_format` for
    a string or object key holding a lone surrogate. The depth is measured before
    parsing, in one pass without recursion.
    """
    try:
        text = data.decode(json.detect_encoding(data))
    except UnicodeDecodeError as error:
        raise BadRequest(
            f"The request body is not valid JSON: it is not UTF-8 text ({error.reason} at "
            f"byte {error.start}).",
            code="invalid_json",
        ) from None
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(
            f"The request body nests arrays and objects {depth} deep; at most "
            f"{MAX_JSON_DEPTH} levels are accepted.",
            code="invalid_json",
            details={"max_depth": MAX_JSON_DEPTH},
        )
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as error:  # JSONDecodeError, NaN, Infinity, 1e999, a 5000-digit integer
        raise BadRequest(
            f"The request body is not valid JSON: {error}.", code="invalid_json"
        ) from None
    require_text(value)
    return value


def require_text(value: object, path: str = "") -> None:
    """Raise `BadRequest` (`invalid_format`) naming the first string or key of `value`,
    in document order, that holds a lone surrogate."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            _require_text(item, where)
        elif isinstance(item, dict):
            members = []
            for name, member in item.items():
                field = _join(where, _printable(str(name)))
                _require_text(str(name), field, what="field name")
                members.append((field, member))
            stack.extend(reversed(members))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", item[index]) for index in reversed(range(len(item))))


def validate(value: object, schema: Schema, path: str = "") -> None:
    """Raise `BadRequest` naming the first place where `value` does not match `schema`.

    `path` is the location of `value` in the document (empty for the whole body);
    errors carry it as `details["field"]`. A string holding a lone surrogate, or an
    object key that does, fails with `invalid_format` whatever the schema says.
    """
    if isinstance(value, str):
        _require_text(value, path)
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
    for name in value:
        _require_text(str(name), _join(path, _printable(str(name))), what="field name")
    for name in schema.get("required", ()):
        if name not in value:
            _fail(_join(path, name), "is required", code="missing_field")
    if schema.get("additionalProperties", True) is False:
        for name in value:
            if name not in properties:
                allowed = ", ".join(properties)
                _fail(
                    _join(path, _printable(str(name))),
                    f"is not a known field (allowed: {allowed})",
                    code="unknown_field",
                )
    for name, subschema in properties.items():
        if name in value:
            validate(value[name], subschema, _join(path, name))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _require_text(text: str, path: str, what: str = "string") -> None:
    match = _LONE_SURROGATE.search(text)
    if match is not None:
        _fail(
            path,
            f"is not valid Unicode: the {what} holds a lone surrogate "
            f"({_printable(match.group())}) at character {match.start()}",
            code="invalid_format",
        )


def _printable(text: str) -> str:
    """`text` with each lone surrogate written as its `\\udXXX` escape: always encodable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON `text`, stopping once past the limit.

    Brackets inside strings do not count. Linear in the length of `text`, without
    recursion; for text that is not JSON the count is rough, and `json.loads` then
    refuses the text anyway.
    """
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        lexeme = match.group()
        if lexeme in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        elif lexeme in ("]", "}"):
            depth -= 1
    return deepest


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal[:40]} is too large for a number")
    return number


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
