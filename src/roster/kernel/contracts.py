"""Contract enforcement: the one function that decides whether a transition may happen.

The store calls :meth:`WorkflowMachine.check` inside the write transaction of every transition, whoever
asks (CLI, API, runner). It is pure: everything it needs (the task snapshot, the actor, the evidence on
record) is passed in, so it can be tested and reused without a database.

Clauses are checked in this order, and the first failure is raised as a
:class:`~roster.errors.ContractViolation` naming the clause (``version`` raises
:class:`~roster.errors.StaleVersion` instead):

1. ``transition`` - the workflow defines it
2. ``version`` - the caller's expected version is the task's current version
3. ``from`` - the task is in one of the transition's source states
4. ``by`` - the actor is named in ``by`` (by handle, by role, or by the ``human``/``agent`` keywords)
5. ``writes`` - every written field is listed in ``writes``
6. ``fields`` - the fields after the writes validate against the workflow's JSON Schema
7. ``requires.fields`` - each required field is present after the writes
8. ``requires.artifacts`` - an artifact of each required kind exists on the task
9. ``produces`` - an artifact of each produced kind exists on the task when the transition commits
10. ``requires.checks`` - the latest recorded result of each named check is a pass
11. ``approval`` - an approval by someone ``approval.by`` allows is on record for this transition
12. ``children`` - a transition into a terminal state finds no delegated child task still open (unless
    the transition sets ``allow_open_children``): the delegator stays accountable for its subproblems
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from roster.errors import ContractViolation, InvalidFields, StaleVersion
from roster.kernel.spec import ANY_AGENT, ANY_HUMAN, Transition, Workflow


@dataclass(frozen=True)
class Actor:
    """The principal asking for a change: its handle, kind (``human`` or ``agent``) and roles."""

    handle: str
    kind: str
    roles: frozenset[str] = frozenset()

    def matches(self, names: list[str]) -> bool:
        """Whether any entry of a ``by`` list names this actor."""
        for name in names:
            if name == self.handle or name in self.roles:
                return True
            if (name == ANY_HUMAN and self.kind == "human") or (name == ANY_AGENT and self.kind == "agent"):
                return True
        return False


@dataclass(frozen=True)
class TaskSnapshot:
    """What the kernel needs to know of a task to judge a transition."""

    id: int
    workflow: str
    state: str
    fields: Mapping[str, Any]
    version: int


@dataclass(frozen=True)
class Evidence:
    """What is on record for a task: artifact kinds present, checks whose latest result passed, and the
    actors who approved each transition (transition name -> approvers), and the open delegated children."""

    artifact_kinds: frozenset[str] = frozenset()
    passed_checks: frozenset[str] = frozenset()
    approvals: Mapping[str, tuple[Actor, ...]] = field(default_factory=dict)
    open_children: tuple[int, ...] = ()
    """Ids of delegated child tasks not yet in a terminal state."""
    relaxed: frozenset[str] = frozenset()
    """Transitions whose approval edge is relaxed for this move (a relaxable edge, an autonomous agent,
    review volume showing it over-reviewed): the ``approval`` clause holds without an approval."""


@dataclass(frozen=True)
class Violation:
    clause: str
    detail: str


class WorkflowMachine:
    """A workflow compiled for checking: its transitions indexed and its field schema compiled once."""

    def __init__(self, name: str, workflow: Workflow) -> None:
        self.name = name
        self.workflow = workflow
        self.terminal = workflow.terminal_states()
        self._validator = Draft202012Validator(workflow.fields_schema())

    # -- field validation -------------------------------------------------------------------------

    def field_problems(self, fields: Mapping[str, Any]) -> list[str]:
        """Schema problems of a whole fields object, each as ``'field: message'``; empty when valid.

        Values must also be representable in RFC 8785 JSON, which the audit hash is computed over.
        """
        problems = [p for name, value in fields.items() for p in canonical_problems(value, str(name))]
        for err in sorted(self._validator.iter_errors(dict(fields)), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in err.path) or "fields"
            problems.append(f"{where}: {err.message}")
        return problems

    def check_new_fields(self, fields: Mapping[str, Any]) -> None:
        """Validate the fields of a task being created. Raises :class:`InvalidFields`."""
        problems = self.field_problems(fields)
        if problems:
            raise InvalidFields(self.name, problems)

    # -- transitions ------------------------------------------------------------------------------

    def needs_evidence(self, name: str) -> bool:
        """Whether judging ``name`` needs the task's evidence (artifacts, checks, approvals, children)."""
        t = self.workflow.transitions.get(name)
        return t is not None and bool(t.requires.artifacts or t.requires.checks or t.produces or t.approval
                                      or (t.to in self.terminal and not t.allow_open_children))

    def transition(self, name: str) -> Transition:
        try:
            return self.workflow.transitions[name]
        except KeyError:
            known = ", ".join(sorted(self.workflow.transitions)) or "none"
            raise ContractViolation(
                workflow=self.name, transition=name, clause="transition",
                detail=f"workflow '{self.name}' has no transition '{name}'; it has: {known}",
            ) from None

    def check(self, name: str, task: TaskSnapshot, actor: Actor, writes: Mapping[str, Any],
              expected_version: int, evidence: Evidence) -> dict[str, Any]:
        """Judge one transition. Returns the task's fields after the writes.

        Raises :class:`StaleVersion` if ``expected_version`` is not ``task.version``, and
        :class:`ContractViolation` naming the first failing clause otherwise.
        """
        transition = self.transition(name)
        if expected_version != task.version:
            raise StaleVersion(task.id, expected_version, task.version)
        new_fields = apply_writes(task.fields, writes)
        for violation in self._violations(name, transition, task, actor, writes, new_fields, evidence):
            raise ContractViolation(workflow=self.name, transition=name, clause=violation.clause,
                                    detail=violation.detail, task_id=task.id)
        return new_fields

    def blocked_by(self, name: str, task: TaskSnapshot, actor: Actor | None, evidence: Evidence) -> list[Violation]:
        """Every clause that blocks transition ``name`` now, without writes (for ``task show``).

        With ``actor=None`` the ``by`` clause is skipped. Required fields that the transition itself
        writes are not counted as blocking.
        """
        transition = self.transition(name)
        violations = self._violations(name, transition, task, actor, {}, dict(task.fields), evidence, preview=True)
        return list(violations)

    def _violations(self, name: str, t: Transition, task: TaskSnapshot, actor: Actor | None, writes: Mapping[str, Any],
                    new_fields: Mapping[str, Any], evidence: Evidence, preview: bool = False):
        if task.state not in t.from_:
            yield Violation("from", f"task is in state '{task.state}'; this transition starts from "
                                    f"{_names(t.from_)}")
        if actor is not None and not actor.matches(t.by):
            yield Violation("by", f"'{actor.handle}' may not perform it; allowed: {_names(t.by)}")
        outside = sorted(set(writes) - set(t.writes))
        if outside:
            yield Violation("writes", f"writes {_names(outside)} outside its 'writes' list {_names(t.writes)}")
        if writes:
            problems = self.field_problems(new_fields)
            if problems:
                yield Violation("fields", "; ".join(problems))
        missing = [f for f in t.requires.fields if f not in new_fields and not (preview and f in t.writes)]
        if missing:
            yield Violation("requires.fields", f"required field(s) {_names(missing)} missing")
        absent = [k for k in t.requires.artifacts if k not in evidence.artifact_kinds]
        if absent:
            yield Violation("requires.artifacts", f"required artifact kind(s) {_names(absent)} missing on the task")
        unproduced = [k for k in t.produces if k not in evidence.artifact_kinds]
        if unproduced:
            yield Violation("produces", f"must produce artifact kind(s) {_names(unproduced)}; none saved on the "
                                        "task yet (work that is not saved is invisible work)")
        unpassed = [c for c in t.requires.checks if c not in evidence.passed_checks]
        if unpassed:
            yield Violation("requires.checks", f"check(s) {_names(unpassed)} have not passed")
        if t.approval is not None and name not in evidence.relaxed:
            approvers = evidence.approvals.get(name, ())
            if not any(a.matches(t.approval.by) for a in approvers):
                yield Violation("approval", f"needs an approval by {_names(t.approval.by)}; none on record")
        if evidence.open_children and t.to in self.terminal and not t.allow_open_children:
            yield Violation("children", f"delegated child task(s) {', '.join(map(str, evidence.open_children))} "
                                        f"are still open; finish them first (or set allow_open_children)")


MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer RFC 8785 (I-JSON, RFC 7493) represents exactly."""


def canonical_problems(value: Any, path: str) -> list[str]:
    """Why ``value`` cannot be hashed as RFC 8785 canonical JSON: integers beyond +/-(2**53 - 1),
    non-finite floats, strings that are not valid Unicode, non-string keys. Empty when it can."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return []
        return [f"{path}: integer {value} is outside +/-(2**53 - 1); store it as a string"]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path}: {value} is not a finite number"]
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [f"{path}: the text is not valid Unicode (a lone surrogate)"]
        return []
    if isinstance(value, Mapping):
        problems = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{path}: key {key!r} is not a string")
            else:
                problems.extend(canonical_problems(key, path) + canonical_problems(item, f"{path}.{key}"))
        return problems
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in canonical_problems(item, f"{path}[{i}]")]
    return [f"{path}: {type(value).__name__} is not a JSON value"]


def apply_writes(fields: Mapping[str, Any], writes: Mapping[str, Any]) -> dict[str, Any]:
    """Fields after ``writes``: each written value replaces the old one; a ``None`` value removes the field."""
    result = dict(fields)
    for key, value in writes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def _names(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names) if names else "(none)"
