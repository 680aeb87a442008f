"""validation.py: request bodies parsed and checked, every refusal a 400 that can be sent.

A client controls every byte of a body, so whatever it sends must end in a value
or in a `BadRequest` whose JSON body encodes as UTF-8; never in a RecursionError,
a UnicodeEncodeError or a string that no provider, log or response can carry.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from lambdas.story_generator.errors import BadRequest
from lambdas.story_generator.validation import (
    MAX_JSON_DEPTH,
    parse_json_body,
    require_text,
    validate,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "genre": {"type": "string", "enum": ["liminal", "horror"]},
        "premise": {"type": "string", "minLength": 1, "maxLength": 100},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["genre"],
    "additionalProperties": False,
}


def refusal(data: bytes, schema: dict[str, Any] | None = None) -> BadRequest:
    """The BadRequest that parsing (and validating) `data` raises, checked to be sendable."""
    with pytest.raises(BadRequest) as raised:
        value = parse_json_body(data)
        if schema is not None:
            validate(value, schema)
    body = raised.value.to_body()
    # What api.py and the Lambda runtime do with it: must not raise.
    json.dumps(body, ensure_ascii=False).encode("utf-8")
    return raised.value


def test_a_json_body_is_parsed() -> None:
    assert parse_json_body(b'{"genre": "liminal", "tags": ["a", "b"]}') == {
        "genre": "liminal",
        "tags": ["a", "b"],
    }


def test_utf_16_bodies_are_still_read_as_json_loads_reads_them() -> None:
    assert parse_json_body('{"genre": "horror"}'.encode("utf-16")) == {"genre": "horror"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (r'{"genre": "liminal", "premise": "A \ud800 train"}', "premise"),
        (r'{"genre": "liminal", "tags": ["ok", "\udfff"]}', "tags[1]"),
        (r'{"genre": "liminal", "x": {"\udc00": 1}}', r"x.\udc00"),
        (r'{"\ud800": "liminal"}', r"\ud800"),
        (r'"\ud83d"', "body"),
    ],
    ids=["value", "array-item", "nested-key", "key", "high-surrogate-alone"],
)
def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(body: str, field: str) -> None:
    error = refusal(body.encode())

    assert (error.code, error.details["field"]) == ("invalid_format", field)
    assert "lone surrogate" in error.message and "\\u" in error.message, (
        "the surrogate is shown as its escape, so that the message can be sent"
    )


def test_a_surrogate_pair_is_one_character_and_welcome() -> None:
    value = parse_json_body(rb'{"genre": "liminal", "premise": "The \ud83d\ude87 leaves"}')

    assert value == {"genre": "liminal", "premise": "The \U0001f687 leaves"}
    validate(value, SCHEMA)


def test_a_surrogate_encoded_in_the_bytes_is_not_utf_8() -> None:
    error = refusal(b'{"genre": "liminal", "premise": "\xed\xa0\x80"}')

    assert error.code == "invalid_json", "json.loads alone would read it as a lone surrogate"


def test_validate_refuses_lone_surrogates_in_values_it_is_given_directly() -> None:
    with pytest.raises(BadRequest) as raised:
        validate({"genre": "liminal", "premise": "\ud800"}, SCHEMA)
    assert (raised.value.code, raised.value.details["field"]) == ("invalid_format", "premise")


def test_an_unknown_field_with_an_unencodable_name_gets_a_message_that_can_be_sent() -> None:
    with pytest.raises(BadRequest) as raised:
        validate({"genre": "liminal", "pre\ud800mise": "x"}, SCHEMA)
    error = raised.value

    assert error.code == "invalid_format"
    assert error.details["field"] == "pre\\ud800mise"
    json.dumps(error.to_body(), ensure_ascii=False).encode("utf-8")


def test_require_text_walks_every_string_in_document_order() -> None:
    with pytest.raises(BadRequest) as raised:
        require_text({"a": ["ok", {"b": "\udc01"}], "c": "\ud802"})
    assert raised.value.details["field"] == "a[1].b"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nesting_up_to_the_limit_is_parsed_and_deeper_is_invalid_json() -> None:
    assert parse_json_body(nested(MAX_JSON_DEPTH)) is not None

    error = refusal(nested(MAX_JSON_DEPTH + 1))

    assert error.code == "invalid_json"
    assert error.details["max_depth"] == MAX_JSON_DEPTH


@pytest.mark.parametrize("depth", [1_000, 100_000, 1_000_000])
def test_nesting_deep_enough_to_overflow_the_parser_is_a_400_not_a_500(depth: int) -> None:
    for opening in (b"[", b'{"a":'):
        error = refusal(opening * depth)
        assert error.code == "invalid_json", "json.loads would raise RecursionError"


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    text = json.dumps({"premise": "[" * 100 + '{"\\"' + "}" * 3})

    assert parse_json_body(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    ['"' + "\\" * 2 * 4000, '"\\"' * 3000, '["' + "a" * 10_000, '"' * 10_000],
    ids=["escapes", "escaped-quotes", "unclosed", "quotes"],
)
def test_the_depth_scan_is_linear_even_for_unclosed_strings(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(BadRequest):
        parse_json_body(text.encode())
    assert time.perf_counter() - started < 0.5, "a quadratic scan would take seconds here"


@pytest.mark.parametrize(
    "body",
    [b"NaN", b'{"a": Infinity}', b"-Infinity", b"1e999", b"-1e400", b"9" * 5000],
    ids=["nan", "infinity", "-infinity", "1e999", "-1e400", "5000-digits"],
)
def test_numbers_json_loads_would_accept_or_choke_on_are_invalid_json(body: bytes) -> None:
    assert refusal(body).code == "invalid_json"


# Whatever the bytes: a value, or a 400 that can be sent -----------------------------

PIECES = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b'"genre"',
    b'"liminal"',
    b":",
    b",",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\\u00"',
    b"\xed\xa0\x80",
    b"\xff",
    b"1e999",
    b"NaN",
    b"0",
    b"null",
    b" ",
]


def test_every_combination_of_awkward_pieces_ends_in_a_value_or_a_sendable_400() -> None:
    for combination in itertools.product(PIECES, repeat=3):
        data = b"".join(combination)
        try:
            value = parse_json_body(data)
            validate(value, SCHEMA)
        except BadRequest as error:
            json.dumps(error.to_body(), ensure_ascii=False).encode("utf-8")
        else:
            json.dumps(value, ensure_ascii=False).encode("utf-8")


def test_an_event_body_holding_a_lone_surrogate_is_a_400_not_a_500() -> None:
    """API Gateway hands the body over as a string; one holding "\\ud800" must not crash."""
    from lambdas.story_generator.api import Headers, Request

    request = Request(
        method="POST",
        path="/stories",
        params={},
        headers=Headers({}),
        raw_body='{"genre": "\ud800"}',
    )
    with pytest.raises(BadRequest) as failure:
        request.json()
    assert failure.value.status == 400
