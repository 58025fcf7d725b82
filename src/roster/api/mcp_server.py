"""The MCP server: any agent (Claude Code, Codex, an in-house bot) works through Roster's tools as itself.

Built on the official SDK (``mcp.server.MCPServer``, mcp 2.x). Each call is authenticated: over HTTP by
the ``Authorization: Bearer <token>`` header of that request, over stdio (``roster mcp``) by the token
given at start. The token resolves to one principal's :class:`~roster.store.Session`, so every tool acts
as that principal, rights-checked and audited by the same store verbs as the CLI and the REST API, with
``via: mcp`` in each audit event.

Which tools a principal sees (:func:`granted_tools`): everyone gets ``whoami``, ``my_tasks``,
``context``, ``remember``, ``recall``, ``message`` and ``escalate``; ``claim``, ``transition``,
``save_artifact`` and ``request_approval`` need a transition grant (an agent that may move work);
``delegate`` needs a ``create`` grant. Humans get every tool. A tool not granted is absent from
``tools/list`` and refused if called anyway (the refusal is audited). The ``roster://agents/{handle}``
resource (and ``roster://me`` over stdio) gives an agent's mission, role, KPIs and skills (``SKILL.md``
folders under ``skills/`` beside the spec).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from roster.errors import ApprovalPending, Denied, RosterError, Unauthenticated, UsageError
from roster.kernel.rights import agent_grants
from roster.runtime.context import ContextAssembler, Wakeup
from roster.store import Session, Store, audit
from roster.store.company import authenticate

ALWAYS = ("whoami", "my_tasks", "context", "remember", "recall", "message", "escalate")
MOVERS = ("claim", "transition", "save_artifact", "request_approval")
DELEGATORS = ("delegate",)
DEFAULT_CLAIM_SECONDS = 300.0


def granted_tools(session: Session) -> set[str]:
    """The MCP tools ``session``'s principal may see and call (see the module docstring)."""
    principal = session.principal
    if principal.kind == "human":
        return {*ALWAYS, *MOVERS, *DELEGATORS}
    spec = session.company.spec()
    if principal.handle not in spec.agents:
        return set(ALWAYS)
    grants = agent_grants(spec, principal.handle)
    tier = spec.agents[principal.handle].tier
    tools = set(ALWAYS)
    if grants.transitions and tier != "read-only":
        tools.update(MOVERS)
    if grants.create and tier != "read-only":
        tools.update(DELEGATORS)
    return tools


