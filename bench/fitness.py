"""Fitness from the record over 100,000 runs (issue 17: ``roster fitness`` answers in under 1 s).

One company (two workflows with linked KPIs, 40 agents in pools, a human) applied through the real store,
then a month of history inserted as rows into the real tables in one transaction (fitness reads the
record; how the rows got there does not matter to it): ``--tasks`` tasks (default 20,000) and ``--runs``
runs (default 100,000) spread over the last 30 days: succeeded with a transition; waiting on an approval
request that is approved, rejected, expired or (recent ones) pending; failed (contract violations, invalid
fields, runner timeouts, crashes, a busy store); stopped; abandoned; a few still running; a few runs
without a task (triggers). Costs in USD (some unpriced: NULL), tokens, wall seconds and models (program
runners have none). About 5% of runs are corrected (``corrected_at`` and a ``corrections`` row: rework,
rejected, reverted, check_failed), 300 escalations, and a KPI reading every 3 hours for each KPI.

Measured side by side, in rounds that take turns (one warm-up round, then ``--repeat`` rounds, default 5;
medians): ``fitness()`` (the default 7-day window) and ``fitness(window_seconds=30 days)`` (every run),
against the reference read ``costs(since=...)`` over the same windows (an existing aggregate over the same
runs, grouped in SQL), with their ratios. Optionally (``--cli``) ``roster fitness --json --window 30d`` as
a subprocess, end to end, against ``roster costs --json``. Each report is checked against what was seeded
(runs, settled outcomes plus unsettled ones, successes, each kind of burden), so the figures measure the
real thing. Absolute times on a shared machine are noise; the ratios are measured in the same run.

Usage: python bench/fitness.py [--runs N] [--tasks N] [--backend sqlite|postgresql|both] [--repeat N] [--cli]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pg import pg_schema  # bench/pg.py, beside this script
from sqlalchemy import insert, text

from roster.specfile import parse_spec
from roster.store import Store
from roster.store.schema import approval_requests, corrections, escalations, kpi_readings, runs, tasks
from roster.store.store import format_ts

COMPANY = "bench"
DAY = 86400

POOLS = {"builder": 16, "qa": 8, "merger": 4, "triager": 12}
"""Agents per role: 40 in all, in four pools."""
MODELS = {"builder": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1-mini", "google-gla:gemini-2.5-flash"],
          "qa": ["openai:gpt-4.1-mini"], "merger": ["anthropic:claude-opus-4-1"], "triager": [None]}
"""The model each pool's agents run (``None``: a program runner, no model)."""
USD_PER_MTOK = {"anthropic:claude-sonnet-4-5": 6.0, "openai:gpt-4.1-mini": 0.8, "google-gla:gemini-2.5-flash": 0.6,
                "anthropic:claude-opus-4-1": 30.0}
STEPS = {"fix": [("build", "builder", 45), ("verify", "qa", 30), ("rework", "qa", 10), ("merge", "merger", 15)],
         "triage": [("sort", "triager", 60), ("close", "triager", 40)]}
"""Per workflow: the transitions its runs attempt, by which pool, how often."""
FAILURES = [("contract-violation", "deterministic", 35), ("invalid-fields", "deterministic", 5),
            ("runner-timeout", "transient", 25), ("crashed", "transient", 15), ("runner-crashed", "transient", 5),
            ("store-busy", "transient", 15)]


def spec_text() -> str:
    lines = ["company: bench",
             "workflows:",
             "  fix:",
             "    states: [todo, built, verified, merged]",
             "    initial: todo",
             "    kpis: [defects]",
             "    fields:",
             "      branch: {type: string}",
             "    transitions:",
             "      build:  {from: todo, to: built, by: [builder], writes: [branch]}",
             "      verify: {from: built, to: verified, by: [qa]}",
             "      rework: {from: built, to: todo, by: [qa]}",
             "      merge:  {from: verified, to: merged, by: [merger], approval: {by: [human]}}",
             "  triage:",
             "    states: [new, sorted, closed]",
             "    initial: new",
             "    kpis: [lead_time]",
             "    transitions:",
             "      sort:  {from: new, to: sorted, by: [triager]}",
             "      close: {from: sorted, to: closed, by: [triager]}",
             "kpis:",
             "  defects: {direction: down}",
             "  lead_time: {direction: down}",
             "fitness: {settle: 1d, min_outcomes: 10}",
             "agents:"]
    for role, n in POOLS.items():
        tier = "high-impact-executor" if role == "merger" else "bounded-mutator"
        runner = ", runner: {kind: program, callable: 'json:dumps'}" if MODELS[role] == [None] else ""
        lines += [f"  {role[:1]}{i:02d}: {{roles: [{role}], tier: {tier}{runner}}}" for i in range(n)]
    lines += ["humans:", "  lead: {}"]
    return "\n".join(lines) + "\n"


