"""Rights: the spec's tiers and grants compiled into Cedar policies, and decisions taken by Cedar.

Evaluation is Cedar's (``cedarpy``): default deny, and any ``forbid`` that matches overrides every
``permit``. This module only *writes* the policies and the entity graph from the spec, so the rules a
reader must trust are the generated policy text, which ``roster rights policies`` prints. A request is
evaluated against the part of that text that can apply to its principal (see :class:`Rights`), which
decides it as the whole text would.

The model (entity types live in the ``Roster`` namespace):

- ``Principal::"<handle>"`` with attributes ``kind``, ``tier``, ``status``; member of ``Group::"human"`` or
  ``Group::"agent"``, ``Group::"tier:<tier>"`` and ``Group::"role:<role>"``.
- ``Scope::"*"`` (the company) > ``Scope::"<workspace>"`` > ``Scope::"<workspace>/<portfolio>"`` >
  ``Workflow::"<name>"``; ``Tool::"<name>"`` lives in ``Scope::"*"``. A task is judged as its workflow.
- ``Pad::"<pad>"`` (a memory pad: a principal's handle, with attribute ``owner``, or ``team:<ws>/<pf>``),
  ``Kpi::"<name>"`` and ``ToolSet::"<set>"`` (a set of MCP tools, :data:`TOOL_SETS`); a principal is also
  the resource of ``message``, ``brief.preview`` and ``profile.read``.
- Actions (:data:`roster.defaults.ACTIONS`): ``read``, ``create`` (a task), ``write`` (evidence on a task:
  artifacts, checks), ``assign`` (owner, priority: routing), ``transition`` (with context ``transition``,
  ``approval_gated``, ``writes_fields``), ``approve`` (context ``transition``, ``own_request``),
  ``call_tool``, ``admin`` (spec, principals, tokens, kill switch, running the agents), ``claim`` (a task's
  lease; context as ``transition`` for one transition out of the task's state, plus ``named``: its ``by``
  names the principal), ``hold`` (a human's lease to edit), ``memory.read``, ``memory.write`` (a pad;
  context ``shared``: the pad's owner shared it with the principal), ``message`` (a principal),
  ``kpi.record`` (a reading by hand), ``brief.preview`` (an agent's brief), ``profile.read`` (an agent's
  profile: mission, role, KPIs, skills), ``tool.see`` (a tool set in the MCP tool list), ``oversee``
  (the company: see every principal's runs, approval requests, threads, escalations and goals; without
  it a principal sees its own). No policy but ``humans`` permits ``oversee``: agents are denied by
  default. ``goal.set`` (a principal: set, pause, resume or abandon a goal of that agent; context
  ``manages``: the agent ``reports_to`` the principal, read from the spec). ``plan.edit`` (a principal:
  revise, hold or release the plan of that agent's mission; context ``manages`` as for ``goal.set``).

Every request carries every context key (:data:`CONTEXT`), defaulted; the store fills in the facts that
live in tables (a pad's shares, a request's requester, whether a ``by`` list names the principal), so
the rules themselves are all in the policy text.

Policies generated, by ``@id``:

- ``humans``: humans may do anything in their company (they still obey contracts' ``by`` lists).
- ``human:<h>:scopes``: a human whose ``scopes`` narrow the company may do nothing on a workflow or scope
  outside them (so no ``admin``, no ``oversee``, no company-wide ``read``).
- ``agent:<h>:read:<scope>``, ``agent:<h>:write:<scope>`` (also ``hold``), ``agent:<h>:create:<scope>``,
  ``agent:<h>:assign:<scope>``, ``agent:<h>:transition:<workflow>.<t>`` (also ``claim`` from ``t``'s
  states), ``agent:<h>:approve:<workflow>.<t>``, ``agent:<h>:tool:<tool>``, ``agent:<h>:message:<name>``
  (from ``rights.message``), ``agent:<h>:see:<set>``: an agent's grants, from its
  ``rights`` (defaults below), ``tools`` and tier.
- ``tier:read-only``: read-only agents may not create, write, assign, transition, claim, hold, approve or
  admin.
- ``tier:coordinator``: coordinators may not write evidence or hold, nor take (or claim by) transitions
  that write fields.
- ``tier:approval-gated``: only high-impact executors (and humans) may take (or claim by)
  approval-gated transitions.
- ``agents-never-admin``: no agent administers the company.
- ``inactive-principal``: a paused or retired principal may do nothing.
- ``kill-switch:<scope>``: agents may do nothing in a paused portfolio, or anywhere if ``*`` is paused.
- ``claim:named``: an agent claims a task only by a transition whose ``by`` names it.
- ``separation-of-duties``: nobody approves (or rejects) their own request.
- ``memory:own-pad``: a principal reads and writes its own pad; ``memory:shared``: it reads a pad shared
  with it; ``memory:team:<ws>/<pf>:read`` and ``:write``: the portfolio's ``team_memory`` lists.
- ``message:default``: an agent whose ``rights.message`` is left out (it is in
  ``Group::"message:default"``) may message humans.
- ``kpi:measured-not-reported``: no agent records a KPI reading (the runtime measures, humans record).
- ``brief:own``: an agent previews its own brief (humans any, by ``humans``); ``profile:own``: an agent
  reads its own profile (the MCP resource ``roster://agents/{handle}``; humans any).
- ``goal:own``: an agent sets goals for itself; ``goal:reports``: and for the agents that report to it
  (``reports_to``), as a manager delegates; the ``tier:read-only`` forbid covers ``goal.set`` too.
- ``plan:own``: an agent revises its own plan (its reflection runs do); ``plan:reports``: and the plans of
  the agents that report to it.
- ``goal:commands-by-humans``: only a human sets a goal whose check is a command (context
  ``runs_command``): the runtime runs that command on its host, so an agent's goals are checked
  against KPIs.
- ``tool.see:everyone``: everyone sees the ``everyone`` tool set; the other sets come with grants:
  ``movers`` (a transition grant), ``evidence`` (a write grant, tier bounded-mutator or
  high-impact-executor), ``gated`` (a granted approval-gated transition, tier high-impact-executor),
  ``creators`` (a create grant), ``approvers`` (an approve grant); ``holders`` are humans'. A read-only
  agent sees ``everyone`` only.

Defaults when an agent's ``rights`` leave a grant out: ``transitions`` = every transition whose ``by``
names the agent (by handle, role or ``agent``); ``read`` and ``write`` = the workflows of those
transitions; ``create`` and ``assign`` = the ``write`` scopes for coordinators, none otherwise. An
agent's ``tier`` defaults to ``read-only``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import cedarpy

from roster.kernel.spec import ANY_AGENT, ANY_HUMAN, CompanySpec

TIERS = ("read-only", "bounded-mutator", "high-impact-executor", "coordinator")
COMPANY_SCOPE = "*"
TEAM_PAD_PREFIX = "team:"
"""A portfolio's team memory pad is ``team:<workspace>/<portfolio>``."""
DEFAULT_MESSAGE_GRANT = ("human",)
"""Whom an agent may message when its ``rights.message`` is left out (policy ``message:default``, for
the agents in ``Group::"message:default"``)."""
MESSAGE_DEFAULT_GROUP = "message:default"
PRINCIPAL_CACHE = 4096
"""How many principals' compiled policy sets and entities (and sets of grant templates) a
:class:`Rights` keeps, least recently used dropped first; a dropped one is rebuilt when next needed."""
TOOL_SETS = ("everyone", "movers", "evidence", "gated", "creators", "approvers", "holders")
"""The sets of MCP tools that ``tool.see`` decides (see the module docstring for who sees which)."""
CONTEXT: dict[str, str | bool] = {"transition": "", "approval_gated": False, "writes_fields": False,
                                  "named": False, "own_request": False, "shared": False, "manages": False,
                                  "runs_command": False}
