"""The dashboard's pages (GET), each a read through the signed-in human's :class:`Session`: what the
human may not read is not shown (a workflow they may not read is a 403 page, a task a 404).

Each handler is a plain function run in the thread pool (the store is synchronous); a refused read
renders the error page with the REST API's status for the same error.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from roster.errors import NotFound, RosterError
from roster.store import board
from roster.store.store import format_ts
from roster.web import charts
from roster.web.render import fragment, page, refused
from roster.web.signin import Looking, Viewer

router = APIRouter(include_in_schema=False)
PAGE = 50
"""Rows per page of the lists (audit, runs)."""


def _guarded(request: Request, who: Viewer, build) -> Response:
    try:
        return build()
    except RosterError as exc:
        return refused(request, who, exc)


def _readable_workflows(who: Viewer) -> list[str]:
    spec = who.session.spec()
    return [w for w in spec.workflows if who.session.explain("read", f"workflow:{w}").allowed]


def _oversees(who: Viewer) -> bool:
    return who.session.explain("oversee", "company").allowed


# -- overview ------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: Looking) -> Response:
    def build() -> Response:
        return page(request, "overview.html", who, title="Overview", **_overview(who))
    return _guarded(request, who, build)


@router.get("/parts/overview", response_class=HTMLResponse)
def overview_part(request: Request, who: Looking) -> Response:
    return _guarded(request, who, lambda: fragment(request, "overview_body.html", who, **_overview(who)))


def _overview(who: Viewer) -> dict[str, Any]:
    session = who.session
    spec = session.spec()
    approvals = session.inbox()
    escalations = session.list_escalations(status="open")
    unread = session.message_inbox(unread_only=True, limit=20)
    figures: dict[str, Any] = {"approvals": approvals, "escalations": escalations, "unread": unread}
    if _oversees(who):
        company = session.company_for("oversee", "company")
        now = board.agents_now(company)
        agents = [p for p in session.list_principals() if p.kind == "agent"]
        paused_scopes = company.paused()
        counts: Counter[str] = Counter()
        for p in agents:
            if p.status != "active":
                counts["paused" if p.status == "paused" else "retired"] += 1
            elif now.get(p.handle, {}).get("escalated"):
                counts["blocked"] += 1
            elif now.get(p.handle, {}).get("waiting"):
                counts["waiting"] += 1
            elif now.get(p.handle, {}).get("running"):
                counts["working"] += 1
            elif p.handle in spec.agents and spec.agents[p.handle].triggers:
                counts["watching"] += 1
            else:
                counts["idle"] += 1
        [today] = session.presence(days=1)["days"]  # the always-on metric over the last 24 hours
        hourly = board.runs_per_hour(company)
        budgets = []
        for b in spec.budgets:
            status = company.budget_status(b)
            budgets.append({"scope": b.scope, "period": b.period, "text": status.describe(),
                            "level": status.level(b.warn_at)})
        figures.update(counts=counts, hourly=hourly, hourly_chart=charts.runs_per_hour(hourly), budgets=budgets,
                       paused_scopes=paused_scopes, agents_total=len(agents),
                       always_on={"agents": today["around_the_clock"], "of": len(today["agents"])})
    kpis = []
    for name, summary in session.kpi_summaries().items():
        readings = list(reversed(session.kpi_readings(name, limit=30)))
        kpis.append({"name": name, "latest": summary.latest, "readings": len(readings),
                     "chart": charts.trend(name, [r.value for r in readings])})
    figures["kpis"] = kpis
    return figures


# -- inbox ---------------------------------------------------------------------------------------------


@router.get("/inbox", response_class=HTMLResponse)
def inbox(request: Request, who: Looking) -> Response:
    def build() -> Response:
        session = who.session
        pending = session.inbox()
        rejected: dict[int, list[Any]] = {}
        tasks = sorted({r.task_id for r in pending if r.task_id is not None})
        if tasks:  # one read, of the rejected requests on the pending ones' tasks only
            for r in session.list_requests(status="rejected", task_ids=tasks):
                rejected.setdefault(r.task_id, []).append(r)
        approvals = [{"request": r, "earlier": rejected.get(r.task_id, [])[-5:]} for r in pending]
        return page(request, "inbox.html", who, title="Inbox", approvals=approvals,
                    escalations=session.list_escalations(status="open"),
                    messages=session.message_inbox(limit=30))
    return _guarded(request, who, build)


# -- org chart -------------------------------------------------------------------------------------------


@router.get("/org", response_class=HTMLResponse)
def org(request: Request, who: Looking) -> Response:
    def build() -> Response:
        session = who.session
        spec = session.spec()
        people = {p.handle: p for p in session.list_principals()}
        paused_scopes = session.company_for("oversee", "company").paused() if _oversees(who) else []
        readable = set(_readable_workflows(who))
        company_wide = who.company_wide
        tree = []
        for ws_name, ws in spec.workspaces.items():
            portfolios = []
            for pf_name in ws.portfolios:
                scope = f"{ws_name}/{pf_name}"
                workflows = [w for w, wf in spec.workflows.items() if wf.portfolio == scope and w in readable]
                if workflows or company_wide:  # a scoped human sees only the portfolios they work in
                    portfolios.append({"name": pf_name, "scope": scope, "workflows": workflows,
                                       "paused": scope in paused_scopes})
            if portfolios:
                tree.append({"name": ws_name, "portfolios": portfolios})
        rows: dict[str | None, list[dict[str, Any]]] = {}
        for handle, p in sorted(people.items()):
            agent = spec.agents.get(handle)
            boss = p.reports_to if p.reports_to in people and p.reports_to != handle else None
            rows.setdefault(boss, []).append({"p": p, "tier": agent.tier if agent else "human",
                                              "role": agent.role if agent else ""})
        return page(request, "org.html", who, title="Org chart", company=spec.company,
                    display_name=spec.display_name or spec.company, tree=tree, reports=rows,
                    admin=session.explain("admin", "company").allowed,
                    company_paused="*" in paused_scopes or "company" in paused_scopes)
    return _guarded(request, who, build)


# -- boards ----------------------------------------------------------------------------------------------


@router.get("/boards", response_class=HTMLResponse)
def boards(request: Request, who: Looking) -> Response:
    def build() -> Response:
        spec = who.session.spec()
        readable = _readable_workflows(who)
        rows = [{"name": w, "portfolio": spec.workflows[w].portfolio, "description": spec.workflows[w].description}
                for w in readable]
        return page(request, "boards.html", who, title="Boards", rows=rows)
    return _guarded(request, who, build)


@router.get("/boards/{workflow}", response_class=HTMLResponse)
def workflow_board(request: Request, who: Looking, workflow: str, owner: str = "", q: str = "") -> Response:
    def build() -> Response:
        return page(request, "board.html", who, title=f"Board: {workflow}", **_board(who, workflow, owner, q))
    return _guarded(request, who, build)


@router.get("/parts/boards/{workflow}", response_class=HTMLResponse)
def board_part(request: Request, who: Looking, workflow: str, owner: str = "", q: str = "") -> Response:
    return _guarded(request, who, lambda: fragment(request, "board_columns.html", who,
                                                   **_board(who, workflow, owner, q)))


@router.get("/boards/{workflow}/{state}", response_class=HTMLResponse)
def board_column(request: Request, who: Looking, workflow: str, state: str, owner: str = "", q: str = "",
                 offset: int = Query(0, ge=0, le=10_000_000)) -> Response:
    def build() -> Response:
        company = who.session.company_for("read", f"workflow:{workflow}")
        tasks = board.column(company, workflow, state, owner=owner or None, title=q, offset=offset, limit=PAGE + 1)
        return page(request, "column.html", who, title=f"{workflow}: {state}", workflow=workflow, state=state,
                    tasks=tasks[:PAGE], more=len(tasks) > PAGE, offset=offset, owner=owner, q=q, page_size=PAGE)
    return _guarded(request, who, build)


def _board(who: Viewer, workflow: str, owner: str, q: str) -> dict[str, Any]:
    if workflow not in who.session.spec().workflows:
        raise NotFound(f"no workflow '{workflow}'; the boards page lists the ones you may read")
    company = who.session.company_for("read", f"workflow:{workflow}")  # Denied (403) if not readable
    wf = who.session.spec().workflows[workflow]  # readable, so it exists
    counts = board.state_counts(company, workflow, owner=owner or None, title=q)
    columns = [{"state": s, "count": counts.get(s, 0),
                "tasks": board.column(company, workflow, s, owner=owner or None, title=q, limit=25) if counts.get(s) else []}
               for s in wf.states]
    return {"workflow": workflow, "columns": columns, "owner": owner, "q": q, "total": sum(counts.values())}


# -- task ------------------------------------------------------------------------------------------------


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, who: Looking, task_id: int) -> Response:
    def build() -> Response:
        session = who.session
        task = session.get_task(task_id)
        spec = session.spec()
        history = session.history(task_id)
        artifacts = session.list_artifacts(task_id, all_versions=True)
        diffs = {}
        for a in artifacts:
            if a.version > 1:
                try:
                    diffs[(a.name, a.version)] = session.artifact_diff(task_id, a.name, a.version - 1, a.version)
                except RosterError:
                    pass
        checks = [e for e in history if e.action == "check.record"]
        runs = session.list_runs(task_id=task_id, limit=20)
        held = task.lease_holder == who.handle and (task.lease_run or "").startswith("hold:")
        agents = sorted({a for o in session.options(task_id) for a in o.by if a in spec.agents} | (
            {task.owner} if task.owner in spec.agents else set()))
        return page(request, "task.html", who, title=f"Task {task_id}", task=task, history=history, agents=agents,
                    artifacts=artifacts, diffs=diffs, checks=checks, options=session.options(task_id), runs=runs,
                    held=held, fields_schema=spec.workflows[task.workflow].fields,
                    fields_json=json.dumps(task.fields, indent=2, sort_keys=True))
    return _guarded(request, who, build)


@router.get("/tasks/{task_id}/brief/{agent}", response_class=HTMLResponse)
def brief_page(request: Request, who: Looking, task_id: int, agent: str) -> Response:
    def build() -> Response:
        from roster.runtime.brief_text import render
        from roster.runtime.context import ContextAssembler, Wakeup
        from roster.runtime.llm import OUTPUT_TOOL

        session = who.session
        task = session.get_task(task_id)  # the viewer must be able to read the task
        if agent not in session.spec().agents:
            raise NotFound(f"no agent '{agent}' in this company")
        company = session.company_for("brief.preview", f"principal:{agent}")
        brief = ContextAssembler(company).brief(agent, task, Wakeup("preview", task.fencing_token or None)).data
        return page(request, "brief.html", who, title=f"Brief of {agent} for task {task_id}", task=task,
                    agent=agent, text=render(brief, (), output_tool=OUTPUT_TOOL), report=brief["context"])
    return _guarded(request, who, build)


# -- agents ----------------------------------------------------------------------------------------------


@router.get("/agents", response_class=HTMLResponse)
def agents(request: Request, who: Looking) -> Response:
    def build() -> Response:
        session = who.session
        spec = session.spec()
        rows = [{"p": p, "spec": spec.agents.get(p.handle)} for p in session.list_principals() if p.kind == "agent"]
        now = board.agents_now(session.company_for("oversee", "company")) if _oversees(who) else {}
        return page(request, "agents.html", who, title="Agents", rows=rows, now=now)
    return _guarded(request, who, build)


@router.get("/agents/{handle}", response_class=HTMLResponse)
def agent_page(request: Request, who: Looking, handle: str) -> Response:
    def build() -> Response:
        session = who.session
        principal = session.get_principal(handle)
        spec = session.spec()
        agent = spec.agents.get(handle)
        try:
            memory = session.list_memory(pads=[handle], limit=30)
        except RosterError as exc:
            memory = str(exc)
        company_wide = who.company_wide
        fitness = session.fitness(agent=handle)["agents"] if company_wide else []  # needs read on the company
        return page(request, "agent.html", who, title=f"Agent {handle}", principal=principal, agent=agent,
                    runs=session.list_runs(agent=handle, limit=20), goals=session.list_goals(agent=handle, limit=20),
                    memory=memory, fitness=next((a for a in fitness if a["agent"] == handle), None),
                    stages=session.stages(agent=handle) if company_wide else [], plan=_plan(session, handle))
    return _guarded(request, who, build)


def _plan(session, handle: str) -> Any:
    try:
        return session.plan(handle)
    except RosterError:
        return None


# -- audit -----------------------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, who: Looking, principal: str = "", action: str = "", task: str = "",
               before: int = Query(0, ge=0)) -> Response:
    def build() -> Response:
        events = _audit_events(who, principal, action, task, before)
        return page(request, "audit.html", who, title="Audit", events=events[:PAGE],
                    more=events[PAGE].seq if len(events) > PAGE else None, principal=principal, action=action,
                    task=task, verified=request.query_params.get("verified"))
    return _guarded(request, who, build)


def _audit_events(who: Viewer, principal: str, action: str, task: str, before: int) -> list[Any]:
    task_id = int(task) if task.isdigit() else None
    return who.session.audit_log(principal=principal or None, action=action or None, task_id=task_id,
                                 newest_first=True, limit=PAGE + 1, before_seq=before or None)


@router.get("/audit/verify", response_class=HTMLResponse)
def verification(request: Request, who: Looking) -> Response:
    def build() -> Response:
        who.session.audit_log(limit=1)  # may this human read the audit log at all (403 otherwise)
        job = request.app.state.verifications.latest(who.session.principal.company)
        return page(request, "verified.html", who, title="Audit chain", job=job)
    return _guarded(request, who, build)


EXPORT_PAGE = 1000
"""Events read per query while an export streams."""


@router.get("/audit/export")
def audit_export(request: Request, who: Looking, principal: str = "", action: str = "", task: str = "") -> Response:
    task_id = int(task) if task.isdigit() else None
    query = {"principal": principal or None, "action": action or None, "task_id": task_id}
    try:
        first = who.session.audit_log(**query, limit=EXPORT_PAGE)  # refused here (403), before streaming
    except RosterError as exc:
        return refused(request, who, exc)

    def lines() -> Iterator[str]:
        page_ = first
        while page_:
            for e in page_:
                yield json.dumps({"seq": e.seq, "ts": e.ts, "principal": e.principal, "action": e.action,
                                  "subject": e.subject, "data": e.data, "prev_hash": e.prev_hash,
                                  "hash": e.hash}, sort_keys=True) + "\n"
            page_ = who.session.audit_log(**query, after_seq=page_[-1].seq, limit=EXPORT_PAGE)

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="roster-audit.jsonl"'})


# -- webhooks ------------------------------------------------------------------------------------------


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks(request: Request, who: Looking, hook: str = "", status: str = "") -> Response:
    def build() -> Response:
        spec = who.session.spec()
        rows = who.session.webhook_deliveries(hook=hook or None, status=status or None, limit=PAGE)
        return page(request, "webhooks.html", who, title="Webhooks", hooks=spec.webhooks, rows=rows, hook=hook,
                    status=status)
    return _guarded(request, who, build)


# -- costs -----------------------------------------------------------------------------------------------


@router.get("/costs", response_class=HTMLResponse)
def costs(request: Request, who: Looking, days: int = Query(30, ge=1, le=366)) -> Response:
    def build() -> Response:
        company = who.session.company_for("read", "company")  # costs are company-wide: Denied (403) otherwise
        since = format_ts(company.store.clock() - timedelta(days=days))
        spent = who.session.costs(since=since)
        daily = board.spend_per_day(company, since=since)
        return page(request, "costs.html", who, title="Costs", spent=spent, days=days, since=since, daily=daily,
                    chart=charts.spend_per_agent(spent.get("agents", [])), daily_chart=charts.spend_per_day(daily))
    return _guarded(request, who, build)
