"""READER_BUDGET: the readers' generation limits, parsed from the environment."""

from __future__ import annotations

import pytest

from lambdas.story_generator.settings import (
    ConfigurationError,
    ReaderBudgetSettings,
    load_settings,
)


@pytest.mark.parametrize("text", [None, "", "  "])
def test_without_reader_budget_nothing_is_counted(text: str | None) -> None:
    environ = {} if text is None else {"READER_BUDGET": text}
    assert load_settings(environ).reader_budget is None


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ('{"per_minute": 1, "per_day": 1}', ReaderBudgetSettings(1, 1)),
        ('{"per_minute": 10000, "per_day": 1000000}', ReaderBudgetSettings(10_000, 1_000_000)),
    ],
)
def test_reader_budget_takes_both_limits(text: str, limits: ReaderBudgetSettings) -> None:
    assert load_settings({"READER_BUDGET": text}).reader_budget == limits


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10", "use a JSON object"),
        ("{", "not valid JSON"),
        ('{"per_day": 5}', "READER_BUDGET.per_minute is missing"),
        ('{"per_minute": 5}', "READER_BUDGET.per_day is missing"),
        ('{"per_minute": 0, "per_day": 5}', "READER_BUDGET.per_minute = 0"),
        ('{"per_minute": 10001, "per_day": 5}', "from 1 to 10000"),
        ('{"per_minute": 5, "per_day": 1000001}', "from 1 to 1000000"),
        ('{"per_minute": 1.5, "per_day": 5}', "use an integer"),
        ('{"per_minute": true, "per_day": 5}', "use an integer"),
        ('{"per_minute": 5, "per_day": 5, "per_hour": 1}', "unknown field(s) per_hour"),
    ],
)
def test_a_bad_reader_budget_names_the_variable_and_what_is_allowed(
    text: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match="READER_BUDGET") as caught:
        load_settings({"READER_BUDGET": text})
    assert problem in str(caught.value)
