"""Leases with fencing: a run claims a task for a time, renews while it works, and releases it.

Each claim takes the next fencing token of the task (``tasks.fencing_token`` + 1): tokens only go up.
A write that presents a token that is no longer current is refused with
:class:`~roster.errors.StaleFencingToken` (and audited): that is how a runner that was paused, cut off or
killed cannot write after another run has claimed the task. An expired lease needs no cleaning up: the
next claim simply takes the task, so no lock ever needs manual SQL.

Times are seconds (``ttl``); stored expiries are ISO 8601 UTC strings from the store's clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update

from roster.defaults import DEFAULT_LEASE_SECONDS
from roster.errors import ContractViolation, Denied, LeaseHeld, NotFound, StaleFencingToken, UsageError
from roster.kernel.contracts import Actor
from roster.kernel.rights import Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.prepared import Prepared
from roster.store.schema import tasks
from roster.store.stages import refuse_shadow
from roster.store.store import format_ts
from roster.store.tasks import SELECT_TASK, Task, task_from_row

# Hot-path statements, built once (see store/prepared.py). The task is read whole (SELECT_TASK): a claim
# hands it to its caller, which would otherwise read it again.
_SET_LEASE = Prepared(
    update(tasks)
    .where(tasks.c.company_id == bindparam("company"), tasks.c.id == bindparam("task_id"),
           tasks.c.fencing_token == bindparam("seen_token"))
    .values(fencing_token=bindparam("fencing_token"), lease_holder=bindparam("lease_holder"),
            lease_run=bindparam("lease_run"), lease_expires_at=bindparam("lease_expires_at")))

MAX_LEASE_SECONDS = 3600.0
_REFUSALS = (ContractViolation, NotFound, UsageError, Denied, StaleFencingToken, LeaseHeld)


@dataclass(frozen=True)
class Lease:
    """A live claim: ``holder`` may write the task, presenting ``fencing_token``, until ``expires_at``."""

    task_id: int
    holder: str
    run_id: str
    fencing_token: int
    expires_at: str


class LeaseVerbs(CompanyBase):
    """Claim, renew and release task leases (mixed into ``CompanyStore``)."""

    def _lease_write(self, task_id: int, actor: ActorRef, action: str, data: dict, body):  # noqa: ANN001, ANN202
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                row = SELECT_TASK.first(conn, {"company": self.company, "task_id": task_id})
                if row is None:
                    raise NotFound(f"no task {task_id} in company '{self.company}'")
                self._may_read(cache, who, row.workflow)
                result = body(conn, head, who, row)
                audit.save_head(conn, head)
                return result
        except _REFUSALS as exc:
            self._audit_rejection(actor, action, f"task:{task_id}", exc, data)
            raise

    def claim(self, task_id: int, *, actor: ActorRef, run_id: str, ttl: float = DEFAULT_LEASE_SECONDS,
              then: Callable[[Connection, audit.ChainHead, Lease, Task], None] | None = None,
              max_ttl: float = MAX_LEASE_SECONDS) -> Lease:
        """Claim the task for ``ttl`` seconds with a new fencing token. Raises :class:`LeaseHeld` if another
        principal's lease is live; a lease that expired is simply taken over (its holder's token goes
        stale). Needs ``read`` on the task's workflow and :meth:`_may_claim` (:class:`Denied` otherwise,
        audited, and no lease is taken). ``then`` runs in the same transaction, with the lease and the task
        as claimed (the runtime records the run's start and builds its brief there: one commit instead of
        two). ``max_ttl`` is for holds (seconds)."""
        _check_ttl(ttl, max_ttl)

        def body(conn: Connection, head: audit.ChainHead, who: Actor, row) -> Lease:  # noqa: ANN001
            self._may_claim(self._refresh_txn(conn, head), who, row.workflow, row.state)
            lease, claimed = self.claim_row_txn(conn, head, who, row, run_id, ttl)
            if then is not None:
                then(conn, head, lease, claimed)
            return lease

        return self._lease_write(task_id, actor, "lease.claim", {"run_id": run_id}, body)

    def _may_claim(self, cache: Any, who: Actor, workflow: str, state: str) -> None:
        """The one rule for taking a task's lease by :meth:`claim` (and so by a hold; a run's claim checks
        its offer, which needs the same transition), decided as ``claim`` by Cedar: a lease keeps everyone
        else off the task, so only who may change it may take one. An agent needs a transition out of
        ``state`` whose ``by`` names it (``claim:named``) and that its rights allow (its transition grant
        permits ``claim`` too, and the tiers' forbids on transitions apply); a human is allowed by
        ``humans``. An agent in stage ``shadow`` on the workflow may not (:func:`refuse_shadow`). Raises
        :class:`Denied`."""
        refuse_shadow(cache, who, "claim", workflow)
        self._authorize(cache, who, "claim", Resource("workflow", workflow), state=state,
                        why=f"it may take no transition out of that state ('{state}'), and a lease would keep "
                            "everyone who can off the task; claim tasks you will move (roster task options ID "
                            "lists them)")

    def claim_row_txn(self, conn: Connection, head: audit.ChainHead, who: Actor, row: Any, run_id: str,
                       ttl: float) -> tuple[Lease, Task]:
        """Take the lease of the task ``row`` (read in this transaction) with the next fencing token, or
        raise :class:`LeaseHeld`; returns the lease and the task as claimed."""
        now = self.store.clock()
        stamp = format_ts(now)
        task_id = row.id
        live = row.lease_holder is not None and (row.lease_expires_at or "") > stamp
        if live and (row.lease_holder != who.handle or row.lease_run != run_id):
            raise LeaseHeld(task_id, row.lease_holder, row.lease_expires_at)
        token, expires = row.fencing_token + 1, format_ts(now + timedelta(seconds=ttl))
        changed = _SET_LEASE.rowcount(conn, {
            "company": self.company, "task_id": task_id, "seen_token": row.fencing_token, "fencing_token": token,
            "lease_holder": who.handle, "lease_run": run_id, "lease_expires_at": expires})
        if changed != 1:  # only reachable if a writer bypassed the company lock
            raise LeaseHeld(task_id, "another run", stamp)
        audit.append(conn, head, ts=stamp, principal=who.handle, action="lease.claim", subject=f"task:{task_id}",
                     data={"run_id": run_id, "fencing_token": token, "expires_at": expires,
                           "took_over": row.lease_holder if row.lease_holder and not live else None})
        claimed = dataclasses.replace(task_from_row(row), fencing_token=token, lease_holder=who.handle, lease_run=run_id,
                                      lease_expires_at=expires)
        return Lease(task_id, who.handle, run_id, token, expires), claimed

    def renew(self, task_id: int, *, actor: ActorRef, fencing_token: int, ttl: float = DEFAULT_LEASE_SECONDS) -> Lease:
        """Extend a lease this run holds. Raises :class:`StaleFencingToken` if the task was claimed again
        (or released) since. Renewals are not audited one by one (a long run renews often); the claim
        and the release are."""
        _check_ttl(ttl)

        def body(conn: Connection, head: audit.ChainHead, who: Actor, row) -> Lease:  # noqa: ANN001
            if row.fencing_token != fencing_token or row.lease_holder != who.handle:
                raise StaleFencingToken(task_id, fencing_token, row.fencing_token)
            expires = format_ts(self.store.clock() + timedelta(seconds=ttl))
            conn.execute(update(tasks).where(tasks.c.company_id == self.company, tasks.c.id == task_id),
                         {"lease_expires_at": expires})
            return Lease(task_id, who.handle, row.lease_run, fencing_token, expires)

        return self._lease_write(task_id, actor, "lease.renew", {"fencing_token": fencing_token}, body)

    def release(self, task_id: int, *, actor: ActorRef, fencing_token: int,
                then: Callable[[Connection, audit.ChainHead], None] | None = None) -> None:
        """Give the task back. Raises :class:`StaleFencingToken` if this run no longer holds it.
        ``then`` runs in the same transaction (the runtime records the run's end there)."""

        def body(conn: Connection, head: audit.ChainHead, who: Actor, row) -> None:  # noqa: ANN001
            self.release_row_txn(conn, head, who, row, task_id, fencing_token)
            if then is not None:
                then(conn, head)

        self._lease_write(task_id, actor, "lease.release", {"fencing_token": fencing_token}, body)

    def release_txn(self, conn: Connection, head: audit.ChainHead, who: Actor, task_id: int,
                    fencing_token: int, row: Any = None) -> None:
        """:meth:`release` inside ``conn``'s transaction, for a caller that has resolved ``who`` and checked
        its rights (the runtime, ending a run in its transition's transaction). ``row``: the task's lease
        columns (``fencing_token``, ``lease_holder``) as read in this transaction, if the caller has them
        (a :class:`~roster.store.tasks.Task` will do). Raises :class:`StaleFencingToken`, :class:`NotFound`."""
        row = row if row is not None else SELECT_TASK.first(conn, {"company": self.company, "task_id": task_id})
        if row is None:
            raise NotFound(f"no task {task_id} in company '{self.company}'")
        self.release_row_txn(conn, head, who, row, task_id, fencing_token)

    def release_row_txn(self, conn: Connection, head: audit.ChainHead, who: Actor, row: Any, task_id: int,
                         fencing_token: int) -> None:
        """Release ``who``'s lease on the task in ``row`` (read in this transaction) and audit it. Raises
        :class:`StaleFencingToken` unless ``who`` holds the lease with ``fencing_token``."""
        if row.fencing_token != fencing_token or row.lease_holder != who.handle:
            raise StaleFencingToken(task_id, fencing_token, row.fencing_token)
        _SET_LEASE.rowcount(conn, {
            "company": self.company, "task_id": task_id, "seen_token": fencing_token, "fencing_token": fencing_token,
            "lease_holder": None, "lease_run": None, "lease_expires_at": None})
        audit.append(conn, head, ts=self.store.now(), principal=who.handle, action="lease.release",
                     subject=f"task:{task_id}", data={"fencing_token": fencing_token, "reason": "done"})

    def release_leases_txn(self, conn: Connection, head: audit.ChainHead, *, reason: str, by: str,
                            holders: list[str], workflows: list[str] | None = None) -> list[int]:
        """Release, in this transaction, every lease held by one of ``holders`` (restricted to tasks of
        ``workflows`` when given); each release is audited with ``reason``. Returns the task ids."""
        clauses = [tasks.c.company_id == self.company, tasks.c.lease_holder.in_(holders)]
        if workflows is not None:
            clauses.append(tasks.c.workflow.in_(workflows))
        rows = list(conn.execute(select(tasks.c.id, tasks.c.lease_holder, tasks.c.fencing_token)
                                 .where(and_(*clauses)).order_by(tasks.c.id)))
        now = self.store.now()
        for row in rows:
            self.drop_lease_txn(conn, head, row, by=by, reason=reason, now=now)
        return [row.id for row in rows]

    def drop_lease_txn(self, conn: Connection, head: audit.ChainHead, row: Any, *, by: str, reason: str,
                        now: str) -> None:
        """Release the lease of task ``row`` (its ``id``, ``lease_holder``, ``fencing_token``) on behalf of
        ``by``, not its holder (the kill switch, the crash sweep), audited with ``reason``."""
        conn.execute(update(tasks).where(tasks.c.company_id == self.company, tasks.c.id == row.id),
                     {"lease_holder": None, "lease_run": None, "lease_expires_at": None})
        audit.append(conn, head, ts=now, principal=by, action="lease.release", subject=f"task:{row.id}",
                     data={"holder": row.lease_holder, "fencing_token": row.fencing_token, "reason": reason})

    def leases(self) -> list[Lease]:
        """Live leases of the company (expired ones are not listed: they hold nothing)."""
        with self.store.read() as conn:
            rows = conn.execute(select(tasks.c.id, tasks.c.lease_holder, tasks.c.lease_run, tasks.c.fencing_token,
                                       tasks.c.lease_expires_at)
                                .where(tasks.c.company_id == self.company, tasks.c.lease_holder.is_not(None),
                                       tasks.c.lease_expires_at > self.store.now()).order_by(tasks.c.id))
            return [Lease(r.id, r.lease_holder, r.lease_run, r.fencing_token, r.lease_expires_at) for r in rows]


def _check_ttl(ttl: float, maximum: float = MAX_LEASE_SECONDS) -> None:
    if not 0 < ttl <= maximum:
        raise UsageError(f"a lease lasts more than 0 and at most {maximum:g} seconds, not {ttl:g}")
