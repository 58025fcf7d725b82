"""The MCP server: any agent (Claude Code, Codex, an in-house bot) works through Roster's tools as itself.

Built on the official SDK (``mcp.server.MCPServer``, mcp 2.x). Each request is authenticated: over HTTP
by its ``Authorization: Bearer <token>`` header (the app's gate answers 401 before this server runs when
it is missing or refused), over stdio (``roster mcp``) and in memory by the token given at start. The
token resolves to one principal's :class:`~roster.store.Session`, so every tool acts as that principal,
rights-checked and audited by the same store verbs as the CLI and the REST API, with ``via: mcp`` in
each audit event.

The tools offer every verb an agent has (docs/api.md carries the parity table with the program result,
the ``llm`` runner, REST and the CLI). The inputs of ``save_artifact``, ``record_check``, ``file_task``,
``delegate``, ``message`` and ``remember`` are the fields of the runner's result models
(:class:`~roster.runtime.runners.ArtifactOut`, ``CheckOut``, ``TaskOut``, ``MessageOut``, ``MemoryOut``):
their signatures are generated from those models (:func:`model_tool`), so the two cannot drift. The
same holds for ``set_goal`` and ``revise_plan``, whose inputs are the REST bodies ``GoalIn`` and
``PlanIn`` (:mod:`roster.api.models`). ``my_plan`` and ``revise_plan`` read and revise a mission's plan
(yours by default): the store decides who may (``profile.read``, ``plan.edit``) and refuses a plan that
breaks the plan contract (``plan-refused``) or that a human holds (``plan-held``).

Which tools a principal sees (:func:`granted_tools`) follows the grants the store's rights checks use,
least privilege: see :data:`TOOL_GRANTS`. The list only hides: a hidden tool called anyway runs its
store verb, which is the authority and refuses (and audits) what the principal may not do.

Resources: ``roster://me`` (the caller's own profile, over every transport) and
``roster://agents/{handle}`` (an agent reads its own, a human any): mission, role, KPIs with their latest
readings, and skills (``SKILL.md`` folders under ``skills/`` beside the spec).
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import functools
import inspect
import json
import typing
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo

from roster.api import logs, verbs
from roster.api.auth import SESSION_STATE_KEY, session_from_header
from roster.api.models import GoalIn, GoalOut, PlanIn, PlanOut
from roster.defaults import MAX_ID
from roster.errors import RosterError, UsageError
from roster.kernel.goals import GOAL_STATES
from roster.runtime.context import ContextAssembler, Wakeup
from roster.runtime.runners import ArtifactOut, CheckOut, MemoryOut, MessageOut, TaskOut
from roster.store import Session, Store, audit

DEFAULT_CLAIM_SECONDS = 300.0

EVERYONE = ("whoami", "my_tasks", "context", "read_artifact", "artifact_versions", "artifact_diff", "remember",
            "recall", "message", "inbox", "thread", "mark_read", "escalate", "set_goal", "my_goals", "goal",
            "move_goal", "my_plan", "revise_plan")
MOVERS = ("claim", "transition")
EVIDENCE = ("save_artifact", "record_check")
GATED = ("request_approval",)
CREATORS = ("file_task", "delegate")
APPROVERS = ("approvals", "decide")
HOLDERS = ("hold", "release")
TOOL_GRANTS: dict[str, str] = {
    **{t: "anyone: reads of what you may read, your own pad, messages your rights.message allow, the ladder, "
          "goals (the store: goal.set decides setting and moving one; reading, your own or oversee), plans (the "
          "store: profile.read to read one, plan.edit to revise it)"
       for t in EVERYONE},
    **{t: "a transition grant, tier not read-only (the store: read to claim, transition to move)" for t in MOVERS},
    **{t: "write on a workflow, tier bounded-mutator or high-impact-executor (the store: write)" for t in EVIDENCE},
    **{t: "a granted transition with an approval edge, tier high-impact-executor" for t in GATED},
    **{t: "a create grant, tier not read-only (the store: create)" for t in CREATORS},
    **{t: "humans, and agents with an approve grant (the store: approve, never your own request)"
       for t in APPROVERS},
    **{t: "humans (a hold exists so a human can edit a task while agents wait)" for t in HOLDERS},
}
"""Which grant each tool needs to be listed (docs/api.md shows the same table)."""

_CALLER: contextvars.ContextVar[Session | None] = contextvars.ContextVar("roster_mcp_caller", default=None)
_TOOL: contextvars.ContextVar[str] = contextvars.ContextVar("roster_mcp_tool", default="")


TOOL_SET_OF: dict[str, tuple[str, ...]] = {
    "everyone": EVERYONE, "movers": MOVERS, "evidence": EVIDENCE, "gated": GATED, "creators": CREATORS,
    "approvers": APPROVERS, "holders": HOLDERS}
"""Each tool set Cedar's ``tool.see`` decides (:data:`roster.kernel.rights.TOOL_SETS`) and its tools."""


