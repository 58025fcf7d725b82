"""Every dashboard page at population scale (issue 18: 1,000 agents and 100,000 tasks, each page under 1 s).

One company applied through the real store (``store.apply``): one workspace of four portfolios, six
workflows, ``--agents`` agents (default 1,000) in eight pools, a third of them with a program runner and
the on-call and triage pools with triggers, reporting to a pool lead who reports to a human; four humans,
``carol`` working in the ``eng/web`` portfolio only; three KPIs and three budgets. Then a month of history
inserted as rows into the real tables in one transaction (the pages read the record; how the rows got
there does not matter to them): ``--tasks`` tasks (default 100,000) spread over the workflows and their
states (most finished, as in a real record), a fifth of them owned; ``--runs`` runs (default one per task)
over the last 30 days, priced, some failed, about 150 still running; approval requests (a few hundred
pending, the rest decided), escalations (a few hundred open), messages (some to the humans, unread),
KPI readings every 3 hours, memory entries in a fifth of the agents' pads. The audit chain goes through
the real append path (:func:`roster.store.audit.append`, so hashes, state hashes and the chain head are
the real ones and ``roster audit verify`` passes): a ``task.create`` per task, a ``task.transition`` per
task past its initial state, an event per approval request and per message; more audit events than
tasks. One task gets a real history through the verbs (created, built with an artifact in two versions,
a check, verified, its merge waiting for approval) and runs.

Measured through the real ASGI app in-process (``fastapi.testclient.TestClient`` on ``create_app``,
signed in through the sign-in form), as ``lead`` (the whole company) and as ``carol`` (one portfolio):
every page (overview, inbox, org chart, boards, the biggest board, the biggest column at ``offset`` 0 and
deep, a filtered board and column, the task with history, agents, an agent, the audit log newest, deep
by ``before`` and filtered by ``action``, costs, the overview fragment). Before timing, each page is
checked against what was seeded (status 200 and the counts, titles or handles it must show). One
warm-up round, then ``--repeat`` rounds (default 5) that take turns; median and max per page, and the
ratio to the REST ``GET /api/v1/tasks?limit=50`` measured in the same rounds (absolute times on a
shared machine are noise; the ratios are measured in the same run). The verify-chain button (``POST
/audit/verify``, a walk of the whole chain) is timed separately, to its answer and to its result (the
same while the walk runs in the request; polled on ``GET /audit/verify`` once it runs in the
background): it is not a page and scales with the chain by design.

The store's clock runs at the real pace but from 20:00 UTC on the last day of the current month (an
offset fixed at start), so the whole 30-day record falls in this month and the overview's month budgets
sum a whole month of runs, their worst case; ``--real-clock`` keeps the real date.

Usage: python bench/dashboard.py [--agents N] [--tasks N] [--runs N] [--backend sqlite|postgresql|both]
                                 [--repeat N] [--deep N] [--real-clock] [--profile PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pg import pg_schema  # bench/pg.py, beside this script
from sqlalchemy import func, insert, select, text

from roster.specfile import parse_spec
from roster.store import Store
from roster.store import audit as store_audit
from roster.store.schema import (
    approval_requests,
    audit_events,
    escalations,
    kpi_readings,
    memory_entries,
    messages,
    runs,
    tasks,
)
from roster.store.store import format_ts, utc_now

COMPANY = "bench"
DAY = 86400

WORKFLOWS = {
    # name: (portfolio, states with their share of the workflow's tasks, transitions, share of all tasks)
    "fix": ("eng/core", {"todo": 20, "built": 8, "verified": 4, "merged": 63, "rejected": 5},
            {"build": ("todo", "built", "builder"), "verify": ("built", "verified", "qa"),
             "merge": ("verified", "merged", "merger"), "reject": ("todo", "rejected", "qa")}, 45),
    "review": ("eng/core", {"open": 15, "approved": 70, "declined": 15},
               {"approve": ("open", "approved", "reviewer"), "decline": ("open", "declined", "reviewer")}, 15),
    "site": ("eng/web", {"todo": 20, "doing": 10, "done": 70},
             {"start": ("todo", "doing", "webdev"), "finish": ("doing", "done", "webdev")}, 15),
    "etl": ("eng/data", {"queued": 10, "loaded": 90}, {"load": ("queued", "loaded", "etl")}, 10),
    "incident": ("eng/ops", {"open": 5, "triaged": 10, "closed": 85},
                 {"triage": ("open", "triaged", "oncall"), "close": ("triaged", "closed", "oncall")}, 10),
    "triage": ("eng/ops", {"new": 30, "sorted": 70}, {"sort": ("new", "sorted", "triager")}, 5),
}
POOLS = {"builder": 30, "qa": 15, "merger": 3, "reviewer": 10, "webdev": 15, "etl": 10, "oncall": 8, "triager": 9}
"""Per pool: its share of the agents (per cent)."""
POOL_WORKFLOW = {"builder": "fix", "qa": "fix", "merger": "fix", "reviewer": "review", "webdev": "site",
                 "etl": "etl", "oncall": "incident", "triager": "triage"}
HUMANS = {"lead": "{display_name: Lead}", "dana": "{roles: [reviewer]}", "carol": "{scopes: [eng/web]}",
          "omar": "{scopes: [eng/ops]}"}
KPIS = {"defects": "fix", "lead_time": "triage", "uptime": "incident"}
MODELS = ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1-mini", "google-gla:gemini-2.5-flash"]
USD_PER_MTOK = {"anthropic:claude-sonnet-4-5": 6.0, "openai:gpt-4.1-mini": 0.8, "google-gla:gemini-2.5-flash": 0.6}
REFERENCE = "REST /api/v1/tasks?limit=50"
VERIFY_ANSWER = "POST /audit/verify, its answer"
VERIFY = "POST /audit/verify, until the result (whole chain)"


def pools(n_agents: int) -> dict[str, list[str]]:
    """Agent handles per pool (``b0000``...), the pools' shares of ``n_agents``."""
    sizes = {role: max(1, n_agents * share // 100) for role, share in POOLS.items()}
    sizes["builder"] += n_agents - sum(sizes.values())
    return {role: [f"{role[:2]}{i:04d}" for i in range(n)] for role, n in sizes.items()}


def spec_text(n_agents: int) -> str:
    lines = ["company: bench", "workspaces:", "  eng:",
             "    portfolios: {core: {}, web: {}, data: {}, ops: {}}", "workflows:"]
    for name, (portfolio, states, transitions, _) in WORKFLOWS.items():
        first = next(iter(states))
        kpis = [k for k, w in KPIS.items() if w == name]
        lines += [f"  {name}:", f"    portfolio: {portfolio}", f"    states: [{', '.join(states)}]",
                  f"    initial: {first}", "    fields:", "      branch: {type: string}", "      area: {type: string}"]
        if kpis:
            lines.append(f"    kpis: [{', '.join(kpis)}]")
        lines.append("    transitions:")
        for t, (src, dst, role) in transitions.items():
            extra = ", approval: {by: [human]}" if t == "merge" else ", writes: [branch]" if t == "build" else ""
            lines.append(f"      {t}: {{from: {src}, to: {dst}, by: [{role}, human]{extra}}}")
    lines += ["kpis:"] + [f"  {k}: {{direction: {'up' if k == 'uptime' else 'down'}}}" for k in KPIS]
    lines += ["budgets:", "  - {scope: company, usd: 50000, period: month, warn_at: 0.8}",
              "  - {scope: 'portfolio:eng/core', usd: 20000, period: month}",
              "  - {scope: 'agent:bu0000', usd: 50, period: day}", "agents:"]
    for role, handles in pools(n_agents).items():
        for i, h in enumerate(handles):
            tier = "high-impact-executor" if role == "merger" else "bounded-mutator"
            parts = [f"roles: [{role}]", f"tier: {tier}", f"reports_to: {'lead' if i == 0 else handles[0]}"]
            if i % 3 == 0:
                parts.append("runner: {kind: program, callable: 'json:dumps'}")
            if role == "oncall":
                parts.append("triggers: [{every: 10m}]")
            elif role == "triager":
                parts.append("triggers: [{event: new-ticket}]")
            lines.append(f"  {h}: {{{', '.join(parts)}}}")
    lines += ["humans:"] + [f"  {h}: {v}" for h, v in HUMANS.items()]
    return "\n".join(lines) + "\n"


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _path_to(workflow: str, state: str) -> list[tuple[str, str, str]]:
    """The transitions from the initial state to ``state`` (a chain in these workflows), as (name, from, to)."""
    _, states, transitions, _ = WORKFLOWS[workflow]
    path, at = [], next(iter(states))
    while at != state:
        name, (src, dst, _) = next((t, v) for t, v in transitions.items() if v[0] == at
                                   and (v[1] == state or _reaches(workflow, v[1], state)))
        path.append((name, src, dst))
        at = dst
    return path


def _reaches(workflow: str, start: str, goal: str) -> bool:
    transitions = WORKFLOWS[workflow][2]
    frontier = [start]
    while frontier:
        at = frontier.pop()
        if at == goal:
            return True
        frontier += [dst for src, dst, _ in transitions.values() if src == at]
    return False


def seed(store: Store, *, n_agents: int, n_tasks: int, n_runs: int, seed_value: int = 18) -> dict[str, Any]:
    """Insert the record and append its audit events, in one transaction; returns what was seeded."""
    rng = random.Random(seed_value)
    now = store.clock()
    start = now - timedelta(days=30)
    span = timedelta(days=30).total_seconds() - 60
    agents = pools(n_agents)
    handles = [h for hs in agents.values() for h in hs]
    by_workflow = {wf: [h for role, hs in agents.items() if POOL_WORKFLOW[role] == wf for h in hs] for wf in WORKFLOWS}
    flows = list(WORKFLOWS)
    flow_weights = [WORKFLOWS[f][3] for f in flows]

    def at(seconds: float) -> str:
        return format_ts(start + timedelta(seconds=seconds))

    task_rows: list[dict[str, Any]] = []
    events: list[tuple[str, str, str, str, dict]] = []  # (ts, principal, action, subject, data)
    for tid in range(1, n_tasks + 1):
        flow = rng.choices(flows, weights=flow_weights)[0]
        state = _weighted(rng, WORKFLOWS[flow][1])
        born = rng.uniform(0, span - 3600)
        created, updated = at(born), at(min(span, born + rng.uniform(60, 3 * DAY)))
        owner = rng.choice(by_workflow[flow]) if rng.random() < 0.2 else None
        path = _path_to(flow, state)
        title = f"{flow} #{tid}: {rng.choice(['flaky test', 'lint E501', 'slow query', 'broken link', 'retry storm'])}"
        task_rows.append({"company_id": COMPANY, "id": tid, "workflow": flow, "state": state, "title": title,
                          "fields": json.dumps({"area": f"a{tid % 17}"}), "owner": owner,
                          "priority": rng.choices([0, 1, 2, 3], weights=[60, 25, 10, 5])[0],
                          "version": 1 + len(path), "created_by": "lead", "created_at": created,
                          "updated_at": updated if path else created, "fencing_token": 0})
        events.append((created, "lead", "task.create", f"task:{tid}",
                       {"workflow": flow, "state": next(iter(WORKFLOWS[flow][1])), "title": title,
                        "fields": {"area": f"a{tid % 17}"}, "owner": owner, "priority": task_rows[-1]["priority"],
                        "parent_id": None, "idempotency_key": None, "version": 1}))
        if path:  # one event for its last move: the chain grows with the record, not with every step
            name, src, dst = path[-1]
            events.append((updated, rng.choice(by_workflow[flow]), "task.transition", f"task:{tid}",
                           {"transition": name, "from": src, "to": dst, "writes": {}, "version": 1 + len(path)}))
    task_ids = {f: [t["id"] for t in task_rows if t["workflow"] == f] for f in flows}

    run_rows = []
    for i in range(n_runs):
        started = start + timedelta(seconds=span * i / n_runs)
        flow = rng.choices(flows, weights=flow_weights)[0]
        agent = rng.choice(by_workflow[flow])
        model = MODELS[hash(agent) % len(MODELS)] if not agent.endswith(("0", "3", "6", "9")) else None
        row = {"company_id": COMPANY, "id": f"r{i:09d}", "agent": agent, "trigger": "work",
               "task_id": rng.choice(task_ids[flow]) if task_ids[flow] else None, "fencing_token": 1, "attempt": 1,
               "started_at": format_ts(started), "ended_at": None, "outcome": "running", "transition": None,
               "failure_category": None, "failure_code": None, "failure_message": None, "model": model,
               "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "wall_seconds": None, "reflection": False}
        if i < n_runs - max(1, n_runs // 650):  # the last ones (about 150 of 100,000) are still running
            seconds = min(900.0, rng.lognormvariate(3.5, 0.8))
            row.update(ended_at=format_ts(started + timedelta(seconds=seconds)), wall_seconds=round(seconds, 3),
                       outcome="succeeded", transition=rng.choice(list(WORKFLOWS[flow][2])))
            if model:
                row["input_tokens"], row["output_tokens"] = rng.randint(2_000, 40_000), rng.randint(200, 4_000)
                row["cost_usd"] = round((row["input_tokens"] + row["output_tokens"]) * USD_PER_MTOK[model] / 1e6, 6)
            if rng.random() < 0.12:
                row.update(outcome="failed", transition=None, failure_category="transient",
                           failure_code="runner-timeout", failure_message="bench: runner-timeout")
        run_rows.append(row)

    n_pending = max(3, min(300, n_tasks // 300))
    verified = [t for t in task_rows if t["workflow"] == "fix" and t["state"] == "verified"]
    approval_rows = []
    for i, t in enumerate(verified[: n_pending * 4]):
        pending = i < n_pending
        made = now - timedelta(hours=rng.uniform(1, 100 if pending else 600))
        status = "pending" if pending else rng.choice(["approved", "rejected", "rejected", "expired"])
        approval_rows.append({"id": i + 1, "company_id": COMPANY, "kind": "transition", "task_id": t["id"],
                              "workflow": "fix", "transition": "merge", "requested_by": rng.choice(agents["merger"]),
                              "task_version": t["version"], "payload": "{}",
                              "evidence": json.dumps({"checks": {"tests": True}}), "rationale": "tests pass",
                              "status": status, "decided_by": None if pending else "lead",
                              "note": "" if pending else "bench", "created_at": format_ts(made),
                              "expires_at": format_ts(made + timedelta(days=7 if pending else 1)),
                              "decided_at": None if pending else format_ts(made + timedelta(minutes=30))})
        events.append((format_ts(made), approval_rows[-1]["requested_by"], "approval.request", f"task:{t['id']}",
                       {"request_id": i + 1, "transition": "merge"}))

    n_open = max(3, min(300, n_tasks // 300))
    escalation_rows = []
    for i in range(n_open * 2):
        made = format_ts(now - timedelta(hours=rng.uniform(1, 600)))
        human = rng.random() < 0.6
        escalation_rows.append({"company_id": COMPANY, "task_id": rng.randint(1, n_tasks), "goal_id": None,
                                "from_agent": rng.choice(handles), "step": "human" if human else "peer",
                                "to": "human" if human else rng.choice(handles), "category": "judgment",
                                "reason": "not sure the fix is safe", "status": "open" if i < n_open else "resolved",
                                "created_at": made, "resolved_by": None if i < n_open else "lead",
                                "resolved_at": None if i < n_open else made, "note": ""})

    message_rows = []
    for i in range(max(50, n_tasks // 20)):
        sender = rng.choice(handles)
        recipient = rng.choice(["lead", "carol", "dana"]) if i % 4 == 0 else rng.choice(handles)
        sent = format_ts(start + timedelta(seconds=span * i / max(50, n_tasks // 20)))
        message_rows.append({"id": i + 1, "company_id": COMPANY, "thread_id": i + 1, "sender": sender,
                             "recipient": recipient, "task_id": rng.randint(1, n_tasks),
                             "body": f"question {i} about the task", "created_at": sent,
                             "read_at": None if rng.random() < 0.3 else sent})
        events.append((sent, sender, "message.send", f"thread:{i + 1}", {"to": recipient, "message_id": i + 1}))

    kpi_rows = []
    for kpi, base in (("defects", 40.0), ("lead_time", 30.0), ("uptime", 99.0)):
        moment, value = now - timedelta(days=31), base
        while moment < now:
            value = max(0.0, value + rng.gauss(0, 0.5))
            kpi_rows.append({"company_id": COMPANY, "kpi": kpi, "value": round(value, 2),
                             "measured_at": format_ts(moment), "recorded_by": "lead", "source": "bench"})
            moment += timedelta(hours=3)

    memory_rows = []
    for h in handles[::5]:
        for j in range(20):
            memory_rows.append({"company_id": COMPANY, "pad": h, "kind": "lesson" if j % 3 else "belief",
                                "text": f"{h} learned lesson {j}: run the tests before the build",
                                "confidence": 0.8, "provenance": "{}", "expires_at": None, "created_by": h,
                                "created_at": at(span * j / 20)})

    events.sort(key=lambda e: e[0])
    with store.write() as conn:
        conn.execute(insert(tasks), task_rows)
        conn.execute(insert(runs), run_rows)
        if approval_rows:
            conn.execute(insert(approval_requests), approval_rows)
        conn.execute(insert(escalations), escalation_rows)
        conn.execute(insert(messages), message_rows)
        conn.execute(insert(kpi_readings), kpi_rows)
        conn.execute(insert(memory_entries), memory_rows)
        if store.dialect.name == "postgresql":  # ids were given: move the sequences past them
            for table, n in (("approval_requests", len(approval_rows)), ("messages", len(message_rows))):
                if n:
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"), {"n": n})
        head = store_audit.read_head(conn, COMPANY)
        assert head is not None
        head.task_seq = max(head.task_seq, n_tasks)
        head.dirty = True
        for i, (ts, principal, action, subject, data) in enumerate(events):
            store_audit.append(conn, head, ts=ts, principal=principal, action=action, subject=subject, data=data)
            if i % 5000 == 4999:
                store_audit.save_head(conn, head)  # writes the pending events (hashing the rows they name)
        store_audit.save_head(conn, head)
    return {"agents": handles, "pools": agents, "tasks": task_rows, "runs": len(run_rows),
            "running": sum(1 for r in run_rows if r["outcome"] == "running"), "approvals": approval_rows,
            "pending": n_pending, "escalations_open": n_open, "messages": len(message_rows),
            "memory": len(memory_rows), "kpi_readings": len(kpi_rows), "audit_events": len(events)}


def task_with_history(store: Store, seeded: dict[str, Any]) -> int:
    """One task taken through the real verbs: created, built (an artifact in two versions, a check), verified,
    its merge waiting for approval; with runs. Returns its id."""
    company = store.company(COMPANY)
    builder, qa, merger = seeded["pools"]["builder"][1], seeded["pools"]["qa"][1], seeded["pools"]["merger"][0]
    task, _ = company.create_task(workflow="fix", title="fix the flaky login test", actor="lead",
                                  fields={"area": "auth"}, priority=2)
    company.record_artifact(task.id, "patch", b"--- a/x\n+++ b/x\n-old\n+new\n", actor=builder, reason="first try")
    company.record_artifact(task.id, "patch", b"--- a/x\n+++ b/x\n-old\n+newer\n+more\n", actor=builder,
                            reason="review")
    company.record_check(task.id, "tests", passed=True, detail="212 passed", actor=builder)
    task = company.get_task(task.id)
    task = company.transition(task.id, "build", actor=builder, expected_version=task.version,
                              writes={"branch": "fix/login"})
    task = company.transition(task.id, "verify", actor=qa, expected_version=task.version)
    try:
        company.transition(task.id, "merge", actor=merger, expected_version=task.version)
    except Exception as exc:
        if "approval" not in type(exc).__name__.lower() and "approval" not in str(exc).lower():
            raise
    now = store.clock()
    with store.write() as conn:
        conn.execute(insert(runs), [
            {"company_id": COMPANY, "id": f"h{i}", "agent": agent, "trigger": "work", "task_id": task.id,
             "fencing_token": i + 1, "attempt": 1, "started_at": format_ts(now - timedelta(minutes=30 - i)),
             "ended_at": format_ts(now - timedelta(minutes=29 - i)), "outcome": "succeeded", "transition": t,
             "model": MODELS[0], "input_tokens": 10_000, "output_tokens": 1_000, "cost_usd": 0.066,
             "wall_seconds": 60.0, "reflection": False}
            for i, (agent, t) in enumerate(((builder, "build"), (qa, "verify"), (merger, "merge")))])
    return task.id


def pages(seeded: dict[str, Any], task_id: int, deep_offset: int) -> dict[str, tuple[str, list[str]]]:
    """The pages timed, as name -> (path, what the page must show)."""
    tasks_ = seeded["tasks"]
    per_flow: dict[str, int] = {}
    per_state: dict[tuple[str, str], int] = {}
    for t in tasks_:
        per_flow[t["workflow"]] = per_flow.get(t["workflow"], 0) + 1
        per_state[(t["workflow"], t["state"])] = per_state.get((t["workflow"], t["state"]), 0) + 1
    flow = max(per_flow, key=per_flow.get)
    state = max((s for f, s in per_state if f == flow), key=lambda s: per_state[(flow, s)])
    column = sorted((t for t in tasks_ if t["workflow"] == flow and t["state"] == state),
                    key=lambda t: (-t["priority"], t["id"]))
    deep = min(deep_offset, max(0, len(column) - 1))
    owner = next(t["owner"] for t in column if t["owner"])
    owned = [t for t in column if t["owner"] == owner]
    agent = seeded["pools"]["builder"][0]
    return {
        "/ (overview)": ("/", ["Overview", "waiting"]),
        "/inbox": ("/inbox", ["Inbox", "tests pass"]),
        "/org": ("/org", ["Org chart", seeded["agents"][-1]]),
        "/boards": ("/boards", ["Boards", flow]),
        f"/boards/{flow}": (f"/boards/{flow}", [f"All {per_state[(flow, state)]} in {state}", column[0]["title"]]),
        f"/boards/{flow}/{state}": (f"/boards/{flow}/{state}", [column[0]["title"]]),
        f"/boards/{flow}/{state}?offset={deep:,}": (f"/boards/{flow}/{state}?offset={deep}",
                                                      [column[deep]["title"]]),
        f"/boards/{flow}?q=slow&owner=...": (f"/boards/{flow}?q=slow+query&owner={owner}", ["slow query"]),
        f"/boards/{flow}/{state}?owner=...": (f"/boards/{flow}/{state}?owner={owner}", [owned[0]["title"]]),
        "/tasks/<with history>": (f"/tasks/{task_id}", ["fix the flaky login test", "tests"]),
        "/agents": ("/agents", ["Agents", seeded["agents"][-1]]),
        f"/agents/{agent}": (f"/agents/{agent}", [agent, "learned lesson"]),
        "/audit": ("/audit", ["Audit"]),
        "/audit?before=<deep>": ("/audit?before={deep_seq}", ["Audit"]),
        "/audit?action=approval.request": ("/audit?action=approval.request", ["approval.request"]),
        "/audit?action=spec.apply (the oldest)": ("/audit?action=spec.apply", ["spec.apply"]),
        "/costs": ("/costs", ["Costs", agent[:2]]),
        "/parts/overview": ("/parts/overview", ["waiting"]),
    }


SCOPED = ("/ (overview)", "/inbox", "/org", "/boards", "/agents", "/audit", "/costs", "/parts/overview")
"""The pages a portfolio-scoped human (carol, eng/web) is timed on, with her own board below."""


def _signed_in(app: Any, token: str, *, lifespan: bool) -> Any:
    """A client of ``app`` signed in through the form; ``lifespan``: it runs the app's lifespan (one may)."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    if lifespan:
        client.__enter__()
    nonce = re.search(r'name="csrf" value="([^"]*)"', client.get("/sign-in").text).group(1)
    response = client.post("/sign-in", data={"csrf": nonce, "token": token, "next": "/"}, follow_redirects=False)
    if response.status_code != 303:
        raise SystemExit(f"sign-in refused: {response.status_code} {response.text[:300]}")
    return client


def month_end_clock() -> Any:
    """The real clock moved to 20:00 UTC on the last day of the current month (see the module's docstring)."""
    now = utc_now()
    first_of_next = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
    target = datetime.combine((first_of_next - timedelta(days=1)).date(), datetime.min.time(), now.tzinfo)
    offset = target + timedelta(hours=20) - now
    return lambda: utc_now() + offset


def measure(url: str, *, n_agents: int, n_tasks: int, n_runs: int, repeat: int, deep_offset: int = 20_000,
            profile: Path | None = None, real_clock: bool = False) -> dict[str, Any]:
    """Seed a store at ``url``, then time every page through the app; the figures as JSON."""
    from roster.api import create_app

    artifacts = tempfile.TemporaryDirectory()
    store = Store.open(url, artifact_root=Path(artifacts.name), clock=utc_now if real_clock else month_end_clock())
    clients = []
    try:
        store.apply(parse_spec(spec_text(n_agents)), applied_by="lead")
        company = store.company(COMPANY)
        t0 = time.perf_counter()
        seeded = seed(store, n_agents=n_agents, n_tasks=n_tasks, n_runs=n_runs)
        task_id = task_with_history(store, seeded)
        seed_seconds = time.perf_counter() - t0
        if store.dialect.name == "postgresql":
            with store.write() as conn:  # as autovacuum would after a bulk load: planner statistics
                conn.execute(text("ANALYZE"))
        with store.read() as conn:
            chain = conn.execute(select(func.count()).select_from(audit_events)
                                 .where(audit_events.c.company_id == COMPANY)).scalar_one()
        app = create_app(store)
        lead = _signed_in(app, company.issue_token("lead", actor=None, name="bench").token, lifespan=True)
        clients.append(lead)
        carol = _signed_in(app, company.issue_token("carol", actor=None, name="bench").token, lifespan=False)
        api_token = company.issue_token("lead", actor=None, name="bench api").token
        pages_ = pages(seeded, task_id, deep_offset)
        deep_seq = max(1, chain - deep_offset)
        calls: dict[str, tuple[Any, str, list[str]]] = {
            REFERENCE: (lead, "/api/v1/tasks?limit=50", [])}
        for name, (path, shows) in pages_.items():
            calls[f"lead {name}"] = (lead, path.replace("{deep_seq}", str(deep_seq)), shows)
        for name in SCOPED:
            calls[f"carol {name}"] = (carol, pages_[name][0].replace("{deep_seq}", str(deep_seq)), [])
        calls["carol /boards/site"] = (carol, "/boards/site", ["site #"])
        calls["carol /boards/fix (refused)"] = (carol, "/boards/fix", [])
        wall: dict[str, list[float]] = {k: [] for k in calls}
        statuses: dict[str, int] = {}
        for round_ in range(repeat + 1):  # round 0 warms up and checks what each page shows
            for name, (client, path, shows) in calls.items():
                headers = {"Authorization": f"Bearer {api_token}"} if name == REFERENCE else {}
                t = time.perf_counter()
                response = client.get(path, headers=headers, follow_redirects=False)
                w = time.perf_counter() - t
                if round_ == 0:
                    _check(name, response, shows, seeded)
                    statuses[name] = response.status_code
                    continue
                wall[name].append(w)
        if profile is not None:
            _profile(calls, profile, store.dialect.name)
        verify_wall, answer_wall = [], []
        for _ in range(max(1, min(repeat, 2))):  # the whole chain each time: two rounds are enough
            answer, result = _verify(lead)
            answer_wall.append(answer)
            verify_wall.append(result)
        ref = _median(wall[REFERENCE])
        figures = {name: {"median_ms": round(_median(w) * 1000, 1), "max_ms": round(max(w) * 1000, 1),
                          "x_ref": round(_median(w) / ref, 1), "status": statuses[name]} for name, w in wall.items()}
        for name, samples in ((VERIFY_ANSWER, answer_wall), (VERIFY, verify_wall)):
            figures[name] = {"median_ms": round(_median(samples) * 1000, 1), "max_ms": round(max(samples) * 1000, 1),
                             "x_ref": round(_median(samples) / ref, 1), "status": 200}
        return {"backend": store.dialect.name, "server_version": _server_version(store), "clock": format_ts(store.clock()),
                "agents": len(seeded["agents"]),
                "tasks": len(seeded["tasks"]) + 1, "runs": seeded["runs"] + 3, "running": seeded["running"],
                "approval_requests": len(seeded["approvals"]), "pending": seeded["pending"] + 1,
                "escalations_open": seeded["escalations_open"], "messages": seeded["messages"],
                "memory_entries": seeded["memory"], "kpi_readings": seeded["kpi_readings"], "audit_events": chain,
                "seed_seconds": round(seed_seconds, 1), "figures": figures}
    finally:
        for client in clients:
            client.__exit__(None, None, None)
        store.close()
        artifacts.cleanup()


def _verify(client: Any, timeout: float = 600.0) -> tuple[float, float]:
    """Press the verify button; returns the seconds until its answer, and until the result: the same when
    the walk runs in the request, later when it runs in the background and the page polls it."""
    nonce = re.search(r'name="csrf" value="([^"]*)"', client.get("/audit").text).group(1)
    t = time.perf_counter()
    response = client.post("/audit/verify", data={"csrf": nonce})
    answer = time.perf_counter() - t
    while response.status_code == 200 and "the chain is intact" not in response.text:
        if "the chain breaks" in response.text or "could not be read" in response.text:
            break
        if time.perf_counter() - t > timeout:
            raise SystemExit(f"verify: no result after {timeout:.0f} s")
        time.sleep(0.05)
        response = client.get("/audit/verify")
    if response.status_code != 200 or "the chain is intact" not in response.text:
        raise SystemExit(f"verify: {response.status_code} {response.text[:300]}")
    return answer, time.perf_counter() - t


def _check(name: str, response: Any, shows: list[str], seeded: dict[str, Any]) -> None:
    """Raise unless the page answered as it must: 200 with what was seeded (a refused board: 403)."""
    if name.endswith("(refused)"):
        if response.status_code != 403:
            raise SystemExit(f"{name}: {response.status_code}, want 403 (carol works in eng/web only)")
        return
    if name.startswith("carol ") and response.status_code == 403:
        return  # a page over the whole company (audit, costs): refused to a portfolio-scoped human
    if response.status_code != 200:
        raise SystemExit(f"{name}: {response.status_code} {response.text[:500]}")
    body = response.text
    for want in shows:
        if want not in body:
            raise SystemExit(f"{name}: the page does not show {want!r}")
    if name == REFERENCE and len(response.json()["items"]) != 50:
        raise SystemExit(f"{name}: {len(response.json()['items'])} tasks, want 50")
    if name == "lead /inbox":
        shown = len(set(re.findall(r"/tasks/(\d+)", body)) & {str(a["task_id"]) for a in seeded["approvals"]
                                                                if a["status"] == "pending"})
        if shown != seeded["pending"]:
            raise SystemExit(f"{name}: {shown} pending requests shown, seeded {seeded['pending']}")
    if name == "lead /agents" and not all(h in body for h in seeded["agents"]):
        raise SystemExit(f"{name}: not every agent is listed")
    outside = [w for w in ("fix", "review", "etl", "incident") if f"/boards/{w}" in body]
    if name in ("carol /boards", "carol /boards/site", "carol / (overview)") and outside:
        # (her org chart still draws the company's whole structure, with links to every board)
        raise SystemExit(f"{name}: carol (eng/web only) is shown boards outside her portfolio: {outside}")


def _profile(calls: dict[str, tuple[Any, str, list[str]]], out: Path, backend: str) -> None:
    """A pyinstrument profile (text) of each lead page into ``out`` (pyinstrument installed separately).
    The app runs its sync handlers and dependencies in worker threads: each of those calls is profiled in
    its own thread (the main thread only waits)."""
    import fastapi.dependencies.utils as fastapi_deps
    import fastapi.routing as fastapi_routing
    from pyinstrument import Profiler

    taken: list[str] = []
    originals = {m: m.run_in_threadpool for m in (fastapi_routing, fastapi_deps)}

    def profiled(original):
        async def run(func, *args, **kwargs):
            def inside(*a, **k):
                profiler = Profiler(interval=0.0005)
                with profiler:
                    result = func(*a, **k)
                taken.append(profiler.output_text(unicode=True, show_all=False))
                return result
            return await original(inside, *args, **kwargs)
        return run

    out.mkdir(parents=True, exist_ok=True)
    for module, original in originals.items():
        module.run_in_threadpool = profiled(original)
    try:
        for name, (client, path, _) in calls.items():
            if not name.startswith("lead "):
                continue
            taken.clear()
            client.get(path, follow_redirects=False)
            slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
            (out / f"{backend}_{slug}.txt").write_text("\n".join(taken))
    finally:
        for module, original in originals.items():
            module.run_in_threadpool = original


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _server_version(store: Store) -> str:
    with store.read() as conn:
        if store.dialect.name == "postgresql":
            return conn.execute(text("SHOW server_version")).scalar_one()
        return conn.execute(text("SELECT sqlite_version()")).scalar_one()


def print_result(result: dict[str, Any]) -> None:
    r = result
    print(f"\n{r['backend']} {r['server_version']}: {r['agents']:,} agents, {r['tasks']:,} tasks, {r['runs']:,} runs "
          f"({r['running']} running), {r['approval_requests']:,} approval requests ({r['pending']} pending), "
          f"{r['escalations_open']} open escalations, {r['messages']:,} messages, {r['memory_entries']:,} memory "
          f"entries, {r['kpi_readings']} KPI readings, {r['audit_events']:,} audit events "
          f"(seeded in {r['seed_seconds']} s; the store's clock at {r['clock']})", flush=True)
    print(f"  {'page (median of rounds)':<52} {'median ms':>10} {'max ms':>9} {'x ref':>7}")
    for name, f in r["figures"].items():
        flag = "  > 1 s" if f["median_ms"] > 1000 and name not in (VERIFY, VERIFY_ANSWER) else ""
        flag += f"  ({f['status']})" if f["status"] != 200 else ""
        print(f"  {name:<52} {f['median_ms']:>10.1f} {f['max_ms']:>9.1f} {f['x_ref']:>7.1f}{flag}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=None, help="default: one per task")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--deep", type=int, default=20_000, help="the deep page's offset (column) and depth (audit)")
    parser.add_argument("--real-clock", action="store_true", help="keep the real date (default: the month's end)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a pyinstrument profile of each page here (pip install pyinstrument)")
    args = parser.parse_args()
    sizes = {"n_agents": args.agents, "n_tasks": args.tasks, "n_runs": args.runs or args.tasks,
             "repeat": args.repeat, "deep_offset": args.deep, "profile": args.profile,
             "real_clock": args.real_clock}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend in ("sqlite", "both"):
            results.append(measure(f"sqlite:///{Path(tmp) / 'dashboard.db'}", **sizes))
            print_result(results[-1])
        if args.backend in ("postgresql", "both"):
            with pg_schema("bench_dashboard") as url:
                if url is not None:
                    results.append(measure(url, **sizes))
                    print_result(results[-1])
    print(json.dumps({"bench": "dashboard", "results": results}))


if __name__ == "__main__":
    sys.exit(main())
