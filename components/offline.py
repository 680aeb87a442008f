"""Run a Pulumi program offline, under the SDK's mock engine, and record what it declares.

No Pulumi CLI, no AWS account: the real program and the real ``pulumi_aws``
classes run, and every resource is recorded with its type, name, parent and
inputs. The tests use it, and so does ``make plan`` (``python -m components.offline``).
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import json
import runpy
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from .config import ConfigError
from .lambda_code import archive_sha256
from .stack_file import read_stack_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MOCK_ACCOUNT_ID = "123456789012"
_STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class RecordedResource:
    """One resource as the program declared it."""

    type: str
    name: str
    urn: str
    parent_urn: str | None
    inputs: Mapping[str, Any]
    custom: bool
    provider: str | None = None
    protect: bool = False
    depends_on: tuple[str, ...] = ()
    retain_on_delete: bool = False
    ignore_changes: tuple[str, ...] = ()
    delete_before_replace: bool = False
    replace_on_changes: tuple[str, ...] = ()

    def options(self, names: Mapping[str, str] | None = None) -> list[str]:
        """The resource options that change what ``pulumi up``/``destroy`` do, as words.

        ``names`` turns dependency URNs into resource names.
        """
        words = []
        if self.protect:
            words.append("protect")
        if self.retain_on_delete:
            words.append("retain-on-delete")
        if self.delete_before_replace:
            words.append("delete-before-replace")
        if self.ignore_changes:
            words.append(f"ignore-changes={','.join(self.ignore_changes)}")
        if self.replace_on_changes:
            words.append(f"replace-on-changes={','.join(self.replace_on_changes)}")
        explicit = [(names or {}).get(urn, urn) for urn in self.depends_on]
        if explicit:
            words.append(f"depends-on={','.join(sorted(explicit))}")
        return words

    def __getitem__(self, key: str) -> Any:
        return self.inputs[key]

    def get(self, key: str, default: Any = None) -> Any:
        """An input by its wire name (camelCase), or ``default``."""
        return self.inputs.get(key, default)


@dataclass
class OfflineRun:
    """Everything one offline run declared, in declaration order, and the stack outputs."""

    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[RecordedResource]:
        """The resources of one type token, such as ``aws:lambda/function:Function``."""
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_contains: str = "") -> RecordedResource:
        """The single resource of ``type_`` whose name contains ``name_contains``."""
        found = [r for r in self.of_type(type_) if name_contains in r.name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise LookupError(f"expected one {type_} matching {name_contains!r}, found {names}")
        return found[0]

    def by_urn(self, urn: str) -> RecordedResource:
        """The resource with this URN."""
        return next(r for r in self.resources if r.urn == urn)

    def children(self, parent: RecordedResource) -> list[RecordedResource]:
        """The resources whose parent is ``parent``."""
        return [r for r in self.resources if r.parent_urn == parent.urn]


class OfflineMocks(pulumi_mocks.Mocks):
    """Answers the engine's calls with plausible AWS values.

    Each resource's outputs are its inputs plus the attributes AWS would compute
    (ARNs, ids, versions, URLs), shaped like the real ones so that policies and
    integrations built from them can be checked.
    """

    def __init__(self, region: str, account_id: str = MOCK_ACCOUNT_ID, stack: str = "dev") -> None:
        self.region = region
        self.account_id = account_id
        self.stack = stack

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        """Answer data-source invokes (caller identity, region, partition)."""
        region = args.args.get("region") or self.region
        answers: dict[str, dict[str, Any]] = {
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": self.account_id,
                "arn": f"arn:aws:iam::{self.account_id}:user/offline",
                "userId": "AIDAOFFLINE",
                "id": self.account_id,
            },
            "aws:index/getRegion:getRegion": {
                "name": region,
                "region": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
                "id": region,
            },
            "aws:index/getPartition:getPartition": {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
                "id": "aws",
            },
        }
        if args.token not in answers:
            raise NotImplementedError(f"no offline answer for invoke {args.token}")
        return answers[args.token], []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """Return an id and the outputs AWS would report for a new resource."""
        inputs = dict(args.inputs)
        region = inputs.get("region") or self.region
        name = inputs.get("name") or args.name
        # Placeholder ids differ per stack, as real ones do.
        digest = hashlib.sha256(f"{self.stack}/{args.typ}/{args.name}".encode()).hexdigest()
        resource_id = f"{args.name}-{digest[:8]}"
        computed = _computed_attributes(args.typ, name, digest, region, self.account_id, inputs)
        return computed.pop("id", resource_id), {**inputs, "name": name, **computed}


def _computed_attributes(
    type_: str, name: str, digest: str, region: str, account: str, inputs: Mapping[str, Any]
) -> dict[str, Any]:
    prefix = f"arn:aws:{{}}:{region}:{account}:"
    short_id = digest[:10]
    if type_ == "aws:kms/key:Key":
        key_id = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        return {"id": key_id, "keyId": key_id, "arn": prefix.format("kms") + f"key/{key_id}"}
    if type_ == "aws:kms/alias:Alias":
        return {"arn": prefix.format("kms") + name}
    if type_ == "aws:dynamodb/table:Table":
        table_arn = prefix.format("dynamodb") + f"table/{name}"
        return {
            "id": name,
            "arn": table_arn,
            "streamArn": f"{table_arn}/stream/2026-01-01T00:00:00",
        }
    if type_ == "aws:sqs/queue:Queue":
        return {
            "arn": prefix.format("sqs") + name,
            "url": f"https://sqs.{region}.amazonaws.com/{account}/{name}",
        }
    if type_ == "aws:secretsmanager/secret:Secret":
        return {"arn": prefix.format("secretsmanager") + f"secret:{name}-{digest[:6]}"}
    if type_ == "aws:cloudwatch/logGroup:LogGroup":
        return {"id": name, "arn": prefix.format("logs") + f"log-group:{name}"}
    if type_ == "aws:iam/role:Role":
        return {"id": name, "arn": f"arn:aws:iam::{account}:role/{name}", "uniqueId": short_id}
    if type_ == "aws:lambda/function:Function":
        function_arn = prefix.format("lambda") + f"function:{name}"
        return {
            "id": name,
            "arn": function_arn,
            "version": "1",
            "qualifiedArn": f"{function_arn}:1",
            "invokeArn": _invoke_arn(region, function_arn),
        }
    if type_ == "aws:lambda/alias:Alias":
        function_arn = prefix.format("lambda") + f"function:{inputs.get('functionName')}"
        alias_arn = f"{function_arn}:{name}"
        return {"arn": alias_arn, "invokeArn": _invoke_arn(region, alias_arn)}
    if type_ == "aws:apigateway/restApi:RestApi":
        return {
            "id": short_id,
            "rootResourceId": digest[10:20],
            "arn": f"arn:aws:apigateway:{region}::/restapis/{short_id}",
            "executionArn": prefix.format("execute-api") + short_id,
        }
    if type_ == "aws:apigateway/stage:Stage":
        api_id, stage = inputs.get("restApi"), inputs.get("stageName")
        return {
            "arn": f"arn:aws:apigateway:{region}::/restapis/{api_id}/stages/{stage}",
            "invokeUrl": f"https://{api_id}.execute-api.{region}.amazonaws.com/{stage}",
            "executionArn": prefix.format("execute-api") + f"{api_id}/{stage}",
        }
    if type_ == "aws:apigateway/domainName:DomainName":
        return {
            "regionalDomainName": f"d-{short_id}.execute-api.{region}.amazonaws.com",
            "regionalZoneId": "Z1UJRXOUMOOFQ8",
        }
    if type_ == "aws:cognito/userPool:UserPool":
        pool_id = f"{region}_{digest[:9]}"
        return {
            "id": pool_id,
            "arn": f"arn:aws:cognito-idp:{region}:{account}:userpool/{pool_id}",
            "endpoint": f"cognito-idp.{region}.amazonaws.com/{pool_id}",
        }
    if type_ == "aws:cognito/userPoolClient:UserPoolClient":
        return {"id": digest[:26]}
    if type_ == "aws:cloudwatch/eventBus:EventBus":
        return {"id": name, "arn": prefix.format("events") + f"event-bus/{name}"}
    if type_ == "aws:cloudwatch/eventRule:EventRule":
        # A rule on a custom bus has the bus in its ARN.
        bus = inputs.get("eventBusName") or "default"
        path = f"rule/{name}" if bus == "default" else f"rule/{bus}/{name}"
        return {"arn": prefix.format("events") + path}
    return {"arn": prefix.format(type_.split(":")[1].split("/")[0]) + name}


def _invoke_arn(region: str, function_arn: str) -> str:
    return (
        f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"
    )


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, also keeping each resource's parent and options."""

    def __init__(self, mocks: OfflineMocks, run: OfflineRun) -> None:
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != _STACK_TYPE:
            self.run.resources.append(
                RecordedResource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent_urn=request.parent or None,
                    inputs=rpc.deserialize_properties(request.object),
                    custom=bool(request.custom),
                    provider=request.provider or None,
                    protect=bool(request.protect),
                    depends_on=_explicit_dependencies(request),
                    retain_on_delete=bool(request.retainOnDelete),
                    ignore_changes=tuple(request.ignoreChanges),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    replace_on_changes=tuple(request.replaceOnChanges),
                )
            )
        return response


