"""Load a ``roster.yaml`` into a :class:`~roster.kernel.spec.CompanySpec`, with file and line on every error.

PyYAML composes the document into nodes that carry their line; we build plain Python data from those
nodes while recording the line of every key path, then let pydantic check shapes and
:func:`~roster.kernel.spec.reference_problems` check names. Every problem becomes a
:class:`~roster.errors.SpecIssue` naming the file, the 1-based line and the dotted key path.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import ValidationError

from roster.errors import PayloadTooLarge, SpecError, SpecIssue
from roster.kernel.spec import CompanySpec, reference_problems

MAX_SPEC_BYTES = 1_048_576
"""Largest spec file accepted, in bytes (1 MiB)."""

KeyPath = tuple[str | int, ...]


def load_spec(path: str | FsPath) -> CompanySpec:
    """Read and check the spec at ``path``.

    Raises :class:`SpecError` (listing every problem found), :class:`PayloadTooLarge` if the file is over
    :data:`MAX_SPEC_BYTES`, and :class:`FileNotFoundError` if it does not exist.
    """
    path = FsPath(path)
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise PayloadTooLarge(f"spec file {path}", size, MAX_SPEC_BYTES)
    return parse_spec(path.read_text(encoding="utf-8"), str(path))


def parse_spec(text: str, filename: str = "roster.yaml") -> CompanySpec:
    """Parse spec YAML ``text``; ``filename`` is only used in error messages. Raises :class:`SpecError`."""
    data, lines = _compose(text, filename)
    if not isinstance(data, dict):
        raise SpecError([SpecIssue(filename, 1, "", "expected a mapping with at least a 'company' key")])
    try:
        spec = CompanySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_pydantic_issue(err, filename, lines) for err in exc.errors()]) from None
    problems = reference_problems(spec)
    if problems:
        raise SpecError([SpecIssue(filename, _line_of(path, lines), _dotted(path), msg) for path, msg in problems])
    return spec


def _compose(text: str, filename: str) -> tuple[Any, dict[KeyPath, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_issue(exc, text, filename)]) from None
    if node is None:
        raise SpecError([SpecIssue(filename, 1, "", "the file is empty; expected a mapping with a 'company' key")])
    lines: dict[KeyPath, int] = {}
    issues: list[SpecIssue] = []
    constructor = yaml.SafeLoader("")
    data = _build(node, (), lines, issues, filename, constructor)
    if issues:
        raise SpecError(issues)
    return data, lines


def _yaml_issue(exc: yaml.YAMLError, text: str, filename: str) -> SpecIssue:
    """Where a YAML syntax error is. The parser's ``problem_mark`` is where it gave up, which for an
    unclosed bracket or quote is the end of the file; the ``context_mark`` (the opening bracket) is
    then the useful place."""
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    last_line = max(1, len(text.splitlines()))
    mark = problem_mark or context_mark
    if problem_mark is not None and context_mark is not None and problem_mark.line + 1 > last_line:
        mark = context_mark
    line = min(mark.line + 1, last_line) if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and mark is context_mark and context_mark is not None:
        problem = f"{problem} ({context} that starts here)"
    return SpecIssue(filename, line, "", f"malformed YAML: {problem}")


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], issues: list[SpecIssue],
           filename: str, constructor: yaml.SafeLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, (dict, list)):
                issues.append(SpecIssue(filename, key_node.start_mark.line + 1, _dotted(path), "a key must be a scalar"))
                continue
            key = str(key) if key is not None else "null"
            child = (*path, key)
            if key in result:
                issues.append(SpecIssue(filename, key_node.start_mark.line + 1, _dotted(child),
                                        f"duplicate name '{key}': it is already defined on line {lines[child]}"))
                continue
            lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, lines, issues, filename, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, issues, filename, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def _pydantic_issue(err: dict[str, Any], filename: str, lines: dict[KeyPath, int]) -> SpecIssue:
    loc: KeyPath = tuple(err["loc"])
    # Drop union/validator tags pydantic adds to locations (e.g. 'list[...]'): keep real key path parts.
    path = _known_prefix(loc, lines)
    kind = err["type"]
    if kind == "extra_forbidden":
        message = f"unknown key '{loc[-1]}'; it is not part of the spec here (check its spelling and indentation)"
    elif kind == "missing":
        message = f"required key '{loc[-1]}' is missing"
        path = loc
    elif kind == "string_pattern_mismatch":
        message = (f"invalid name {err['input']!r}: expected lowercase letters, digits, '-' or '_', "
                   "starting with a letter, at most 63 characters")
    else:
        message = f"{err['msg']} (got {_short(err.get('input'))})"
    return SpecIssue(filename, _line_of(path, lines), _dotted(path), message)


def _known_prefix(loc: KeyPath, lines: dict[KeyPath, int]) -> KeyPath:
    path: KeyPath = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
        elif isinstance(part, str) and any(ch in part for ch in "[]()") or part in ("str", "list"):
            continue
        else:
            path = (*path, part)
    return path


def _line_of(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _dotted(path: KeyPath) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
