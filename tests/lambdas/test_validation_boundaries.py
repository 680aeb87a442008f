"""validation.py at its boundaries: each limit accepted exactly at the limit, refused one past it.

Every refusal is checked as the API sends it: status 400 and the JSON body's
`error.code` and `error.field` (`BadRequest.to_body`, what api.py answers with).
"""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.story_generator.errors import BadRequest
from lambdas.story_generator.story import CHOICE_SCHEMA, START_STORY_SCHEMA
from lambdas.story_generator.validation import MAX_JSON_DEPTH, parse_json_body, validate


def refused(value: object, schema: dict[str, Any] | Any, path: str = "") -> dict[str, Any]:
    """The JSON error object the API answers `value` with (checked to be a 400)."""
    with pytest.raises(BadRequest) as raised:
        validate(value, schema, path)
    assert raised.value.status == 400
    body = raised.value.to_body()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["message"] == raised.value.message
    return error


def refused_body(data: bytes) -> dict[str, Any]:
    with pytest.raises(BadRequest) as raised:
        parse_json_body(data)
    assert raised.value.status == 400
    error: dict[str, Any] = raised.value.to_body()["error"]
    return error


def field(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {name: schema}}


# Strings --------------------------------------------------------------------------

PREMISE = {"type": "string", "minLength": 2, "maxLength": 5}


@pytest.mark.parametrize("length", [2, 3, 5])
def test_a_string_within_its_lengths_is_accepted(length: int) -> None:
    validate({"premise": "x" * length}, field("premise", PREMISE))


@pytest.mark.parametrize("length", [1, 6])
def test_a_string_one_past_its_lengths_is_refused_naming_both_limits(length: int) -> None:
    error = refused({"premise": "x" * length}, field("premise", PREMISE))

    assert error == {
        "code": "invalid_length",
        "field": "premise",
        "message": f"`premise` must be 2 to 5 characters long (got {length}).",
    }


def test_a_string_with_a_minimum_only_may_be_as_long_as_it_likes() -> None:
    validate("x" * 10_000, {"type": "string", "minLength": 3})

    error = refused("xy", {"type": "string", "minLength": 3}, "name")

    assert (error["code"], error["field"]) == ("invalid_length", "name")
    assert "at least 3" in error["message"] and "(got 2)" in error["message"]


def test_a_string_with_a_maximum_only_may_be_empty() -> None:
    validate("", {"type": "string", "maxLength": 3})
    validate("abc", {"type": "string", "maxLength": 3})

    assert refused("abcd", {"type": "string", "maxLength": 3})["code"] == "invalid_length"


def test_the_length_is_counted_in_characters_not_bytes() -> None:
    validate("\u00e9\u00e9\u00e9\u00e9\u00e9", {"type": "string", "maxLength": 5})
    validate("\U0001f687" * 5, {"type": "string", "maxLength": 5})


@pytest.mark.parametrize("length", [1, 1000])
def test_a_premise_of_1_to_1000_characters_starts_a_story(length: int) -> None:
    validate({"genre": "liminal", "premise": "p" * length}, START_STORY_SCHEMA)


@pytest.mark.parametrize("length", [0, 1001])
def test_a_premise_outside_1_to_1000_characters_is_invalid_length(length: int) -> None:
    error = refused({"genre": "liminal", "premise": "p" * length}, START_STORY_SCHEMA)

    assert (error["code"], error["field"]) == ("invalid_length", "premise")
    assert error["message"] == f"`premise` must be 1 to 1000 characters long (got {length})."


# Patterns -------------------------------------------------------------------------


def test_a_pattern_is_searched_for_anywhere_unless_anchored() -> None:
    validate("train-307", {"type": "string", "pattern": "[0-9]"})

    error = refused("train", {"type": "string", "pattern": "[0-9]"}, "code")

    assert error == {
        "code": "invalid_format",
        "field": "code",
        "message": "`code` must match the pattern [0-9].",
    }


def test_a_final_dollar_matches_only_at_the_very_end() -> None:
    schema = {"type": "string", "pattern": "^[a-z]+$"}
    validate("abc", schema)

    assert refused("abc\n", schema)["code"] == "invalid_format", "Python's $ allows a newline"


def test_an_escaped_final_dollar_is_a_literal_dollar() -> None:
    schema = {"type": "string", "pattern": r"^costs \$"}

    validate("costs $", schema)
    assert refused("costs", schema)["code"] == "invalid_format"


