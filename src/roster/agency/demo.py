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
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roster.agency.lint import git, project_rules
from roster.agency.worktrees import remove_stale_worktrees
from roster.defaults import SPEC_NAME
from roster.kernel.fitness import burden_text, describe
from roster.errors import RosterError, UsageError
from roster.runtime.dispatcher import Dispatcher, Outcome
from roster.store import CompanyStore

STDLIB_MODULES = ("colorsys", "fnmatch", "shlex", "textwrap", "graphlib", "sched", "bisect", "tabnanny")
"""Standard-library modules the default scratch repository is made of."""
MAX_CYCLES = 400
GOAL_AGENT = "planner"
"""Whom the demo gives the lane's goal and whose plan it reflects on: the agent that turns findings into specs."""
GOAL_BUDGET_RUNS = 10
GOAL_BUDGET_USD = 1.0


BUILDER_COMMAND = "__PYTHON__ -m roster.agency.workers builder"
MERGER_RUNNER = 'runner: {kind: program, command: "__PYTHON__ -m roster.agency.workers merger", timeout: 600}'
BATCH_MERGER_RUNNER = ('runner: {kind: program, command: "__PYTHON__ -m roster.agency.workers merger --batch", '
                       'timeout: 600, token: true}')
OFFLINE_PLANNER = 'runner: {kind: llm, model: offline, offline_script: "roster.agency.workers:plan_offline"}'


def spec_text(operator: str, model: str | None = None, builder_agent: str | None = None,
              batch_merge: bool = False) -> str:
    """The agency spec, filled in for this machine: this Python runs the workers; ``operator`` is the
    human; ``model`` (e.g. ``openai:gpt-4o-mini``, from ``ROSTER_MODEL``) replaces the planner's scripted
    offline model; ``builder_agent`` (an agent CLI such as ``claude -p``, from ``ROSTER_BUILDER_AGENT``)
    takes what ruff cannot fix; ``batch_merge`` makes the merger batch verified fixes onto one review
    branch (:mod:`roster.agency.review`), with a token for its runs to land them."""
    text = (Path(__file__).parent / SPEC_NAME).read_text(encoding="utf-8")
    if batch_merge:
        text = text.replace(MERGER_RUNNER, BATCH_MERGER_RUNNER)
    if model:
        text = text.replace(OFFLINE_PLANNER, f"runner: {{kind: llm, model: {json.dumps(model)}}}")
    if builder_agent:
        text = text.replace(BUILDER_COMMAND, f"{BUILDER_COMMAND} --agent {shlex.quote(builder_agent)}")
    return text.replace("__PYTHON__", sys.executable).replace("__OPERATOR__", operator)


def prepare_repository(path: Path | None, target: Path) -> list[str]:
    """Put the repository to work on at ``target`` (a folder that does not exist yet); returns lines that
    say what was done.

    ``path`` is a git repository or any folder inside one (its enclosing repository is used, and the
    lines say so); ``None`` assembles a scratch repository of :data:`STDLIB_MODULES`. The copy is a clone
    of the committed HEAD, on a branch ``main``. Raises :class:`UsageError` (exit 2) when ``path`` does
    not exist, is not in a git repository, has no commits, or git fails to read or copy it (with git's
    own message). ``target`` may be left half-made on failure: :func:`undone_on_failure` removes it."""
    if path is None:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        target.mkdir(parents=True)
        copied = []
        for name in STDLIB_MODULES:
            source = stdlib / f"{name}.py"
            if source.exists():
                shutil.copy(source, target / source.name)
                copied.append(source.name)
        # The modules are this Python's: so is their floor (judged at 3.7, their newer syntax is an error).
        floor = f"{sys.version_info.major}.{sys.version_info.minor}"
        (target / "pyproject.toml").write_text(f'[project]\nname = "stdlib-sample"\nversion = "0"\n'
                                               f'requires-python = ">={floor}"\n', encoding="utf-8")
        _git(target, "init", "-q", "-b", "main", doing="create the scratch repository")
        _git(target, "add", "-A", doing="create the scratch repository")
        _git(target, "commit", "-q", "-m", "Modules from Python's standard library, for the Roster demo",
             doing="commit the scratch repository")
        return [(f"No repository given: a scratch repository of {len(copied)} modules of this Python's standard "
                 f"library ({', '.join(copied)}), real code written by others, from {stdlib}, declaring "
                 f"Python >={floor}.")]
    source = find_source(path)
    lines = [*source.notes, (f"Working on a copy of {source.root} (its committed HEAD); your working tree is "
                             "never touched.")]
    if _git(source.root, "status", "--porcelain", doing=f"read {source.root}").stdout.strip():
        lines.append("It has uncommitted changes: they are not part of the copy.")
    _git(source.root, "clone", "-q", "--no-hardlinks", str(source.root), str(target),
         doing=f"copy {source.root}")
    branch = _git(target, "rev-parse", "--abbrev-ref", "HEAD", doing=f"read the copy at {target}").stdout.strip()
    if branch != "main":
        _git(target, "checkout", "-q", "-B", "main", doing=f"put the copy at {target} on a branch main")
    return lines