def _explicit_dependencies(request: Any) -> tuple[str, ...]:
    """The URNs of ``depends_on``: all dependencies but those that come with an input."""
    implicit = {urn for deps in request.propertyDependencies.values() for urn in deps.urns}
    return tuple(urn for urn in request.dependencies if urn not in implicit)


def run_program(
    program: Callable[[], None],
    *,
    config: Mapping[str, str],
    region: str,
    project: str = "liminal-transit",
    stack: str = "dev",
    record: OfflineRun | None = None,
) -> OfflineRun:
    """Run ``program`` under the mock engine with ``config`` and return what it declared.

    Each run has its own context, so several runs (one per stack) can share a
    process. Pass ``record`` to see what was declared even when the program fails.
    """
    run = record if record is not None else OfflineRun()
    return contextvars.Context().run(_run, program, config, region, project, stack, run)


def _run(
    program: Callable[[], None],
    config: Mapping[str, str],
    region: str,
    project: str,
    stack: str,
    run: OfflineRun,
) -> OfflineRun:
    mocks = OfflineMocks(region, stack=stack)
    pulumi.runtime.set_all_config(dict(config))
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, monitor=_RecordingMonitor(mocks, run)
    )

    def program_with_outputs() -> pulumi.Output[None]:
        program()
        root = pulumi.runtime.get_root_resource()
        exports = dict(getattr(root, "outputs", {}))
        return pulumi.Output.all(**exports).apply(run.outputs.update)

    pulumi.runtime.test(program_with_outputs)()  # type: ignore[no-untyped-call]
    return run