def _pick(rng: random.Random, weighted: list[tuple]) -> tuple:
    return rng.choices(weighted, weights=[w[-1] for w in weighted])[0]


def seed(store: Store, *, n_runs: int, n_tasks: int, seed_value: int = 17) -> dict[str, Any]:
    """Insert the history; returns what was seeded (the run rows, approval statuses, correction and
    escalation times) for :func:`expected`."""
    rng = random.Random(seed_value)
    now = store.clock()
    start = now - timedelta(days=30) + timedelta(minutes=30)  # inside a 30-day window read a little later
    span = (timedelta(days=30) - timedelta(minutes=60)).total_seconds()
    agents = {role: [f"{role[:1]}{i:02d}" for i in range(n)] for role, n in POOLS.items()}
    model_of = {h: MODELS[role][i % len(MODELS[role])] for role, hs in agents.items() for i, h in enumerate(hs)}

    task_rows, task_flow = [], {}
    for tid in range(1, n_tasks + 1):
        flow = "fix" if rng.random() < 0.7 else "triage"
        created = format_ts(start + timedelta(seconds=rng.uniform(0, span)))
        task_flow[tid] = flow
        task_rows.append({"company_id": COMPANY, "id": tid, "workflow": flow,
                          "state": "todo" if flow == "fix" else "new", "title": f"task {tid}", "fields": "{}",
                          "owner": None, "priority": rng.randint(0, 3), "version": 1, "created_by": "lead",
                          "created_at": created, "updated_at": created, "fencing_token": 0})
    by_flow = {f: [t for t, w in task_flow.items() if w == f] for f in STEPS}

    run_rows, approval_rows, correction_rows = [], [], []
    for i in range(n_runs):
        started = start + timedelta(seconds=span * i / n_runs + rng.uniform(0, 30))
        row: dict[str, Any] = {"company_id": COMPANY, "id": f"r{i:09d}", "trigger": "work", "task_id": None,
                               "fencing_token": None, "attempt": 1, "started_at": format_ts(started),
                               "ended_at": None, "outcome": "succeeded", "transition": None, "failure_category": None,
                               "failure_code": None, "failure_message": None, "model": None, "input_tokens": 0,
                               "output_tokens": 0, "cost_usd": 0.0, "wall_seconds": None, "reflection": False,
                               "approval_id": None, "corrected_at": None}
        draw = rng.random()
        if draw < 0.03:  # a trigger's run without a task
            role = rng.choice(list(POOLS))
            step = None
        else:
            flow = "fix" if rng.random() < 0.7 else "triage"
            step, role, _ = _pick(rng, STEPS[flow])
            row["task_id"] = rng.choice(by_flow[flow])
            row["fencing_token"] = rng.randint(1, 5)
            row["attempt"] = 1 if rng.random() < 0.9 else 2
        agent = rng.choice(agents[role])
        row["agent"], row["model"] = agent, model_of[agent]
        seconds = rng.lognormvariate(3.5, 0.8) if row["model"] else rng.uniform(0.05, 2.0)
        seconds = min(seconds, 900.0)
        if started > now - timedelta(minutes=45) and rng.random() < 0.05:  # still running
            row["outcome"] = "running"
        else:
            ended = started + timedelta(seconds=seconds)
            row["ended_at"], row["wall_seconds"] = format_ts(ended), round(seconds, 3)
            if row["model"]:
                row["input_tokens"] = rng.randint(2_000, 40_000)
                row["output_tokens"] = rng.randint(200, 4_000)
                tokens = row["input_tokens"] + row["output_tokens"]
                row["cost_usd"] = None if rng.random() < 0.02 else round(tokens * USD_PER_MTOK[row["model"]] / 1e6, 6)
            if step is not None:
                _outcome(rng, row, step, ended, now, approval_rows, correction_rows)
        run_rows.append(row)

    escalation_rows = []
    handles = [h for hs in agents.values() for h in hs]
    for _ in range(300):
        at = format_ts(start + timedelta(seconds=rng.uniform(0, span)))
        human = rng.random() < 0.4
        resolved = rng.random() < 0.7
        escalation_rows.append({"company_id": COMPANY, "task_id": rng.randint(1, n_tasks), "goal_id": None,
                                "from_agent": rng.choice(handles), "step": "human" if human else "peer",
                                "to": "human" if human else rng.choice(handles), "category": "judgment",
                                "reason": "not sure the fix is safe", "status": "resolved" if resolved else "open",
                                "created_at": at, "resolved_by": "lead" if resolved else None,
                                "resolved_at": at if resolved else None, "note": ""})
    kpi_rows = []
    for kpi, base in (("defects", 40.0), ("lead_time", 30.0)):
        moment, value = now - timedelta(days=31), base
        while moment < now:
            value = max(0.0, value + rng.gauss(-0.02, 1.0))
            kpi_rows.append({"company_id": COMPANY, "kpi": kpi, "value": round(value, 2),
                             "measured_at": format_ts(moment), "recorded_by": "lead", "source": "bench"})
            moment += timedelta(hours=3)

    with store.write() as conn:
        conn.execute(insert(tasks), task_rows)
        if approval_rows:
            conn.execute(insert(approval_requests), approval_rows)
        conn.execute(insert(runs), run_rows)
        conn.execute(insert(corrections), correction_rows)
        conn.execute(insert(escalations), escalation_rows)
        conn.execute(insert(kpi_readings), kpi_rows)
        if store.dialect.name == "postgresql" and approval_rows:  # ids were given: move the sequence past them
            conn.execute(text("SELECT setval(pg_get_serial_sequence('approval_requests', 'id'), :n)"),
                         {"n": len(approval_rows)})
    return {"runs": run_rows, "approvals": {a["id"]: a["status"] for a in approval_rows},
            "corrections": [(c["at"], c["kind"]) for c in correction_rows],
            "escalations": [e["created_at"] for e in escalation_rows], "tasks": len(task_rows),
            "kpi_readings": len(kpi_rows)}


