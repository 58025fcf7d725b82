"""What every company-scoped verb shares: the cached spec and rights of the current revision, resolving
the acting principal, the rights check, and auditing refusals.

A :class:`CompanyBase` is bound to one company; every query it runs filters on that company's id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from roster.defaults import ACTIONS
from roster.errors import Denied, NotFound, RosterError, UsageError
from roster.kernel.contracts import Actor, WorkflowMachine
from roster.kernel.rights import TEAM_PAD_PREFIX, Decision, PrincipalFacts, Resource, Rights
from roster.kernel.spec import CompanySpec
from roster.kernel.stages import ALL_WORKFLOWS, DEFAULT_STAGE
from roster.store import audit
from roster.store.schema import approval_requests, memory_shares, paused_scopes, principals, stages, tasks
from roster.store.store import Store, load_spec_txn


@dataclass(frozen=True)
class Principal:
    """Anyone who can act: a human or an agent of one company. ``id`` is ``company/handle``."""

    company: str
    handle: str
    kind: str
    display_name: str
    status: str
    roles: tuple[str, ...]
    reports_to: str | None
    source: str
    created_at: str

    @property
    def id(self) -> str:
        return f"{self.company}/{self.handle}"


ActorRef = str | Principal
"""Who acts: a :class:`Principal` (from authentication), or a handle of this company (trusted callers)."""


def recorded_handle(company: str, actor: ActorRef) -> str:
    """The handle to record for ``actor`` in ``company``'s rows and events: another company's principal
    is recorded by its full id (``company/handle``)."""
    if isinstance(actor, Principal):
        return actor.handle if actor.company == company else actor.id
    return actor


@dataclass
class CompanyCache:
    """The spec, compiled workflows, principals and rights of one (spec, rights) revision pair."""

    revision: tuple[int, int] = (-1, -1)
    spec: CompanySpec | None = None
    machines: dict[str, WorkflowMachine] = field(default_factory=dict)
    principals: dict[str, Principal] = field(default_factory=dict)
    actors: dict[str, Actor] = field(default_factory=dict)
    rights: Rights | None = None
    actionable: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    """Per agent, the states of each workflow it may take a transition from (memo of this revision)."""
    stages: dict[tuple[str, str], str] = field(default_factory=dict)
    """Autonomy stages set after the spec, by (agent, workflow or '*') (the ``stages`` table)."""

    def stage_of(self, agent: str, workflow: str) -> str:
        """``agent``'s autonomy stage on ``workflow``: set after the spec for that workflow, else for every
        workflow, else the spec's (per workflow, or for all), else ``bounded``. Humans have none."""
        found = self.stages.get((agent, workflow)) or self.stages.get((agent, ALL_WORKFLOWS))
        if found is not None:
            return found
        spec_agent = self.spec.agents.get(agent) if self.spec is not None else None
        if spec_agent is None:
            return DEFAULT_STAGE
        if isinstance(spec_agent.stage, dict):
            return spec_agent.stage.get(workflow, DEFAULT_STAGE)
        return spec_agent.stage


def principal_from_row(row: Any) -> Principal:
    return Principal(row.company_id, row.handle, row.kind, row.display_name, row.status,
                     tuple(json.loads(row.roles)), row.reports_to, row.source, row.created_at)