# Integers -------------------------------------------------------------------------

BEATS = {"type": "integer", "minimum": 3, "maximum": 30}


@pytest.mark.parametrize("value", [3, 4, 29, 30])
def test_an_integer_within_its_bounds_is_accepted(value: int) -> None:
    validate({"max_beats": value}, field("max_beats", BEATS))


@pytest.mark.parametrize("value", [2, 31, -3, 0])
def test_an_integer_one_past_its_bounds_is_out_of_range(value: int) -> None:
    error = refused({"max_beats": value}, field("max_beats", BEATS))

    assert error == {
        "code": "out_of_range",
        "field": "max_beats",
        "message": f"`max_beats` must be between 3 and 30 (got {value}).",
    }


def test_an_integer_with_one_bound_only_is_unbounded_on_the_other_side() -> None:
    validate(-(10**12), {"type": "integer", "maximum": 5})
    validate(10**12, {"type": "integer", "minimum": 5})
    validate(5, {"type": "integer", "minimum": 5})
    validate(5, {"type": "integer", "maximum": 5})

    assert refused(6, {"type": "integer", "maximum": 5})["code"] == "out_of_range"
    assert refused(4, {"type": "integer", "minimum": 5})["code"] == "out_of_range"


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"beat": 0, "choice": 0}, None),
        ({"beat": 29, "choice": 3}, None),
        ({"beat": -1, "choice": 0}, "beat"),
        ({"beat": 30, "choice": 0}, "beat"),
        ({"beat": 0, "choice": -1}, "choice"),
        ({"beat": 0, "choice": 4}, "choice"),
    ],
)
def test_a_choice_is_beat_0_to_29_and_choice_0_to_3(
    body: dict[str, int], field_name: str | None
) -> None:
    if field_name is None:
        validate(body, CHOICE_SCHEMA)
        return
    error = refused(body, CHOICE_SCHEMA)
    assert (error["code"], error["field"]) == ("out_of_range", field_name)


def test_a_boolean_is_not_an_integer_even_without_a_type() -> None:
    """JSON true is not the number 1: bounds do not apply to it."""
    validate(True, {"minimum": 5})
    validate(False, {"maximum": -1})


# Arrays ---------------------------------------------------------------------------

TAGS = {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string"}}


@pytest.mark.parametrize("count", [1, 2, 3])
def test_an_array_within_its_item_counts_is_accepted(count: int) -> None:
    validate(["t"] * count, TAGS)


@pytest.mark.parametrize("count", [0, 4])
def test_an_array_one_past_its_item_counts_is_invalid_length(count: int) -> None:
    error = refused({"tags": ["t"] * count}, field("tags", TAGS))

    assert error == {
        "code": "invalid_length",
        "field": "tags",
        "message": f"`tags` must hold 1 to 3 items (got {count}).",
    }


def test_an_array_without_counts_may_be_empty_or_long() -> None:
    validate([], {"type": "array"})
    validate(["t"] * 500, {"type": "array", "items": {"type": "string"}})


def test_each_item_is_validated_at_its_index() -> None:
    error = refused({"tags": ["a", "b", 3]}, field("tags", TAGS))

    assert (error["code"], error["field"]) == ("invalid_type", "tags[2]")


# Types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "words"),
    [
        ([], "object", "an object"),
        ({}, "array", "an array"),
        (1, "string", "a string"),
        ("1", "integer", "an integer"),
        (1.0, "integer", "an integer"),
        (True, "integer", "an integer"),
        (None, "integer", "an integer"),
        (1, "boolean", "true or false"),
        ("true", "boolean", "true or false"),
    ],
)
def test_a_value_of_the_wrong_type_is_invalid_type(
    value: object, expected: str, words: str
) -> None:
    error = refused({"x": value}, field("x", {"type": expected}))

    assert error == {"code": "invalid_type", "field": "x", "message": f"`x` must be {words}."}


@pytest.mark.parametrize(
    ("value", "expected"),
    [({}, "object"), ([], "array"), ("", "string"), (0, "integer"), (False, "boolean")],
)
def test_a_value_of_the_right_type_is_accepted(value: object, expected: str) -> None:
    validate(value, {"type": expected})


def test_the_whole_body_is_named_body() -> None:
    error = refused([], START_STORY_SCHEMA)

    assert error == {
        "code": "invalid_type",
        "field": "body",
        "message": "The request body must be an object.",
    }