"""Every request's context keys and their defaults; :meth:`Rights.decide` takes the facts as keywords."""
_SLOT = "?principal"
_TEMPLATE = "template:"


@dataclass(frozen=True)
class PrincipalFacts:
    """What rights depend on about a principal, beyond the spec: its kind, roles and status."""

    handle: str
    kind: str
    status: str
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """A rights decision: ``allowed``, and the ``@id`` of each policy that decided it (empty on a default
    deny: no policy permitted it)."""

    allowed: bool
    policies: tuple[str, ...]
    errors: tuple[str, ...] = ()

    def explain(self) -> str:
        if self.allowed:
            return f"allow, by policy {', '.join(self.policies)}"
        if self.policies:
            return f"deny, by forbid policy {', '.join(self.policies)}"
        return "deny: no policy permits it (default deny)"


@dataclass(frozen=True)
class Resource:
    """What an action is on: ``kind`` is one of :data:`RESOURCE_KINDS` (``workflow``, ``tool``,
    ``company``, ``pad``, ``principal``, ``kpi``, ``toolset``); ``name`` its name (a pad: a handle or
    ``team:<ws>/<pf>``)."""

    kind: str
    name: str

    def uid(self) -> dict[str, str]:
        return {"type": f"Roster::{RESOURCE_KINDS[self.kind]}",
                "id": COMPANY_SCOPE if self.kind == "company" else self.name}


