"""The agency lane as a demo: a scratch workspace around a copy of a repository, the lane run in-process
with the dispatcher, a stop (or ``--yes``) at the approval edge, and a report.

The user's own working tree is never touched: the repository at PATH is cloned from its committed HEAD
(uncommitted changes are left out, and the output says so). With no PATH, a scratch repository is
assembled from a handful of the running Python's standard-library modules: real code written by
others, present on every machine. Running the demo again on the same workspace continues where it
stopped: tasks are keyed by finding, leases and runs are in the store, and nothing is redone.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roster.agency.lint import git
from roster.errors import UsageError
from roster.runtime.dispatcher import Dispatcher, Outcome
from roster.store import CompanyStore

STDLIB_MODULES = ("colorsys", "fnmatch", "shlex", "textwrap", "graphlib", "sched", "bisect", "tabnanny")
"""Standard-library modules the default scratch repository is made of."""
SPEC_NAME = "roster.yaml"
MAX_CYCLES = 400


BUILDER_COMMAND = "__PYTHON__ -m roster.agency.workers builder"
OFFLINE_PLANNER = 'runner: {kind: llm, model: offline, offline_script: "roster.agency.workers:plan_offline"}'


def spec_text(operator: str, model: str | None = None, builder_agent: str | None = None) -> str:
    """The agency spec, filled in for this machine: this Python runs the workers; ``operator`` is the
    human; ``model`` (e.g. ``openai:gpt-4o-mini``, from ``ROSTER_MODEL``) replaces the planner's scripted
    offline model; ``builder_agent`` (an agent CLI such as ``claude -p``, from ``ROSTER_BUILDER_AGENT``)
    takes what ruff cannot fix."""
    text = (Path(__file__).parent / SPEC_NAME).read_text(encoding="utf-8")
    if model:
        text = text.replace(OFFLINE_PLANNER, f"runner: {{kind: llm, model: {json.dumps(model)}}}")
    if builder_agent:
        text = text.replace(BUILDER_COMMAND, f"{BUILDER_COMMAND} --agent {shlex.quote(builder_agent)}")
    return text.replace("__PYTHON__", sys.executable).replace("__OPERATOR__", operator)


def prepare_repository(path: Path | None, target: Path) -> list[str]:
    """Put the repository to work on at ``target``; returns lines that say what was done."""
    if path is None:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        target.mkdir(parents=True)
        copied = []
        for name in STDLIB_MODULES:
            source = stdlib / f"{name}.py"
            if source.exists():
                shutil.copy(source, target / source.name)
                copied.append(source.name)
        git(target, "init", "-q", "-b", "main")
        git(target, "add", "-A")
        git(target, "commit", "-q", "-m", "Modules from Python's standard library, for the Roster demo")
        return [f"No repository given: a scratch repository of {len(copied)} modules of this Python's standard "
                f"library ({', '.join(copied)}), real code written by others, from {stdlib}."]
    path = path.expanduser().resolve()
    if not path.exists():
        raise UsageError(f"{path} does not exist; give the path of a git repository")
    inside = subprocess.run(["git", "-C", str(path), "rev-parse", "--is-inside-work-tree"], capture_output=True,
                            text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise UsageError(f"{path} is not a git repository; give the path of one (or no path for a scratch "
                         "repository)")
    lines = [f"Working on a copy of {path} (its committed HEAD); your working tree is never touched."]
    if git(path, "status", "--porcelain").stdout.strip():
        lines.append("It has uncommitted changes: they are not part of the copy.")
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(path), str(target)], check=True,
                   capture_output=True)
    branch = git(target, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    if branch != "main":
        git(target, "checkout", "-q", "-B", "main")
    return lines


def run_lane(company: CompanyStore, workspace: Path, *, operator: str, approve: bool,
             say: Callable[[str], None], max_cycles: int = MAX_CYCLES) -> dict[str, Any]:
    """Cycle the dispatcher until the lane has nothing left to do, approving merges as ``operator`` when
    ``approve``; returns what the report needs. Progress goes to ``say``: one line per run and per KPI
    reading, and after each busy cycle the tasks per state, the runs so far and the approvals waiting."""
    def log(line: str) -> None:  # the runtime's notes (KPI readings, escalations), less what _line says
        if not _FAILURE_NOTE.match(line):
            say(f"  {line}")

    dispatcher = Dispatcher(company, workdir=workspace, log=log)

    def stop(_signum: int, _frame: object) -> None:  # Ctrl-C: finish the run in flight, give its lease back
        say("  stopping after the run in flight; run the demo again on this workspace to continue")
        dispatcher.stopping.set()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        return _cycle(company, dispatcher, operator, approve, say, max_cycles)
    finally:
        dispatcher.close()  # record the stop: its runtime leases (the leader's jobs) go back for the next run
        signal.signal(signal.SIGINT, previous)


def _cycle(company: CompanyStore, dispatcher: Dispatcher, operator: str, approve: bool,
           say: Callable[[str], None], max_cycles: int) -> dict[str, Any]:
    waiting: list = []
    runs = 0
    for _ in range(max_cycles):
        if dispatcher.stopping.is_set():
            return {"waiting": [], "stopped": True}
        outcomes = dispatcher.cycle()
        runs += len(outcomes)
        for outcome in outcomes:
            say(_line(outcome))
        waiting = company.inbox(actor=operator)
        if approve:
            for request in waiting:
                company.approve_request(request.id, actor=operator, note="approved by roster demo --yes")
                say(f"  approved merge request {request.id} (task {request.task_id}) as {operator}")
            waiting = []
        if outcomes:
            say(progress(company, runs, len(waiting)))
        if not outcomes and not (approve and company.inbox(actor=operator)):
            break
    return {"waiting": waiting, "stopped": False}


_FAILURE_NOTE = re.compile(r"^\S+ on task \d+: \w+ failure: ")
"""The dispatcher's note of a failed run, which the run's own progress line already gives."""


def progress(company: CompanyStore, runs: int, waiting: int) -> str:
    """One progress line: tasks per state (in the workflow's order), runs this session, approvals waiting."""
    counts = company.task_counts(workflow="lint-fix")
    order = company.spec().workflows["lint-fix"].states
    states = " · ".join(f"{s} {counts[s]}" for s in order if counts.get(s))
    return f"  -- tasks: {states or 'none yet'} | runs {runs} | approvals waiting {waiting}"


def _line(outcome: Outcome) -> str:
    where = f"task {outcome.task_id}" if outcome.task_id is not None else "the repository"
    what = f" -> {outcome.transition}" if outcome.transition else ""
    why = f" ({outcome.failure.category.value}: {outcome.failure.message})" if outcome.failure else ""
    return f"  {outcome.agent:>8} on {where}: {outcome.outcome}{what}{why}"


def report(company: CompanyStore) -> list[str]:
    """The closing report, as lines."""
    states = company.task_counts()
    transitions = Counter(e.data.get("transition") for e in company.audit_log(action="task.transition"))
    rejected = Counter((e.data.get("transition"), e.data["error"].get("clause"))
                       for e in company.audit_log(action="task.transition.rejected")
                       if isinstance(e.data.get("error"), dict))
    costs = company.costs()
    merged = states.get("merged", 0)
    spent = sum(a["priced_cost_usd"] for a in costs["agents"])
    unpriced = sum(a["unpriced_runs"] for a in costs["agents"])
    count, broken = company.verify_audit()
    lines = ["", "Report", f"  tasks by state: {', '.join(f'{s} {n}' for s, n in sorted(states.items())) or 'none'}",
             f"  transitions: {', '.join(f'{t} {n}' for t, n in sorted(transitions.items())) or 'none'}"]
    lines += [f"  contract rejections: {t} refused by clause '{c}' x{n}" for (t, c), n in sorted(rejected.items())]
    for e in company.list_escalations():
        lines.append(f"  escalation: task {e.task_id} to {e.to} ({e.step}): "
                     f"{textwrap.shorten(e.reason, 220, placeholder=' ...')}")
    for r in company.list_requests():
        lines.append(f"  approval {r.id}: task {r.task_id} {r.status}" + (f" by {r.decided_by}" if r.decided_by else ""))
    for a in costs["agents"]:
        lines.append(f"  runs of {a['name']}: {a['runs']} ({a['successes']} succeeded), tokens {a['input_tokens']} in / "
                     f"{a['output_tokens']} out, {_usd(a['cost_usd'], a['unpriced_runs'])}")
    lines.append(f"  cost per merged fix: {_usd(spent / merged, unpriced)}" if merged
                 else "  cost per merged fix: no merge yet")
    lines += _kpi_lines(company)
    lines.append(f"  audit verify: {count} events, " + ("intact" if broken is None else f"BROKEN at seq {broken[0]}"))
    return lines


def _usd(cost: float | None, unpriced_runs: int) -> str:
    """A cost for the report: ``0.1234 USD``, or unknown when runs could not be priced (never 0)."""
    if unpriced_runs:
        return f"cost unknown ({unpriced_runs} run(s) could not be priced)"
    return f"{cost or 0.0:.4f} USD"


def _kpi_lines(company: CompanyStore) -> list[str]:
    """Each KPI as first -> latest reading, with when each was measured and what prompted it."""
    lines = []
    for name, summary in company.kpi_summaries(actor=None).items():
        if summary.first is None or summary.latest is None:
            lines.append(f"  KPI {name}: not measured yet")
            continue
        first, latest = summary.first, summary.latest
        unit = company.spec().kpis[name].unit
        lines.append(f"  KPI {name}: {first.value:g} -> {latest.value:g} {unit} ({summary.readings} reading(s): first "
                     f"at {first.measured_at[11:19]} UTC, {first.source}; latest at {latest.measured_at[11:19]} UTC, "
                     f"{latest.source})")
    return lines