def test_an_enum_lists_the_allowed_values() -> None:
    error = refused({"mood": "grim"}, field("mood", {"type": "string", "enum": ["dark", "odd"]}))

    assert error == {
        "code": "invalid_value",
        "field": "mood",
        "message": "`mood` must be one of: dark, odd.",
    }


# Objects --------------------------------------------------------------------------


def test_a_missing_required_field_is_named_with_its_path() -> None:
    schema = field("outer", {"type": "object", "required": ["inner"]})

    error = refused({"outer": {}}, schema)

    assert error == {
        "code": "missing_field",
        "field": "outer.inner",
        "message": "`outer.inner` is required.",
    }


def test_an_unknown_field_is_named_with_the_allowed_ones() -> None:
    error = refused({"genre": "liminal", "mood": "dark"}, START_STORY_SCHEMA)

    assert error == {
        "code": "unknown_field",
        "field": "mood",
        "message": "`mood` is not a known field (allowed: genre, premise, max_beats).",
    }


@pytest.mark.parametrize("additional", [True, None], ids=["true", "absent"])
def test_unknown_fields_are_allowed_unless_additional_properties_is_false(
    additional: bool | None,
) -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
    if additional is not None:
        schema["additionalProperties"] = additional

    validate({"a": "x", "b": 1}, schema)


def test_nested_fields_are_validated_with_dotted_paths() -> None:
    schema = field("outer", field("inner", {"type": "integer", "maximum": 1}))

    error = refused({"outer": {"inner": 2}}, schema, "body")

    assert (error["code"], error["field"]) == ("out_of_range", "body.outer.inner")
    assert error["message"].startswith("`body.outer.inner` must be between")


def test_fields_not_in_the_body_are_not_validated() -> None:
    validate({}, field("premise", {"type": "string", "minLength": 1}))


# JSON bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"genre": }', b"{'genre': 'liminal'}", b'{"a": 1} trailing', b"\xff\xfe\xfd"],
    ids=["empty", "unclosed", "missing-value", "single-quotes", "trailing", "not-utf-8"],
)
def test_a_body_that_is_not_json_is_invalid_json(data: bytes) -> None:
    error = refused_body(data)

    assert error["code"] == "invalid_json"
    assert error["message"].startswith("The request body is not valid JSON: ")
    assert "field" not in error


def test_a_body_in_another_encoding_names_the_bad_byte() -> None:
    error = refused_body(b'{"genre": "\xe9"}')

    assert error["message"] == (
        "The request body is not valid JSON: it is not UTF-8 text (invalid continuation byte "
        "at byte 11)."
    )


def nested(depth: int, opening: str = "[", closing: str = "]") -> bytes:
    return (opening * depth + closing * depth).encode()


def test_objects_count_towards_the_depth_like_arrays() -> None:
    at_limit = '{"a":' * (MAX_JSON_DEPTH - 1) + "{}" + "}" * (MAX_JSON_DEPTH - 1)
    parse_json_body(at_limit.encode())

    error = refused_body(('{"a":' * MAX_JSON_DEPTH + "{}" + "}" * MAX_JSON_DEPTH).encode())

    assert error == {
        "code": "invalid_json",
        "message": f"The request body nests arrays and objects {MAX_JSON_DEPTH + 1} deep; at "
        f"most {MAX_JSON_DEPTH} levels are accepted.",
        "max_depth": MAX_JSON_DEPTH,
    }


def test_closed_brackets_leave_the_depth_so_many_siblings_are_shallow() -> None:
    wide = "[" + ",".join(["[[]]"] * (MAX_JSON_DEPTH * 2)) + "]"

    assert parse_json_body(wide.encode()) == [[[]]] * (MAX_JSON_DEPTH * 2)


def test_brackets_in_strings_with_escaped_quotes_do_not_count() -> None:
    text = '["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "]"]'

    assert parse_json_body(text.encode()) == ['"' + "[" * 40, "]"]


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"1e308", 1e308),
        (b"-1.5", -1.5),
        (b"12345678901234567890", 12345678901234567890),
        (b'{"a": null, "b": true}', {"a": None, "b": True}),
    ],
)
def test_finite_numbers_and_constants_are_parsed(data: bytes, value: object) -> None:
    assert parse_json_body(data) == value


@pytest.mark.parametrize("data", [b"1e309", b"-1e309", b"Infinity", b"NaN", b"-Infinity"])
def test_numbers_beyond_a_float_are_invalid_json(data: bytes) -> None:
    assert refused_body(data)["code"] == "invalid_json"