RESOURCE_KINDS = {"workflow": "Workflow", "tool": "Tool", "company": "Scope", "pad": "Pad",
                  "principal": "Principal", "kpi": "Kpi", "toolset": "ToolSet"}
"""Resource kinds and their Cedar entity types."""


@dataclass
class _Grants:
    read: set[str] = field(default_factory=set)
    write: set[str] = field(default_factory=set)
    create: set[str] = field(default_factory=set)
    assign: set[str] = field(default_factory=set)
    transitions: set[str] = field(default_factory=set)
    approve: set[str] = field(default_factory=set)


class Rights:
    """The compiled policies of one company at one rights revision, with a decision cache.

    ``principals`` are the facts of every principal (status included); ``paused_scopes`` the kill
    switches in force. Decisions are pure functions of these, so they are cached per instance: build a
    new instance when any of them changes (the store does, on each rights revision).

    A request is decided against the policies that can apply to its principal: the shared ones (every
    policy but an agent's grants) plus that principal's own ``agent:<handle>:...`` grants, and against
    the entities it can reach (the principal, its groups, the scope tree, workflows and tools). Every
    other agent's grant is ``principal == <another handle>`` and so can neither match nor fail, so the
    decision is the one the whole set would give, at a cost that does not grow with the number of
    agents. Each principal's policy set is built on its first decision (parsing only its own grants on
    top of the shared set), so a new instance costs O(principals) and no Cedar parse of every grant;
    :attr:`policy_text` (the whole set, as ``roster rights policies`` prints it) is compiled on demand.
    """

    def __init__(self, spec: CompanySpec, principals: Iterable[PrincipalFacts],
                 paused_scopes: Iterable[str] = ()) -> None:
        self.spec = spec
        self.principals = {p.handle: p for p in principals}
        self.paused_scopes = sorted(set(paused_scopes))
        self._shared_text = _policy_text(shared_policies(self.paused_scopes, spec))
        self._shared = cedarpy.PolicySet.from_str(self._shared_text)
        self._scope_entities = cedarpy.Entities.from_json_str(json.dumps(scope_entities(spec)))
        # Sized to the company: a cycle asks a few questions of every agent, and an LRU smaller than
        # one cycle's working set would miss on every one of them, every cycle.
        self.decide = lru_cache(maxsize=max(65536, 64 * len(self.principals)))(self._decide)
        self._compiled = lru_cache(maxsize=PRINCIPAL_CACHE)(self._compile_for)
        self._templates = lru_cache(maxsize=PRINCIPAL_CACHE)(self._compile_templates)

    @cached_property
    def policy_text(self) -> str:
        """The whole policy set: every shared policy and every agent's grants (``roster rights policies``)."""
        return compile_policies(self.spec, self.paused_scopes)

    @cached_property
    def entities(self) -> list[dict]:
        """The whole entity graph: every principal in its groups, workflows in their scopes, tools."""
        return compile_entities(self.spec, self.principals.values())

    def policies_for(self, principal: str) -> str:
        """The policy text a request by ``principal`` is decided against: the shared policies and its own
        grants."""
        own = agent_policies(self.spec, principal) if principal in self.spec.agents else []
        return self._shared_text if not own else self._shared_text + "\n" + _policy_text(own)

    def _compile_for(self, principal: str) -> tuple[cedarpy.PolicySet, cedarpy.Entities]:
        """``principal``'s policy set (the shared set plus its own grants) and entities (the scope tree plus
        the principal and its groups). Agents whose grants differ only by handle share one parsed set of
        Cedar templates, which is linked to each of them (no parse per agent)."""
        grants = agent_grant_policies(self.spec, principal, _SLOT) if principal in self.spec.agents else []
        if not grants:
            policies = self._shared
        elif len({name for name, _ in grants}) < len(grants):  # a grant listed twice: ids must be unique to link
            policies = self._shared.with_added_str(_policy_text(agent_policies(self.spec, principal)))
        else:
            templates, template_ids = self._templates(tuple(grants))
            uid = {"type": "Roster::Principal", "id": principal}
            policies = templates.with_linked_batch([
                {"template_id": template_id, "new_id": f"agent:{principal}:{name}", "values": {_SLOT: uid}}
                for template_id, (name, _) in zip(template_ids, grants)])
        entities = self._scope_entities.with_added_json_str(
            json.dumps(principal_entities(self.spec, self.principals[principal])))
        return policies, entities

    def _compile_templates(self, grants: tuple[tuple[str, str], ...]) -> tuple[cedarpy.PolicySet, list[str]]:
        """The shared set plus ``grants`` as templates, and each template's Cedar id, in order."""
        text = self._shared_text + "\n" + _policy_text(
            [f'@id("{_TEMPLATE}{i}")\n{policy}' for i, (_, policy) in enumerate(grants)])
        policies = cedarpy.PolicySet.from_str(text)
        ids = {t["id_annotation"]: t["id"] for t in policies.templates()}
        return policies, [ids[f"{_TEMPLATE}{i}"] for i in range(len(grants))]

    def _request(self, principal: str, action: str, resource: Resource, transition: str,
                 facts: dict[str, bool] | None = None) -> dict:
        facts = facts or {}
        unknown = set(facts) - set(CONTEXT)
        if unknown:
            raise TypeError(f"unknown request facts {sorted(unknown)}; the context keys are {sorted(CONTEXT)}")
        context = {**CONTEXT, **facts, "transition": transition}
        if resource.kind == "principal":  # whether the principal manages it: its reports_to (goal.set, plan.edit)
            person = self.spec.agents.get(resource.name) or self.spec.humans.get(resource.name)
            context["manages"] = person is not None and person.reports_to == principal
        if resource.kind == "workflow" and transition:
            workflow = self.spec.workflows.get(resource.name)
            t = workflow.transitions.get(transition) if workflow else None
            if t is not None:
                context["approval_gated"] = t.approval is not None
                context["writes_fields"] = bool(t.writes)
        return {
            "principal": {"type": "Roster::Principal", "id": principal},
            "action": {"type": "Roster::Action", "id": action},
            "resource": resource.uid(),
            "context": context,
        }

    def _decide(self, principal: str, action: str, resource: Resource, transition: str = "",
                **facts: bool) -> Decision:
        """Decide one request (cached: it is a pure function of its arguments and this instance).
        ``transition`` names the transition for ``transition``, ``claim`` and ``approve``; ``facts`` are
        the boolean context keys of :data:`CONTEXT` (``named``, ``own_request``, ``shared``), default
        false. Raises :class:`TypeError` for a fact not in :data:`CONTEXT`."""
        if principal not in self.principals:
            return Decision(False, (), (f"unknown principal '{principal}'",))
        policies, entities = self._compiled(principal)
        extra = self._resource_entities(principal, resource)
        if extra:
            entities = entities.with_added_json_str(json.dumps(extra))
        return _decision(cedarpy.is_authorized(self._request(principal, action, resource, transition, facts),
                                               policies, entities))

    def decide_claim(self, principal: str, workflow: str, state: str) -> Decision:
        """Decide ``claim`` of a task of ``workflow`` in ``state``: one Cedar request per transition out
        of ``state`` (context ``transition`` and ``named``: whether its ``by`` names the principal), allowed
        by the first one allowed; a human's is one request with no transition. Denied: the forbid policies
        of every request (empty: none permitted it). Cached as :meth:`decide` is."""
        facts = self.principals.get(principal)
        wf = self.spec.workflows.get(workflow)
        target = Resource("workflow", workflow)
        if facts is None or facts.kind != "agent" or wf is None:
            return self.decide(principal, "claim", target)
        forbids: set[str] = set()
        errors: list[str] = []
        for name, transition in wf.transitions.items():
            if state in transition.from_:
                named = principal in transition.by or ANY_AGENT in transition.by or bool(
                    facts.roles & set(transition.by))
                decision = self.decide(principal, "claim", target, name, named=named)
                if decision.allowed:
                    return decision
                forbids.update(decision.policies)
                errors.extend(decision.errors)
        return Decision(False, tuple(sorted(forbids)), tuple(errors))

    def _resource_entities(self, principal: str, resource: Resource) -> list[dict]:
        """The entities a request on a pad or a principal needs beyond the principal's own: a principal's
        pad with its ``owner``; another principal with its groups (those the asking principal's entities
        do not already hold)."""
        if resource.kind == "pad" and resource.name in self.principals:
            return [{"uid": _uid("Pad", resource.name),
                     "attrs": {"owner": {"__entity": _uid("Principal", resource.name)}}, "parents": []}]
        if resource.kind == "principal" and resource.name in self.principals and resource.name != principal:
            held = {g["uid"]["id"] for g in principal_entities(self.spec, self.principals[principal])[1:]}
            return [e for e in principal_entities(self.spec, self.principals[resource.name])
                    if e["uid"]["type"] != "Roster::Group" or e["uid"]["id"] not in held]
        return []

    def _decide_by_whole_set(self, principal: str, action: str, resource: Resource,
                             transition: str = "", **facts: bool) -> Decision:
        """The same request decided against the whole policy set and entity graph, as before decisions
        were scoped to their principal: uncached and O(agents) each; for tests that the two agree."""
        if principal not in self.principals:
            return Decision(False, (), (f"unknown principal '{principal}'",))
        policies, entities = self._whole_set
        extra = [e for e in self._resource_entities(principal, resource) if e["uid"]["type"] == "Roster::Pad"]
        if extra:
            entities = entities.with_added_json_str(json.dumps(extra))
        return _decision(cedarpy.is_authorized(self._request(principal, action, resource, transition, facts),
                                               policies, entities))

    @cached_property
    def _whole_set(self) -> tuple[cedarpy.PolicySet, cedarpy.Entities]:
        return (cedarpy.PolicySet.from_str(self.policy_text),
                cedarpy.Entities.from_json_str(json.dumps(self.entities)))


