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

from roster.errors import Denied, NotFound, RosterError
from roster.kernel.contracts import Actor, WorkflowMachine
from roster.kernel.rights import Decision, PrincipalFacts, Resource, Rights
from roster.kernel.spec import CompanySpec
from roster.store import audit
from roster.store.schema import paused_scopes, principals
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
        """The handle to record for ``actor``: another company's principal is recorded by its full id."""
        if isinstance(actor, Principal):
            return actor.handle if actor.company == self.company else actor.id
        return actor

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

    def _authorize(self, cache: CompanyCache, who: Actor, action: str, resource: Resource,
                   transition: str = "") -> Decision:
        """Ask Cedar; raise :class:`Denied` (naming the deciding policies) unless allowed."""
        assert cache.rights is not None
        decision = cache.rights.decide(who.handle, action, resource, transition)
        if not decision.allowed:
            target = f"{resource.kind} '{resource.name}'" if resource.kind != "company" else "this company"
            verb = f"{action} '{transition}' on" if transition else action
            raise Denied(who.handle, verb, target, decision.explain(), decision.policies)
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
