"""What another stack gets when it installs this repository."""

from __future__ import annotations

import pulumi

import components
from components.offline import run_program


def test_components_are_importable_from_the_package_root() -> None:
    for name in ("Storage", "StoryGenerator", "StoryApi", "LiminalPlatform", "Naming"):
        assert issubclass(getattr(components, name), object), name
    assert issubclass(components.StoryApi, pulumi.ComponentResource)


def test_readme_example_builds_three_components_in_another_program() -> None:
    """The README's Component API example, run as another stack would run it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]

    run = run_program(lambda: exec(example, {}), config={}, region="us-east-1", stack="qa")
    types = {r.type for r in run.resources if not r.custom}
    assert types == {
        "liminal:identity:ReaderIdentity",
        "liminal:storage:Storage",
        "liminal:story_generator:StoryGenerator",
        "liminal:story_api:StoryApi",
    }
    assert run.one("aws:lambda/function:Function")["name"] == "liminal-transit-story-generator-qa"