def _decision(result: cedarpy.AuthzResult) -> Decision:
    # A parsed policy is reported by its positional id (``policy<N>``), named by its ``@id``; a grant linked
    # from a template by its link id, which is already ``agent:<handle>:<name>`` (its inherited ``@id`` is
    # the template's).
    names = result.diagnostics.id_annotations_by_reason
    policies = tuple(sorted(r if r.startswith("agent:") else names.get(r, r) for r in result.diagnostics.reasons))
    return Decision(result.allowed, policies, tuple(result.diagnostics.errors))


def agent_grants(spec: CompanySpec, handle: str) -> _Grants:
    """An agent's effective grants: its ``rights`` with the documented defaults filled in."""
    agent = spec.agents[handle]
    rights = agent.rights
    grants = _Grants()
    named: set[str] = set()
    for wf_name, wf in spec.workflows.items():
        for t_name, t in wf.transitions.items():
            if handle in t.by or ANY_AGENT in t.by or set(agent.roles) & set(t.by):
                named.add(f"{wf_name}.{t_name}")
    grants.transitions = set(rights.transitions) if rights.transitions is not None else named
    workflows_used = {ref.split(".", 1)[0] for ref in grants.transitions}
    default_scopes = {workflow_scope(spec, w) for w in workflows_used if w in spec.workflows}
    grants.read = set(rights.read) if rights.read is not None else set(default_scopes)
    grants.write = set(rights.write) if rights.write is not None else set(default_scopes)
    coordinator = agent.tier == "coordinator"
    grants.create = set(rights.create) if rights.create is not None else (set(grants.write) if coordinator else set())
    grants.assign = set(rights.assign) if rights.assign is not None else (set(grants.write) if coordinator else set())
    grants.approve = set(rights.approve or [])
    return grants