class CompanyBase:
    """Shared machinery of :class:`~roster.store.company.CompanyStore`."""

    def __init__(self, store: Store, company: str) -> None:
        self.store = store
        self.company = company
        self._cache = CompanyCache()

    # -- cache ---------------------------------------------------------------------------------------

    def _refresh_txn(self, conn: Connection, head: audit.ChainHead) -> CompanyCache:
        revision = (head.spec_revision, head.rights_revision)
        if revision != self._cache.revision:
            spec = load_spec_txn(conn, self.company, head.spec_revision)
            cache = CompanyCache(revision, spec, {n: WorkflowMachine(n, w) for n, w in spec.workflows.items()})
            for row in conn.execute(select(principals).where(principals.c.company_id == self.company)):
                principal = principal_from_row(row)
                cache.principals[principal.handle] = principal
                cache.actors[principal.handle] = Actor(principal.handle, principal.kind, frozenset(principal.roles))
            cache.stages = {(r.agent, r.workflow): r.stage for r in conn.execute(
                select(stages.c.agent, stages.c.workflow, stages.c.stage).where(stages.c.company_id == self.company))}
            paused = conn.scalars(select(paused_scopes.c.scope).where(paused_scopes.c.company_id == self.company))
            cache.rights = Rights(spec, [PrincipalFacts(p.handle, p.kind, p.status, frozenset(p.roles))
                                         for p in cache.principals.values()], list(paused))
            self._cache = cache
        return self._cache

    def _head_txn(self, conn: Connection) -> tuple[audit.ChainHead, CompanyCache]:
        head = audit.read_head(conn, self.company)
        if head is None:
            raise NotFound(f"company '{self.company}' no longer exists in this store")
        return head, self._refresh_txn(conn, head)

    def current_txn(self, conn: Connection) -> CompanyCache:
        """The company's cache (spec, principals, rights) as of ``conn``'s transaction, refreshed if a
        revision moved. Raises :class:`NotFound` if the company is gone."""
        return self._head_txn(conn)[1]

    def decide_txn(self, conn: Connection, head: audit.ChainHead, principal: str, action: str,
                   resource: Resource) -> Decision:
        """:meth:`decide` inside ``conn``'s transaction, as of ``head`` (the company row it has locked),
        for a composition that must decide before it writes (``Store.apply`` on an existing company)."""
        return self._decide(self._refresh_txn(conn, head), principal, action, resource)

    def spec(self) -> CompanySpec:
        """The company's current spec (the last one applied)."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
        assert cache.spec is not None
        return cache.spec

    def spec_and_paused(self) -> tuple[CompanySpec, list[str]]:
        """The current spec and the kill switches in force, from one read (the runtime's cycle start)."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
        assert cache.spec is not None and cache.rights is not None
        return cache.spec, list(cache.rights.paused_scopes)

    def _machine(self, cache: CompanyCache, workflow: str) -> WorkflowMachine:
        machine = cache.machines.get(workflow)
        if machine is None:
            known = ", ".join(sorted(cache.machines)) or "none"
            raise NotFound(f"company '{self.company}' has no workflow '{workflow}'; workflows: {known}")
        return machine

    # -- who acts, and may they ---------------------------------------------------------------------

    def _handle(self, actor: ActorRef) -> str:
        return recorded_handle(self.company, actor)

    def _actor(self, cache: CompanyCache, actor: ActorRef) -> Actor:
        """Resolve ``actor`` to an active principal of this company, or raise :class:`Denied`.

        The message does not list this company's principals: a caller from elsewhere learns nothing.
        """
        handle = self._handle(actor)
        if isinstance(actor, Principal) and actor.company != self.company:
            raise Denied(handle, "act in", "this company", "a principal acts only in its own company")
        principal = cache.principals.get(handle)
        if principal is None:
            raise Denied(handle, "act in", f"company '{self.company}'", "not a principal of this company")
        if principal.status != "active":
            raise Denied(handle, "act", "", f"the principal is {principal.status}", ("inactive-principal",))
        return cache.actors[handle]

    def _known_agent(self, cache: CompanyCache, agent: str) -> None:
        """Raise :class:`NotFound` (listing the company's agents) unless ``agent`` is an agent here."""
        principal = cache.principals.get(agent)
        if principal is None or principal.kind != "agent":
            agents = ", ".join(sorted(h for h, p in cache.principals.items() if p.kind == "agent")) or "none"
            raise NotFound(f"no agent '{agent}' in company '{self.company}'; agents: {agents}")

    def _decide(self, cache: CompanyCache, handle: str, action: str, resource: Resource, transition: str = "",
                *, state: str | None = None, **facts: bool) -> Decision:
        """THE authorization decision: every store verb's check, :meth:`authorize` and :meth:`decide`
        (``rights explain``, the interfaces) come here, and it asks Cedar (:class:`Rights`) and nothing
        else. ``action`` is one of :data:`roster.defaults.ACTIONS`; ``transition`` the transition of
        ``transition``, ``approve`` and ``claim``; ``facts`` the request's context facts looked up in tables
        (``shared``, ``own_request``, ``named``). ``claim`` with a task's ``state`` (no ``transition``) is
        decided over the transitions out of that state (:meth:`Rights.decide_claim`)."""
        assert cache.rights is not None
        if action == "claim" and state is not None and not transition:
            return cache.rights.decide_claim(handle, resource.name, state)
        return cache.rights.decide(handle, action, resource, transition, **facts)

    def _authorize(self, cache: CompanyCache, who: Actor, action: str, resource: Resource,
                   transition: str = "", *, why: str = "", state: str | None = None, **facts: bool) -> Decision:
        """:meth:`_decide`, raising :class:`Denied` (naming the deciding policies, then ``why``: what the
        rule means in the field's words) unless allowed."""
        decision = self._decide(cache, who.handle, action, resource, transition, state=state, **facts)
        if not decision.allowed:
            target = f"{resource.kind} '{resource.name}'" if resource.kind != "company" else "this company"
            verb = f"{action} '{transition}' on" if transition else action
            raise Denied(who.handle, verb, target, decision.explain() + (f"; {why}" if why else ""),
                         decision.policies)
        return decision

    # -- the public entry points: interfaces ask, they never decide ----------------------------------

    def decide(self, principal: str, action: str, resource: str, transition: str = "") -> Decision:
        """The decision enforcement takes for ``principal`` (a handle) doing ``action`` on ``resource``,
        with the deciding policies (``rights explain``; an interface asking before it shows something).
        ``resource`` is ``task:<id>``, ``workflow:<name>``, ``tool:<name>``, ``company``, ``pad:<pad>``,
        ``principal:<handle>``, ``kpi:<name>``, ``toolset:<set>`` or ``approval:<id>``. The facts a verb
        looks up are looked up the same way (a task's state for ``claim`` and ``hold``, a pad's shares, a
        request's requester), and for actions on a task a ``read`` denial decides first, as in the verbs.
        Raises :class:`NotFound` (no such task or request), :class:`UsageError` (a malformed resource or
        an unknown action)."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            return decide_request_txn(self, conn, cache, principal, action, resource, transition)

    def authorize(self, action: str, resource: str, *, actor: ActorRef, transition: str = "") -> Decision:
        """:meth:`decide` for ``actor`` (who must be an active principal of this company), raising
        :class:`Denied` unless allowed; the refusal is audited as ``<action>.rejected``. For an interface
        that must refuse before it acts (``roster up`` needs ``admin``, ``roster context`` needs
        ``brief.preview``). Raises :class:`Denied`, :class:`NotFound`, :class:`UsageError`."""
        try:
            with self.store.read() as conn:
                cache = self.current_txn(conn)
                who = self._actor(cache, actor)
                decision = decide_request_txn(self, conn, cache, who.handle, action, resource, transition)
        except Denied as exc:
            self._audit_rejection(actor, action, resource, exc, {})
            raise
        if not decision.allowed:
            verb = f"{action} '{transition}' on" if transition else action
            denial = Denied(who.handle, verb, resource, decision.explain(), decision.policies)
            self._audit_rejection(actor, action, resource, denial, {})
            raise denial
        return decision

    @contextmanager
    def _reading(self, actor: ActorRef | None, action: str,
                 subject: str) -> Iterator[tuple[Connection, CompanyCache, Actor | None]]:
        """A read transaction for ``actor`` (``None``: a trusted internal read); a denial is audited."""
        try:
            with self.store.read() as conn:
                cache = self.current_txn(conn)
                yield conn, cache, (self._actor(cache, actor) if actor is not None else None)
        except Denied as exc:
            self._audit_rejection(actor, action, subject, exc, {})
            raise

    def _may_read(self, cache: CompanyCache, who: Actor | None, workflow: str) -> None:
        if who is not None:
            self._authorize(cache, who, "read", Resource("workflow", workflow))

    def _audit_rejection(self, principal: ActorRef, action: str, subject: str, error: RosterError,
                         data: Mapping[str, Any]) -> None:
        """Record a refused attempt in its own transaction (the refused one was rolled back)."""
        with self.store.write() as conn:
            head = audit.read_head(conn, self.company)
            if head is None:
                return
            audit.append(conn, head, ts=self.store.now(), principal=self._handle(principal),
                         action=f"{action}.rejected", subject=subject, data={**data, "error": error.to_dict()})
            audit.save_head(conn, head)


READ_FIRST = frozenset({"create", "write", "assign", "transition", "claim", "hold", "approve"})
"""Actions on a task or workflow whose verbs check ``read`` on the workflow first."""
_RESOURCES = "task:<id>, workflow:<name>, tool:<name>, company, pad:<pad>, principal:<handle>, kpi:<name>, " \
             "toolset:<set> or approval:<id>"


def shared_with_txn(conn: Connection, company: str, pad: str, handle: str) -> bool:
    """Whether ``pad``'s owner shared it with ``handle`` (the ``shared`` fact of ``memory.read``)."""
    return conn.execute(select(memory_shares.c.pad).where(
        memory_shares.c.company_id == company, memory_shares.c.pad == pad,
        memory_shares.c.grantee == handle)).first() is not None


def decide_request_txn(base: CompanyBase, conn: Connection, cache: CompanyCache, principal: str, action: str,
                       resource: str, transition: str = "") -> Decision:
    """:meth:`CompanyBase.decide` inside ``conn``'s transaction: resolve ``resource`` and the facts the
    verbs look up, then ask :meth:`CompanyBase._decide`. Raises :class:`NotFound`, :class:`UsageError`."""
    if action not in ACTIONS:
        raise UsageError(f"unknown action '{action}'; expected one of {', '.join(ACTIONS)}")
    kind, _, name = resource.partition(":")
    facts: dict[str, bool] = {}
    state = None
    if kind in ("task", "approval"):
        if not name.isdigit():
            raise UsageError(f"resource '{resource}': {kind}:<id>, with a number")
    if kind == "task":
        row = conn.execute(select(tasks.c.workflow, tasks.c.state).where(
            tasks.c.company_id == base.company, tasks.c.id == int(name))).first()
        if row is None:
            raise NotFound(f"no task {name} in company '{base.company}'")
        target, state = Resource("workflow", row.workflow), row.state
    elif kind == "approval":
        row = conn.execute(select(approval_requests).where(approval_requests.c.company_id == base.company,
                                                           approval_requests.c.id == int(name))).first()
        if row is None:
            raise NotFound(f"no approval request {name} in company '{base.company}'")
        target = Resource("workflow", row.workflow) if row.kind == "transition" else Resource("tool", row.tool)
        transition = transition or (row.transition or "")
        facts["own_request"] = row.requested_by == principal
    elif kind == "pad" and name:
        target = Resource("pad", name)
        if not name.startswith(TEAM_PAD_PREFIX) and name != principal:
            facts["shared"] = shared_with_txn(conn, base.company, name, principal)
    elif kind in ("workflow", "tool", "principal", "kpi", "toolset") and name:
        target = Resource(kind, name)
    elif kind == "company" and not name:
        target = Resource("company", base.company)
    else:
        raise UsageError(f"resource '{resource}': expected {_RESOURCES}")
    if target.kind == "workflow" and action in READ_FIRST:
        read = base._decide(cache, principal, "read", target)
        if not read.allowed:
            return read
    if action == "hold" and state is not None:
        claim = base._decide(cache, principal, "claim", target, state=state)
        if not claim.allowed:
            return claim
    if action == "claim" and not transition and state is None:
        raise UsageError(f"claim is decided on a task (task:<id>), or on a workflow with its transition "
                         f"(claim:NAME); got '{resource}'")
    if action == "claim" and transition:
        machine = base._machine(cache, target.name)
        spec_t = machine.workflow.transitions.get(transition)
        who = cache.actors.get(principal)
        facts["named"] = bool(spec_t is not None and who is not None and who.matches(spec_t.by))
    return base._decide(cache, principal, action, target, transition, state=state, **facts)
