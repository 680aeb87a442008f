"""Reading ``Pulumi.<stack>.yaml`` strictly: the slips plain YAML lets through.

A YAML parser silently keeps the last of two equal keys, reads an unquoted
``no`` as the boolean false (YAML 1.1) or as the string "no" (YAML 1.2, the
Pulumi CLI), and reports a syntax error without saying which stack file it is
in. ``read_stack_file`` turns each of those into a ``ConfigError`` naming the
file, the line, the key and the value, before any resource is declared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, string_fields_given_booleans

# Plain scalars YAML 1.1 reads as booleans and YAML 1.2 as strings.
_AMBIGUOUS_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that records duplicate keys and ambiguous booleans."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[str] = []


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in lines:
            loader.problems.append(
                f"line {line}: {key} is set again (first on line {lines[key]}); "
                "YAML keeps only the last one: remove one of them"
            )
        lines.setdefault(key, line)
        if (
            isinstance(value_node, yaml.ScalarNode)
            and value_node.style is None
            and value_node.value.lower() in _AMBIGUOUS_BOOLEANS
        ):
            loader.problems.append(
                f"line {value_node.start_mark.line + 1}: {key} = {value_node.value}: YAML "
                "reads this as a boolean in one version and a string in another; write "
                f"'{value_node.value}' (quoted) for a string, or true or false for a boolean"
            )
    return {
        loader.construct_object(k, deep=True): loader.construct_object(v, deep=True)
        for k, v in node.value
    }


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_stack_file(path: Path) -> dict[str, Any]:
    """The ``config`` section of a stack file, or ConfigError naming file and line."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        message = f"{path.name}: not UTF-8 text ({error})"
        raise ConfigError(f"invalid stack config:\n  {message}") from None
    loader = _StrictLoader(text)
    try:
        document = loader.get_single_data() or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path.name}:{mark.line + 1}:{mark.column + 1}" if mark else path.name
        problem = error.problem or error.context or "not valid YAML"
        if "'\\t'" in problem:
            problem += " (YAML does not allow tabs for indentation: use spaces)"
        raise ConfigError(f"invalid stack config:\n  {where}: {problem}") from None
    finally:
        loader.dispose()
    problems = [f"{path.name} {problem}" for problem in loader.problems]
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        problems.append(f"{path.name}: must be a mapping with a `config:` mapping")
        document = {}
    config = dict(document.get("config") or {})
    problems += [f"{path.name}: {line}" for line in string_fields_given_booleans(config)]
    if problems:
        raise ConfigError("invalid stack config:\n  " + "\n  ".join(problems))
    return config


def check_stack_file(path: Path) -> None:
    """Read the stack file at ``path`` strictly when it exists (see ``read_stack_file``)."""
    if path.is_file():
        read_stack_file(path)