def workflow_scope(spec: CompanySpec, workflow: str) -> str:
    """The scope path of a workflow: ``workspace/portfolio/workflow``."""
    return f"{spec.workflows[workflow].portfolio}/{workflow}"


def _scope_uid(scope: str) -> str:
    parts = scope.split("/")
    if scope == COMPANY_SCOPE:
        return f'Roster::Scope::"{COMPANY_SCOPE}"'
    if len(parts) == 3:
        return f'Roster::Workflow::"{parts[2]}"'
    return f'Roster::Scope::"{scope}"'


def _policy_text(policies: list[str]) -> str:
    return "\n\n".join(policies) + "\n"


def _names(entity: str, names: Iterable[str]) -> str:
    """A Cedar condition: ``entity`` (``principal`` or ``resource``) is named by one of ``names``, as a
    ``by`` list names an actor (:meth:`roster.kernel.contracts.Actor.matches`): its handle, one of its
    roles, ``human`` or ``agent``; ``*`` names everyone."""
    terms = []
    for name in sorted(set(names)):
        if name == "*":
            return "true"
        if name in (ANY_HUMAN, ANY_AGENT):
            terms.append(f'{entity} in Roster::Group::"{name}"')
        else:
            terms.append(f'{entity} == Roster::Principal::"{name}" || {entity} in Roster::Group::"role:{name}"')
    return " || ".join(terms) or "false"