def stack_config(stack: str, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The config of ``Pulumi.<stack>.yaml`` as the Pulumi CLI hands it to a program.

    The file is read strictly (``stack_file.read_stack_file``): duplicate keys,
    ambiguous booleans and syntax errors are ``ConfigError``s naming file and line.
    """
    config = read_stack_file(root / f"Pulumi.{stack}.yaml")
    return {key: _as_config_value(value) for key, value in config.items()}


def _as_config_value(value: Any) -> str:
    # The CLI passes strings as they are and everything else as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def run_stack(
    stack: str,
    root: Path = PROJECT_ROOT,
    overrides: Mapping[str, Any] | None = None,
    record: OfflineRun | None = None,
) -> OfflineRun:
    """Run the project's ``__main__.py`` offline with the config of ``stack``.

    ``overrides`` replaces whole config keys (``{"liminal-transit:generator": {...}}``);
    a key overridden with ``None`` is removed.
    """
    config = stack_config(stack, root)
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = _as_config_value(value)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    def program() -> None:
        runpy.run_path(str(root / "__main__.py"), run_name="__main__")

    region = config.get("aws:region", "us-east-1")
    return run_program(program, config=config, region=region, stack=stack, record=record)


def _tree_lines(run: OfflineRun) -> Iterator[str]:
    children: dict[str | None, list[RecordedResource]] = {}
    for resource in run.resources:
        children.setdefault(resource.parent_urn, []).append(resource)

    names = {r.urn: r.name for r in run.resources}

    # Registration order depends on when Outputs resolve: sort for a stable plan.
    def walk(parent: str | None, depth: int) -> Iterator[str]:
        for resource in sorted(children.get(parent, []), key=lambda r: r.name):
            notes = resource.options(names) + _code_digests(resource)
            suffix = f"  [{'; '.join(notes)}]" if notes else ""
            yield f"{'    ' * depth}+ {resource.type}  {resource.name}{suffix}"
            yield from walk(resource.urn, depth + 1)

    roots = [u for u in children if u is None or not any(r.urn == u for r in run.resources)]
    for urn in roots:
        yield from walk(urn, 0)


def _code_digests(resource: RecordedResource) -> list[str]:
    """``code sha256:...`` for each code archive among the inputs, so that a code
    change shows in a plan diff."""
    return [
        f"{key} sha256:{archive_sha256(value)}"
        for key, value in sorted(resource.inputs.items())
        if isinstance(value, pulumi.AssetArchive)
    ]


def render_plan(run: OfflineRun, stack: str) -> str:
    """The human-readable plan: the resource tree, counts by type and the outputs."""
    custom = [r for r in run.resources if r.custom]
    lines = [f"Stack {stack}: pulumi up would create {len(custom)} resources", ""]
    lines += list(_tree_lines(run))
    lines += ["", "Resources by type:"]
    for type_, count in sorted(Counter(r.type for r in run.resources).items()):
        lines.append(f"  {count:4d}  {type_}")
    lines += ["", "Outputs:"]
    lines += [f"  {key}: {value}" for key, value in sorted(run.outputs.items())]
    return "\n".join(lines)


def render_json(run: OfflineRun) -> str:
    """Each resource's type, name, parent and inputs, as JSON."""
    urn_names = {r.urn: r.name for r in run.resources}
    document = {
        "resources": [
            {
                "type": r.type,
                "name": r.name,
                "parent": urn_names.get(r.parent_urn or ""),
                "inputs": r.inputs,
                "options": r.options(urn_names),
            }
            for r in sorted(run.resources, key=lambda r: r.name)
        ],
        "outputs": run.outputs,
    }
    return json.dumps(document, indent=2, sort_keys=True, default=_describe_value)


def _describe_value(value: Any) -> Any:
    """Archives as the files they hold, so that the JSON plan is stable."""
    if isinstance(value, pulumi.AssetArchive):
        return {"archive": sorted(value.assets), "sha256": archive_sha256(value)}
    return str(value)


def main(argv: list[str] | None = None, root: Path = PROJECT_ROOT) -> int:
    """``python -m components.offline --stack dev [--format json]`` (the project at ``root``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", default="dev", help="dev, staging or production")
    parser.add_argument("--format", choices=("tree", "json"), default="tree")
    options = parser.parse_args(argv)
    try:
        run = run_stack(options.stack, root)
    except FileNotFoundError as error:
        print(f"no such stack file: {error.filename}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(render_json(run) if options.format == "json" else render_plan(run, options.stack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
