"""``roster up``, ``roster run`` and ``roster status``: run the company's agents and see what they do."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from roster.cli.context import Workspace, console, emit_json, err_console, reports_errors, workspace
from roster.cli.serve_cmd import DEFAULT_HOST, DEFAULT_PORT, HOST, PORT
from roster.defaults import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS
from roster.errors import NotFound, UsageError

if TYPE_CHECKING:  # the runtime loads only when a command runs (`roster --help` stays fast)
    from roster.runtime.dispatcher import Dispatcher, Outcome

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]



def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("run")(run)
    app.command("reflect")(reflect)
    app.command("status")(status)
    app.command("emit")(emit)
    app.command("costs")(costs)
    app.command("presence")(presence)
    app.add_typer(escalations_app, name="escalations")


escalations_app = typer.Typer(help="The escalation ladder: tasks agents could not finish, and where they went.",
                              invoke_without_command=True)


@escalations_app.callback()
@reports_errors
def escalations_list(
    ctx: typer.Context,
    everything: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    as_json: JSON = False,
) -> None:
    """Open escalations (or all): the task or goal, from which agent, to a peer or a human, and why."""
    if ctx.invoked_subcommand is not None:
        return
    found = workspace(ctx).session().list_escalations(status=None if everything else "open")
    if as_json:
        emit_json([asdict(e) for e in found])
        return
    table = Table("id", "about", "from", "step", "to", "category", "status", "reason", box=None)
    for e in found:
        about = f"task {e.task_id}" if e.task_id is not None else f"goal {e.goal_id}"
        table.add_row(str(e.id), about, e.from_agent, e.step, e.to, e.category, e.status, e.reason)
    console.print(table if found else "no escalations")


@escalations_app.command("resolve")
@reports_errors
def escalations_resolve(
    ctx: typer.Context,
    escalation_id: Annotated[int, typer.Argument(help="The escalation's id.")],
    note: Annotated[str, typer.Option("--note", help="What was done about it.")],
    as_json: JSON = False,
) -> None:
    """Close an escalation (humans): the agents' blockers on the task are cleared, so they may retry."""
    resolved = workspace(ctx).session().resolve_escalation(escalation_id, note=note)
    if as_json:
        emit_json(asdict(resolved))
    else:
        about = f"task {resolved.task_id}" if resolved.task_id is not None else f"goal {resolved.goal_id}"
        console.print(f"escalation {resolved.id} on {about} resolved")