@dataclass(frozen=True)
class Source:
    """The repository a PATH names: ``root`` is its top level (absolute, symlinks resolved); ``notes`` are
    lines for the user (e.g. that PATH was a subdirectory of ``root``)."""

    root: Path
    notes: tuple[str, ...] = ()


def find_source(path: Path) -> Source:
    """The git repository at or enclosing ``path``, checked before anything is written.

    Raises :class:`UsageError` (exit 2), saying what is wrong and how to fix it, when ``path`` does not
    exist, is a file, is not inside a git work tree (git's own message included), or the repository has
    no commit yet (a copy of HEAD would be empty)."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise UsageError(f"{path} does not exist; give the path of a git repository (or no path for a scratch "
                         "repository)")
    if not path.is_dir():
        raise UsageError(f"{path} is a file; give the folder of a git repository (or no path for a scratch "
                         "repository)")
    top = git(path, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0 or not top.stdout.strip():
        raise UsageError(f"{path} is not a git repository, or git cannot read it (git says: "
                         f"{_said(top) or 'nothing'}); give the path of a git repository with a working tree "
                         "(or no path for a scratch repository)")
    root = Path(top.stdout.strip()).resolve()
    notes = () if root == path else ((f"{path} is inside the git repository {root}: the demo works on that "
                                      "whole repository."),)
    if git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).returncode != 0:
        raise UsageError(f"{root} has no commits yet: the demo works on a copy of the committed HEAD, so there is "
                         f"nothing to copy. Commit something first (git -C {shlex.quote(str(root))} add -A && "
                         f"git -C {shlex.quote(str(root))} commit -m 'First commit'), then run the demo again")
    return Source(root, notes)


def check_workspace(where: Path, source: Source | None) -> None:
    """Refuse a workspace the demo must not write to, before anything is written: one inside the source
    repository (or the repository itself: the demo would write ``roster.yaml``, ``skills/``, ``.roster/``
    and ``repo/`` into its working tree), or a path that exists and is not a folder. ``where`` is absolute.
    Raises :class:`UsageError` (exit 2)."""
    if where.exists() and not where.is_dir():
        raise UsageError(f"the workspace {where} is a file; give --workspace a folder (new or empty), or leave "
                         "it out for a new temporary folder")
    if source is not None and (where == source.root or source.root in where.parents):
        inside = "is the repository" if where == source.root else "is inside the repository"
        raise UsageError(f"the workspace {where} {inside} {source.root}: the demo would write its "
                         "spec, skills, store and copy into your working tree. Give --workspace a folder outside "
                         f"{source.root}, or leave it out for a new temporary folder; nothing was written")


@contextmanager
def undone_on_failure(where: Path, *, ours: bool = False) -> Iterator[None]:
    """Remove what the body created under ``where`` when it raises (Ctrl-C included), then re-raise.

    ``ours``: ``where`` is a folder the caller just made for this (a temporary folder): all of it goes.
    Otherwise, when ``where`` (or some of its parents) did not exist before, the topmost new folder goes;
    when it existed, only the entries the body added, never what was there before."""
    new_top = where
    while not new_top.parent.exists():
        new_top = new_top.parent
    existed = where.exists()
    before = set(os.listdir(where)) if existed and not ours else set()
    try:
        yield
    except BaseException:
        if ours or not existed:
            shutil.rmtree(where if ours else new_top, ignore_errors=True)
        else:
            for name in set(os.listdir(where)) - before:
                entry = where / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def _git(repo: Path, *args: str, doing: str) -> subprocess.CompletedProcess:
    """``git -C repo ARGS``; a failure is a :class:`UsageError` (exit 2) with git's own message."""
    done = git(repo, *args, check=False)
    if done.returncode != 0:
        raise UsageError(f"git could not {doing} (git {' '.join(args[:1])} exited {done.returncode}): "
                         f"{_said(done) or 'no message'}; check that the repository is readable and git works "
                         "here, then run the demo again")
    return done


