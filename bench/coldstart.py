"""Cold start of the story generator Lambda, next to the floor of any boto3 function.

Every sample is a fresh interpreter that times, from its first statement:
- floor: `import boto3` and `boto3.client("dynamodb", region_name="us-east-1")`, the
  least a function that talks to DynamoDB pays before its first request;
- handler: `import story_generator.handler` and `_container()`, the per-container
  build (settings, router, stores, publisher, API), with the package on sys.path
  under the name the Lambda bundle gives it and an environment like the deployed
  function's: a DynamoDB table, events enabled, a Bedrock provider, Powertools
  variables and LAMBDA_TASK_ROOT (Powertools' Tracer only patches inside Lambda).

The two kinds alternate (floor, handler, handler, floor, ...) so that a change in
the machine's load hits both alike. Each kind runs once first, uncounted, to write
the bytecode caches. Prints min, median and max of each kind and the difference of
the medians; exits 1 when that is over `--budget-ms`.

    .venv/bin/python bench/coldstart.py                   # this repository's package
    .venv/bin/python bench/coldstart.py --package /tmp/old/story_generator
    .venv/bin/python bench/coldstart.py --no-bytecode     # compile the package each run
    .venv/bin/python bench/coldstart.py --top 15          # heaviest imports of the handler

`--no-bytecode` is what the deployed function does: its zip holds `.py` files only
and /var/task is read-only, so every cold start compiles the package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "lambdas" / "story_generator"
REGION = "us-east-1"

FLOOR = f'import boto3\nboto3.client("dynamodb", region_name="{REGION}")'
HANDLER = "import story_generator.handler as handler\nhandler._container()"
# The child prints the milliseconds its code took; sys.path is set before the clock starts.
TIMED = """import sys
sys.path.insert(0, {parent!r})
import time
_start = time.perf_counter()
{code}
print((time.perf_counter() - _start) * 1000)
"""
PROVIDERS = [
    {
        "name": "bedrock-claude",
        "kind": "bedrock",
        "model": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "priority": 1,
        "timeout_s": 10,
    }
]


def lambda_environment(package_parent: Path) -> dict[str, str]:
    """The process environment of a deployed function, without credentials."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "POWERTOOLS_", "PYTHON")) and name != "LAMBDA_TASK_ROOT"
    }
    environ.update(
        {
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": "liminal-generator-function",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.14",
            "LAMBDA_TASK_ROOT": str(package_parent),
            "ENVIRONMENT": "production",
            "SESSION_TABLE_NAME": "liminal-transit-story-sessions-production",
            "SESSION_TTL_DAYS": "30",
            "EVENT_BUS_NAME": "default",
            "EVENTS_ENABLED": "true",
            "AI_PROVIDER_CONFIG": json.dumps(PROVIDERS),
            "AI_ROUTER_CONFIG": json.dumps({"deadline_s": 25}),
            "POWERTOOLS_SERVICE_NAME": "story-generator",
            "POWERTOOLS_METRICS_NAMESPACE": "LiminalTransit/AIProviders",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
    )
    return environ


def run(
    code: str, package_parent: Path, environ: Mapping[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (working directory: a neutral one)."""
    source = TIMED.format(parent=str(package_parent), code=code)
    return subprocess.run(
        [sys.executable, *flags, "-c", source],
        env=dict(environ),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )


def sample(code: str, package_parent: Path, environ: Mapping[str, str]) -> float:
    """Milliseconds `code` took in a fresh interpreter."""
    return float(run(code, package_parent, environ).stdout.split()[-1])


def heaviest_imports(
    package_parent: Path, environ: Mapping[str, str], count: int
) -> list[tuple[float, str]]:
    """The `count` imports of the handler's start with the largest own time (ms)."""
    result = run(HANDLER, package_parent, environ, "-X", "importtime")
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            own, _, name = line.removeprefix("import time:").split("|")
            rows.append((int(own) / 1000, name.strip()))
    return sorted(rows, reverse=True)[:count]


def summary(samples: list[float]) -> str:
    """`min median max` of `samples`."""
    low, middle, high = min(samples), statistics.median(samples), max(samples)
    return f"{low:8.1f} {middle:8.1f} {high:8.1f}"


def main() -> None:
    """Measure and print (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Cold start of the handler against the boto3 floor."
    )
    parser.add_argument("--runs", type=int, default=20, help="samples of each kind (>= 10)")
    parser.add_argument("--package", type=Path, default=PACKAGE, help="a story_generator dir")
    parser.add_argument("--budget-ms", type=float, default=100.0)
    parser.add_argument("--no-bytecode", action="store_true", help="compile the package per run")
    parser.add_argument("--top", type=int, default=0, help="list the N heaviest imports")
    args = parser.parse_args()
    if args.runs < 10:
        parser.error("--runs must be at least 10")
    package: Path = args.package.resolve()
    if package.name != "story_generator" or not (package / "handler.py").is_file():
        parser.error(f"{package} is not a story_generator package")
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        parent = package.parent
        environ = lambda_environment(parent)
        if args.no_bytecode:
            parent = Path(scratch)
            shutil.copytree(package, parent / "story_generator", ignore=_no_caches)
            environ = {**lambda_environment(parent), "PYTHONDONTWRITEBYTECODE": "1"}
        kinds = {"floor": FLOOR, "handler": HANDLER}
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        for code in kinds.values():
            sample(code, parent, environ)
        for index in range(args.runs):
            order = list(kinds) if index % 2 == 0 else list(reversed(kinds))
            for kind in order:
                samples[kind].append(sample(kinds[kind], parent, environ))
        top = heaviest_imports(parent, environ, args.top) if args.top else []
    version = ".".join(map(str, sys.version_info[:3]))
    bytecode = "compiled every run" if args.no_bytecode else "bytecode cached"
    print(f"Cold start, {args.runs} fresh interpreters each (Python {version}), in ms")
    print(f"package {package} ({bytecode})")
    print(f"{'':9} {'min':>8} {'median':>8} {'max':>8}")
    print(f"{'floor':9} {summary(samples['floor'])}   import boto3 + boto3.client('dynamodb')")
    print(f"{'handler':9} {summary(samples['handler'])}   import handler + _container()")
    difference = statistics.median(samples["handler"]) - statistics.median(samples["floor"])
    verdict = "within" if difference <= args.budget_ms else "OVER"
    print(
        f"difference of medians: {difference:+.1f} ms ({verdict} the {args.budget_ms:g} ms budget)"
    )
    if top:
        print("\nheaviest imports of the handler's start (own time, ms, python -X importtime):")
        for own, name in top:
            print(f"  {own:7.1f}  {name}")
    if difference > args.budget_ms:
        sys.exit(1)


def _no_caches(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


if __name__ == "__main__":
    main()