def granted_tools(session: Session) -> set[str]:
    """The MCP tools ``session``'s principal sees in ``tools/list``: the tools of each set whose
    ``tool.see`` the store's decision allows (the rule is Cedar's; :data:`TOOL_GRANTS` says it in words)."""
    return {tool for name, tools in TOOL_SET_OF.items()
            if session.explain("tool.see", f"toolset:{name}").allowed for tool in tools}


def model_tool(model: type[BaseModel], *before: tuple[str, Any, FieldInfo],
               after: tuple[tuple[str, Any, FieldInfo], ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a tool function ``fn(**kwargs)`` the signature ``(*before, <model's fields>, *after)``: the
    parameters named by ``before``/``after`` as ``(name, annotation, Field(...))``, then every field of
    ``model`` with its own annotation, default, constraints and description. The SDK builds the tool's
    input schema from that signature, so a field added to ``model`` is offered by the tool at once. The
    function is called with every parameter as a keyword; ``model_of(model, kwargs)`` gets the model."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                  for name, annotation, default in before]
        for name, field in model.model_fields.items():
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=field.annotation,
                                            default=FieldInfo.merge_field_infos(field)))
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                   for name, annotation, default in after]

        @functools.wraps(fn)
        def tool(**kwargs: Any) -> Any:
            return fn(**kwargs)

        tool.__signature__ = inspect.Signature(params, return_annotation=typing.get_type_hints(fn)["return"])
        tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": tool.__signature__.return_annotation}
        del tool.__wrapped__  # the SDK must see the generated signature, not fn's
        return tool

    return decorate


def model_of(model: type[BaseModel], kwargs: dict[str, Any]) -> Any:
    """The ``model`` instance of a :func:`model_tool` call's keyword arguments (already validated by the
    SDK against the same fields; validated again here, so the model's own validators run)."""
    return model.model_validate({name: kwargs[name] for name in model.model_fields})


TASK_ID = ("task_id", int, Field(ge=1, le=MAX_ID, description="The task's id."))
FENCING = ("fencing_token", int | None, Field(default=None, ge=0, le=MAX_ID,
                                              description="The fencing token of your claim on the task."))


