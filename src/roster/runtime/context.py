"""Context assembly: the brief of one run, rebuilt from typed state at every wake-up, within a token budget.

A run never replays the task's history. Its brief is assembled, deterministically (the same store state
gives the same brief, byte for byte), from bounded queries:

Mandatory parts (never cut; if they alone exceed the budget, :class:`~roster.errors.ContextOverBudget`
names the largest):

- ``agent``: who runs (handle, role, mission), the run id, attempt and fencing token;
- ``task``: its typed state (workflow, state, title, fields, version, owner, priority, parent and
  delegation packet) and ``fields_schema``; ``idempotency_key``: the same for every run and retry of the
  step the task is at (see :meth:`~roster.store.fleet.FleetVerbs.idempotency_key_txn`), for keying side
  effects outside Roster;
- ``transitions``: what it may do next: each transition's target, who may take it, what it writes and
  requires, and the clauses that block it now; ``tools``: the tools granted;
- for a run without a task instead: ``trigger`` (why it was woken, in words), ``triggers`` (what fired,
  with the events it carries), ``goal`` (for a goal run: the objective, the check and its last result,
  spend against budget, and what the last goal runs did), ``reflection`` (for a reflection run: the
  current plan with humans' edits since the agent's own last version, and the period since its last
  reflection: runs, goals, KPI movement, new memory, decided approvals, human edits, messages; see
  :mod:`roster.store.reflection`) and ``workflows`` (what it may file tasks into).

Optional parts, added in this priority order while they fit (lists are cut item by item, keeping the
most important first):

1. ``rejections``: this agent's requests for the task's approval edges that approvers rejected, with
   their notes (see :meth:`~roster.store.approvals.ApprovalVerbs.rejections_txn`); a transition that may
   not be asked for again unchanged is also blocked by an ``approval.rejected`` clause;
2. ``previous_failure``: what the previous attempt tried, how it failed, and what it saved;
3. ``handoff``: what others changed since this agent last saw the task (fields, artifact diffs, notes);
   if it does not fit whole, its artifact diffs are dropped first;
4. ``children``: delegated child tasks, open ones and the results of finished ones;
4a. ``peers``: the other agents the spec lets act on the task's workflow, fittest first, with their
   reputation on it (who to delegate to or ask; from the runtime's board, :mod:`roster.runtime.reputation`);
5. ``messages``: the agent's unread messages, oldest first (whatever task they are about, so an agent
   that always has work still reads its mail; the run's result can answer them);
6. ``memory``: the most relevant entries of the agent's pad and its portfolio's team pad (full-text
   recall on the task's title and text fields; at most :data:`MEMORY_ENTRIES`);
7. ``events``: the task's latest :data:`RECENT_EVENTS` audit events, newest first;
8. ``queue``: ids of the other tasks waiting for this agent.

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

from roster.errors import ContextOverBudget
from roster.kernel.contracts import Evidence
from roster.runtime.runners import Brief
from roster.runtime.reputation import Reputations
from roster.store import CompanyStore, Task, audit
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
    return math.ceil(_json_bytes(value) / 4)


def _json_bytes(value: Any) -> int:
    """UTF-8 bytes of ``value`` as compact JSON."""
    return len(_compact(value).encode())


def _compact(value: Any) -> str:
    # A size only: key order does not change it, so keys are not sorted.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Wakeup:
    """Why and how a run starts: its id, the lease's fencing token (``None``: a preview or no task), the
    attempt number, the other queued task ids, and for runs without a task what fired and why in words
    (``reason``: the schedule, event, watcher or unread messages)."""

    run_id: str
    fencing_token: int | None = None
    attempt: int = 1
    queue: tuple[int, ...] = ()
    fired: tuple[dict[str, Any], ...] = ()
    reason: str = ""
    goal_id: int | None = None
    """The goal a goal run works toward (see :mod:`roster.store.goals`)."""
    reflection: bool = False
    """A reflection run: the brief carries the period to reflect on (see :mod:`roster.store.reflection`)."""


class ContextAssembler:
    """Builds briefs for one company's agents from the store (see the module docstring)."""

    def __init__(self, company: CompanyStore, *, reputations: Reputations | None = None) -> None:
        self.company = company
        self.reputations = reputations
        """Where a task brief's ``peers`` come from (the dispatcher's board); ``None``: no peers part."""

    def brief(self, agent: str, task: Task | None, wakeup: Wakeup,
              previous: list[Attempt] | None = None) -> Brief:
        """The brief of ``agent`` for ``task`` (``None``: a run woken by a schedule, event, condition or
        message). ``previous`` are the agent's earlier attempts on the task (read when ``None``).
        Everything is read in one read transaction. Raises :class:`ContextOverBudget` when the mandatory
        parts exceed the agent's ``context_budget`` (tokens)."""
        if task is not None and previous is None:
            previous = [a for a in self.company.attempts_of(task.id) if a.agent == agent]
        with self.company.store.read() as conn:
            return self.brief_txn(conn, self.company.current_txn(conn), agent, task, wakeup, previous or [])

    def brief_txn(self, conn: Any, cache: Any, agent: str, task: Task | None, wakeup: Wakeup,
                  previous: list[Attempt]) -> Brief:
        """:meth:`brief` inside ``conn``'s transaction, with the company's current ``cache`` (the runtime
        builds a run's brief in the transaction that claims its task). Raises
        :class:`ContextOverBudget`."""
        company = self.company
        spec = cache.spec
        assert spec is not None
        me = spec.agents.get(agent)
        budget = me.context_budget if me else DEFAULT_BUDGET
        mandatory: dict[str, Any] = {
            "agent": {"handle": agent, "role": me.role if me else "", "mission": me.mission if me else ""},
            "run_id": wakeup.run_id, "company": company.company, "attempt": wakeup.attempt,
            "fencing_token": wakeup.fencing_token, "tools": list(me.tools) if me else [],
        }
        optional: list[tuple[str, Any]] = []
        if task is not None:
            mandatory["task"] = {"id": task.id, "workflow": task.workflow, "state": task.state,
                                 "title": task.title, "fields": task.fields, "version": task.version,
                                 "priority": task.priority, "owner": task.owner, "parent_id": task.parent_id,
                                 "packet": task.packet}
            mandatory["idempotency_key"] = company.idempotency_key_txn(conn, task)
            mandatory["fields_schema"] = spec.workflows[task.workflow].fields
            children = company.children_rows_txn(conn, task.id)  # read once: for the contract and for the brief
            mandatory["transitions"] = self._transitions(conn, cache, agent, task, children)
            asks = any(t["approval"] for t in mandatory["transitions"])  # rejections exist only on approval edges
            optional.append(("rejections", company.rejections_txn(conn, task.id, agent) if asks else []))
            optional.append(("previous_failure", _previous_failure(previous)))
            optional.append(("handoff", company.handoff_txn(conn, cache, task, agent)))
            optional.append(("children", company.children_txn(conn, cache, task.id, children)))
            if self.reputations is not None:  # who to delegate to or ask, fittest first
                optional.append(("peers", self.reputations.peers(spec, cache.actors, task.workflow, agent)))
        else:
            mandatory["task"] = None
            mandatory["transitions"] = []
            mandatory["trigger"] = wakeup.reason
            mandatory["triggers"] = list(wakeup.fired)
            if wakeup.goal_id is not None:
                mandatory["goal"] = company.goal_brief_txn(conn, wakeup.goal_id, run_id=wakeup.run_id)
            if wakeup.reflection:
                mandatory["reflection"] = company.reflection_brief_txn(conn, cache, agent, wakeup.run_id)
            mandatory["workflows"] = {name: {"states": wf.states, "initial": wf.initial, "fields": wf.fields}
                                      for name, wf in spec.workflows.items()}
            optional.append(("previous_failure", None))
        unread = company.unread_txn(conn, agent, limit=MESSAGES)
        optional.append(("messages", [{"id": m.id, "thread_id": m.thread_id, "from": m.sender,
                                       "task_id": m.task_id, "body": m.body, "at": m.created_at}
                                      for m in unread]))
        entries = company.recall_txn(conn, " ".join(_query_words(task)), self._pads(agent, task, cache),
                                     limit=MEMORY_ENTRIES)
        optional.append(("memory", [{"id": e.id, "pad": e.pad, "kind": e.kind, "text": e.text,
                                     "confidence": e.confidence, "provenance": e.provenance}
                                    for e in entries]))
        events = (audit.latest_on(conn, company.company, f"task:{task.id}", RECENT_EVENTS)
                  if task is not None else [])
        optional.append(("events", [_event_summary(e) for e in events]))
        optional.append(("queue", list(wakeup.queue)))
        return Brief(_fit(mandatory, optional, budget))

    # -- parts --------------------------------------------------------------------------------------

    def _transitions(self, conn: Any, cache: Any, agent: str, task: Task, children: list[Task]) -> list[dict[str, Any]]:
        """The transitions out of the task's state, with the clauses that block each for ``agent`` now."""
        machine = cache.machines[task.workflow]
        offered = [(name, t) for name, t in machine.workflow.transitions.items() if task.state in t.from_]
        # Artifacts and checks are read only if some transition offered is judged on them.
        evidence = (self.company.evidence_txn(conn, cache, task, children)
                    if any(machine.needs_evidence(name) for name, _ in offered) else Evidence())
        actor = cache.actors.get(agent)
        refused = (self.company.ask_again_blocked_txn(conn, task, agent)
                   if any(t.approval is not None for _, t in offered) else {})
        shown = []
        for name, t in offered:
            blocked = [{"clause": v.clause, "detail": v.detail}
                       for v in machine.blocked_by(name, task.snapshot(), actor, evidence)]
            if name in refused:
                blocked.append({"clause": "approval.rejected", "detail": refused[name]})
            shown.append({"name": name, "to": t.to, "writes": list(t.writes),
                          "requires": t.requires.model_dump(), "produces": list(t.produces),
                          "approval": t.approval is not None, "blocked": blocked})
        return shown

    @staticmethod
    def _pads(agent: str, task: Task | None, cache: Any) -> list[str]:
        """The agent's own pad, and its portfolio's team pad when the spec lets it read that (by handle,
        role or the ``agent`` keyword, as :meth:`MemoryVerbs._pad_access` judges it)."""
        pads = [agent]
        actor = cache.actors.get(agent)
        if task is not None and actor is not None:
            portfolio = cache.spec.workflows[task.workflow].portfolio
            workspace, _, name = portfolio.partition("/")
            grants = cache.spec.workspaces[workspace].portfolios[name].team_memory
            if actor.matches([*grants.read, *grants.write]):
                pads.append(f"{TEAM_PREFIX}{portfolio}")
        return pads


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
    """Add the optional parts, in order, while the brief stays within ``budget`` tokens. Sizes are
    summed per part (each part's JSON, its key and separator); :data:`CONTEXT_RESERVE` covers the
    ``context`` report and rounding."""
    nbytes = {name: _json_bytes(value) for name, value in mandatory.items()}
    sizes = {name: math.ceil(size / 4) for name, size in nbytes.items()}
    used = sum(sizes.values()) + sum(_key_tokens(name) for name in mandatory)
    if used > budget - CONTEXT_RESERVE:
        largest = max(sizes, key=lambda name: sizes[name])
        raise ContextOverBudget(largest, used, budget, CONTEXT_RESERVE)
    data = dict(mandatory)
    left_out: dict[str, int] = {}
    for name, value in optional:
        overhead = _key_tokens(name)
        fitted, dropped, nbytes[name] = _fit_part(name, value, budget - CONTEXT_RESERVE - used - overhead)
        data[name] = fitted
        sizes[name] = math.ceil(nbytes[name] / 4)
        used += sizes[name] + overhead
        if dropped:
            left_out[name] = dropped
    data["context"] = {"budget": budget, "tokens": 0, "parts": sizes, "left_out": left_out,
                       "estimate": "utf-8 bytes / 4"}
    # The whole brief's size, from its parts' (each serialized once): compact JSON of an object is its
    # braces, a comma between members, and per member '"name":' and the value. The count is part of what
    # it counts: settle on a value that counts itself (a few digits more at most).
    members = {**nbytes, "context": _json_bytes(data["context"]) - len("0")}
    frame = 2 + (len(members) - 1) + sum(len(name) + 3 + size for name, size in members.items())
    tokens = 0
    while (counted := math.ceil((frame + len(str(tokens))) / 4)) != tokens:
        tokens = counted
    data["context"]["tokens"] = tokens
    return data


def _key_tokens(name: str) -> int:
    """Tokens of ``"name":`` and a separator."""
    return math.ceil((len(name) + 4) / 4)


def _fit_part(name: str, value: Any, room: int) -> tuple[Any, int, int]:
    """The largest form of one part that fits in ``room`` tokens, how many items were left out, and its
    size in bytes (compact JSON, UTF-8)."""
    size = _json_bytes(value)
    if value is None or math.ceil(size / 4) <= room:
        return value, 0, size
    if isinstance(value, list):
        kept: list[Any] = []
        for item in value:
            if estimate_tokens([*kept, item]) > room:
                break
            kept.append(item)
        return kept, len(value) - len(kept), _json_bytes(kept)
    if isinstance(value, dict) and name == "handoff":
        lighter = {**value, "artifacts": [{k: v for k, v in a.items() if k != "diff"} for a in value["artifacts"]],
                   "events": []}
        if estimate_tokens(lighter) <= room:
            return lighter, len(value["artifacts"]) + len(value["events"]), _json_bytes(lighter)
    return None, 1, _json_bytes(None)
