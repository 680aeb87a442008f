"""validation.py: the exact refusal messages and the depth count that other tests leave loose.

The message of a 400 is part of the API contract: it says what to fix. These tests
pin down, word for word, the messages for NaN/Infinity, for a number too large for
a float (its literal echoed up to 40 characters), and for a lone surrogate in a
string value versus in a field name (both through `parse_json_body` and through
`validate` given a value directly). They also pin down that the nesting depth is
the depth of the deepest bracket, counted exactly after `}` and `]` have closed
siblings, so a deep branch after a closed one is neither over- nor under-counted.
"""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.story_generator.errors import BadRequest
from lambdas.story_generator.validation import MAX_JSON_DEPTH, parse_json_body, validate
from tests.lambdas.test_validation import SCHEMA


def error_object(raised: pytest.ExceptionInfo[BadRequest]) -> dict[str, Any]:
    """The JSON error object the API answers with (checked to be a 400)."""
    assert raised.value.status == 400
    body = raised.value.to_body()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    return error


def refused(value: object, schema: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(BadRequest) as raised:
        validate(value, schema)
    return error_object(raised)


def refused_body(data: bytes) -> dict[str, Any]:
    with pytest.raises(BadRequest) as raised:
        parse_json_body(data)
    return error_object(raised)


# Numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "constant"),
    [(b"NaN", "NaN"), (b'{"a": [Infinity]}', "Infinity"), (b"-Infinity", "-Infinity")],
    ids=["nan", "nested-infinity", "-infinity"],
)
def test_a_non_finite_constant_is_named_in_the_message(data: bytes, constant: str) -> None:
    assert refused_body(data) == {
        "code": "invalid_json",
        "message": f"The request body is not valid JSON: {constant} is not a JSON number.",
    }


def test_a_number_too_large_for_a_float_is_named_in_the_message() -> None:
    assert refused_body(b'{"a": 1e999}') == {
        "code": "invalid_json",
        "message": "The request body is not valid JSON: 1e999 is too large for a number.",
    }


def test_a_long_number_too_large_for_a_float_is_echoed_to_40_characters() -> None:
    literal = "1." + "0" * 60 + "e999"

    error = refused_body(literal.encode())

    assert error["message"] == (
        f"The request body is not valid JSON: {literal[:40]} is too large for a number."
    )
    assert len(literal[:40]) == 40


# Lone surrogates: the message says whether a string or a field name holds one ------


def test_a_lone_surrogate_in_a_parsed_string_is_reported_as_in_the_string() -> None:
    error = refused_body(b'{"genre": "liminal", "tags": ["ok", "ab\\udc00"]}')

    assert error == {
        "code": "invalid_format",
        "field": "tags[1]",
        "message": "`tags[1]` is not valid Unicode: the string holds a lone surrogate "
        "(\\udc00) at character 2.",
    }


def test_a_lone_surrogate_in_a_string_given_to_validate_is_reported_as_in_the_string() -> None:
    error = refused({"genre": "liminal", "premise": "A \ud800 train"}, SCHEMA)

    assert error == {
        "code": "invalid_format",
        "field": "premise",
        "message": "`premise` is not valid Unicode: the string holds a lone surrogate "
        "(\\ud800) at character 2.",
    }


def test_a_lone_surrogate_in_a_parsed_key_is_reported_as_in_the_field_name() -> None:
    error = refused_body(b'{"genre": "liminal", "x": {"ab\\ud800c": 1}}')

    assert error == {
        "code": "invalid_format",
        "field": "x.ab\\ud800c",
        "message": "`x.ab\\ud800c` is not valid Unicode: the field name holds a lone "
        "surrogate (\\ud800) at character 2.",
    }


def test_a_lone_surrogate_in_a_key_given_to_validate_is_reported_as_in_the_field_name() -> None:
    error = refused({"genre": "liminal", "pre\ud800mise": "x"}, SCHEMA)

    assert error == {
        "code": "invalid_format",
        "field": "pre\\ud800mise",
        "message": "`pre\\ud800mise` is not valid Unicode: the field name holds a lone "
        "surrogate (\\ud800) at character 3.",
    }


# Nesting depth --------------------------------------------------------------------


def test_closed_objects_leave_the_depth_so_many_sibling_objects_are_shallow() -> None:
    wide = "[" + ",".join(['{"a": {}}'] * (MAX_JSON_DEPTH * 2)) + "]"

    assert parse_json_body(wide.encode()) == [{"a": {}}] * (MAX_JSON_DEPTH * 2)


def deep_after_a_closed_sibling(depth: int) -> bytes:
    """`[[[], [[...]]]]`: a branch reaching `depth` after a sibling at depth 3 has closed."""
    branch = depth - 2
    return ("[[[]," + "[" * branch + "]" * branch + "]]").encode()


def test_a_deep_branch_after_a_closed_sibling_is_counted_from_the_sibling_s_parent() -> None:
    assert parse_json_body(deep_after_a_closed_sibling(MAX_JSON_DEPTH)) is not None

    error = refused_body(deep_after_a_closed_sibling(MAX_JSON_DEPTH + 1))

    assert error == {
        "code": "invalid_json",
        "message": f"The request body nests arrays and objects {MAX_JSON_DEPTH + 1} deep; at "
        f"most {MAX_JSON_DEPTH} levels are accepted.",
        "max_depth": MAX_JSON_DEPTH,
    }
