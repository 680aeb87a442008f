"""The mutation score report: how mutmut's results become per-module scores."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mutation.score import Equivalents, below, main, render, results, scores, stale
from tests.mutation_order import module_tests_first, mutated_module

ROUTER = "lambdas.story_generator.router"


def write_meta(root: Path, relative: str, codes: dict[str, int | None]) -> None:
    """A mutmut .meta file for one source file."""
    path = root / f"{relative}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes}))


def write_equivalents(path: Path, body: str) -> Path:
    """An equivalent.toml with ``body``."""
    path.write_text(body)
    return path


def test_killed_timeouts_and_survivors_are_told_apart_per_module(tmp_path: Path) -> None:
    write_meta(
        tmp_path,
        "lambdas/story_generator/router.py",
        {
            f"{ROUTER}.x_route__mutmut_1": 1,
            f"{ROUTER}.x_route__mutmut_2": 36,  # timeout: detected
            f"{ROUTER}.x_route__mutmut_3": 0,
            f"{ROUTER}.x_route__mutmut_4": 33,  # no tests: a survivor
            f"{ROUTER}.x_route__mutmut_5": None,
        },
    )
    write_meta(tmp_path, "components/config.py", {"components.config.x_load__mutmut_1": 1})
    table = {t.module: t for t in scores(results(tmp_path), equivalent=())}
    router = table[ROUTER]
    assert (router.killed, router.survived, router.not_checked) == (2, 2, 1)
    assert router.score == 50.0
    assert router.survivors == [f"{ROUTER}.x_route__mutmut_3", f"{ROUTER}.x_route__mutmut_4"]
    assert table["components.config"].score == 100.0


def test_equivalent_mutants_leave_the_score(tmp_path: Path) -> None:
    outcome: dict[str, int | None] = {f"{ROUTER}.x_a__mutmut_1": 1, f"{ROUTER}.x_a__mutmut_2": 0}
    (tally,) = scores(outcome, equivalent={f"{ROUTER}.x_a__mutmut_2"})
    assert (tally.killed, tally.survived, tally.equivalent, tally.score) == (1, 0, 1, 100.0)


def test_required_modules_under_the_threshold_or_unchecked_fail() -> None:
    outcome: dict[str, int | None] = {
        **{f"{ROUTER}.x_a__mutmut_{i}": 1 for i in range(9)},
        f"{ROUTER}.x_a__mutmut_9": 0,
        "lambdas.story_generator.providers.openai.x_b__mutmut_1": 0,
        "lambdas.story_generator.providers.anthropic.x_c__mutmut_1": None,
        "lambdas.story_generator.metrics.x_d__mutmut_1": 0,
    }
    table = scores(outcome, equivalent=())
    required = [ROUTER, "lambdas.story_generator.providers*"]
    assert below(table, required, 90.0) == [
        "lambdas.story_generator.providers.anthropic",
        "lambdas.story_generator.providers.openai",
    ]
    assert ROUTER in below(table, required, 90.1)


def test_stale_and_killed_equivalents_are_reported(tmp_path: Path) -> None:
    equivalents = Equivalents.load(
        write_equivalents(
            tmp_path / "equivalent.toml",
            f'[equivalent]\n"{ROUTER}.x_a__mutmut_1" = "same"\n"{ROUTER}.x_gone__mutmut_1" = "x"\n',
        )
    )
    problems = stale({f"{ROUTER}.x_a__mutmut_1": 1}, equivalents)
    assert problems == [
        f"{ROUTER}.x_a__mutmut_1: listed as equivalent but the tests kill it",
        f"{ROUTER}.x_gone__mutmut_1: no such mutant any more",
    ]


def test_an_equivalent_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = write_equivalents(tmp_path / "e.toml", f'[equivalent]\n"{ROUTER}.x_a__mutmut_1" = " "\n')
    with pytest.raises(ValueError, match="without a reason"):
        Equivalents.load(path)


def test_main_exits_1_under_the_threshold_and_0_at_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutants = tmp_path / "mutants"
    write_meta(
        mutants,
        "lambdas/story_generator/router.py",
        {**{f"{ROUTER}.x_a__mutmut_{i}": 1 for i in range(9)}, f"{ROUTER}.x_a__mutmut_9": 0},
    )
    equivalent = write_equivalents(tmp_path / "e.toml", f'required = ["{ROUTER}"]\n')
    arguments = ["--mutants", str(mutants), "--equivalent", str(equivalent)]
    assert main([*arguments, "--fail-under", "90"]) == 0
    assert main([*arguments, "--fail-under", "91"]) == 1
    assert f"under 91% (or not fully checked): {ROUTER}" in capsys.readouterr().err


def test_main_without_results_says_how_to_get_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--mutants", str(tmp_path / "nothing")]) == 2
    assert "make mutation" in capsys.readouterr().err


def test_the_projects_equivalents_file_is_valid() -> None:
    equivalents = Equivalents.load(Path(__file__).parent.parent / "mutation" / "equivalent.toml")
    assert "lambdas.story_generator.router" in equivalents.required


def test_only_judges_the_mutants_a_narrowed_run_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_meta(
        tmp_path / "mutants",
        "lambdas/story_generator/router.py",
        {f"{ROUTER}.x_a__mutmut_1": 1, f"{ROUTER}.x_a__mutmut_2": 0},
    )
    write_meta(
        tmp_path / "mutants",
        "lambdas/story_generator/circuit.py",
        {"lambdas.story_generator.circuit.x_b__mutmut_1": None},
    )
    equivalent = write_equivalents(
        tmp_path / "equivalent.toml",
        f'required = ["{ROUTER}", "lambdas.story_generator.circuit"]\n'
        f'[equivalent]\n"{ROUTER}.x_a__mutmut_2" = "same result"\n'
        '"lambdas.story_generator.circuit.x_b__mutmut_9" = "listed, not in this run"\n',
    )
    common = ["--mutants", str(tmp_path / "mutants"), "--equivalent", str(equivalent)]
    assert main([*common, "--fail-under", "90", "--only", f"{ROUTER}*"]) == 0
    out, err = capsys.readouterr()
    assert "circuit" not in out
    assert err == ""
    # The whole table judges the unchecked circuit, and the equivalent it lacks.
    assert main([*common, "--fail-under", "90"]) == 1
    err = capsys.readouterr().err
    assert "not fully checked): lambdas.story_generator.circuit" in err
    assert "x_b__mutmut_9: no such mutant any more" in err


def test_mutants_mutmut_could_not_judge_are_shown_apart(tmp_path: Path) -> None:
    write_meta(tmp_path, "lambdas/story_generator/router.py", {f"{ROUTER}.x_a__mutmut_1": -11})
    (tally,) = scores(results(tmp_path), equivalent=())
    assert (tally.other, tally.counted) == (1, 0)
    assert render([tally]).splitlines()[1].split()[-2:] == ["1", "-"]


def test_a_mutants_own_module_tests_run_first_and_otherwise_nothing_moves() -> None:
    items = [
        SimpleNamespace(path=Path(name))
        for name in (
            "tests/lambdas/test_api.py",
            "tests/lambdas/test_validation_boundaries.py",
            "tests/lambdas/test_story.py",
            "tests/lambdas/test_validation.py",
        )
    ]
    mutant = "lambdas.story_generator.validation.x_check__mutmut_3"
    assert [item.path.stem for item in module_tests_first(items, mutant)] == [
        "test_validation_boundaries",
        "test_validation",
        "test_api",
        "test_story",
    ]
    assert module_tests_first(items, "stats") == items
    assert mutated_module("lambdas.story_generator.providers.openai.xǁOpenAIǁcall__mutmut_1") == (
        "openai"
    )
