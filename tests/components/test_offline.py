"""The offline plan (`make plan`): the program under the mock engine, printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.offline import main


def test_plan_prints_the_component_tree_with_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "staging"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Stack staging: pulumi up would create ")
    assert "+ liminal:platform:LiminalPlatform  liminal\n" in out
    assert "    + liminal:storage:Storage  liminal-storage\n" in out
    assert "        + aws:dynamodb/table:Table  liminal-storage-sessions\n" in out
    assert "     1  aws:dynamodb/table:Table" in out
    assert "api_url: https://" in out


def test_plan_json_lists_type_name_parent_and_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "production", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in document["resources"]}
    table = by_name["liminal-storage-sessions"]
    assert table["type"] == "aws:dynamodb/table:Table"
    assert table["parent"] == "liminal-storage"
    assert table["inputs"]["deletionProtectionEnabled"] is True
    assert document["outputs"]["table_name"] == "liminal-transit-story-sessions-production"
    code = by_name["liminal-generator-function"]["inputs"]["code"]
    assert "story_generator/handler.py" in code["archive"]


def test_plan_is_the_same_on_every_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Registration order varies with Output resolution; the printed plan must not."""
    outputs = []
    for _ in range(3):
        assert main(["--stack", "staging", "--format", "json"]) == 0
        outputs.append(capsys.readouterr().out)
        assert main(["--stack", "staging"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0::2] == [outputs[0]] * 3
    assert outputs[1::2] == [outputs[1]] * 3


def test_plan_of_an_unknown_stack_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "qa"]) == 2
    assert "Pulumi.qa.yaml" in capsys.readouterr().err


def test_plan_with_bad_config_prints_the_problem(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pytest.TempPathFactory,
) -> None:
    import components.offline as offline

    original = offline.stack_config

    def broken(stack: str, root=offline.PROJECT_ROOT):  # type: ignore[no-untyped-def]
        config = original(stack, root)
        config["liminal-transit:logRetentionDays"] = "8"
        return config

    monkeypatch.setattr(offline, "stack_config", broken)
    assert main(["--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert "liminal-transit:logRetentionDays = '8'" in err


def test_plan_shows_a_digest_of_the_code_that_follows_the_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A code change must show in a plan diff, though the archive's file names do not change."""
    from components.lambda_code import LAMBDAS_DIR, archive_sha256, package_archive

    assert main(["--stack", "dev"]) == 0
    function_line = next(
        line
        for line in capsys.readouterr().out.splitlines()
        if "liminal-generator-function" in line
    )
    shipped = archive_sha256(package_archive(LAMBDAS_DIR / "story_generator"))
    assert f"code sha256:{shipped}" in function_line

    package = tmp_path / "story_generator"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "handler.py").write_text("VERSION = 1\n")
    before = archive_sha256(package_archive(package))
    (package / "handler.py").write_text("VERSION = 2\n")
    assert archive_sha256(package_archive(package)) != before
    (package / "handler.py").write_text("VERSION = 1\n")
    assert archive_sha256(package_archive(package)) == before


def test_plan_shows_the_options_that_change_what_up_and_destroy_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--stack", "production"]) == 0
    lines = {line.split()[2]: line for line in capsys.readouterr().out.splitlines() if "+ " in line}
    assert (
        "[retain-on-delete; depends-on=liminal-api-cloudwatch-role-policy]"
        in lines["liminal-api-account"]
    )
    assert (
        "depends-on=liminal-generator-logs,liminal-generator-role-policy"
        in lines["liminal-generator-function"]
    )
    assert "[" not in lines["liminal-storage-key"], "no options, no brackets"


def test_plan_json_carries_the_options_and_the_code_digest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--stack", "production", "--format", "json"]) == 0
    by_name = {r["name"]: r for r in json.loads(capsys.readouterr().out)["resources"]}
    assert "retain-on-delete" in by_name["liminal-api-cloudwatch-role"]["options"]
    code = by_name["liminal-generator-function"]["inputs"]["code"]
    assert len(code["sha256"]) == 64


def test_a_stack_file_slip_is_one_message_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  aws:region: [us-east-1\n")
    assert main(["--stack", "dev"], root=tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("invalid stack config:\n  Pulumi.dev.yaml:3:1:")
    assert "Traceback" not in err
