"""Plans: the versioned plan of an agent's mission, and a human's hold on it while editing.

The plan's content and its contract are :mod:`roster.kernel.plans`; this module keeps every version in
the ``plans`` table (1, 2, ... per agent, never rewritten), with its reason, its author (the agent, from
a reflection run, or a human) and the run that wrote it, and audits:

- ``plan.revise``: a new version (its version number, reason, author's run); ``plan.refused`` when a
  version broke the contract (with the clauses; the current plan stays);
- ``plan.hold`` and ``plan.release``: a human (or the agent's manager) holds the plan to edit it, and
  gives it back with a note. While it is held, nobody else revises it: reflection waits for the release.

Who may: the Cedar action ``plan.edit`` on ``principal:<agent>`` decides revising, holding and releasing
(humans; the agent itself, which is how its reflection runs write; the agent it reports to). Reading a
plan is ``profile.read`` on the agent (the agent itself, humans), like its mission, or ``plan.edit``
(its manager reads what it may revise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from roster.errors import Denied, NotFound, PlanHeld, PlanRefused, UsageError
from roster.kernel.contracts import Actor
from roster.kernel.plans import Plan, plan_diff, plan_problems, render_plan
from roster.kernel.rights import Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.schema import plan_holds, plans
from roster.store.store import format_ts

DEFAULT_PLAN_HOLD_SECONDS = 8 * 3600.0
"""How long a plan stays held unless the holder says otherwise (a working day)."""
MAX_PLAN_HOLD_SECONDS = 7 * 86400.0
MAX_PLAN_REASON_CHARS = 4000


@dataclass(frozen=True)
class PlanVersion:
    """One version of an agent's plan: ``plan`` its content, ``text`` its Markdown, ``author`` who wrote
    it (the agent in a reflection run ``run_id``, or a human), ``reason`` why."""

    agent: str
    version: int
    plan: Plan
    reason: str
    author: str
    run_id: str | None
    created_at: str

    @property
    def text(self) -> str:
        return render_plan(self.plan)

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "version": self.version, "plan": self.plan.model_dump(), "text": self.text,
                "reason": self.reason, "author": self.author, "run_id": self.run_id, "created_at": self.created_at}


@dataclass(frozen=True)
class PlanHold:
    """A live hold on an agent's plan: who holds it, until when (ISO 8601 UTC), and why."""

    agent: str
    holder: str
    note: str
    held_at: str
    expires_at: str


def _version(row: Any) -> PlanVersion:
    return PlanVersion(row.agent, row.version, Plan.model_validate_json(row.plan), row.reason, row.author, row.run_id,
                       row.created_at)


def version_diff(old: PlanVersion | None, new: PlanVersion) -> str:
    """The unified diff from ``old`` (``None``: nothing) to ``new``, labelled with versions and authors."""
    before = f"plan v{old.version} ({old.author})" if old is not None else "no plan"
    return plan_diff(old.plan if old is not None else None, new.plan, old_label=before,
                     new_label=f"plan v{new.version} ({new.author})")


