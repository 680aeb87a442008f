"""The pinned dependencies: one source of versions, installable by `pulumi up` itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, version = line.split("==")
            pins[canonicalize_name(package)] = version
    return pins


def _declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(text) for text in names]


def test_pulumi_installs_the_programs_pinned_requirements_itself() -> None:
    """With toolchain pip, `pulumi up` on a fresh clone installs requirements.txt."""
    runtime = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]
    assert runtime["options"]["toolchain"] == "pip"
    assert (ROOT / "requirements.txt").is_file()


def test_every_line_of_the_locks_is_an_exact_pin() -> None:
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            assert not line or line.count("==") == 1, f"{name}: {line!r} is not an exact pin"


def test_the_locks_satisfy_what_pyproject_declares() -> None:
    """pyproject.toml holds the ranges, the locks the versions: they must agree."""
    runtime, dev = _pins("requirements.txt"), _pins("requirements-dev.txt")
    for requirement, lock in [(r, runtime) for r in _declared()] + [
        (r, dev) for r in _declared() + _declared("dev")
    ]:
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement} is not pinned"
        assert requirement.specifier.contains(lock[name], prereleases=True), (
            f"{name}=={lock[name]} does not satisfy {requirement}: run make lock"
        )


def test_the_program_and_the_tests_run_the_same_versions() -> None:
    runtime, dev = _pins("requirements.txt"), _pins("requirements-dev.txt")
    differing = {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}
    assert differing == {}, "requirements-dev.txt must pin the program's packages alike"


def test_the_program_imports_nothing_that_requirements_txt_lacks() -> None:
    """`pulumi up` installs requirements.txt only: the program may share the Lambda's
    stdlib-only modules (its settings and CORS rules), never its runtime's packages."""
    import subprocess
    import sys

    script = (
        "import sys, runpy\n"
        "from components.offline import run_stack\n"
        "run_stack('production')\n"
        "dev_only = ('aws_lambda_powertools', 'moto', 'boto3', 'pytest')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(dev_only)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