def team_memory_policies(spec: CompanySpec) -> list[str]:
    """``memory:team:<ws>/<pf>:read`` and ``:write`` for each portfolio whose ``team_memory`` names
    someone: its ``read`` list may read the pad ``team:<ws>/<pf>``, its ``write`` list read and write it."""
    a = 'Roster::Action::'
    lines = []
    for ws_name, ws in sorted(spec.workspaces.items()):
        for pf_name, pf in sorted(ws.portfolios.items()):
            pad = f'Roster::Pad::"{TEAM_PAD_PREFIX}{ws_name}/{pf_name}"'
            for key, actions in (("read", f'action == {a}"memory.read"'),
                                 ("write", f'action in [{a}"memory.read", {a}"memory.write"]')):
                names = getattr(pf.team_memory, key)
                if names:
                    lines.append(f'@id("memory:team:{ws_name}/{pf_name}:{key}")\npermit(principal, {actions}, '
                                 f'resource == {pad}) when {{ {_names("principal", names)} }};')
    return lines


def human_scope_policies(spec: CompanySpec) -> list[str]:
    """``human:<handle>:scopes`` for each human whose ``scopes`` narrow the company: nothing on a workflow
    or scope outside them (so no ``admin``, ``oversee`` or company-wide ``read``, which are asked of the
    company's scope). Other resources (principals, pads, KPIs, tools) are as for every human."""
    lines = []
    for handle, human in sorted(spec.humans.items()):
        if human.scopes is None or COMPANY_SCOPE in human.scopes:
            continue
        inside = " || ".join(f"resource in {_scope_uid(s)}" for s in sorted(set(human.scopes))) or "false"
        lines.append(f'@id("human:{handle}:scopes")\nforbid(principal == Roster::Principal::"{handle}", action, '
                     f'resource) when {{ (resource is Roster::Workflow || resource is Roster::Scope) && !({inside}) }};')
    return lines


def shared_policies(paused_scopes: Iterable[str] = (), spec: CompanySpec | None = None) -> list[str]:
    """Every policy but the agents' grants: ``humans``, the forbids of the tiers, ``agents-never-admin``,
    ``inactive-principal``, the rules of claims, approvals, pads, KPI readings, brief previews and tool
    sets, the team pads' grants of ``spec`` and a ``kill-switch:<scope>`` per paused scope. They apply
    to any principal."""
    a = 'Roster::Action::'
    lines = [
        '@id("humans")\npermit(principal in Roster::Group::"human", action, resource);',
        '@id("inactive-principal")\nforbid(principal, action, resource) when { principal.status != "active" };',
        '@id("agents-never-admin")\nforbid(principal in Roster::Group::"agent", action == Roster::Action::"admin", '
        'resource);',
        '@id("tier:read-only")\nforbid(principal in Roster::Group::"tier:read-only", action in '
        f'[{a}"create", {a}"write", {a}"assign", {a}"transition", {a}"claim", {a}"hold", {a}"approve", '
        f'{a}"admin", {a}"goal.set"], resource);',
        f'@id("tier:coordinator")\nforbid(principal in Roster::Group::"tier:coordinator", action in [{a}"write", '
        f'{a}"hold"], resource);',
        f'@id("tier:coordinator:transitions")\nforbid(principal in Roster::Group::"tier:coordinator", action in '
        f'[{a}"transition", {a}"claim"], resource) when {{ context.writes_fields }};',
        f'@id("tier:approval-gated")\nforbid(principal in Roster::Group::"agent", action in [{a}"transition", '
        f'{a}"claim"], resource) when {{ context.approval_gated }} unless {{ principal in '
        'Roster::Group::"tier:high-impact-executor" };',
        f'@id("claim:named")\nforbid(principal in Roster::Group::"agent", action == {a}"claim", resource) '
        'unless { context.named };',
        f'@id("separation-of-duties")\nforbid(principal, action == {a}"approve", resource) '
        'when { context.own_request };',
        f'@id("memory:own-pad")\npermit(principal, action in [{a}"memory.read", {a}"memory.write"], resource) '
        'when { resource has owner && resource.owner == principal };',
        f'@id("memory:shared")\npermit(principal, action == {a}"memory.read", resource) when {{ context.shared }};',
        f'@id("kpi:measured-not-reported")\nforbid(principal in Roster::Group::"agent", action == {a}"kpi.record", '
        'resource);',
        f'@id("brief:own")\npermit(principal, action == {a}"brief.preview", resource) when {{ resource == principal }};',
        f'@id("message:default")\npermit(principal in Roster::Group::"{MESSAGE_DEFAULT_GROUP}", action == '
        f'{a}"message", resource) when {{ {_names("resource", DEFAULT_MESSAGE_GRANT)} }};',
        f'@id("profile:own")\npermit(principal, action == {a}"profile.read", resource) when {{ resource == principal }};',
        f'@id("tool.see:everyone")\npermit(principal, action == {a}"tool.see", resource == '
        'Roster::ToolSet::"everyone");',
        f'@id("goal:own")\npermit(principal, action == {a}"goal.set", resource) when {{ resource == principal }};',
        f'@id("goal:reports")\npermit(principal, action == {a}"goal.set", resource) when {{ context.manages }};',
        f'@id("plan:own")\npermit(principal, action == {a}"plan.edit", resource) when {{ resource == principal }};',
        f'@id("plan:reports")\npermit(principal, action == {a}"plan.edit", resource) when {{ context.manages }};',
        f'@id("goal:commands-by-humans")\nforbid(principal in Roster::Group::"agent", action == {a}"goal.set", '
        'resource) when { context.runs_command };',
    ]
    if spec is not None:
        lines.extend(team_memory_policies(spec))
        lines.extend(human_scope_policies(spec))
    for scope in sorted(set(paused_scopes)):
        lines.append(f'@id("kill-switch:{scope}")\nforbid(principal in Roster::Group::"agent", action, '
                     f'resource in {_scope_uid(scope)});')
    return lines