def create_mcp_server(store: Store, *, token: str | None = None, skills_dir: Path | None = None,
                      workdir: Path | None = None) -> MCPServer:
    """An MCP server over ``store``. ``token`` is the identity for transports without HTTP headers
    (stdio, in-memory); over HTTP each request's bearer token is used instead (checked by the app's
    gate, see :func:`roster.api.app.create_app`). ``workdir``: the spec's folder, where ``set_goal`` runs a
    command check at once (default: the folder holding ``skills_dir``; with neither, only KPI goals are
    checked at once and command checks wait for the runtime)."""
    if workdir is None and skills_dir is not None:
        workdir = skills_dir.parent
    logs.configure()

    def session_for(request: Any) -> Session:
        """The request's session: the one the HTTP gate authenticated, else its bearer header, else the
        start token. Raises :class:`~roster.errors.Unauthenticated`."""
        state = getattr(request, "scope", {}).get("state") or {}
        if SESSION_STATE_KEY in state:
            return state[SESSION_STATE_KEY]
        headers = getattr(request, "headers", None)
        header = headers.get("authorization") if headers is not None else None
        if header is None and token is not None:
            header = f"Bearer {token}"
        return session_from_header(store, header)

    async def identify(ctx: ServerRequestContext, call_next: Callable) -> Any:
        """Resolve the caller once per request (tools and resources read it from a context variable);
        filter ``tools/list`` to the caller's granted tools."""
        try:
            caller = session_for(getattr(ctx, "request", None))
        except RosterError as exc:
            if ctx.method == "tools/list":  # no identity, no tools (over HTTP the gate answered 401 already)
                result = await call_next(ctx)
                result["tools"] = []
                return result
            if ctx.method == "tools/call":
                logs.tool_error(str((ctx.params or {}).get("name")), exc.code, exc.message)
                return _error(f"{exc.code}: a valid bearer token is required")
            return await call_next(ctx)
        bound, named = _CALLER.set(caller), _TOOL.set(str((ctx.params or {}).get("name") or ctx.method))
        try:
            result = await call_next(ctx)
        finally:
            _CALLER.reset(bound)
            _TOOL.reset(named)
        if ctx.method == "tools/list":
            allowed = granted_tools(caller)
            result["tools"] = [t for t in result["tools"] if t["name"] in allowed]
        return result

    with logs.sdk_quiet():
        server = MCPServer("roster", log_level="WARNING", middleware=[identify],
                           instructions="Roster: your queue of work, its contracts, your memory and your team. "
                                        "Call whoami first, then my_tasks; claim a task before you change it.")

    @contextmanager
    def acting() -> Iterator[Session]:
        """The caller's session, with its store writes audited as ``via: mcp``; Roster errors become tool
        errors whose text starts with the error's code."""
        caller = _CALLER.get()
        via = audit.VIA.set("mcp")
        try:
            if caller is None:
                raise ToolError("unauthenticated: a valid bearer token is required")
            yield caller
        except RosterError as exc:
            logs.tool_error(_TOOL.get(), exc.code, exc.message)
            raise ToolError(f"{exc.code}: {exc.message}") from None
        finally:
            audit.VIA.reset(via)

    tool = server.tool

    # -- who and what ----------------------------------------------------------------------------------

    @tool(description="Who you are in Roster: your principal, kind, roles and the tools you may use.")
    def whoami() -> dict[str, Any]:
        with acting() as caller:
            p = caller.principal
            return {"id": p.id, "handle": p.handle, "kind": p.kind, "display_name": p.display_name,
                    "roles": list(p.roles), "status": p.status, "tools": sorted(granted_tools(caller))}

    @tool(description="The tasks you could act on now, most urgent first.")
    def my_tasks(limit: int = Field(default=20, ge=1, le=100)) -> list[dict[str, Any]]:
        with acting() as caller:
            work = caller.pending_work(limit=limit)
            return [{"id": t.id, "workflow": t.workflow, "state": t.state, "title": t.title,
                     "priority": t.priority, "version": t.version} for t in work]

    @tool(description="Your bounded brief for a task: its state and contract (the transitions offered and the "
                      "clauses that block them), what changed since you last looked, your relevant memory, "
                      "messages and recent events.")
    def context(task_id: int = TASK_ID[2]) -> dict[str, Any]:
        with acting() as caller:
            task = caller.get_task(task_id)
            me = caller.principal.handle
            token_ = task.fencing_token if task.lease_holder == me else None
            company = caller.company_for("brief.preview", f"principal:{me}")  # your own (brief:own; humans any)
            return ContextAssembler(company).brief(me, task, Wakeup(f"mcp:{me}", token_)).data

    # -- the lease and the move ----------------------------------------------------------------------

    @tool(description="Claim a task with a lease (seconds) before changing it; returns the fencing token to "
                      "pass to transition, save_artifact and record_check.")
    def claim(task_id: int = TASK_ID[2],
              seconds: float = Field(default=DEFAULT_CLAIM_SECONDS, gt=0, le=3600)) -> dict[str, Any]:
        with acting() as caller:
            lease = caller.claim(task_id, run_id=f"mcp:{uuid.uuid4().hex[:16]}", ttl=seconds)
            return {"task_id": lease.task_id, "fencing_token": lease.fencing_token, "expires_at": lease.expires_at}

    @tool(description="Take a transition of a task under its contract. Pass the fencing token of your claim; "
                      "the lease is released once the transition is done.")
    def transition(task_id: int = TASK_ID[2], transition: str = Field(min_length=1, max_length=63),
                   writes: dict[str, Any] | None = None, rationale: str = Field(default="", max_length=4000),
                   fencing_token: int | None = FENCING[2],
                   expected_version: int | None = Field(default=None, ge=1, le=MAX_ID)) -> dict[str, Any]:
        with acting() as caller:
            version = expected_version or caller.get_task(task_id).version
            task = caller.transition(task_id, transition, expected_version=version, writes=writes or {},
                                     rationale=rationale, fencing_token=fencing_token)
            if fencing_token is not None:
                caller.release(task_id, fencing_token=fencing_token)
            return {"id": task.id, "state": task.state, "version": task.version, "fields": task.fields}

    @tool(description="Ask for a transition on an approval edge: an approval request waits for an approver "
                      "(status 'pending', with its request_id), or the move is done if it needs no approval.")
    def request_approval(task_id: int = TASK_ID[2], transition: str = Field(min_length=1, max_length=63),
                         writes: dict[str, Any] | None = None,
                         rationale: str = Field(default="", max_length=4000)) -> dict[str, Any]:
        with acting() as caller:
            return verbs.request_approval(caller, task_id, transition, writes, rationale)

    # -- evidence ------------------------------------------------------------------------------------

    @tool(description="Save text as the next version of a task's artifact (work not saved is invisible). Pass "
                      "your claim's fencing token.")
    @model_tool(ArtifactOut, TASK_ID, after=(FENCING,))
    def save_artifact(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            return verbs.save_artifact(caller, kwargs["task_id"], model_of(ArtifactOut, kwargs),
                                       kwargs["fencing_token"]).to_dict()

    @tool(description="Record the result of a named check you ran on a task (the contract's requires.checks "
                      "counts the latest result per name). Pass your claim's fencing token.")
    @model_tool(CheckOut, TASK_ID, after=(FENCING,))
    def record_check(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            return verbs.record_check(caller, kwargs["task_id"], model_of(CheckOut, kwargs), kwargs["fencing_token"])

    @tool(description="A task's artifact: one version (default: the latest) with its content, verified against "
                      "its SHA-256; text as UTF-8, anything else as base64 (see 'encoding').")
    def read_artifact(task_id: int = TASK_ID[2], name: str = Field(min_length=1, max_length=255),
                      version: int | None = Field(default=None, ge=1, le=2**31)) -> dict[str, Any]:
        with acting() as caller:
            record, content = caller.artifact(task_id, name, version)
            try:
                text, encoding = content.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                text, encoding = base64.b64encode(content).decode("ascii"), "base64"
            return {**record.to_dict(), "content": text, "encoding": encoding}

    @tool(description="Every version of a task's artifact, oldest first: author, reason, size, SHA-256.")
    def artifact_versions(task_id: int = TASK_ID[2],
                          name: str = Field(min_length=1, max_length=255)) -> list[dict[str, Any]]:
        with acting() as caller:
            return [r.to_dict() for r in caller.artifact_history(task_id, name)]

    @tool(description="A unified diff between two versions of a task's artifact (default: the latest and the "
                      "version before it).")
    def artifact_diff(task_id: int = TASK_ID[2], name: str = Field(min_length=1, max_length=255),
                      from_version: int | None = Field(default=None, ge=1, le=2**31),
                      to_version: int | None = Field(default=None, ge=1, le=2**31)) -> dict[str, Any]:
        with acting() as caller:
            return {"task_id": task_id, "name": name,
                    "diff": caller.artifact_diff(task_id, name, from_version, to_version)}

    # -- filing and delegating -----------------------------------------------------------------------

    @tool(description="File a new task in a workflow (a finding, a piece of work). A reused key returns the "
                      "task filed with it before. To hand a subproblem of your task to someone, use delegate.")
    @model_tool(TaskOut)
    def file_task(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            task, created = verbs.file_task(caller, model_of(TaskOut, kwargs))
            return {"id": task.id, "state": task.state, "workflow": task.workflow, "created": created}

    @tool(description="Delegate a subproblem of a task as a child task carrying a packet: subproblem, context, "
                      "tried, desired_output, and success_condition and/or blocking_threshold. You stay "
                      "accountable: the parent cannot finish while the child is open.")
    @model_tool(TaskOut, ("parent_id", int, Field(ge=1, le=MAX_ID, description="The task you delegate from.")))
    def delegate(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            new = model_of(TaskOut, kwargs)
            if new.packet is None:
                raise UsageError("a delegation needs a packet: subproblem, context, tried, desired_output, "
                                        "and success_condition and/or blocking_threshold")
            task, created = verbs.file_task(caller, new, parent_id=kwargs["parent_id"])
            return {"id": task.id, "state": task.state, "parent_id": task.parent_id, "created": created}

    @tool(description="Say you cannot finish a task: it goes up the ladder, to a peer whose role fits, else a "
                      "human. Say what you tried and why you are stuck.")
    def escalate(task_id: int = TASK_ID[2], reason: str = Field(min_length=1, max_length=4000),
                 category: Literal["judgment", "deterministic", "transient", "governance"] = "judgment",
                 ) -> dict[str, Any]:
        with acting() as caller:
            step = verbs.escalate(caller, task_id, reason, category)
            return {"id": step.id, "step": step.step, "to": step.to, "reason": step.reason}

    # -- memory --------------------------------------------------------------------------------------

    @tool(description="Remember one short statement in your own memory pad (expires_in: seconds).")
    @model_tool(MemoryOut)
    def remember(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            entry = verbs.remember(caller, model_of(MemoryOut, kwargs), {"via": "mcp"})
            return {"id": entry.id, "pad": entry.pad, "kind": entry.kind}

    @tool(description="Search your memory pad (full text, best first).")
    def recall(query: str = Field(default="", max_length=1000),
               limit: int = Field(default=8, ge=1, le=50)) -> list[dict[str, Any]]:
        with acting() as caller:
            return [{"id": e.id, "kind": e.kind, "text": e.text, "confidence": e.confidence, "score": e.score}
                    for e in caller.recall(query, limit=limit)]

    # -- messages ------------------------------------------------------------------------------------

    @tool(description="Send a message to a principal of your company; to reply, set thread_id (the thread's "
                      "id from inbox or thread).")
    @model_tool(MessageOut)
    def message(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            sent = verbs.send(caller, model_of(MessageOut, kwargs))
            return {"id": sent.id, "thread_id": sent.thread_id}

    @tool(description="Your messages, newest first (unread only by default). Reading does not mark them read: "
                      "call mark_read with the ids you dealt with.")
    def inbox(unread_only: bool = True, limit: int = Field(default=20, ge=1, le=200)) -> list[dict[str, Any]]:
        with acting() as caller:
            return [m.to_dict() for m in caller.message_inbox(unread_only=unread_only, limit=limit)]

    @tool(description="A message thread you are in, oldest first.")
    def thread(thread_id: int = Field(ge=1, le=MAX_ID)) -> list[dict[str, Any]]:
        with acting() as caller:
            return [m.to_dict() for m in caller.thread(thread_id)]

    @tool(description="Mark messages addressed to you as read; returns how many changed.")
    def mark_read(message_ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]],
                                        Field(min_length=1, max_length=500)]) -> dict[str, Any]:
        with acting() as caller:
            return {"marked": caller.mark_read(list(message_ids))}

    # -- humans: holds and approvals -----------------------------------------------------------------

    @tool(description="Hold a task (take its lease as yourself, default 8 hours) so agents wait while you edit.")
    def hold(task_id: int = TASK_ID[2], hours: float = Field(default=8.0, gt=0, le=168),
             note: str = Field(default="", max_length=4000)) -> dict[str, Any]:
        with acting() as caller:
            lease = caller.hold(task_id, ttl=hours * 3600, note=note)
            return dataclasses.asdict(lease)

    @tool(description="Release a task you hold, with a note for whoever works on it next (their brief shows it "
                      "and what changed).")
    def release(task_id: int = TASK_ID[2], note: str = Field(default="", max_length=4000)) -> dict[str, Any]:
        with acting() as caller:
            caller.release_hold(task_id, note=note)
            return {"task_id": task_id, "released": True}

    @tool(description="Pending approval requests you may decide (never your own), with their evidence.")
    def approvals() -> list[dict[str, Any]]:
        with acting() as caller:
            return [dataclasses.asdict(r) for r in caller.inbox()]

    @tool(description="Approve or reject approval requests, each on its own (one refusal does not undo the "
                      "others). A rejection needs a note saying why, for the requester.")
    def decide(decisions: Annotated[list[verbs.Decision], Field(min_length=1, max_length=100)]) -> list[dict[str, Any]]:
        with acting() as caller:
            done = verbs.decide(caller, decisions)
            return [dataclasses.asdict(d) for d in done]

    # -- goals ---------------------------------------------------------------------------------------

    def goal_json(goal: Any) -> dict[str, Any]:
        return GoalOut.of(goal).model_dump()

    @tool(description="Set a goal for an agent (yourself, or an agent that reports to you): an objective, exactly "
                      "one check (kpi_check such as 'lint_findings<=5', or check: a KPI target, or a command, "
                      "which only humans set) and a budget (at least one of usd, tokens, runs, seconds). It is "
                      "checked at once: a check that already passes meets it.")
    @model_tool(GoalIn)
    def set_goal(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            try:
                new = model_of(GoalIn, kwargs)
            except ValidationError as exc:
                raise UsageError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
            return goal_json(verbs.set_goal(caller, new, workdir))

    @tool(description="Goals, newest first: your own and those you set (every goal if you oversee the company), "
                      "with their check, the evidence of the last one, spend against budget and state.")
    def my_goals(agent: str | None = Field(default=None, max_length=63),
                 state: Literal[GOAL_STATES] | None = None,  # type: ignore[valid-type]
                 limit: int = Field(default=20, ge=1, le=100)) -> list[dict[str, Any]]:
        with acting() as caller:
            return [goal_json(g) for g in caller.list_goals(agent=agent, state=state, limit=limit)]

    @tool(description="One goal: its check and the evidence of the last one, its spend against budget, its state.")
    def goal(goal_id: int = Field(ge=1, le=MAX_ID, description="The goal's id.")) -> dict[str, Any]:
        with acting() as caller:
            return goal_json(caller.get_goal(goal_id))

    @tool(description="Pause a goal (its agent is not woken for it), resume a paused or stalled one, or abandon "
                      "one for good; the note says why.")
    def move_goal(goal_id: int = Field(ge=1, le=MAX_ID, description="The goal's id."),
                  move: Literal["pause", "resume", "abandon"] = Field(),
                  note: str = Field(default="", max_length=4000),
                  expected_version: int | None = Field(default=None, ge=1, le=MAX_ID)) -> dict[str, Any]:
        with acting() as caller:
            return goal_json(caller.move_goal(goal_id, move, note=note, expected_version=expected_version))

    # -- missions: the plan ----------------------------------------------------------------------------

    agent_param = ("agent", str | None, Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,62}$",
                                               description="The agent whose plan it is; default: you."))

    @tool(description="Your mission's plan: the current version (priorities, goals linked to KPIs, what you "
                      "stop doing; null before the first) and the newest versions, each with its author, reason "
                      "and diff against the one before. Another agent's plan is readable by humans and by the agent "
                      "it reports to.")
    def my_plan(agent: str | None = agent_param[2],
                history: int = Field(default=5, ge=0, le=100, description="How many versions to list, "
                                     "newest first (0: none).")) -> dict[str, Any]:
        with acting() as caller:
            handle = agent or caller.principal.handle
            current = caller.plan(handle)
            versions = verbs.plan_history(caller, handle, history) if history else []
            return {"agent": handle,
                    "current": PlanOut.of(current).model_dump() if current is not None else None,
                    "history": [{**PlanOut.of(v).model_dump(), "diff": diff} for v, diff in versions]}

    @tool(description="Save the next version of a plan (yours by default, or of an agent that reports to you) "
                      "with the reason it changes. It obeys the plan contract: at least one priority, and at "
                      "least one goal linked to a KPI (kpi such as 'lint_findings<=5') or no_kpi_goal_because "
                      "saying why none is; a plan that breaks it is refused (plan-refused, naming the clause) and "
                      "the current one stays. While a human holds the plan it is refused (plan-held).")
    @model_tool(PlanIn, agent_param)
    def revise_plan(**kwargs: Any) -> dict[str, Any]:
        with acting() as caller:
            try:
                new = model_of(PlanIn, kwargs)
            except ValidationError as exc:
                raise UsageError("; ".join(e["msg"] for e in exc.errors())) from None
            handle = kwargs["agent"] or caller.principal.handle
            return PlanOut.of(caller.revise_plan(handle, new.plan, reason=new.reason)).model_dump()

    # -- resources -----------------------------------------------------------------------------------

    def profile(caller: Session, handle: str) -> str:
        if not caller.explain("profile.read", f"principal:{handle}").allowed:  # profile:own, humans
            raise ResourceError(f"'{caller.principal.handle}' may read only its own profile; read roster://me")
        spec = caller.spec()
        agent = spec.agents.get(handle)
        if agent is None:
            raise ResourceError(f"no agent '{handle}' in company '{caller.principal.company}': the agents are "
                                f"{', '.join(sorted(spec.agents)) or 'none'}")
        summaries = caller.kpi_summaries() if agent.kpis else {}
        latest = {name: ({"value": s.latest.value, "measured_at": s.latest.measured_at}
                         if (s := summaries.get(name)) is not None and s.latest is not None else None)
                  for name in agent.kpis}
        return json.dumps({"handle": handle, "mission": agent.mission, "role": agent.role,
                           "kpis": list(agent.kpis), "kpi_latest": latest, "skills": read_skills(skills_dir)},
                          sort_keys=True)

    def reader() -> Session:
        caller = _CALLER.get()
        if caller is None:
            raise ResourceError("unauthenticated: a valid bearer token is required")
        return caller

    @server.resource("roster://me", mime_type="application/json",
                     description="Your mission, role, KPIs with their latest readings, and skills.")
    def me() -> str:
        caller = reader()
        if caller.principal.kind == "human":
            return json.dumps({"handle": caller.principal.handle, "kind": "human", "roles": list(caller.principal.roles),
                               "skills": read_skills(skills_dir)}, sort_keys=True)
        return profile(caller, caller.principal.handle)

    @server.resource("roster://agents/{handle}", mime_type="application/json",
                     description="An agent's mission, role, KPIs and skills (Agent Skills SKILL.md folders); "
                                 "an agent reads its own, a human any.")
    def agent_profile(handle: str) -> str:
        return profile(reader(), handle)

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
