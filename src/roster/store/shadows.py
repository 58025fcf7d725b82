"""Shadow runs: what an agent in stage ``shadow`` proposed for a task, recorded beside what the owner
did, and never applied.

A shadow run is a row of ``runs`` (trigger ``shadow of run ...``, outcome ``shadow``) whose ``proposal``
holds the transition and writes it returned and whether the contract would have taken them then
(judged by the kernel on the task as the shadow saw it, without writing anything). ``agreed`` says
whether the proposal matched what actually happened to the task from that state: the same transition,
the same writes, and a contract that held. It is set when the shadow run ends if the task has already
moved on, else by the transition that moves it (:func:`compare_shadows_txn`, in that transaction).
Nothing of a shadow run reaches the task: no transition, no artifact, no check, no message, no memory.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from roster.errors import ContractViolation, InvalidFields, StaleVersion
from roster.kernel.failures import Failure
from roster.kernel.rights import Resource
from roster.kernel.stages import SHADOW_TRIGGER
from roster.store import audit
from roster.store.company_base import CompanyBase
from roster.store.schema import runs

if TYPE_CHECKING:  # tasks.py imports this module (a move compares the shadows of its task)
    from roster.store.tasks import Task

SHADOW = "shadow"
"""The outcome of an ended shadow run."""

_EVENTS_LOOKED_AT = 50
"""Newest events of the task read to find the move from the state a shadow saw."""


class ShadowVerbs(CompanyBase):
    """Shadow runs (mixed into ``CompanyStore``); trusted runtime calls, no principal."""

    def shadows_for(self, workflow: str, state: str) -> list[str]:
        """The agents in stage ``shadow`` on ``workflow`` who could take a transition out of ``state`` if
        they were not (role and ``by``, and their rights), by handle: who shadows a run on such a task. As
        of this handle's last transaction (the dispatcher's cycle read): no read of its own."""
        cache = self._cache
        if cache.spec is None:
            with self.store.read() as conn:
                cache = self.current_txn(conn)
        assert cache.spec is not None
        flow = cache.spec.workflows.get(workflow)
        if flow is None:
            return []
        found = []
        for handle in sorted(cache.spec.agents):
            principal, actor = cache.principals.get(handle), cache.actors.get(handle)
            if principal is None or actor is None or principal.status != "active":
                continue
            if cache.stage_of(handle, workflow) != SHADOW:
                continue
            if not self._decide(cache, handle, "read", Resource("workflow", workflow)).allowed:
                continue
            if any(state in t.from_ and actor.matches(t.by)
                   and self._decide(cache, handle, "transition", Resource("workflow", workflow), name).allowed
                   for name, t in flow.transitions.items()):
                found.append(handle)
        return found

    def record_shadow(self, run_id: str, *, agent: str, seen: Task, transition: str | None,
                      writes: dict[str, Any], failure: Failure | None = None, model: str | None = None,
                      input_tokens: int = 0, output_tokens: int = 0, cost_usd: float | None = 0.0,
                      wall_seconds: float | None = None) -> bool | None:
        """End shadow run ``run_id`` of ``agent`` on task ``seen`` (as its brief showed it): record its
        proposal (``transition``, ``writes``; whether the contract would have taken them, judged without
        writing), its usage and failure, and audit ``run.finish`` with ``shadow: true``. Returns
        ``agreed``: whether it matched the move the task has made since from ``seen.state`` (``None``: the
        task has not moved yet; the move will compare it)."""
        with self.store.write() as conn:
            head, cache = self._head_txn(conn)
            valid, clause = self._judge_txn(conn, cache, agent, seen, transition, writes) if transition else (False, "")
            proposal = {"transition": transition, "writes": writes, "valid": valid, "clause": clause,
                        "state": seen.state, "version": seen.version}
            started = conn.execute(select(runs.c.started_at).where(runs.c.company_id == self.company,
                                                                   runs.c.id == run_id)).scalar() or ""
            agreed = None
            for event in audit.latest_on(conn, self.company, f"task:{seen.id}", _EVENTS_LOOKED_AT):
                if event.action == "task.transition" and event.ts >= started and event.data.get("from") == seen.state:
                    agreed = agrees(proposal, event.data.get("transition"), event.data.get("writes") or {})
            now = self.store.now()
            values = {"ended_at": now, "outcome": SHADOW, "transition": transition, "model": model,
                      "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd,
                      "wall_seconds": wall_seconds, "failure_category": failure.category.value if failure else None,
                      "failure_code": failure.code if failure else None,
                      "failure_message": failure.message if failure else None}
            conn.execute(update(runs).where(runs.c.company_id == self.company, runs.c.id == run_id),
                         {**values, "proposal": json.dumps(proposal, sort_keys=True), "agreed": agreed})
            audit.append(conn, head, ts=now, principal=agent, action="run.finish", subject=f"run:{run_id}",
                         data={**{k: v for k, v in values.items() if k != "ended_at"}, "shadow": True,
                               "proposal": proposal, "agreed": agreed})
            audit.save_head(conn, head)
        return agreed

    def _judge_txn(self, conn: Connection, cache: Any, agent: str, seen: Task, transition: str,
                   writes: dict[str, Any]) -> tuple[bool, str]:
        """Would the contract have taken ``transition`` with ``writes`` from ``seen``? ``(valid, clause)``;
        an approval edge alone does not make it invalid (a human would have been asked)."""
        try:
            machine = self._machine(cache, seen.workflow)
            machine.check(transition, seen.snapshot(), self._actor(cache, agent), writes, seen.version,
                          self.evidence_txn(conn, cache, seen))
        except ContractViolation as exc:
            return exc.clause == "approval", exc.clause
        except (InvalidFields, StaleVersion) as exc:
            return False, exc.code
        return True, ""


def agrees(proposal: dict[str, Any], transition: str | None, writes: dict[str, Any]) -> bool:
    """Whether a shadow's ``proposal`` matches a move made: the same transition, the same writes, and a
    contract that would have taken it."""
    return bool(proposal.get("valid")) and proposal.get("transition") == transition and (
        proposal.get("writes") or {}) == (writes or {})


def compare_shadows_txn(conn: Connection, company: str, *, task_id: int, left: str, transition: str,
                        writes: dict[str, Any]) -> None:
    """The task moved out of ``left`` by ``transition`` with ``writes``: every ended shadow run that saw it
    in ``left`` and is not compared yet is compared now (one indexed read of the task's runs)."""
    found = conn.execute(select(runs.c.id, runs.c.proposal).where(
        runs.c.company_id == company, runs.c.task_id == task_id, runs.c.outcome == SHADOW,
        runs.c.agreed.is_(None))).all()
    for run_id, text in found:
        proposal = json.loads(text or "{}")
        if proposal.get("state") != left:
            continue
        conn.execute(update(runs).where(runs.c.company_id == company, runs.c.id == run_id),
                     {"agreed": agrees(proposal, transition, writes)})


def is_shadow_trigger(trigger: str) -> bool:
    """Whether a run's trigger marks it as a shadow run (:data:`roster.kernel.stages.SHADOW_TRIGGER`)."""
    return trigger.startswith(SHADOW_TRIGGER)
