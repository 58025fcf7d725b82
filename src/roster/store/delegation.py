"""Delegation: a principal hands a subproblem to a child task that carries a typed packet.

The packet (:class:`Packet`) says what the subproblem is, the context gathered, what was tried, the
desired output, and when the child is done (a success condition) or should give up (a blocking
threshold). The delegator stays accountable for the parent: the parent lists its open children, and a
transition of the parent into a terminal state is refused while any child is open (contract clause
``children``, unless the transition sets ``allow_open_children``). A child's result (its state, fields
and artifacts) goes into the parent's next brief (:func:`roster.runtime.context`).

An existing task can also be made a child (:meth:`DelegationVerbs.adopt`); a parent chain that would
loop back on itself is refused (:class:`~roster.errors.ContractViolation`, clause ``delegation-cycle``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Connection, select, update

from roster.errors import ContractViolation, RosterError, UsageError
from roster.store import audit
from roster.store.artifacts import ArtifactVerbs
from roster.store.company_base import ActorRef, CompanyCache
from roster.store.schema import tasks
from roster.store.tasks import MAX_FIELDS_BYTES, Task, check_size, dump_json, finished, task_from_row

MAX_DELEGATION_DEPTH = 32



class Packet(BaseModel):
    """A delegation packet. Either ``success_condition`` or ``blocking_threshold`` (or both) is required."""

    model_config = ConfigDict(extra="forbid")
    subproblem: str = Field(min_length=1)
    context: str = ""
    tried: list[str] = []
    desired_output: str = Field(min_length=1)
    success_condition: str = ""
    blocking_threshold: str = ""

    @model_validator(mode="after")
    def _done_when(self) -> Packet:
        if not self.success_condition and not self.blocking_threshold:
            raise ValueError("say when the child is done: a success_condition, a blocking_threshold, or both")
        return self


def parse_packet(packet: Any) -> Packet:
    """Validate a packet. Raises :class:`UsageError` naming each problem."""
    try:
        return Packet.model_validate(packet)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'packet'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"the delegation packet is malformed: {problems}") from None


class DelegationVerbs(ArtifactVerbs):
    """Delegate, adopt and list children (mixed into ``CompanyStore``)."""

    def delegate(self, parent_id: int, *, actor: ActorRef, workflow: str, title: str, packet: Any,
                 fields: dict[str, Any] | None = None, owner: str | None = None, priority: int = 0,
                 idempotency_key: str | None = None) -> Task:
        """Create a child task of ``parent_id`` in ``workflow`` carrying ``packet``. Needs ``read`` on the
        parent's workflow and ``read`` + ``create`` on ``workflow``. Raises :class:`UsageError` (a
        malformed packet), and whatever :meth:`create_task` raises."""
        return self.delegate_filed(parent_id, actor=actor, workflow=workflow, title=title, packet=packet,
                                   fields=fields, owner=owner, priority=priority, idempotency_key=idempotency_key)[0]

    def delegate_filed(self, parent_id: int, *, actor: ActorRef, workflow: str, title: str, packet: Any,
                       fields: dict[str, Any] | None = None, owner: str | None = None, priority: int = 0,
                       idempotency_key: str | None = None) -> tuple[Task, bool]:
        """:meth:`delegate`, and whether the child was created (``False``: ``idempotency_key`` found the
        child filed before, as :meth:`create_task` says)."""
        checked = parse_packet(packet).model_dump()
        checked["delegated_by"] = self._handle(actor)
        self._check_open_parent(parent_id)
        return self.create_task(workflow=workflow, title=title, actor=actor, fields=fields, owner=owner,
                                priority=priority, parent_id=parent_id, idempotency_key=idempotency_key,
                                packet=checked)

    def _check_open_parent(self, parent_id: int) -> None:
        """A finished task takes no new children: nobody is left accountable for them."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            row = self.task_row_txn(conn, parent_id)
        if finished(cache, row.workflow, row.state):
            raise UsageError(f"task {parent_id} is finished (state '{row.state}'); delegate from an open task")

    def adopt(self, parent_id: int, child_id: int, *, actor: ActorRef, packet: Any) -> Task:
        """Make the existing task ``child_id`` a delegated child of ``parent_id``. Needs ``assign`` on the
        child's workflow and ``read`` on the parent's. Raises :class:`ContractViolation` (clause
        ``delegation-cycle``) if ``parent_id`` is ``child_id`` or one of its descendants."""
        checked = parse_packet(packet).model_dump()
        checked["delegated_by"] = self._handle(actor)
        check_size("delegation packet", checked, MAX_FIELDS_BYTES)
        self._check_open_parent(parent_id)
        with self._evidence_write(child_id, actor, "task.adopt", {"parent_id": parent_id}, right="assign") as write:
            parent = task_from_row(self.task_row_txn(write.conn, parent_id))
            self._may_read(write.cache, write.actor, parent.workflow)
            chain = self._ancestors_txn(write.conn, parent_id)
            if child_id in chain:
                loop = " -> ".join(map(str, [*reversed(chain[:chain.index(child_id) + 1]), child_id]))
                raise ContractViolation(workflow=write.task.workflow, transition="delegate", clause="delegation-cycle",
                                        detail=f"task {child_id} cannot be a child of task {parent_id}: the "
                                               f"delegation would loop ({loop})", task_id=child_id)
            version = write.task.version + 1
            write.conn.execute(update(tasks).where(tasks.c.company_id == self.company, tasks.c.id == child_id),
                               {"parent_id": parent_id, "packet": dump_json(checked), "version": version,
                                "updated_at": write.now})
            audit.append(write.conn, write.head, ts=write.now, principal=write.actor.handle, action="task.adopt",
                         subject=f"task:{child_id}", data={"parent_id": parent_id, "packet": checked,
                                                            "version": version})
        return self.get_task(child_id)

    def _ancestors_txn(self, conn: Connection, task_id: int) -> list[int]:
        """``task_id`` and its ancestors, nearest first."""
        chain = [task_id]
        while len(chain) <= MAX_DELEGATION_DEPTH:
            parent = conn.scalar(select(tasks.c.parent_id).where(tasks.c.company_id == self.company,
                                                                 tasks.c.id == chain[-1]))
            if parent is None or parent in chain:
                break
            chain.append(parent)
        return chain

    def children(self, parent_id: int, *, actor: ActorRef | None = None) -> list[Task]:
        """The tasks delegated from ``parent_id`` (that the actor may read), oldest first."""
        with self._reading(actor, "task.read", f"task:{parent_id}") as (conn, cache, who):
            self._may_read(cache, who, task_from_row(self.task_row_txn(conn, parent_id)).workflow)
            rows = self.children_rows_txn(conn, parent_id)
            if who is None:
                return rows
            readable = []
            for child in rows:
                try:
                    self._may_read(cache, who, child.workflow)
                    readable.append(child)
                except RosterError:
                    continue
            return readable

    def children_txn(self, conn: Connection, cache: CompanyCache, parent_id: int,
                     children: list[Task] | None = None) -> list[dict[str, Any]]:
        """The parent's children as the brief shows them: open ones with their packet's desired output,
        finished ones with their result (final state, fields, latest artifacts). A trusted read;
        ``children`` are the child tasks when the caller has read them in this transaction."""
        shown = []
        for child in children if children is not None else self.children_rows_txn(conn, parent_id):
            done = finished(cache, child.workflow, child.state)
            item: dict[str, Any] = {"id": child.id, "title": child.title, "workflow": child.workflow,
                                    "state": child.state, "open": not done,
                                    "desired_output": (child.packet or {}).get("desired_output", "")}
            if done:
                item["result"] = {"fields": child.fields, "artifacts": [
                    {"name": a.name, "kind": a.kind, "version": a.version, "sha256": a.sha256}
                    for a in self.latest_artifacts_txn(conn, child.id).values()]}
            shown.append(item)
        return shown