@reports_errors
def costs(ctx: typer.Context, as_json: JSON = False) -> None:
    """Spend per agent and per portfolio: runs, successes, tokens, USD, cost per successful outcome; each
    goal's spend against its budget; and each budget of the spec against its period's spend. A cost that is not known in full (runs whose model
    has no price) is printed as unknown, never as 0; in JSON, ``cost_usd`` is then null and
    ``unpriced_runs`` counts those runs."""
    session = workspace(ctx).session()
    report = session.costs()  # read on the whole company (humans; agents by a grant of '*'), else Denied
    company = session.company_for("read", "company")  # the budgets' spend is the same company-wide read
    budgets = []
    for budget in session.spec().budgets:
        status_ = company.budget_status(budget)
        budgets.append({"scope": status_.scope, "period": status_.period, "unit": status_.unit,
                        "since": status_.since, "limit_usd": status_.limit_usd,
                        "spent_usd": status_.spent_usd if status_.spent_known else None,
                        "priced_spent_usd": status_.spent_usd, "unpriced_runs": status_.unpriced_runs,
                        "limit_tokens": status_.limit_tokens, "spent_tokens": status_.spent_tokens,
                        "warn_at": budget.warn_at, "level": status_.level(budget.warn_at),
                        "summary": status_.describe()})
    goals = [{"id": g.id, "agent": g.agent, "objective": g.objective, "state": g.state,
              "runs": g.spend.runs, "tokens": g.spend.tokens, "seconds": round(g.spend.seconds, 3),
              "cost_usd": None if g.spend.unpriced_runs else g.spend.usd, "priced_cost_usd": g.spend.usd,
              "unpriced_runs": g.spend.unpriced_runs, "budget": g.budget.model_dump(exclude_none=True)}
             for g in session.list_goals(limit=1000)]
    if as_json:
        emit_json({**report, "goals": goals, "budgets": budgets})
        return

    def usd(row: dict, key: str) -> str:
        if row[key] is not None:
            return f"{row[key]:.4f}"
        return "unknown" if row["unpriced_runs"] else "-"

    for title, rows in (("per agent", report["agents"]), ("per portfolio", report["portfolios"])):
        table = Table("name", "runs", "successes", "tokens in", "tokens out", "USD", "USD per success", box=None,
                      title=title, title_justify="left")
        for r in rows:
            table.add_row(r["name"], str(r["runs"]), str(r["successes"]), str(r["input_tokens"]),
                          str(r["output_tokens"]), usd(r, "cost_usd"), usd(r, "cost_per_success_usd"))
        console.print(table if rows else f"{title}: no runs")
    if goals:
        table = Table("goal", "agent", "state", "runs", "tokens", "USD", "budget", box=None, title="per goal",
                      title_justify="left")
        for g in goals:
            table.add_row(f"{g['id']}: {g['objective'][:40]}", g["agent"], g["state"], str(g["runs"]),
                          str(g["tokens"]), usd(g, "cost_usd"),
                          ", ".join(f"{k} {v:g}" for k, v in g["budget"].items()))
        console.print(table)
    unpriced = sum(r["unpriced_runs"] for r in report["agents"])
    if unpriced:
        console.print(f"cost unknown: {unpriced} run(s) could not be priced (their models have no price in "
                      "genai-prices); give them one under 'models:' in the spec", highlight=False)
    if budgets:
        table = Table("scope", "period", "spent", "level", box=None, title="budgets", title_justify="left")
        for b in budgets:
            table.add_row(b["scope"], b["period"], b["summary"], b["level"])
        console.print(table)


@reports_errors
def presence(ctx: typer.Context,
             days: Annotated[int, typer.Option("--days", min=1, max=31, help="Days to report, one by one.")] = 1,
             as_json: JSON = False) -> None:
    """The always-on metric: how many agents were around the clock (working or watching for at least 95%
    of each day), and each agent's time working, blocked, waiting, watching and idle over the last day
    (with --days N, the trend: one line per day). Computed from recorded runs, approvals, pauses and goals;
    you see every agent if you oversee the company, else only yourself."""
    report = workspace(ctx).session().presence(days=days)
    if as_json:
        emit_json(report)
        return
    for day in report["days"]:
        agents = day["agents"]
        console.print(f"{day['since'][:16].replace('T', ' ')} -> {day['until'][:16].replace('T', ' ')} UTC: "
                      f"{day['around_the_clock']} of {len(agents)} agent(s) around the clock", highlight=False)
    last = report["days"][-1]["agents"]
    table = Table("agent", *report["states"], "utilization", "around the clock", box=None,
                  title="the last day, in hours", title_justify="left")
    for agent, row in last.items():
        table.add_row(agent, *(f"{row['seconds'][s] / 3600:.1f}" for s in report["states"]),
                      f"{row['utilization']:.0%}", "yes" if row["around_the_clock"] else "no")
    console.print(table if last else "no agents")