def _said(done: subprocess.CompletedProcess) -> str:
    """What git said: its stderr (else stdout), on one line, at most 500 characters."""
    return " ".join((done.stderr.strip() or done.stdout.strip())[-500:].split())


def rules_line(repo: Path) -> str:
    """Which ruff configuration and Python floor the lane uses on ``repo`` (a checkout), as
    :func:`~roster.agency.lint.project_rules` decides them for the scout, the builder, QA and the KPI: one
    line, for the report and ``--plan``. Raises :class:`UsageError` when the project's configuration is
    not valid TOML."""
    return f"The lane's rules: {project_rules(repo).describe()}"


KPI = "lint_findings"
"""The lane's KPI (see ``roster.yaml``): ruff findings on main, the scout's tasks' counts summed."""


def plan(path: Path | None) -> list[str]:
    """What ``roster demo PATH`` would file, as lines, changing nothing: the repository (``path`` as for
    :func:`prepare_repository`, ``None`` for the scratch one) is cloned into a temporary folder, the
    scout's own scan runs on the clone, and the folder is removed before returning, also on failure.

    The lines give each task the scout would file (rule, file, finding count, how many ruff fixes
    safely), the totals, and the expected KPI change: the findings ruff can fix safely go, the others need
    a model or a person. Raises :class:`UsageError` (exit 2) on bad input or when the scan fails."""
    from roster.agency.workers import scout  # the scout's own grouping: the plan is what it would file

    scratch = Path(tempfile.mkdtemp(prefix="roster-plan-"))
    try:
        lines = prepare_repository(path, scratch / "repo")
        try:
            tasks = scout({}, scratch / "repo")["tasks"]
        except RosterError as exc:
            raise UsageError(f"the scan failed: {exc.message}") from None
        lines.append(rules_line(scratch / "repo"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [(t["fields"]["rule"], t["fields"]["file"], t["fields"]["count"], _safe_fixes(t), t["fields"]["fixable"])
            for t in tasks]
    total = sum(r[2] for r in rows)
    safe = sum(r[3] for r in rows)
    lines += ["", f"Plan: the scout would file {len(rows)} task(s), one per (rule, file):"]
    if any("," in row[0] for row in rows):
        lines.append("(in a file with import sorting, the interacting rules I001 and F401 are one task)")
    if rows:
        wide = max(len(r[1]) for r in rows)
        lines.append(f"  {'rule':<8} {'file':<{wide}} {'count':>5}  fixable")
        for rule, filename, count, fixes, fixable in rows:
            how = (f"yes, {fixes} of {count} safely" if fixes else "only with an unsafe fix" if fixable
                   else "no: needs a model or a person")
            lines.append(f"  {rule:<8} {filename:<{wide}} {count:>5}  {how}")
    rerun = "roster demo" + (f" {shlex.quote(str(path))}" if path is not None else "")
    lines += [(f"  totals: {total} finding(s) of {len({r[0] for r in rows})} rule(s) in "
               f"{len({r[1] for r in rows})} file(s); ruff fixes {safe} safely, {total - safe} need a model or a "
               "person"),
              (f"  expected KPI {KPI}: {total} -> {total - safe} findings once every safe fix is merged (at most: "
               "a safe fix that would change behaviour goes to a model or a person instead)"),
              (f"Nothing was changed: the scan ran on a scratch copy, now removed. Run the lane with: {rerun} "
               "(add --yes to approve the merges as you)")]
    return lines


def _safe_fixes(task: dict[str, Any]) -> int:
    """How many of a scout task's findings ruff fixes safely, from its ``ruff-json`` artifact (ruff's own
    records: ``fix.applicability`` is ``safe``, ``unsafe`` or ``display-only``)."""
    for artifact in task.get("artifacts") or []:
        if artifact.get("kind") == "ruff-json":
            records = json.loads(artifact["content"])
            return sum(1 for r in records if (r.get("fix") or {}).get("applicability") == "safe")
    return 0


def batch_mode(company: CompanyStore) -> bool:
    """Whether the workspace's spec has the merger batch fixes onto a review branch (``--batch-merge``)."""
    merger = company.spec().agents["merger"].runner
    return " --batch" in ((merger.model_dump().get("command") if merger else None) or "")


def file_review(company: CompanyStore, repo: Path, operator: str) -> Any | None:
    """In batch mode, once the lane is idle: file one review task (as ``operator``, who asked for the batch)
    for every ``batched`` fix, pinned to the review branch's current commit. Returns the task, or ``None``
    when no fix is batched or a review is still open or approved (its approval covers what it pinned)."""
    from roster.agency.review import REVIEW_BRANCH, REVIEW_WORKFLOW

    if any(company.list_tasks(workflow=REVIEW_WORKFLOW, state=state, limit=1) for state in ("open", "approved")):
        return None
    ids = _task_ids(company, "batched")
    if not ids:
        return None
    head = git(repo, "rev-parse", "--verify", f"refs/heads/{REVIEW_BRANCH}").stdout.strip()
    task, _ = company.create_task(workflow=REVIEW_WORKFLOW, title=f"Review: {len(ids)} lint fix(es) on {REVIEW_BRANCH}",
                                  actor=operator, fields={"branch": REVIEW_BRANCH, "head": head, "tasks": ids},
                                  idempotency_key=f"review:{head}")
    return task


def run_lane(company: CompanyStore, workspace: Path, *, operator: str, approve: bool,
             say: Callable[[str], None], max_cycles: int = MAX_CYCLES) -> dict[str, Any]:
    """Cycle the dispatcher until the lane has nothing left to do, approving merges as ``operator`` when
    ``approve``; returns what the report needs. Progress goes to ``say``: one line per run and per KPI
    reading, and after each busy cycle the tasks per state, the runs so far and the approvals waiting.
    In batch mode (:func:`batch_mode`) an idle lane with batched fixes gets a review task
    (:func:`file_review`), and cycling goes on."""
    def log(line: str) -> None:  # the runtime's notes (KPI readings, escalations), less what _line says
        if not _FAILURE_NOTE.match(line):
            say(f"  {line}")

    dispatcher = Dispatcher(company, workdir=workspace, log=log)

    def stop(_signum: int, _frame: object) -> None:  # Ctrl-C: finish the run in flight, give its lease back
        say("  stopping after the run in flight; run the demo again on this workspace to continue")
        dispatcher.stopping.set()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        result = _cycle(company, dispatcher, workspace / "repo", operator, approve, say, max_cycles)
        if not result["stopped"] and company.plan(GOAL_AGENT, actor=None) is None:
            reflected = dispatcher.reflect_once(GOAL_AGENT)  # its first plan, from what the lane did
            say(_line(reflected).replace("on the repository", "reflected on its mission"))
        return result
    finally:
        dispatcher.close()  # record the stop: its runtime leases (the leader's jobs) go back for the next run
        signal.signal(signal.SIGINT, previous)


def _cycle(company: CompanyStore, dispatcher: Dispatcher, repo: Path, operator: str, approve: bool,
           say: Callable[[str], None], max_cycles: int) -> dict[str, Any]:
    waiting: list = []
    runs = 0
    batch = batch_mode(company)
    rejected = company.task_counts(workflow="lint-fix").get("rejected", 0)
    for _ in range(max_cycles):
        if dispatcher.stopping.is_set():
            return {"waiting": [], "stopped": True}
        outcomes = dispatcher.cycle()
        set_lane_goal(company, operator, say)
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
            # The merger removes a merged task's worktree; a task a human rejected meanwhile leaves its own.
            now_rejected = company.task_counts(workflow="lint-fix").get("rejected", 0)
            if now_rejected != rejected:
                remove_stale_worktrees(repo, live=_open_task_ids(company))
                rejected = now_rejected
        if not outcomes and not (approve and company.inbox(actor=operator)):
            review = file_review(company, repo, operator) if batch else None
            if review is None:
                break
            say(f"  filed review task {review.id}: {len(review.fields['tasks'])} batched fix(es) on "
                f"{review.fields['branch']} at {review.fields['head'][:12]}, merged with one approval")
    # A task rejected (a human may reject at any time, between runs too) keeps no worktree.
    remove_stale_worktrees(repo, live=_open_task_ids(company))
    return {"waiting": waiting, "stopped": False}


def set_lane_goal(company: CompanyStore, operator: str, say: Callable[[str], None]) -> None:
    """Give the planner the lane's goal once the scout has filed its findings and the KPI has its first
    reading: ``lint_findings`` on main at most the findings ruff cannot fix safely (the floor
    ``roster demo --plan`` expects), with a budget of :data:`GOAL_BUDGET_RUNS` goal runs and
    :data:`GOAL_BUDGET_USD` USD, checked against the KPI (a program's reading, never the agent's word).
    Set once per workspace, as ``operator``; a repository with no safe fix gets no goal."""
    if company.list_goals(actor=None, agent=GOAL_AGENT, limit=1):
        return
    latest = company.kpi_summaries(actor=None)["lint_findings"].latest
    found = _task_ids(company)
    if latest is None or not found:
        return
    safe = 0
    for task_id in found:
        records = {r.kind: r for r in company.list_artifacts(task_id, actor=None)}
        if "ruff-json" in records:
            content = company.artifact(task_id, records["ruff-json"].name, actor=None)[1]
            safe += _safe_fixes({"artifacts": [{"kind": "ruff-json", "content": content.decode()}]})
    if not safe:
        return
    from roster.kernel.goals import GoalBudget, GoalCheck  # noqa: PLC0415 - only a lane with findings needs them

    target = max(0, int(latest.value) - safe)
    goal = company.set_goal(GOAL_AGENT, f"every safe fix merged: lint findings on main at most {target}", actor=operator,
                            check=GoalCheck.parse_kpi(f"lint_findings<={target}"),
                            budget=GoalBudget(runs=GOAL_BUDGET_RUNS, usd=GOAL_BUDGET_USD), every_seconds=3600)
    say(f"  goal {goal.id} for {GOAL_AGENT}: {goal.objective} (check {goal.check.describe()}; budget "
        f"{GOAL_BUDGET_RUNS} goal runs, {GOAL_BUDGET_USD:g} USD)")


def _open_task_ids(company: CompanyStore) -> list[int]:
    """Every task of the lane not merged or rejected (any other task's branch is removed)."""
    done = set(_task_ids(company, "merged")) | set(_task_ids(company, "rejected"))
    return [t for t in _task_ids(company) if t not in done]


def _task_ids(company: CompanyStore, state: str | None = None) -> list[int]:
    """The ids of the lane's fixes (in ``state``, when given), page by page."""
    ids: list[int] = []
    after = 0
    while page := company.list_tasks(workflow="lint-fix", state=state, after_id=after, limit=1000):
        ids += [t.id for t in page]
        after = page[-1].id
    return ids


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
    if outcome.blocked and not outcome.failure:  # a stop without a failure: a budget, a goal met before its run
        why = f" ({outcome.blocked})"
    return f"  {outcome.agent:>8} on {where}: {outcome.outcome}{what}{why}"


def report(company: CompanyStore, repo: Path | None = None) -> list[str]:
    """The closing report, as lines; with ``repo`` (the workspace's copy), which ruff configuration and
    Python floor the lane used on it (:func:`rules_line`)."""
    states = company.task_counts(workflow="lint-fix")
    reviews = company.task_counts(workflow="review")
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
    if reviews:
        lines.insert(3, f"  reviews (batch merge) by state: {', '.join(f'{s} {n}' for s, n in sorted(reviews.items()))}")
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
    lines += _fitness_lines(company)
    lines += _goal_lines(company) + _plan_lines(company)
    [today] = company.presence(actor=None)["days"]
    lines.append(f"  always on: {today['around_the_clock']} of {len(today['agents'])} agent(s) worked or watched for "
                 "at least 95% of the last 24 hours (roster presence)")
    if repo is not None:
        lines.append(f"  {rules_line(repo)}")
    lines.append(f"  audit verify: {count} events, " + ("intact" if broken is None else f"BROKEN at seq {broken[0]}"))
    return lines


def _fitness_lines(company: CompanyStore) -> list[str]:
    """Each lane agent's fitness (roster fitness): the settled figures once there are enough, and meanwhile
    what has stuck so far, with the burden; the lane is minutes old, so most of it has not settled."""
    report = company.fitness(actor=None)
    lines = []
    for a in report["agents"]:
        if a["evidence"] + a["unsettled"] == 0:
            continue  # runs without a task only (the scout): no outcome to judge
        if a["enough"]:
            figure = describe(a)
        else:
            held = a["successes"] + a["unsettled"]
            figure = (f"{held} of {a['evidence'] + a['unsettled']} outcome(s) not corrected so far "
                      f"({a['unsettled']} still inside the {report['settle']} settle window, so not yet evidence)")
        burden = burden_text(a["burden"])
        lines.append(f"  fitness of {a['agent']}: {figure}" + (f"; burden: {burden}" if burden and not a["enough"]
                                                                 else ""))
    return lines


def _usd(cost: float | None, unpriced_runs: int) -> str:
    """A cost for the report: ``0.1234 USD``, or unknown when runs could not be priced (never 0)."""
    if unpriced_runs:
        return f"cost unknown ({unpriced_runs} run(s) could not be priced)"
    return f"{cost or 0.0:.4f} USD"


def _goal_lines(company: CompanyStore) -> list[str]:
    """Each goal of the lane: its objective and check, its state and why, its spend against budget."""
    lines = []
    for goal in reversed(company.list_goals(actor=None)):
        spend, budget = goal.spend, goal.budget
        limits = ", ".join(part for part in (
            f"{spend.runs} of {budget.runs} goal run(s)" if budget.runs is not None else "",
            f"{spend.usd_text()} of ${budget.usd:g}" if budget.usd is not None else "") if part)
        lines.append(f"  goal {goal.id} of {goal.agent} ({goal.objective}; check {goal.check.describe()}): {goal.state}"
                     + (f", {goal.reason}" if goal.reason else "") + f"; spent {limits}")
    return lines


def _plan_lines(company: CompanyStore) -> list[str]:
    """The reflecting agent's plan: its newest version, who wrote it and why, and its diff against the one
    before (the whole plan, added, for a first version)."""
    from roster.store.plans import version_diff  # noqa: PLC0415 - the report's only use

    versions = company.plan_history(GOAL_AGENT, actor=None, limit=2)
    if not versions:
        return [f"  plan of {GOAL_AGENT}: none yet (it reflects at the end of a finished lane)"]
    new = versions[0]
    lines = [f"  plan of {GOAL_AGENT}: version {new.version} by {new.author}"
             + (f" (reflection run {new.run_id})" if new.run_id else "") + f": {new.reason}"]
    diff = version_diff(versions[1] if len(versions) > 1 else None, new)
    lines += [f"    {line}" for line in diff.splitlines()]
    return lines


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
