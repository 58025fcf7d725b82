"""Context assembly: the brief of one run, rebuilt from typed state at every wake-up, within a token budget.

A run never replays the task's history. Its brief is assembled, deterministically (the same store state
gives the same brief, byte for byte), from bounded queries:

Mandatory parts (never cut; if they alone exceed the budget, :class:`~roster.errors.ContextOverBudget`
names the largest):

- ``agent``: who runs (handle, role, mission), the run id, attempt and fencing token;
- ``task``: its typed state (workflow, state, title, fields, version, owner, priority, parent and
  delegation packet) and ``fields_schema``;
- ``transitions``: what it may do next: each transition's target, who may take it, what it writes and
  requires, and the clauses that block it now; ``tools``: the tools granted.

Optional parts, added in this priority order while they fit (lists are cut item by item, keeping the
most important first):

1. ``previous_failure``: what the previous attempt tried, how it failed, and what it saved;
2. ``handoff``: what others changed since this agent last saw the task (fields, artifact diffs, notes);
   if it does not fit whole, its artifact diffs are dropped first;
3. ``children``: delegated child tasks, open ones and the results of finished ones;
4. ``messages``: unread messages to this agent about this task (or, without a task, all unread);
5. ``memory``: the most relevant entries of the agent's pad and its portfolio's team pad (full-text
   recall on the task's title and text fields; at most :data:`MEMORY_ENTRIES`);
6. ``events``: the task's latest :data:`RECENT_EVENTS` audit events, newest first;
7. ``queue``: ids of the other tasks waiting for this agent.

Tokens are estimated as the UTF-8 length of the part's compact JSON divided by 4 (rounded up), a common
rule of thumb for English text and JSON with BPE tokenizers; no tokenizer is downloaded. The brief's
``context`` key reports the budget, the tokens used per part and what was left out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from roster.errors import ContextOverBudget, NotFound
from roster.runtime.runners import Brief
from roster.store import CompanyStore, Task
from roster.store.memory import TEAM_PREFIX
from roster.store.runs import Attempt

DEFAULT_BUDGET = 8000
MEMORY_ENTRIES = 8
RECENT_EVENTS = 10
MESSAGES = 10
MEMORY_QUERY_WORDS = 24
CONTEXT_RESERVE = 200
"""Tokens kept for the brief's own ``context`` report."""


def estimate_tokens(value: Any) -> int:
    """Estimated tokens of ``value`` as compact JSON: ceil(UTF-8 bytes / 4)."""
    return math.ceil(len(_compact(value).encode()) / 4)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Wakeup:
    """Why and how a run starts: its id, the lease's fencing token (``None``: a preview or no task), the
    attempt number, the other queued task ids and what fired (for runs without a task)."""

    run_id: str
    fencing_token: int | None = None
    attempt: int = 1
    queue: tuple[int, ...] = ()
    fired: tuple[dict[str, Any], ...] = ()


class ContextAssembler:
    """Builds briefs for one company's agents from the store (see the module docstring)."""

    def __init__(self, company: CompanyStore) -> None:
        self.company = company

    def brief(self, agent: str, task: Task | None, wakeup: Wakeup,
              previous: list[Attempt] | None = None) -> Brief:
        """The brief of ``agent`` for ``task`` (``None``: a run woken by a schedule, event, condition or
        message). ``previous`` are the agent's earlier attempts on the task (read when ``None``).
        Raises :class:`ContextOverBudget` when the mandatory parts exceed the agent's
        ``context_budget`` (tokens)."""
        spec = self.company.spec()
        me = spec.agents.get(agent)
        budget = me.context_budget if me else DEFAULT_BUDGET
        mandatory: dict[str, Any] = {
            "agent": {"handle": agent, "role": me.role if me else "", "mission": me.mission if me else ""},
            "run_id": wakeup.run_id, "company": self.company.company, "attempt": wakeup.attempt,
            "fencing_token": wakeup.fencing_token, "tools": list(me.tools) if me else [],
        }
        optional: list[tuple[str, Any]] = []
        if task is not None:
            workflow = spec.workflows[task.workflow]
            mandatory["task"] = {"id": task.id, "workflow": task.workflow, "state": task.state, "title": task.title,
                                 "fields": task.fields, "version": task.version, "priority": task.priority,
                                 "owner": task.owner, "parent_id": task.parent_id, "packet": task.packet}
            mandatory["fields_schema"] = workflow.fields
            mandatory["transitions"] = self._transitions(agent, task)
            if previous is None:
                previous = [a for a in self.company.attempts_of(task.id) if a.agent == agent]
            optional.append(("previous_failure", _previous_failure(previous)))
            handoff, children = self._task_context(agent, task)
            optional.append(("handoff", handoff))
            optional.append(("children", children))
        else:
            mandatory["task"] = None
            mandatory["transitions"] = []
            mandatory["triggers"] = list(wakeup.fired)
            mandatory["workflows"] = {name: {"states": wf.states, "initial": wf.initial, "fields": wf.fields}
                                      for name, wf in spec.workflows.items()}
            optional.append(("previous_failure", None))
        optional.append(("messages", self._messages(agent, task)))
        optional.append(("memory", self._memory(agent, task, spec)))
        optional.append(("events", self._events(task) if task is not None else []))
        optional.append(("queue", list(wakeup.queue)))
        return Brief(_fit(mandatory, optional, budget))

    # -- parts --------------------------------------------------------------------------------------

    def _transitions(self, agent: str, task: Task) -> list[dict[str, Any]]:
        workflow = self.company.spec().workflows[task.workflow]
        shown = []
        for option in self.company.options(task.id, actor=agent):
            t = workflow.transitions[option.name]
            if task.state not in t.from_:
                continue
            shown.append({"name": option.name, "to": option.to, "writes": list(t.writes),
                          "requires": t.requires.model_dump(), "produces": list(t.produces),
                          "approval": t.approval is not None,
                          "blocked": [{"clause": v.clause, "detail": v.detail} for v in option.blocked]})
        return shown

    def _task_context(self, agent: str, task: Task) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        with self.company.store.read() as conn:
            cache = self.company._current(conn)
            return (self.company.handoff_txn(conn, cache, task, agent),
                    self.company.children_txn(conn, cache, task.id))

    def _messages(self, agent: str, task: Task | None) -> list[dict[str, Any]]:
        unread = self.company.unread_messages([agent], limit=MESSAGES * 5).get(agent, [])
        if task is not None:
            unread = [m for m in unread if m.task_id == task.id]
        return [{"id": m.id, "thread_id": m.thread_id, "from": m.sender, "task_id": m.task_id, "body": m.body,
                 "at": m.created_at} for m in unread[:MESSAGES]]

    def _memory(self, agent: str, task: Task | None, spec: Any) -> list[dict[str, Any]]:
        pads = [agent]
        if task is not None:
            portfolio = spec.workflows[task.workflow].portfolio
            workspace, _, name = portfolio.partition("/")
            grants = spec.workspaces[workspace].portfolios[name].team_memory
            me = spec.agents.get(agent)
            roles = set(me.roles) if me else set()
            if agent in grants.read + grants.write or roles & set(grants.read + grants.write):
                pads.append(f"{TEAM_PREFIX}{portfolio}")
        query = " ".join(_query_words(task))
        try:
            entries = self.company.recall(query, actor=None, pads=pads, limit=MEMORY_ENTRIES)
        except NotFound:
            return []
        return [{"id": e.id, "pad": e.pad, "kind": e.kind, "text": e.text, "confidence": e.confidence,
                 "provenance": e.provenance} for e in entries]

    def _events(self, task: Task) -> list[dict[str, Any]]:
        events = self.company.audit_log(task_id=task.id, limit=RECENT_EVENTS, newest_first=True)
        return [_event_summary(e) for e in events]