@reports_errors
def emit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The event's name, as agents' event triggers name it.")],
    data: Annotated[str, typer.Option("--data", help="A JSON payload for the woken agents.")] = "{}",
    as_json: JSON = False,
) -> None:
    """Emit a named event: agents with an event trigger on it wake once, and see its payload."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise UsageError(f"--data must be JSON: {exc}") from None
    event = workspace(ctx).session().emit_event(name, data=payload)
    if as_json:
        emit_json(asdict(event))
    else:
        console.print(f"event {event.id} '{event.name}' emitted by {event.emitted_by}")


def _dispatcher(ws: Workspace, lease_seconds: float, max_attempts: int, verbose: bool = True,
                max_task_cost: float | None = None, max_runs: int | None = None,
                agents: str | None = None) -> Dispatcher:
    """Running the company's agents is an administrator's act: it needs a human with ``admin``."""
    from roster.runtime.dispatcher import Dispatcher  # noqa: PLC0415 - see the imports
    session = ws.session()
    company = session.company_for("admin", "company")  # Denied (audited) unless the decision allows it
    only = None
    if agents is not None:
        only = [a.strip() for a in agents.split(",") if a.strip()]
        spec = session.spec()
        unknown = [a for a in only if not a.startswith("role:") and a not in spec.agents]
        if unknown or not only:
            known = ", ".join(sorted(spec.agents)) or "none"
            raise UsageError(f"--agents names no agent of the spec: {', '.join(unknown) or '(empty)'}; agents: "
                             f"{known} (or role:<role>)")
    log = (lambda m: err_console.print(m, highlight=False)) if verbose else None
    return Dispatcher(company, workdir=ws.spec_path.resolve().parent, lease_seconds=lease_seconds,
                      max_attempts=max_attempts, max_task_cost_usd=max_task_cost, log=log, max_runs=max_runs,
                      agents=only)


def _print_outcome(outcome: Outcome, as_json: bool = False) -> None:
    if as_json:
        emit_json({**asdict(outcome), "failure": asdict(outcome.failure) if outcome.failure else None})
        return
    what = f"-> {outcome.transition}" if outcome.transition else ""
    why = f": {outcome.failure.category.value}: {outcome.failure.message}" if outcome.failure else ""
    where = f"task {outcome.task_id}" if outcome.task_id is not None else "no task"
    console.print(f"{outcome.agent} on {where}: {outcome.outcome} {what}{why}".rstrip(),
                  highlight=False)
    if outcome.blocked:
        console.print(f"  blocked: {outcome.blocked}", highlight=False)


@reports_errors
def up(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and stop.")] = False,
    poll: Annotated[float, typer.Option("--poll", help="Seconds to wait when there was nothing to do.")] = 1.0,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", help="Length of a run's lease.")]
    = DEFAULT_LEASE_SECONDS,
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="Attempts before a persisted blocker.")]
    = DEFAULT_MAX_ATTEMPTS,
    max_task_cost: Annotated[float | None, typer.Option("--max-task-cost",
                                                        help="USD a task may cost before retries stop.")] = None,
    max_runs: Annotated[int | None, typer.Option(
        "--max-runs", min=1, help="Runs in flight at once (default: 4 per core, at least 4).")] = None,
    agents: Annotated[str | None, typer.Option(
        "--agents", help="Run only these agents: handles or role:<role>, comma-separated (the rest are left "
                         "to other roster up processes).")] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Do not serve the dashboard and the REST API "
                                                              "alongside.")] = False,
    host: HOST = DEFAULT_HOST,
    port: PORT = DEFAULT_PORT,
) -> None:
    """Run the company's agents, many runs at once (--max-runs; each agent up to its max_concurrent_runs),
    each task to one agent, woken as work arrives; and (unless --no-serve or --once) the dashboard and the
    REST API are served alongside. Several roster up processes may share a company (PostgreSQL, or SQLite on one
    host). SIGINT/SIGTERM stop it cleanly: the runs in flight finish and release their leases."""
    ws = workspace(ctx)
    dispatcher = _dispatcher(ws, lease_seconds, max_attempts, max_task_cost=max_task_cost, max_runs=max_runs,
                             agents=agents)
    api = None
    if not (no_serve or once):
        from roster.api.server import ApiServer  # the web stack only when it is served

        api = ApiServer(ws.store(), host=host, port=port, skills_dir=ws.spec_path.parent / "skills")
        url = api.start()
        dispatcher.mcp_url = f"{url}/mcp/"
        console.print(f"roster up: dashboard at {url}/ (sign in: roster dashboard), REST API at {url}/api/v1, "
                      f"MCP at {url}/mcp/ (bearer tokens; docs/api.md)", highlight=False)

    def stop(signum: int, _frame: object) -> None:
        err_console.print(f"roster up: {signal.Signals(signum).name}, stopping after the runs in flight")
        dispatcher.stopping.set()
        dispatcher.wake.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    agents = dispatcher.agents()
    console.print(f"roster up: company '{dispatcher.company.company}', {len(agents)} agent(s) with a runner: "
                  f"{', '.join(agents) or 'none'}; up to {dispatcher.max_runs} run(s) at once", highlight=False)
    if once:  # one cycle; a busy store is an error here (exit 8), for scripts to see
        try:
            for outcome in dispatcher.cycle():
                _print_outcome(outcome)
        finally:
            dispatcher.close()
    else:
        dispatcher.run_forever(poll_seconds=poll, report=lambda outcomes: [_print_outcome(o) for o in outcomes])
    if api is not None:
        api.stop()
    console.print("roster up: stopped")



@reports_errors
def run(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="The agent to wake.")],
    task: Annotated[int | None, typer.Option("--task", help="The task to work (default: its most urgent).")]
    = None,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds")] = DEFAULT_LEASE_SECONDS,
    as_json: JSON = False,
) -> None:
    """Trigger one run of an agent by hand."""
    dispatcher = _dispatcher(workspace(ctx), lease_seconds, DEFAULT_MAX_ATTEMPTS, verbose=not as_json)
    if task is None:
        work = dispatcher.company.pending_work(agent)
        if not work:
            raise NotFound(f"agent '{agent}' has no work now")
        chosen = work[0]
    else:
        chosen = dispatcher.company.get_task(task)
    try:
        outcome = dispatcher.run_once(agent, chosen, trigger="manual (roster run)")
    finally:
        dispatcher.close()
    _print_outcome(outcome, as_json)


@reports_errors
def reflect(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="The agent to reflect.")],
    now: Annotated[bool, typer.Option("--now", help="Run one reflection now, whatever its schedule.")] = False,
    as_json: JSON = False,
) -> None:
    """An agent's reflection: its schedule, or with --now one reflection run now (it revises the plan that
    `roster mission show` prints)."""
    from roster.kernel.plans import reflection_cron  # noqa: PLC0415 - see the imports

    ws = workspace(ctx)
    me = ws.session().spec().agents.get(agent)
    if me is None:
        raise NotFound(f"no agent '{agent}' in the spec")
    if not now:
        cron = reflection_cron(me.mission, me.reflect)
        when = (f"on cron '{cron}' (UTC)" if cron else
                "on no schedule (it has no mission, or its spec says reflect: {cron: null})")
        console.print(f"{agent} reflects {when}; run one now with `roster reflect {agent} --now`", highlight=False)
        return
    dispatcher = _dispatcher(ws, DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS, verbose=not as_json)
    try:
        outcome = dispatcher.reflect_once(agent)
    finally:
        dispatcher.close()
    _print_outcome(outcome, as_json)


@reports_errors
def status(ctx: typer.Context, as_json: JSON = False) -> None:
    """Agents, their queues and blockers, live leases, and the latest runs: overseeing the company (humans)."""
    session = workspace(ctx).session()
    # every agent's queue, the leases, the fleet and the budgets: overseeing the company (humans), as
    # list_runs decides for the runs of all agents; Denied (audited) otherwise
    company = session.company_for("oversee", "company")
    spec = session.spec()
    agents = []
    for p in session.list_principals():
        if p.kind != "agent":
            continue
        runner = spec.agents[p.handle].runner if p.handle in spec.agents else None
        pending = company.pending_work(p.handle) if p.status == "active" else []
        agents.append({"agent": p.handle, "status": p.status, "runner": runner.kind if runner else None,
                       "pending": [t.id for t in pending]})
    leases = [asdict(lease) for lease in company.leases()]
    runs = [asdict(r) for r in session.list_runs(limit=10)]
    fleet = company.fleet_stats()
    in_flight = [{"run": r.id, "agent": r.agent, "task_id": r.task_id, "seconds": round(sec, 1),
                  "dispatcher_id": r.dispatcher_id} for r, sec in fleet.in_flight]
    processes = [{"id": d.id, "host": d.host, "pid": d.pid, "agents": d.agents, "max_runs": d.max_runs,
                  "runs_in_flight": d.runs_in_flight, "runs_started": d.runs_started, "lost_races": d.lost_races,
                  "heartbeat_at": d.heartbeat_at} for d in fleet.dispatchers]
    warnings = [f"{b.scope} per {b.period}: {s_.describe()} ({s_.level(b.warn_at)})"
                for b in spec.budgets for s_ in [company.budget_status(b)] if s_.level(b.warn_at) != "ok"]
    [today] = session.presence(days=1)["days"]
    always = {"around_the_clock": today["around_the_clock"], "agents": len(today["agents"]),
              "utilization": {a: round(row["utilization"], 4) for a, row in today["agents"].items()}}
    if as_json:
        emit_json({"agents": agents, "leases": leases, "runs": runs, "paused": company.paused(),
                   "budget_warnings": warnings, "always_on": always,
                   "fleet": {"dispatchers": processes, "in_flight": in_flight,
                             "runs_last_minute": fleet.runs_last_minute, "lost_races": fleet.lost_races}})
        return
    for warning in warnings:
        console.print(f"[yellow]budget:[/] {warning}", highlight=False)
    flying: dict[str, int] = {}
    for r in in_flight:
        flying[r["agent"]] = flying.get(r["agent"], 0) + 1
    table = Table("agent", "status", "runner", "in flight", "queue", box=None, title="agents", title_justify="left")
    for a in agents:
        table.add_row(a["agent"], a["status"], a["runner"] or "-", str(flying.get(a["agent"], 0)),
                      ", ".join(map(str, a["pending"])) or "-")
    console.print(table)
    console.print(f"always on: {always['around_the_clock']} of {always['agents']} agent(s) worked or watched for "
                  "at least 95% of the last 24 hours (roster presence)", highlight=False)
    console.print(f"fleet: {len(processes)} roster up process(es), {len(in_flight)} run(s) in flight, "
                  f"{fleet.runs_last_minute} run(s) ended in the last minute, {fleet.lost_races} lost race(s)",
                  highlight=False)
    if in_flight:
        flight_table = Table("run", "agent", "task", "running for", box=None, title="runs in flight",
                             title_justify="left")
        for r in in_flight:
            flight_table.add_row(r["run"], r["agent"], str(r["task_id"] or "-"), f"{r['seconds']:.0f} s")
        console.print(flight_table)
    if company.paused():
        console.print(f"paused scopes: {', '.join(company.paused())}")
    lease_table = Table("task", "holder", "run", "token", "until", box=None, title="leases", title_justify="left")
    for lease in leases:
        lease_table.add_row(str(lease["task_id"]), lease["holder"], lease["run_id"], str(lease["fencing_token"]),
                            lease["expires_at"])
    console.print(lease_table if leases else "leases: none")
    run_table = Table("run", "agent", "task", "outcome", "transition", "failure", "seconds", box=None,
                      title="latest runs", title_justify="left")
    for r in runs:
        run_table.add_row(r["id"], r["agent"], str(r["task_id"] or "-"), r["outcome"], r["transition"] or "-",
                          r["failure_category"] or "-", f"{r['wall_seconds']:.3f}" if r["wall_seconds"] else "-")
    console.print(run_table if runs else "runs: none")