def _bearer(headers: Any) -> str | None:
    value = (headers or {}).get("authorization", "") if headers is not None else ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_mcp_server(store: Store, *, token: str | None = None, skills_dir: Path | None = None) -> MCPServer:
    """An MCP server over ``store``. ``token`` is the identity for transports without HTTP headers
    (stdio, in-memory); over HTTP each request's bearer header is used instead."""

    def session_for(headers: Any) -> Session:
        presented = _bearer(headers) or token
        if presented is None:
            raise Unauthenticated("missing bearer token")
        return authenticate(store, presented)

    async def visibility(ctx: ServerRequestContext, call_next: Callable) -> Any:
        if ctx.method not in ("tools/list", "tools/call"):
            return await call_next(ctx)
        try:
            caller = session_for(getattr(ctx.request, "headers", None))
        except RosterError as exc:
            if ctx.method == "tools/list":  # no identity, no tools
                result = await call_next(ctx)
                result["tools"] = []
                return result
            return _error(f"{exc.code}: a valid bearer token is required")
        allowed = granted_tools(caller)
        if ctx.method == "tools/list":
            result = await call_next(ctx)
            result["tools"] = [t for t in result["tools"] if t["name"] in allowed]
            return result
        name = (ctx.params or {}).get("name")
        if name not in allowed:
            denial = Denied(caller.principal.handle, "call MCP tool", f"'{name}'",
                            "not granted to this principal (see docs/api.md for which tools need which rights)")
            caller.company._audit_rejection(caller.principal, "mcp.call", f"mcp:{name}", denial, {"via": "mcp"})
            return _error(f"denied: {denial.message}")
        return await call_next(ctx)

    server = MCPServer("roster", log_level="WARNING", middleware=[visibility],
                       instructions="Roster: your queue of work, its contracts, your memory and your team. "
                                    "Call whoami first, then my_tasks; claim a task before you change it.")

    @contextmanager
    def acting(ctx: Context | None):
        """The caller's session, with its store writes audited as ``via: mcp``; errors as tool errors."""
        via = audit.VIA.set("mcp")
        try:
            yield session_for(ctx.headers if ctx is not None else None)
        except ApprovalPending:
            raise
        except RosterError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None
        finally:
            audit.VIA.reset(via)

    @server.tool(description="Who you are in Roster: your principal, kind, roles and the tools you may use.")
    def whoami(ctx: Context) -> dict[str, Any]:
        with acting(ctx) as caller:
            p = caller.principal
            return {"id": p.id, "handle": p.handle, "kind": p.kind, "display_name": p.display_name,
                    "roles": list(p.roles), "status": p.status, "tools": sorted(granted_tools(caller))}

    @server.tool(description="The tasks you could act on now, most urgent first.")
    def my_tasks(ctx: Context, limit: int = Field(default=20, ge=1, le=100)) -> list[dict[str, Any]]:
        with acting(ctx) as caller:
            work = caller.company.pending_work(caller.principal.handle, limit=limit)
            return [{"id": t.id, "workflow": t.workflow, "state": t.state, "title": t.title,
                     "priority": t.priority, "version": t.version} for t in work]

    @server.tool(description="Claim a task with a lease (seconds) before changing it; returns the fencing "
                             "token to pass to transition and save_artifact.")
    def claim(ctx: Context, task_id: int = Field(ge=1),
              seconds: float = Field(default=DEFAULT_CLAIM_SECONDS, gt=0, le=3600)) -> dict[str, Any]:
        with acting(ctx) as caller:
            lease = caller.claim(task_id, run_id=f"mcp:{uuid.uuid4().hex[:16]}", ttl=seconds)
            return {"task_id": lease.task_id, "fencing_token": lease.fencing_token, "expires_at": lease.expires_at}

    @server.tool(description="Your bounded brief for a task: its state and contract, what changed since you "
                             "last looked, your relevant memory, messages and recent events.")
    def context(ctx: Context, task_id: int = Field(ge=1)) -> dict[str, Any]:
        with acting(ctx) as caller:
            task = caller.get_task(task_id)
            me = caller.principal.handle
            token_ = task.fencing_token if task.lease_holder == me else None
            return ContextAssembler(caller.company).brief(me, task, Wakeup(f"mcp:{me}", token_)).data

    @server.tool(description="Take a transition of a task under its contract. Pass the fencing token of your "
                             "claim; the lease is released once the transition is done.")
    def transition(ctx: Context, task_id: int = Field(ge=1), transition: str = Field(min_length=1),
                   writes: dict[str, Any] | None = None, rationale: str = "",
                   fencing_token: int | None = None, expected_version: int | None = None) -> dict[str, Any]:
        with acting(ctx) as caller:
            version = expected_version or caller.get_task(task_id).version
            task = caller.transition(task_id, transition, expected_version=version, writes=writes or {},
                                     rationale=rationale, fencing_token=fencing_token)
            if fencing_token is not None:
                caller.release(task_id, fencing_token=fencing_token)
            return {"id": task.id, "state": task.state, "version": task.version, "fields": task.fields}

    @server.tool(description="Save text as the next version of a task's artifact (work not saved is invisible).")
    def save_artifact(ctx: Context, task_id: int = Field(ge=1), name: str = Field(min_length=1, max_length=255),
                      content: str = "", kind: str | None = None, reason: str = "",
                      fencing_token: int | None = None) -> dict[str, Any]:
        with acting(ctx) as caller:
            record = caller.record_artifact(task_id, kind or name, content.encode(), name=name, reason=reason,
                                            fencing_token=fencing_token)
            return record.to_dict()

    @server.tool(description="Remember one short statement in your own memory pad.")
    def remember(ctx: Context, text: str = Field(min_length=1, max_length=2000), kind: str = "lesson",
                 confidence: float = Field(default=0.8, ge=0, le=1)) -> dict[str, Any]:
        with acting(ctx) as caller:
            entry = caller.remember(text, kind=kind, confidence=confidence, provenance={"via": "mcp"})
            return {"id": entry.id, "pad": entry.pad, "kind": entry.kind}

    @server.tool(description="Search your memory pad (full text, best first).")
    def recall(ctx: Context, query: str = "", limit: int = Field(default=8, ge=1, le=50)) -> list[dict[str, Any]]:
        with acting(ctx) as caller:
            return [{"id": e.id, "kind": e.kind, "text": e.text, "confidence": e.confidence, "score": e.score}
                    for e in caller.recall(query, limit=limit)]

    @server.tool(description="Send a message to a principal of your company (a reply names its thread_id).")
    def message(ctx: Context, to: str = Field(min_length=1), body: str = Field(min_length=1, max_length=16000),
                task_id: int | None = None, thread_id: int | None = None) -> dict[str, Any]:
        with acting(ctx) as caller:
            sent = caller.send_message(to, body, task_id=task_id, thread_id=thread_id)
            return {"id": sent.id, "thread_id": sent.thread_id}

    @server.tool(description="Delegate a subproblem as a child task with a packet: subproblem, context, tried, "
                             "desired_output, and success_condition and/or blocking_threshold.")
    def delegate(ctx: Context, parent_id: int = Field(ge=1), workflow: str = Field(min_length=1),
                 title: str = Field(min_length=1, max_length=500), packet: dict[str, Any] | None = None,
                 fields: dict[str, Any] | None = None) -> dict[str, Any]:
        with acting(ctx) as caller:
            child = caller.delegate(parent_id, workflow=workflow, title=title, packet=packet or {},
                                    fields=fields or {})
            return {"id": child.id, "state": child.state, "parent_id": child.parent_id}

    @server.tool(description="Say you cannot finish a task: it goes up the ladder, to a peer or a human.")
    def escalate(ctx: Context, task_id: int = Field(ge=1), reason: str = Field(min_length=1, max_length=4000),
                 category: str = "judgment") -> dict[str, Any]:
        with acting(ctx) as caller:
            if category not in ("judgment", "deterministic", "transient", "governance"):
                raise UsageError("category is judgment, deterministic, transient or governance")
            caller.get_task(task_id)  # must be readable by the caller
            step = caller.company.escalate(task_id, from_agent=caller.principal.handle, category=category,
                                           reason=reason)
            return {"step": step.step, "to": step.to, "reason": step.reason}

    @server.tool(description="Ask for an approval edge's transition: an approval request waits for an approver.")
    def request_approval(ctx: Context, task_id: int = Field(ge=1), transition: str = Field(min_length=1),
                         writes: dict[str, Any] | None = None, rationale: str = "") -> dict[str, Any]:
        try:
            with acting(ctx) as caller:
                version = caller.get_task(task_id).version
                task = caller.transition(task_id, transition, expected_version=version, writes=writes or {},
                                         rationale=rationale)
                return {"status": "done", "state": task.state}
        except ApprovalPending as pending:
            return {"status": "pending", **{k: v for k, v in pending.to_dict().items() if k not in ("error",)}}

    def profile(caller: Session, handle: str) -> str:
        if caller.principal.kind != "human" and caller.principal.handle != handle:
            raise ResourceError(f"'{caller.principal.handle}' may read only its own profile")
        spec = caller.company.spec()
        agent = spec.agents.get(handle)
        if agent is None:
            raise ResourceError(f"no agent '{handle}'")
        summaries = caller.kpi_summaries() if agent.kpis else {}
        latest = {name: ({"value": s.latest.value, "measured_at": s.latest.measured_at}
                         if (s := summaries.get(name)) is not None and s.latest is not None else None)
                  for name in agent.kpis}
        return json.dumps({"handle": handle, "mission": agent.mission, "role": agent.role,
                           "kpis": list(agent.kpis), "kpi_latest": latest, "skills": read_skills(skills_dir)},
                          sort_keys=True)

    @server.resource("roster://me", mime_type="application/json",
                     description="Your mission, role, KPIs with their latest readings, and skills (stdio: the token's agent).")
    def me() -> str:
        caller = session_for(None)
        return profile(caller, caller.principal.handle)

    @server.resource("roster://agents/{handle}", mime_type="application/json",
                     description="An agent's mission, role, KPIs and skills (Agent Skills SKILL.md folders); "
                                 "an agent reads its own, a human any.")
    def agent_profile(handle: str, ctx: Context) -> str:
        try:
            caller = session_for(ctx.headers if ctx is not None else None)
        except RosterError as exc:
            raise ResourceError(f"{exc.code}: a valid bearer token is required") from None
        return profile(caller, handle)

    return server


def read_skills(folder: Path | None) -> list[dict[str, str]]:
    """Skills in ``folder``: each subfolder with a ``SKILL.md`` whose YAML frontmatter has ``name`` and
    ``description`` (the Agent Skills format). Folders without them are skipped."""
    import yaml

    found: list[dict[str, str]] = []
    if folder is None or not folder.is_dir():
        return found
    for skill in sorted(folder.glob("*/SKILL.md")):
        text = skill.read_text(errors="replace")
        if not text.startswith("---"):
            continue
        front, _, body = text[3:].partition("\n---")
        try:
            meta = yaml.safe_load(front) or {}
        except yaml.YAMLError:
            continue
        if isinstance(meta, dict) and meta.get("name") and meta.get("description"):
            found.append({"name": str(meta["name"]), "description": str(meta["description"]),
                          "path": str(skill.parent.name), "body": body.strip()})
    return found


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