class PlanVerbs(CompanyBase):
    """Plans (mixed into ``CompanyStore``)."""

    def plan(self, agent: str, *, actor: ActorRef | None) -> PlanVersion | None:
        """The current version of ``agent``'s plan, or ``None`` before the first. Decides ``plan.edit`` on
        the agent, then ``profile.read`` if that was denied. Raises :class:`NotFound` (no such agent), :class:`Denied` (audited)."""
        with self._plan_reading(agent, actor) as conn:
            return self.current_plan_txn(conn, agent)

    def plan_history(self, agent: str, *, actor: ActorRef | None, limit: int = 100) -> list[PlanVersion]:
        """``agent``'s plan versions, newest first, at most ``limit``. As :meth:`plan`."""
        with self._plan_reading(agent, actor) as conn:
            rows = conn.execute(select(plans).where(plans.c.company_id == self.company, plans.c.agent == agent)
                                .order_by(plans.c.version.desc()).limit(limit))
            return [_version(r) for r in rows]

    def revise_plan(self, agent: str, plan: Plan, *, actor: ActorRef, reason: str,
                    run_id: str | None = None) -> PlanVersion:
        """Save ``plan`` as the next version of ``agent``'s plan, with ``reason`` (required) and the
        reflection run ``run_id`` that wrote it, if any (hold the plan first to keep reflection off it
        while you edit: :meth:`hold_plan`). Decides
        ``plan.edit`` on the agent. Raises :class:`NotFound`, :class:`UsageError` (no reason),
        :class:`PlanHeld` (someone else holds it), :class:`PlanRefused` (the contract; audited as
        ``plan.refused``, the current plan stays), :class:`Denied` (audited as ``plan.revise.rejected``)."""
        reason = reason.strip()
        if not reason:
            raise UsageError("a plan version needs a reason: why the plan changes")
        if len(reason) > MAX_PLAN_REASON_CHARS:
            raise UsageError(f"a plan's reason is at most {MAX_PLAN_REASON_CHARS} characters; got {len(reason)}")
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                self._known_agent(cache, agent)
                self._authorize(cache, who, "plan.edit", Resource("principal", agent),
                                why="an agent revises its own plan (its reflection runs) and those of the agents "
                                    "that report to it")
                self._not_held_by_another_txn(conn, agent, who.handle)
                current = self.current_plan_txn(conn, agent)
                assert cache.spec is not None
                problems = plan_problems(plan, cache.spec.kpis)
                if not problems:
                    saved = self._insert_plan_txn(conn, head, agent, plan, who.handle, reason, run_id, current)
                    audit.save_head(conn, head)
                    return saved
        except Denied as exc:
            self._audit_rejection(actor, "plan.revise", f"principal:{agent}", exc, {"reason": reason})
            raise
        refused = PlanRefused(agent, problems)
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            audit.append(conn, head, ts=self.store.now(), principal=self._handle(actor), action="plan.refused",
                         subject=f"principal:{agent}", data={"run_id": run_id, "reason": reason,
                                                             "problems": refused.to_dict()["problems"]})
            audit.save_head(conn, head)
        raise refused

    def hold_plan(self, agent: str, *, actor: ActorRef, ttl: float = DEFAULT_PLAN_HOLD_SECONDS,
                  note: str = "") -> PlanHold:
        """Hold ``agent``'s plan for ``ttl`` seconds (at most 7 days) to edit it: nobody else revises it
        meanwhile, and its reflection waits. Holding it again renews the hold. Decides ``plan.edit``.
        Raises :class:`NotFound`, :class:`UsageError` (a bad ttl), :class:`PlanHeld`, :class:`Denied`."""
        if not 0 < ttl <= MAX_PLAN_HOLD_SECONDS:
            raise UsageError(f"a plan is held for more than 0 and at most {MAX_PLAN_HOLD_SECONDS:g} seconds; not {ttl:g}")
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._plan_editor_txn(cache, agent, actor)
                self._not_held_by_another_txn(conn, agent, who.handle)
                now = self.store.now()
                until = format_ts(datetime.fromisoformat(now) + timedelta(seconds=ttl))
                conn.execute(delete(plan_holds).where(plan_holds.c.company_id == self.company,
                                                      plan_holds.c.agent == agent))
                conn.execute(insert(plan_holds), {"company_id": self.company, "agent": agent, "holder": who.handle,
                                                  "note": note, "held_at": now, "expires_at": until})
                audit.append(conn, head, ts=now, principal=who.handle, action="plan.hold", subject=f"principal:{agent}",
                             data={"expires_at": until, "note": note})
                audit.save_head(conn, head)
                return PlanHold(agent, who.handle, note, now, until)
        except Denied as exc:
            self._audit_rejection(actor, "plan.hold", f"principal:{agent}", exc, {"note": note})
            raise

    def release_plan(self, agent: str, *, actor: ActorRef, note: str = "") -> None:
        """Give back the hold on ``agent``'s plan, with ``note``; reflection may revise it again. Decides
        ``plan.edit``. Raises :class:`NotFound` (no hold of the actor's), :class:`PlanHeld` (another's
        live hold), :class:`Denied`."""
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._plan_editor_txn(cache, agent, actor)
                hold = self.plan_hold_txn(conn, agent)
                if hold is None or hold.holder != who.handle:
                    self._not_held_by_another_txn(conn, agent, who.handle)
                    raise NotFound(f"you hold no plan of '{agent}' to release; hold it with `roster mission hold {agent}`")
                conn.execute(delete(plan_holds).where(plan_holds.c.company_id == self.company,
                                                      plan_holds.c.agent == agent))
                audit.append(conn, head, ts=self.store.now(), principal=who.handle, action="plan.release",
                             subject=f"principal:{agent}", data={"note": note})
                audit.save_head(conn, head)
        except Denied as exc:
            self._audit_rejection(actor, "plan.release", f"principal:{agent}", exc, {"note": note})
            raise

    # -- what the runtime reads (trusted: no actor) ----------------------------------------------------

    def plan_hold(self, agent: str) -> PlanHold | None:
        """The live hold on ``agent``'s plan, if any (an expired hold counts as none)."""
        with self.store.read() as conn:
            return self.plan_hold_txn(conn, agent)

    def plan_hold_txn(self, conn: Connection, agent: str) -> PlanHold | None:
        """:meth:`plan_hold` inside ``conn``'s transaction."""
        row = conn.execute(select(plan_holds).where(plan_holds.c.company_id == self.company,
                                                    plan_holds.c.agent == agent,
                                                    plan_holds.c.expires_at > self.store.now())).first()
        return PlanHold(row.agent, row.holder, row.note, row.held_at, row.expires_at) if row is not None else None

    def current_plan_txn(self, conn: Connection, agent: str) -> PlanVersion | None:
        """The newest version of ``agent``'s plan inside ``conn``'s transaction, or ``None``."""
        row = conn.execute(select(plans).where(plans.c.company_id == self.company, plans.c.agent == agent)
                           .order_by(plans.c.version.desc()).limit(1)).first()
        return _version(row) if row is not None else None

    def plan_brief_txn(self, conn: Connection, agent: str) -> dict[str, Any]:
        """What a reflection brief shows of ``agent``'s plan: the current version (its Markdown, reason and
        author), and, when others (humans) wrote versions after the agent's own last one, their diff
        against it and their reasons: what was changed behind its back."""
        current = self.current_plan_txn(conn, agent)
        if current is None:
            return {"version": 0, "text": "", "plan": None, "edits_since_yours": None}
        mine_row = conn.execute(select(plans).where(plans.c.company_id == self.company, plans.c.agent == agent,
                                                    plans.c.author == agent)
                                .order_by(plans.c.version.desc()).limit(1)).first()
        mine = _version(mine_row) if mine_row is not None else None
        edits = None
        if current.author != agent:
            later = conn.execute(select(plans.c.version, plans.c.author, plans.c.reason).where(
                plans.c.company_id == self.company, plans.c.agent == agent,
                plans.c.version > (mine.version if mine else 0)).order_by(plans.c.version))
            edits = {"diff": version_diff(mine, current),
                     "by": [{"version": r.version, "author": r.author, "reason": r.reason} for r in later]}
        return {"version": current.version, "text": current.text, "plan": current.plan.model_dump(),
                "reason": current.reason, "author": current.author, "edits_since_yours": edits}

    # -- helpers -------------------------------------------------------------------------------------

    def _insert_plan_txn(self, conn: Connection, head: audit.ChainHead, agent: str, plan: Plan, author: str, reason: str,
                    run_id: str | None, current: PlanVersion | None) -> PlanVersion:
        version = (conn.scalar(select(func.max(plans.c.version)).where(
            plans.c.company_id == self.company, plans.c.agent == agent)) or 0) + 1
        now = self.store.now()
        saved = PlanVersion(agent, version, plan, reason, author, run_id, now)
        conn.execute(insert(plans), {"company_id": self.company, "agent": agent, "version": version,
                                     "plan": json.dumps(plan.model_dump(), sort_keys=True), "reason": reason,
                                     "author": author, "run_id": run_id, "created_at": now})
        audit.append(conn, head, ts=now, principal=author, action="plan.revise", subject=f"principal:{agent}",
                     data={"version": version, "reason": reason, "run_id": run_id,
                           "diff_lines": len(version_diff(current, saved).splitlines())})
        return saved

    def _plan_editor_txn(self, cache: CompanyCache, agent: str, actor: ActorRef) -> Actor:
        who = self._actor(cache, actor)
        self._known_agent(cache, agent)
        self._authorize(cache, who, "plan.edit", Resource("principal", agent),
                        why="humans and the agent's manager hold and edit its plan")
        return who

    def _not_held_by_another_txn(self, conn: Connection, agent: str, handle: str) -> None:
        hold = self.plan_hold_txn(conn, agent)
        if hold is not None and hold.holder != handle:
            raise PlanHeld(agent, hold.holder, hold.expires_at)

    @contextmanager
    def _plan_reading(self, agent: str, actor: ActorRef | None) -> Iterator[Connection]:
        """A read transaction in which ``actor`` may read ``agent``'s plan: ``profile.read`` (the agent,
        humans), or else ``plan.edit`` (its manager, who may revise it and so reads what it revises); a
        denial is audited as ``plan.read.rejected``."""
        with self._reading(actor, "plan.read", f"principal:{agent}") as (conn, cache, who):
            self._known_agent(cache, agent)
            if who is not None and not self._decide(cache, who.handle, "plan.edit", Resource("principal", agent)).allowed:
                self._authorize(cache, who, "profile.read", Resource("principal", agent),
                                why="an agent reads its own plan and those of its reports; humans read any")
            yield conn
