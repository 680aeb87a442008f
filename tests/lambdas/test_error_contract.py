"""One error contract: every status and code a client can get is in `x-error-codes`.

openapi.yaml's `x-error-codes` is the one table of them. The codes are collected
from where they are made, and must be exactly the table's:
- the Lambda (`lambda`): the `code="..."` arguments and `default_code = "..."`
  class attributes of the story_generator modules that use `errors.py` (with the
  status of the `ApiError` class, where the call names one);
- API Gateway (`api-gateway`): the document's gateway responses, and the 405 mock
  components/api_definition.py gives every path for its other methods;
- the dev server (`dev-server`, lambdas/devserver.py): its own refusals (a call
  with a literal status and code, a `code="..."` argument, a `{"code": "..."}`
  literal) and the gateway responses it answers from, named by their type.
`Error.code` lists exactly the table's codes, and README.md has one row per
(status, code) of the table.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.api_definition import ANY_METHOD, GATEWAY_RESPONSES_KEY, api_definition
from components.lambda_code import LAMBDAS_DIR
from lambdas.story_generator import errors
from tests.lambdas.story_doubles import USER_POOL_ARN

REPO = LAMBDAS_DIR.parent
OPENAPI = LAMBDAS_DIR / "story_generator" / "openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
TABLE: list[dict[str, Any]] = DOCUMENT["x-error-codes"]
SOURCES = ("lambda", "api-gateway", "dev-server")
CODE = re.compile(r"[a-z]+(?:_[a-z]+)+|[a-z]+")
STATUS = re.compile(r"[45]\d\d|[45]XX")
STATUSES = {
    name: str(value.status)
    for name, value in vars(errors).items()
    if isinstance(value, type)
    and issubclass(value, errors.ApiError)
    and value is not errors.ApiError
}


@dataclass(frozen=True)
class Found:
    """A code the code base can return, where, and with which status if that is known."""

    source: str
    code: str
    status: str | None
    where: str


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _uses_errors(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "errors"
        for node in ast.walk(tree)
    )


def lambda_codes() -> Iterator[Found]:
    package = LAMBDAS_DIR / "story_generator"
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        if path.name != "errors.py" and not _uses_errors(tree):
            continue
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    code = _literal(keyword.value)
                    if keyword.arg == "code" and code is not None:
                        yield Found("lambda", code, STATUSES.get(_name(node.func)), where)
            elif isinstance(node, ast.ClassDef):
                for statement in node.body:
                    targets: list[ast.expr] = []
                    if isinstance(statement, ast.Assign):
                        targets = statement.targets
                    elif isinstance(statement, ast.AnnAssign):
                        targets = [statement.target]
                    code = _literal(getattr(statement, "value", None))
                    if code is not None and any(_name(t) == "default_code" for t in targets):
                        yield Found("lambda", code, STATUSES.get(node.name), where)


def gateway_response_code(kind: str, response: dict[str, Any]) -> tuple[str, str | None]:
    """The code and status of one gateway response (`4XX`/`5XX`: API Gateway's own)."""
    template = response["responseTemplates"]["application/json"]
    match = re.search(r'"code":\s*"([^"]+)"', template)
    assert match, f"the {kind} gateway response has no literal code: {template}"
    status = response.get("statusCode")
    if status is None and kind in {"DEFAULT_4XX", "DEFAULT_5XX"}:
        status = kind[-3:]
    return match.group(1), status


def api_gateway_codes() -> Iterator[Found]:
    for kind, response in DOCUMENT[GATEWAY_RESPONSES_KEY].items():
        code, status = gateway_response_code(kind, response)
        yield Found("api-gateway", code, status, f"openapi.yaml {GATEWAY_RESPONSES_KEY}.{kind}")
    definition = api_definition(
        DOCUMENT, "arn:aws:apigateway:test", "test", user_pool_arns=[USER_POOL_ARN]
    )
    for path, item in definition["paths"].items():
        answer = item[ANY_METHOD]["x-amazon-apigateway-integration"]["responses"]["default"]
        body = json.loads(answer["responseTemplates"]["application/json"])
        yield Found("api-gateway", body["error"]["code"], answer["statusCode"], f"405 mock {path}")


def dev_server_codes() -> Iterator[Found]:
    path = LAMBDAS_DIR / "devserver.py"
    responses = DOCUMENT[GATEWAY_RESPONSES_KEY]
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            arguments = [
                argument.value for argument in node.args if isinstance(argument, ast.Constant)
            ]
            statuses = [a for a in arguments if isinstance(a, int) and 400 <= a <= 599]
            codes = [a for a in arguments if isinstance(a, str) and CODE.fullmatch(a)]
            if statuses and codes:
                yield Found("dev-server", codes[0], str(statuses[0]), where)
            for keyword in node.keywords:
                code = _literal(keyword.value)
                if keyword.arg == "code" and code is not None:
                    yield Found("dev-server", code, None, where)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                code = _literal(value)
                if _literal(key) == "code" and code is not None:
                    yield Found("dev-server", code, None, where)
        elif (kind := _literal(node)) is not None and kind in responses:
            code, status = gateway_response_code(kind, responses[kind])
            yield Found("dev-server", code, status, f"{where} (gateway response {kind})")


FOUND = [*lambda_codes(), *api_gateway_codes(), *dev_server_codes()]


def test_the_collectors_find_codes_of_every_source() -> None:
    found = {source: {f.code for f in FOUND if f.source == source} for source in SOURCES}
    assert {"session_not_found", "invalid_type", "payload_too_large"} <= found["lambda"]
    assert {"throttled", "method_not_allowed"} <= found["api-gateway"]
    assert "length_required" in found["dev-server"]


def test_the_table_is_well_formed() -> None:
    for row in TABLE:
        assert set(row) == {"status", "code", "returned_by", "meaning", "action"}, row
        assert STATUS.fullmatch(str(row["status"])), row
        assert CODE.fullmatch(row["code"]), row
        assert row["returned_by"] and set(row["returned_by"]) <= set(SOURCES), row
        assert row["meaning"].strip() and row["action"].strip(), row
    codes = [row["code"] for row in TABLE]
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    assert not duplicates, f"a code always comes with one status: {duplicates}"


@pytest.mark.reads_source
@pytest.mark.parametrize("source", SOURCES)
def test_the_table_lists_exactly_the_codes_each_source_returns(source: str) -> None:
    returned = {found.code for found in FOUND if found.source == source}
    listed = {row["code"] for row in TABLE if source in row["returned_by"]}
    assert returned - listed == set(), (
        f"{source} returns codes missing from x-error-codes (or without {source} in "
        f"their returned_by): {sorted(returned - listed)}"
    )
    assert listed - returned == set(), (
        f"x-error-codes says {source} returns codes it does not: {sorted(listed - returned)}"
    )


def test_each_code_comes_with_the_status_of_its_table_row() -> None:
    status_of = {row["code"]: str(row["status"]) for row in TABLE}
    wrong = [
        f"{found.where}: {found.code} is {found.status}, the table says {status_of[found.code]}"
        for found in FOUND
        if found.status is not None and status_of.get(found.code) not in {None, found.status}
    ]
    assert not wrong, wrong


def test_error_code_enum_is_the_table() -> None:
    error = DOCUMENT["components"]["schemas"]["Error"]["properties"]["error"]
    enum = error["properties"]["code"]["enum"]
    assert len(enum) == len(set(enum)), "no code twice in Error.code"
    assert set(enum) == {row["code"] for row in TABLE}


def readme_rows(path: Path) -> set[tuple[str, str]]:
    """The (status, code) of each README table row `| <status> | `<code>` | ...`."""
    rows = set()
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and STATUS.fullmatch(cells[0]):
            match = re.fullmatch(r"`([a-z_]+)`", cells[1])
            if match:
                rows.add((cells[0], match.group(1)))
    return rows


def test_readme_has_a_row_for_every_status_and_code() -> None:
    documented = readme_rows(REPO / "README.md")
    table = {(str(row["status"]), row["code"]) for row in TABLE}
    assert table - documented == set(), (
        f"README.md lacks error rows `| status | `code` | ...` for {sorted(table - documented)}"
    )
    assert documented - table == set(), (
        f"README.md lists errors x-error-codes does not have: {sorted(documented - table)}"
    )