def _outcome(rng: random.Random, row: dict[str, Any], step: str, ended: datetime, now: datetime,
             approval_rows: list[dict], correction_rows: list[dict]) -> None:
    """A task run's outcome, its approval request and its correction, if any."""
    draw = rng.random()
    if draw < 0.04:
        row["outcome"] = "stopped"
        row["failure_category"], row["failure_code"] = "governance", "paused"
        return
    if draw < 0.06:
        row["outcome"], row["failure_message"] = "abandoned", "its dispatcher stopped heartbeating"
        return
    if draw < 0.20:
        code, category, _ = _pick(rng, FAILURES)
        row["outcome"], row["failure_code"], row["failure_category"] = "failed", code, category
        row["failure_message"] = f"bench: {code}"
        if code in ("contract-violation", "invalid-fields"):
            row["transition"] = step  # the contract refused the transition the run asked for
        return
    row["transition"] = step
    if step == "merge":  # an approval edge: the run opens a request and waits
        row["outcome"] = "waiting"
        request_id = len(approval_rows) + 1
        row["approval_id"] = request_id
        recent = now - ended < timedelta(hours=36)
        status = rng.choices(["pending", "approved", "rejected", "expired"],
                             weights=[50, 35, 15, 0] if recent else [0, 72, 20, 8])[0]
        decided = None if status == "pending" else min(ended + timedelta(minutes=rng.uniform(5, 600)),
                                                       now - timedelta(seconds=1))
        approval_rows.append({"id": request_id, "company_id": COMPANY, "kind": "transition", "task_id": row["task_id"],
                              "workflow": "fix", "transition": "merge", "requested_by": row["agent"],
                              "task_version": 3, "payload": "{}", "evidence": "{}", "rationale": "tests pass",
                              "status": status, "decided_by": None if decided is None else "lead", "note": "",
                              "created_at": format_ts(ended), "expires_at": format_ts(ended + timedelta(days=7)),
                              "decided_at": None if decided is None else format_ts(decided)})
        if status == "rejected":
            _correct(row, "rejected", "lead", decided, correction_rows)
        return
    row["outcome"] = "succeeded"
    if rng.random() < 0.04:  # corrected within the settle window (1 day), if that moment has come
        at = ended + timedelta(seconds=rng.uniform(60, DAY - 60))
        if at < now:
            kind = rng.choices(["rework", "reverted", "check_failed"], weights=[55, 15, 30])[0]
            _correct(row, kind, "lead" if kind == "reverted" else "q00", at, correction_rows)


def _correct(row: dict[str, Any], kind: str, by: str, at: datetime, correction_rows: list[dict]) -> None:
    row["corrected_at"] = format_ts(at)
    correction_rows.append({"company_id": COMPANY, "run_id": row["id"], "agent": row["agent"],
                            "workflow": "fix" if row["transition"] in ("build", "verify", "rework", "merge")
                            else "triage", "task_id": row["task_id"], "kind": kind, "by": by,
                            "detail": f"bench: {kind}", "at": format_ts(at)})


