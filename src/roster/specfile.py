"""Load a ``roster.yaml`` into a :class:`~roster.kernel.spec.CompanySpec`, with file and line on every error.

PyYAML composes the document into nodes that carry their line; we build plain Python data from those
nodes while recording the line of every key path, then let pydantic check shapes and
:func:`~roster.kernel.spec.reference_problems` check names. Every problem becomes a
:class:`~roster.errors.SpecIssue` naming the file, the 1-based line and the dotted key path.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from roster.defaults import SPEC_NAME
from roster.errors import PayloadTooLarge, SpecError, SpecIssue, UsageError
from roster.kernel.runner_spec import RUNNER_KINDS, did_you_mean
from roster.kernel.spec import CompanySpec, idle_agent_problems, reference_problems

MAX_SPEC_BYTES = 1_048_576
"""Largest spec file accepted, in bytes (1 MiB)."""


def nearest_spec(start: FsPath, *, hint: str) -> FsPath:
    """The nearest :data:`SPEC_NAME` in ``start`` or a folder above it. Raises :class:`UsageError`
    naming ``start``, followed by ``hint`` (what the caller can do instead)."""
    for folder in (start, *start.parents):
        if (folder / SPEC_NAME).is_file():
            return folder / SPEC_NAME
    raise UsageError(f"no {SPEC_NAME} in {start} or any folder above it; {hint}")


def spec_company(path: FsPath, *, hint: str) -> str:
    """The ``company`` key of the spec at ``path``, read without checking the rest (a command that only
    needs to know which company it acts in). Raises :class:`UsageError`, followed by ``hint``."""
    try:
        return str(yaml.safe_load(path.read_text(encoding="utf-8"))["company"])
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        raise UsageError(f"cannot read the 'company' key from {path}; {hint}") from None

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


def load_spec_with_warnings(path: str | FsPath) -> tuple[CompanySpec, list[SpecIssue]]:
    """:func:`load_spec`, and the spec's warnings: agents that can never run (see
    :func:`~roster.kernel.spec.idle_agent_problems`), each with its file, line and key path."""
    path = FsPath(path)
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise PayloadTooLarge(f"spec file {path}", size, MAX_SPEC_BYTES)
    return parse_spec_with_warnings(path.read_text(encoding="utf-8"), str(path))


def parse_spec_with_warnings(text: str, filename: str = "roster.yaml") -> tuple[CompanySpec, list[SpecIssue]]:
    """:func:`parse_spec`, and the spec's warnings (see :func:`load_spec_with_warnings`)."""
    spec, lines = _parse(text, filename)
    return spec, [SpecIssue(filename, _line_of(path, lines), _dotted(path), msg)
                  for path, msg in idle_agent_problems(spec)]


def parse_spec(text: str, filename: str = "roster.yaml") -> CompanySpec:
    """Parse spec YAML ``text``; ``filename`` is only used in error messages. Raises :class:`SpecError`."""
    return _parse(text, filename)[0]


def _parse(text: str, filename: str) -> tuple[CompanySpec, dict[KeyPath, int]]:
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
    return spec, lines


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
    path, _ = _walk(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        _, parent = _walk(loc[:-1])
        known = _keys_of(parent)
        message = (f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), known)}; "
                   + (f"expected one of {', '.join(known)}" if known else "it is not part of the spec here")
                   + " (check its spelling and indentation)")
    elif kind == "missing":
        message = f"required key '{loc[-1]}' is missing"
    elif kind == "union_tag_invalid":
        tag = str(err["ctx"]["tag"])
        tags = [t.strip(" '") for t in str(err["ctx"]["expected_tags"]).split(",")]
        message = f"unknown {path[-1]} kind '{tag}'{did_you_mean(tag, tags)}; expected one of {', '.join(tags)}"
        path = (*path, "kind")
    elif kind == "union_tag_not_found":
        key = str(err["ctx"]["discriminator"]).strip("'")
        message = f"required key '{key}' is missing; expected one of {', '.join(RUNNER_KINDS)}"
    elif kind == "string_pattern_mismatch":
        message = (f"invalid name {err['input']!r}: expected lowercase letters, digits, '-' or '_', "
                   "starting with a letter, at most 63 characters")
    elif kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
    else:
        message = f"{err['msg']} (got {_short(err.get('input'))})"
    return SpecIssue(filename, _line_of(path, lines), _dotted(path), message)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict"})
"""Tags pydantic puts in an error's location for a member of a plain union (``str | None``...)."""


def _walk(loc: KeyPath) -> tuple[KeyPath, type[BaseModel] | None]:
    """The key path of a pydantic error location, without the tags pydantic adds for unions (a runner's
    ``llm``, ``str``, ``list[...]``, a dict key's ``[key]``), and the model of the block at its end (``None``
    if that is not a model)."""
    path: list[str | int] = []
    tp: Any = CompanySpec
    for part in loc:
        tp = _plain(tp)
        members = _union_members(tp)
        if members is not None:
            tagged = [m for m in members if _tag_of(m) == part]
            if tagged:
                tp = tagged[0]
                continue  # the discriminator's value, not a key
            tp = None
        if isinstance(part, str) and (part in _TYPE_TAGS or any(ch in part for ch in "[]()")):
            continue
        path.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for name, f in tp.model_fields.items() if part in (name, f.alias)), None)
            tp = field.annotation if field is not None else None
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            tp = None
    tp = _plain(tp)
    return tuple(path), tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _plain(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and ``| None`` around it."""
    tp = _unwrap(tp)
    members = _union_members(tp)
    while members is not None and len(members) == 1:
        tp = _unwrap(members[0])
        members = _union_members(tp)
    return tp


def _union_members(tp: Any) -> list[Any] | None:
    if get_origin(tp) in (Union, UnionType):
        return [m for m in get_args(tp) if m is not type(None)]
    return None


def _tag_of(model: Any) -> Any:
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel) and "kind" in model.model_fields:
        return model.model_fields["kind"].default
    return None


def _keys_of(model: type[BaseModel] | None) -> list[str]:
    """The keys a spec block of ``model`` accepts, spelled as in YAML."""
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


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
