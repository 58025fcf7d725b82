"""The escalation ladder's record: when an agent cannot finish a task, who it went to next and why.

The order is self (retries, in the dispatcher), then a **peer** (another active agent whose rights and
contract let it act on the task in its current state, not itself blocked on it), then a **human** (the
inbox). Jumping to a human before trying a peer happens only for governance failures, and the step
says so. Each step is an audit event (``escalation.peer``, ``escalation.human``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from roster.errors import Denied, NotFound, UsageError
from roster.kernel.failures import Failure
from roster.kernel.rights import Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.runs import Attempt
from roster.store.schema import attempts, escalations


@dataclass(frozen=True)
class Escalation:
    id: int
    task_id: int | None
    from_agent: str
    step: str
    to: str
    category: str
    reason: str
    status: str
    created_at: str
    resolved_by: str | None
    resolved_at: str | None
    note: str
    goal_id: int | None = None
    """The goal escalated (exhausted or stalled), for an escalation with no task."""


def _escalation(row) -> Escalation:  # noqa: ANN001
    return Escalation(row.id, row.task_id, row.from_agent, row.step, row.to, row.category, row.reason, row.status,
                      row.created_at, row.resolved_by, row.resolved_at, row.note, row.goal_id)


class EscalationVerbs(CompanyBase):
    """Escalations (mixed into ``CompanyStore``)."""

    def find_peer(self, task_id: int, *, exclude: str) -> str | None:
        """The fittest other active agent whose role fits: it may take (rights and the contract's ``by``)
        one of the transitions that ``exclude`` could take from the task's current state, and it is not
        blocked on the task itself; among those, the best reputation on the task's workflow (30 days,
        :meth:`reputations_txn`), then the handle. ``None`` if there is none."""
        found = self._fittest_peer(task_id, exclude=exclude)
        return found[0] if found else None

    def _fittest_peer(self, task_id: int, *, exclude: str) -> tuple[str, str] | None:
        """:meth:`find_peer` and why it was picked, for the escalation's reason."""
        task = self.get_task(task_id)
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            blocked = set(conn.scalars(select(attempts.c.agent).where(
                attempts.c.company_id == self.company, attempts.c.task_id == task_id,
                attempts.c.blocked_reason.is_not(None))))
            wanted = self._transitions_from(cache, exclude, task.workflow, task.state)
            eligible = [handle for handle in sorted(cache.principals)
                        if handle != exclude and handle not in blocked and cache.principals[handle].kind == "agent"
                        and cache.principals[handle].status == "active"
                        and wanted & self._transitions_from(cache, handle, task.workflow, task.state)]
            if not eligible:
                return None
            assert cache.spec is not None
            known = self.reputations_txn(conn, cache.spec, workflow=task.workflow, agents=eligible)
        scored = [(known.get((h, task.workflow), {}).get("score", 0.0), h) for h in eligible]
        score, peer = min(scored, key=lambda s: (-s[0], s[1]))
        if len(eligible) == 1:
            return peer, "the only eligible peer"
        rep = known.get((peer, task.workflow))
        if not score or rep is None:
            return peer, f"no eligible peer has a record on {task.workflow} yet: the first of {len(eligible)}"
        return peer, (f"the fittest of {len(eligible)} eligible peers on {task.workflow}: {rep['successes']} of "
                      f"{rep['outcomes']} settled outcome(s) stuck (reputation {score:.2f})")

    def _transitions_from(self, cache, agent: str, workflow: str, state: str) -> set[str]:  # noqa: ANN001
        wf = cache.spec.workflows.get(workflow)
        actor = cache.actors.get(agent)
        if wf is None or actor is None or cache.principals[agent].status != "active":
            return set()
        if not self._decide(cache, agent, "read", Resource("workflow", workflow)).allowed:
            return set()
        return {name for name, t in wf.transitions.items() if state in t.from_ and actor.matches(t.by)
                and self._decide(cache, agent, "transition", Resource("workflow", workflow), name).allowed}

    def escalate(self, task_id: int, *, from_agent: str, category: str, reason: str) -> Escalation:
        """Take the next step up the ladder for ``from_agent``'s failure on the task: a peer if one fits
        (never for governance failures), else a human. Recorded and audited."""
        found = None if category == "governance" else self._fittest_peer(task_id, exclude=from_agent)
        step, to = ("peer", found[0]) if found else ("human", "human")
        why = f"{reason} (routed to {to}: {found[1]})" if found else (
            f"governance failure, straight to a human: {reason}" if category == "governance"
            else f"no peer can take it: {reason}")
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            now = self.store.now()
            escalation_id = conn.execute(insert(escalations), {
                "company_id": self.company, "task_id": task_id, "from_agent": from_agent, "step": step, "to": to,
                "category": category, "reason": why, "status": "open", "created_at": now, "note": ""}
            ).inserted_primary_key[0]
            audit.append(conn, head, ts=now, principal=from_agent, action=f"escalation.{step}",
                         subject=f"task:{task_id}", data={"escalation": escalation_id, "to": to, "category": category,
                                                          "reason": why})
            audit.save_head(conn, head)
        return Escalation(escalation_id, task_id, from_agent, step, to, category, why, "open", now, None, None, "")

    def escalate_goal_txn(self, conn: Connection, head: audit.ChainHead, cache: CompanyCache, goal: Any, *,
                          category: str, reason: str) -> int:
        """Escalate goal ``goal`` (its row, just exhausted or stalled) to a human, inside ``conn``'s
        transaction: whoever set it if a human did, else the first human up its agent's ``reports_to``
        chain, else any human. A goal has no task a peer could take, so the ladder's step is a human's.
        Returns the escalation's id."""
        to = goal.created_by if _kind(cache, goal.created_by) == "human" else _first_human_above(cache, goal.agent)
        now = self.store.now()
        escalation_id = conn.execute(insert(escalations), {
            "company_id": self.company, "task_id": None, "goal_id": goal.id, "from_agent": goal.agent,
            "step": "human", "to": to, "category": category, "reason": reason, "status": "open",
            "created_at": now, "note": ""}).inserted_primary_key[0]
        audit.append(conn, head, ts=now, principal=goal.agent, action="escalation.human", subject=f"goal:{goal.id}",
                     data={"escalation": escalation_id, "to": to, "category": category, "reason": reason})
        return escalation_id

    def escalate_agent_txn(self, conn: Connection, head: audit.ChainHead, cache: CompanyCache, agent: str, *,
                           category: str, reason: str) -> int | None:
        """Put a matter about ``agent`` itself (a promotion, demotion or retirement proposal of its autonomy
        stage) before a human, inside ``conn``'s transaction: the first human up its ``reports_to`` chain,
        else any human. Not again while an open escalation of ``category`` from it says the same
        ``reason``'s first sentence. Returns the escalation's id, or ``None`` if one is already open."""
        first = reason.split(":", 1)[0]
        for row in conn.execute(select(escalations.c.reason).where(
                escalations.c.company_id == self.company, escalations.c.from_agent == agent,
                escalations.c.category == category, escalations.c.status == "open", escalations.c.task_id.is_(None),
                escalations.c.goal_id.is_(None))):
            if row.reason.split(":", 1)[0] == first:
                return None
        to = _first_human_above(cache, agent)
        now = self.store.now()
        escalation_id = conn.execute(insert(escalations), {
            "company_id": self.company, "task_id": None, "goal_id": None, "from_agent": agent, "step": "human",
            "to": to, "category": category, "reason": reason, "status": "open", "created_at": now,
            "note": ""}).inserted_primary_key[0]
        audit.append(conn, head, ts=now, principal="system", action="escalation.human", subject=f"principal:{agent}",
                     data={"escalation": escalation_id, "to": to, "category": category, "reason": reason})
        return escalation_id

    def fail_attempt(self, task_id: int, agent: str, failure: Failure, *, max_attempts: int,
                     tried: dict | None = None) -> tuple[Attempt, Escalation | None]:
        """Count ``agent``'s failed attempt on the task (:meth:`~roster.store.runs.RunVerbs.record_failure`:
        a retry with backoff, or a persisted blocker) and, once it is blocked, the self step is over: take
        the next step up the ladder (:meth:`escalate`). Returns the attempt and the escalation, if any."""
        attempt = self.record_failure(task_id, agent, failure, max_attempts=max_attempts, tried=tried)
        if not attempt.blocked_reason:
            return attempt, None
        return attempt, self.escalate(task_id, from_agent=agent, category=failure.category.value,
                                      reason=attempt.blocked_reason)

    def list_escalations(self, *, status: str | None = "open", actor: ActorRef | None = None) -> list[Escalation]:
        """Escalations, oldest first; agents see those from or to them, humans all."""
        query = select(escalations).where(escalations.c.company_id == self.company)
        if status is not None:
            query = query.where(escalations.c.status == status)
        with self._reading(actor, "escalation.read", f"company:{self.company}") as (conn, cache, who):
            found = [_escalation(r) for r in conn.execute(query.order_by(escalations.c.id))]
            if who is not None and not self._decide(cache, who.handle, "oversee",
                                                    Resource("company", self.company)).allowed:
                found = [e for e in found if who.handle in (e.from_agent, e.to)]
        return found

    def resolve_escalation(self, escalation_id: int, *, actor: ActorRef, note: str) -> Escalation:
        """Close an escalation with a note (a human, once the task is dealt with). Clears the agents'
        blockers on the task so they may work it again. Needs ``oversee`` on the company (humans; an
        agent is :class:`Denied`, audited as ``escalation.resolve.rejected``). Raises :class:`NotFound`,
        :class:`UsageError` (no note, an escalation no longer open), :class:`Denied`."""
        if not note.strip():
            raise UsageError("resolving an escalation needs a note saying what was done")
        try:
            return self._resolve_escalation(escalation_id, actor, note)
        except Denied as exc:
            self._audit_rejection(actor, "escalation.resolve", f"escalation:{escalation_id}", exc, {"note": note})
            raise

    def _resolve_escalation(self, escalation_id: int, actor: ActorRef, note: str) -> Escalation:
        with self.store.write() as conn:
            head, cache = self._head_txn(conn)
            who = self._actor(cache, actor)
            self._authorize(cache, who, "oversee", Resource("company", self.company),
                            why="escalations are resolved by humans, who oversee the agents")
            row = conn.execute(select(escalations).where(escalations.c.company_id == self.company,
                                                         escalations.c.id == escalation_id)).first()
            if row is None:
                raise NotFound(f"no escalation {escalation_id} in company '{self.company}'")
            if row.status != "open":
                raise UsageError(f"escalation {escalation_id} is already {row.status}")
            now = self.store.now()
            conn.execute(update(escalations).where(escalations.c.company_id == self.company,
                                                   escalations.c.id == escalation_id),
                         {"status": "resolved", "resolved_by": who.handle, "resolved_at": now, "note": note})
            if row.task_id is not None:
                conn.execute(attempts.delete().where(attempts.c.company_id == self.company,
                                                     attempts.c.task_id == row.task_id))
            subject = f"task:{row.task_id}" if row.task_id is not None else f"goal:{row.goal_id}"
            audit.append(conn, head, ts=now, principal=who.handle, action="escalation.resolve",
                         subject=subject, data={"escalation": escalation_id, "note": note})
            audit.save_head(conn, head)
        return Escalation(row.id, row.task_id, row.from_agent, row.step, row.to, row.category, row.reason, "resolved",
                          row.created_at, who.handle, now, note, row.goal_id)


def _kind(cache: CompanyCache, handle: str) -> str | None:
    principal = cache.principals.get(handle)
    return principal.kind if principal is not None else None


def _first_human_above(cache: CompanyCache, agent: str) -> str:
    """The first human up ``agent``'s ``reports_to`` chain, or ``human`` (any human) when there is none."""
    seen, handle = set(), agent
    while handle is not None and handle not in seen:
        seen.add(handle)
        principal = cache.principals.get(handle)
        if principal is None:
            break
        if principal.kind == "human" and principal.status == "active":
            return handle
        handle = principal.reports_to
    return "human"