def _query_words(task: Task | None) -> list[str]:
    if task is None:
        return []
    text = " ".join([task.title, *(v for v in task.fields.values() if isinstance(v, str))])
    words = []
    for word in re.findall(r"\w+", text.lower()):
        if len(word) > 2 and word not in words:
            words.append(word)
    return words[:MEMORY_QUERY_WORDS]


def _previous_failure(previous: list[Attempt]) -> dict[str, Any] | None:
    if not previous:
        return None
    last = previous[0]
    return {"category": last.last_category, "message": last.last_message, "code": last.last_attempt.get("code"),
            "tried": {k: last.last_attempt.get(k) for k in ("transition", "writes")},
            "partly_succeeded": last.last_attempt.get("saved", [])}


_EVENT_KEYS = ("transition", "from", "to", "name", "kind", "artifact_version", "passed", "note", "rationale",
               "owner", "error")


def _event_summary(event: Any) -> dict[str, Any]:
    data = {k: event.data[k] for k in _EVENT_KEYS if k in event.data}
    if isinstance(data.get("error"), dict):
        data["error"] = data["error"].get("error")
    return {"seq": event.seq, "at": event.ts, "by": event.principal, "action": event.action, **data}


def _fit(mandatory: dict[str, Any], optional: list[tuple[str, Any]], budget: int) -> dict[str, Any]:
    """Add the optional parts, in order, while the brief stays within ``budget`` tokens."""
    sizes = {name: estimate_tokens(value) for name, value in mandatory.items()}
    used = estimate_tokens(mandatory)
    if used > budget - CONTEXT_RESERVE:
        largest = max(sizes, key=lambda name: sizes[name])
        raise ContextOverBudget(largest, used, budget)
    data = dict(mandatory)
    left_out: dict[str, int] = {}
    for name, value in optional:
        fitted, dropped = _fit_part(name, value, budget - CONTEXT_RESERVE - used - estimate_tokens({name: None}))
        data[name] = fitted
        used = estimate_tokens(data)
        sizes[name] = estimate_tokens(fitted)
        if dropped:
            left_out[name] = dropped
    data["context"] = {"budget": budget, "tokens": 0, "parts": sizes, "left_out": left_out,
                       "estimate": "utf-8 bytes / 4"}
    data["context"]["tokens"] = estimate_tokens(data)
    return data


def _fit_part(name: str, value: Any, room: int) -> tuple[Any, int]:
    """The largest form of one part that fits in ``room`` tokens, and how many items were left out."""
    if value is None or estimate_tokens(value) <= room:
        return value, 0
    if isinstance(value, list):
        kept: list[Any] = []
        for item in value:
            if estimate_tokens([*kept, item]) > room:
                break
            kept.append(item)
        return kept, len(value) - len(kept)
    if isinstance(value, dict) and name == "handoff":
        lighter = {**value, "artifacts": [{k: v for k, v in a.items() if k != "diff"} for a in value["artifacts"]],
                   "events": []}
        if estimate_tokens(lighter) <= room:
            return lighter, len(value["artifacts"]) + len(value["events"])
    return None, 1