def agent_grant_policies(spec: CompanySpec, handle: str, who: str) -> list[tuple[str, str]]:
    """One agent's grants as ``(name, policy)`` pairs, unannotated, with ``who`` as the principal: the
    agent's uid, or ``?principal`` for a Cedar template. The policy's ``@id`` is ``agent:<handle>:<name>``."""
    a = 'Roster::Action::'
    grants = agent_grants(spec, handle)
    policies = []
    also = {"write": f'[{a}"write", {a}"hold"]', "transition": f'[{a}"transition", {a}"claim"]'}
    for action in ("read", "write", "create", "assign"):
        actions = f"action in {also[action]}" if action in also else f'action == {a}"{action}"'
        for scope in sorted(getattr(grants, action)):
            policies.append((f"{action}:{scope}", f'permit(principal == {who}, {actions}, '
                                                  f'resource in {_scope_uid(scope)});'))
    for action, refs in (("transition", grants.transitions), ("approve", grants.approve)):
        actions = f"action in {also[action]}" if action in also else f'action == {a}"{action}"'
        for ref in sorted(refs):
            workflow, _, transition = ref.partition(".")
            policies.append((f"{action}:{ref}", f'permit(principal == {who}, {actions}, '
                                                f'resource == Roster::Workflow::"{workflow}") '
                                                f'when {{ context.transition == "{transition}" }};'))
    agent = spec.agents[handle]
    for tool in sorted(agent.tools):
        policies.append((f"tool:{tool}", f'permit(principal == {who}, action == {a}"call_tool", '
                                         f'resource == Roster::Tool::"{tool}");'))
    for name in sorted(set(agent.rights.message or [])):
        policies.append((f"message:{name}", f'permit(principal == {who}, action == {a}"message", resource) '
                                            f'when {{ {_names("resource", [name])} }};'))
    for toolset in sorted(tool_sets(spec, handle, grants)):
        policies.append((f"see:{toolset}", f'permit(principal == {who}, action == {a}"tool.see", '
                                           f'resource == Roster::ToolSet::"{toolset}");'))
    return policies