def expected(seeded: dict[str, Any], since: str, until: str, settle_seconds: int = DAY) -> dict[str, Any]:
    """What a report from ``since`` to ``until`` must count, from the seeded rows alone."""
    settled_before = format_ts(datetime.fromisoformat(until) - timedelta(seconds=settle_seconds))
    out: Counter = Counter()
    burden: Counter = Counter()
    for r in seeded["runs"]:
        if r["started_at"] < since or r["outcome"] == "running":
            continue
        out["runs"] += 1
        code = r["failure_code"]
        if code in ("contract-violation", "invalid-fields"):
            burden["contract_rejections"] += 1
        elif code in ("crashed", "runner-crashed"):
            burden["crashed"] += 1
        elif code == "runner-timeout":
            burden["timed_out"] += 1
        if r["task_id"] is None or r["outcome"] == "stopped":
            continue
        out["task_outcomes"] += 1  # settled (evidence) or unsettled
        status = seeded["approvals"].get(r["approval_id"])
        if r["outcome"] not in ("succeeded", "waiting") or r["transition"] is None or r["corrected_at"]:
            continue
        if r["outcome"] == "waiting" and status == "pending":
            out["unsettled"] += 1
        elif r["outcome"] == "waiting" and status != "approved":
            continue
        elif r["ended_at"] <= settled_before:
            out["successes"] += 1
        else:
            out["unsettled"] += 1
    for at, kind in seeded["corrections"]:
        if at >= since:
            burden[kind] += 1
    burden["escalations"] = sum(1 for at in seeded["escalations"] if at >= since)
    return {**out, "burden": dict(burden)}


def observed(report: dict[str, Any]) -> dict[str, Any]:
    """The same totals, summed over the report's agents."""
    agents = report["agents"]
    burden: Counter = Counter()
    for a in agents:
        burden.update({k: v for k, v in a["burden"].items() if v})
    return {"runs": sum(a["runs"] for a in agents),
            "task_outcomes": sum(a["evidence"] + a["unsettled"] for a in agents),
            "unsettled": sum(a["unsettled"] for a in agents), "successes": sum(a["successes"] for a in agents),
            "burden": dict(burden), "model_runs": sum(m["runs"] for m in report["models"])}


def check(report: dict[str, Any], seeded: dict[str, Any]) -> dict[str, Any]:
    """Raise unless the report counts exactly what was seeded in its window; returns the totals."""
    want, got = expected(seeded, report["since"], report["until"]), observed(report)
    for key in ("runs", "task_outcomes", "unsettled", "successes", "burden"):
        if want.get(key, 0 if key != "burden" else {}) != got[key]:
            raise SystemExit(f"fitness since {report['since']}: {key} is {got[key]!r}, seeded {want.get(key)!r}")
    if got["model_runs"] != got["runs"]:
        raise SystemExit(f"per model or runner: {got['model_runs']} runs, per agent {got['runs']}")
    return got


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def measure(url: str, *, n_runs: int, n_tasks: int, repeat: int, cli: bool, workdir: Path) -> dict[str, Any]:
    """Seed a store at ``url``, then time fitness and costs side by side; the figures as JSON."""
    store = Store.open(url)
    try:
        store.apply(parse_spec(spec_text()), applied_by="lead")
        company = store.company(COMPANY)
        t0 = time.perf_counter()
        seeded = seed(store, n_runs=n_runs, n_tasks=n_tasks)
        seed_seconds = time.perf_counter() - t0
        if store.dialect.name == "postgresql":
            with store.write() as conn:  # as autovacuum would after a bulk load: planner statistics
                conn.execute(text("ANALYZE"))
        windows = {"7d": 7 * DAY, "30d": 30 * DAY}
        calls = {}
        for label, seconds in windows.items():
            calls[f"fitness {label}"] = (lambda s=seconds: company.fitness(window_seconds=s))
            calls[f"costs {label}"] = (lambda s=seconds: company.costs(since=format_ts(store.clock()
                                                                                       - timedelta(seconds=s))))
        if cli:
            env = _cli_env(store, company, url, workdir)
            calls["roster fitness --json --window 30d"] = lambda: _run_cli(
                env, workdir, ["fitness", "--json", "--window", "30d"])
            calls["roster costs --json"] = lambda: _run_cli(env, workdir, ["costs", "--json"])
        wall: dict[str, list[float]] = {k: [] for k in calls}
        cpu: dict[str, list[float]] = {k: [] for k in calls}
        totals = {}
        for round_ in range(repeat + 1):  # round 0 warms up (caches, the planner, the page cache)
            for name, call in calls.items():
                t, c = time.perf_counter(), _cpu()
                result = call()
                w, p = time.perf_counter() - t, _cpu() - c
                if round_ == 0:
                    if name.startswith("fitness"):
                        totals[name] = check(result, seeded)
                    elif name.startswith("roster fitness"):
                        totals[name] = check(json.loads(result), seeded)
                    continue
                wall[name].append(w)
                cpu[name].append(p)
        figures = {name: {"wall_ms": round(_median(wall[name]) * 1000, 1), "cpu_ms": round(_median(cpu[name]) * 1000, 1),
                          "min_ms": round(min(wall[name]) * 1000, 1), "max_ms": round(max(wall[name]) * 1000, 1)}
                   for name in calls}
        for label in windows:
            figures[f"fitness {label}"]["x_costs"] = round(
                figures[f"fitness {label}"]["wall_ms"] / figures[f"costs {label}"]["wall_ms"], 2)
        if cli:
            figures["roster fitness --json --window 30d"]["x_costs"] = round(
                figures["roster fitness --json --window 30d"]["wall_ms"] / figures["roster costs --json"]["wall_ms"], 2)
        return {"backend": store.dialect.name, "server_version": _server_version(store), "runs": n_runs,
                "tasks": seeded["tasks"], "corrections": len(seeded["corrections"]),
                "approval_requests": len(seeded["approvals"]), "escalations": len(seeded["escalations"]),
                "kpi_readings": seeded["kpi_readings"], "seed_seconds": round(seed_seconds, 1),
                "totals": totals, "figures": figures}
    finally:
        store.close()