def tool_sets(spec: CompanySpec, handle: str, grants: _Grants | None = None) -> set[str]:
    """The tool sets (:data:`TOOL_SETS`) beyond ``everyone`` that agent ``handle``'s grants and tier
    bring (the ``agent:<h>:see:<set>`` grants; see the module docstring)."""
    agent = spec.agents[handle]
    if agent.tier == "read-only":
        return set()
    grants = grants or agent_grants(spec, handle)
    sets = set()
    if grants.transitions:
        sets.add("movers")
    if grants.write and agent.tier in ("bounded-mutator", "high-impact-executor"):
        sets.add("evidence")
    if agent.tier == "high-impact-executor" and any(
            spec.workflows[w].transitions[t].approval is not None
            for w, _, t in (ref.partition(".") for ref in grants.transitions)
            if w in spec.workflows and t in spec.workflows[w].transitions):
        sets.add("gated")
    if grants.create:
        sets.add("creators")
    if grants.approve:
        sets.add("approvers")
    return sets


def agent_policies(spec: CompanySpec, handle: str) -> list[str]:
    """The ``agent:<handle>:...`` grants of one agent of ``spec``: each is ``principal == <handle>``, so it
    applies to that principal only."""
    return [f'@id("agent:{handle}:{name}")\n{policy}'
            for name, policy in agent_grant_policies(spec, handle, f'Roster::Principal::"{handle}"')]


def compile_policies(spec: CompanySpec, paused_scopes: Iterable[str] = ()) -> str:
    """The whole Cedar policy text for ``spec`` (see the module docstring for what each policy means): the
    shared policies, then every agent's grants, by handle."""
    lines = shared_policies(paused_scopes, spec)
    for handle in sorted(spec.agents):
        lines.extend(agent_policies(spec, handle))
    return _policy_text(lines)


def _uid(kind: str, name: str) -> dict[str, str]:
    return {"type": f"Roster::{kind}", "id": name}


def scope_entities(spec: CompanySpec) -> list[dict]:
    """The entities every request may reach: the company, workspaces and portfolios (scopes), workflows in
    their portfolios, tools in the company."""
    entities: list[dict] = [{"uid": _uid("Scope", COMPANY_SCOPE), "attrs": {}, "parents": []}]
    for ws_name, ws in spec.workspaces.items():
        entities.append({"uid": _uid("Scope", ws_name), "attrs": {}, "parents": [_uid("Scope", COMPANY_SCOPE)]})
        for pf_name in ws.portfolios:
            entities.append({"uid": _uid("Scope", f"{ws_name}/{pf_name}"), "attrs": {},
                             "parents": [_uid("Scope", ws_name)]})
    for wf_name, wf in spec.workflows.items():
        entities.append({"uid": _uid("Workflow", wf_name), "attrs": {}, "parents": [_uid("Scope", wf.portfolio)]})
    for tool in spec.tools:
        entities.append({"uid": _uid("Tool", tool), "attrs": {}, "parents": [_uid("Scope", COMPANY_SCOPE)]})
    return entities


def _principal_entity(spec: CompanySpec, facts: PrincipalFacts) -> tuple[dict, list[str]]:
    """A principal's entity (``kind``, ``tier``, ``status``) and the groups it is a member of."""
    tier = spec.agents[facts.handle].tier if facts.kind == "agent" and facts.handle in spec.agents else (
        "read-only" if facts.kind == "agent" else "human")
    member_of = [facts.kind, f"tier:{tier}", *(f"role:{r}" for r in sorted(facts.roles))]
    if facts.kind == "agent" and (facts.handle not in spec.agents or spec.agents[facts.handle].rights.message is None):
        member_of.append(MESSAGE_DEFAULT_GROUP)
    return ({"uid": _uid("Principal", facts.handle),
             "attrs": {"kind": facts.kind, "tier": tier, "status": facts.status},
             "parents": [_uid("Group", g) for g in member_of]}, member_of)


def principal_entities(spec: CompanySpec, facts: PrincipalFacts) -> list[dict]:
    """One principal's entity and its groups' entities: all a request needs of principals."""
    entity, member_of = _principal_entity(spec, facts)
    return [entity, *({"uid": _uid("Group", g), "attrs": {}, "parents": []} for g in sorted(set(member_of)))]


def compile_entities(spec: CompanySpec, principals: Iterable[PrincipalFacts]) -> list[dict]:
    """The whole Cedar entity graph: principals in their groups, workflows in their scopes, tools."""
    entities = scope_entities(spec)
    groups: set[str] = set()
    for facts in principals:
        entity, member_of = _principal_entity(spec, facts)
        groups.update(member_of)
        entities.append(entity)
    entities.extend({"uid": _uid("Group", g), "attrs": {}, "parents": []} for g in sorted(groups))
    return entities