def _server_version(store: Store) -> str:
    with store.read() as conn:
        if store.dialect.name == "postgresql":
            return conn.execute(text("SHOW server_version")).scalar_one()
        return conn.execute(text("SELECT sqlite_version()")).scalar_one()


def _cli_env(store: Store, company: Any, url: str, workdir: Path) -> dict[str, str]:
    """A workspace for ``roster fitness``: the spec as roster.yaml, the store by ``ROSTER_DB``, a token of
    the human (who may read the whole company)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "roster.yaml").write_text(spec_text(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    env.update(ROSTER_DB=url, ROSTER_TOKEN=company.issue_token("lead", actor=None).token, COLUMNS="120")
    return env


def _run_cli(env: dict[str, str], workdir: Path, args: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "roster", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"roster {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished children (the CLI's subprocesses)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def print_result(result: dict[str, Any]) -> None:
    t = result["totals"]
    print(f"\n{result['backend']} {result['server_version']}: {result['runs']:,} runs, {result['tasks']:,} tasks, "
          f"{result['corrections']:,} corrections, {result['approval_requests']:,} approval requests, "
          f"{result['escalations']} escalations, {result['kpi_readings']} KPI readings "
          f"(seeded in {result['seed_seconds']} s)", flush=True)
    for name in ("fitness 7d", "fitness 30d"):
        print(f"  {name}: {t[name]['runs']:,} runs, {t[name]['task_outcomes']:,} task outcomes "
              f"({t[name]['unsettled']:,} unsettled), {t[name]['successes']:,} successes, burden "
              f"{t[name]['burden']}: as seeded", flush=True)
    print(f"  {'measured (median)':<38} {'wall ms':>9} {'CPU ms':>9} {'min-max ms':>17} {'x costs':>8}")
    for name, f in result["figures"].items():
        ratio = f"{f['x_costs']:.2f}" if "x_costs" in f else ""
        print(f"  {name:<38} {f['wall_ms']:>9.1f} {f['cpu_ms']:>9.1f} {f['min_ms']:>8.1f}-{f['max_ms']:<8.1f} "
              f"{ratio:>8}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=None, help="default: one task per 5 runs")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="also time 'roster fitness --json' as a subprocess")
    args = parser.parse_args()
    n_tasks = args.tasks or max(1, args.runs // 5)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend in ("sqlite", "both"):
            results.append(measure(f"sqlite:///{Path(tmp) / 'fitness.db'}", n_runs=args.runs, n_tasks=n_tasks,
                                   repeat=args.repeat, cli=args.cli, workdir=Path(tmp) / "sqlite"))
            print_result(results[-1])
        if args.backend in ("postgresql", "both"):
            with pg_schema("bench_fitness") as url:
                if url is not None:
                    results.append(measure(url, n_runs=args.runs, n_tasks=n_tasks, repeat=args.repeat,
                                           cli=args.cli, workdir=Path(tmp) / "postgresql"))
                    print_result(results[-1])
    print(json.dumps({"bench": "fitness", "results": [{k: v for k, v in r.items() if k != "totals"}
                                                      for r in results]}))


if __name__ == "__main__":
    main()
