"""The agency lane's program workers: ``python -m roster.agency.workers ROLE [--repo repo]``.

Each reads its brief (JSON) on stdin and prints one result (JSON) on stdout, as every ``program``
command runner does (see :mod:`roster.runtime.runners`). The repository lives at ``--repo`` (default
``repo``) in the workspace; the builder's branches live in git worktrees under
``.roster/worktrees/task-<id>``, so the main checkout is only ever changed by the merger.

- ``scout`` (a run without a task): ruff over the repository by the project's own rules
  (:func:`~roster.agency.lint.project_rules`: its ruff configuration and Python floor, else
  :data:`~roster.agency.lint.RULES` at that floor); one task per (rule, file), one for a file's
  interacting rules, or one per file with ``--per-file`` (:func:`~roster.agency.lint.group`), keyed ``ruff:<rule(s)>:<file>`` so
  rescans never duplicate work, carrying the findings as fields and the raw ruff JSON as an artifact.
- ``builder``: a worktree on branch ``roster/task-<id>``, ``ruff check --fix`` limited to the task's
  rule and file (its safe fixes only), then (with ``--agent CMD``) an external agent CLI for what ruff left,
  a commit, and the ``patch`` artifact. A ruff fix that changes behaviour
  (:func:`~roster.agency.safety.behaviour_changes`) is reverted and goes to the agent CLI with the reason,
  or, with none, is a judgment failure. A finding nothing could fix is a judgment failure too: it goes up
  the escalation ladder, never silently away.
- ``qa`` (:mod:`roster.agency.qa`): the ground truth on the branch, never the builder's report: the
  findings are gone (``findings_gone``), no new ones appeared anywhere (``no_new_findings``), nothing
  changed beyond the rule's intent (``behaviour_unchanged``), and the repository's tests, run against the
  branch's own code on the project's floor Python, fail no more than on the branch's base
  (``tests_pass``, the base's result cached per commit). All pass: ``verify``; otherwise ``rework``.
- ``measure`` (the KPI ``lint_findings``'s measure program) prints the finding count on main. (The
  scout's condition watcher is a shell one-liner in the spec: main's HEAD against :data:`SCANNED`.)
- ``merger`` (:mod:`roster.agency.merger`): on a verified task, asks for the merge (an approval edge: a human decides); on an
  approved one, merges the branch into main (``--no-ff``; a conflict is aborted, never half-merged, and
  the task goes back to the builder with the conflict) and reports the finding count after. With
  ``--batch`` (:mod:`roster.agency.review`) it adds verified fixes to one review branch instead, and merges
  that branch with one approval.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from roster.agency.lint import findings, git, group, project_rules, rule_findings, task_rules
from roster.agency.merger import MAX_CONFLICTS, merger
from roster.agency.qa import qa
from roster.agency.review import REVIEW_WORKFLOW, batch, review
from roster.agency.safety import behaviour_changes, behaviour_changes_in_worktree
from roster.agency.worktrees import fresh_worktree, worktree
from roster.errors import RosterError
from roster.runtime.processes import run_in_session

MAX_FINDINGS_PER_TASK = 50


SCANNED = Path(".roster") / "scout-head"
"""Where the scout keeps the commit it last scanned (relative to the workspace); the spec's condition
watcher wakes the scout when main's HEAD differs from it."""


def scout(brief: dict[str, Any], repo: Path, *, per_file: bool = False) -> dict[str, Any]:
    """One task per (rule, file) of ruff's findings on ``repo`` by the project's own rules, one for a file's
    interacting rules (import sorting with unused imports), or one per file when ``per_file``
    (:func:`~roster.agency.lint.group`);
    ``fixable`` says whether ruff offers any fix (safe or not: the ``ruff-json`` artifact has each one's
    applicability). The rationale names the rules used."""
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    rules = project_rules(repo)
    found = rule_findings(findings(repo, rules=rules))
    groups = group(found, per_file=per_file)
    tasks = []
    for (code, filename), records in groups.items():
        tasks.append({
            "workflow": "lint-fix", "title": f"{code.replace(',', ', ')} in {filename}",
            "key": f"ruff:{code}:{filename}",
            "fields": {"rule": code, "file": filename, "count": len(records),
                       "fixable": any(r.get("fix") for r in records),
                       "findings": [{"line": r["location"]["row"], "column": r["location"]["column"],
                                     "message": r["message"]} for r in records[:MAX_FINDINGS_PER_TASK]]},
            "artifacts": [{"kind": "ruff-json", "name": "findings.json", "reason": "ruff's own report",
                           "content": json.dumps(records, indent=2, sort_keys=True)}]})
    scanned = repo.parent / SCANNED
    scanned.parent.mkdir(parents=True, exist_ok=True)
    scanned.write_text(head + "\n", encoding="utf-8")
    return {"tasks": tasks, "rationale": f"{len(found)} finding(s) in {len(groups)} task(s) "
                                         f"at {head[:12]}, by {rules.describe()}"}


def measure(repo: Path) -> int:
    """The KPI ``lint_findings``'s measure program: the number of findings on main, by the project's own
    rules (the scout's), on stdout."""
    sys.stdout.write(f"{len(rule_findings(findings(repo)))}\n")
    return 0


AGENT_TIMEOUT = 1800
"""Seconds an external agent CLI may work on one task (its whole process group is killed past it)."""


def builder(brief: dict[str, Any], repo: Path, agent: str | None = None) -> dict[str, Any]:
    """ruff's own safe fix first (cheap, deterministic); what it leaves goes to ``agent`` (an agent CLI such
    as ``claude -p`` or ``codex exec -``) when one is configured. A ruff fix that changes behaviour
    (:func:`~roster.agency.safety.behaviour_changes` on the task's file) is reverted and handed to ``agent``
    with the reasons, or, with no agent, is a judgment failure giving them. Nothing fixed: a judgment
    failure. Returns the worker's result (``build`` with the ``patch`` artifact, or ``failure``)."""
    task = brief["task"]
    rule, filename = task["fields"]["rule"], task["fields"]["file"]
    # No branch yet, or a conflict cleared it (the merger discards a branch that conflicted): start from
    # main's HEAD, never on a stale branch. QA's rework keeps `branch`, so a reworked task keeps its branch.
    path, branch = (worktree if task["fields"].get("branch") else fresh_worktree)(repo, task["id"])
    before = findings(path, select=task_rules(rule), paths=[filename])
    reworked = [e for e in brief.get("events") or [] if e.get("transition") == "rework"]
    if not before and reworked:  # QA sent it back and ruff has nothing left to fix: a person must look
        return {"failure": {"category": "judgment",
                            "reason": f"QA sent {branch} back ({reworked[0].get('rationale') or 'see its checks'}) "
                                      f"and ruff has nothing more to fix for {rule} in {filename}"}}
    source = path / filename
    original = source.read_bytes() if source.is_file() else None
    after = findings(path, select=task_rules(rule), paths=[filename], fix=True)  # ruff's safe fixes only
    by = "ruff --fix"
    changes = (behaviour_changes(original.decode(errors="replace"), source.read_text(errors="replace"), rule,
                                 path=filename, root=path)
               if original is not None and source.is_file() else [])
    if changes:  # ruff's "safe" fix does more than the rule intends: never applied without judgment
        source.write_bytes(original)
        if not agent:
            return {"failure": {"category": "judgment",
                                "reason": f"ruff's fix for {rule} in {filename} changes behaviour, so it was not "
                                          f"applied: {'; '.join(changes)}. A model or a person must judge it: "
                                          "configure an agent CLI (--agent), or fix it by hand"}}
        after = findings(path, select=task_rules(rule), paths=[filename])
        failure = hand_to_agent(agent, brief, path, after, why=changes)
        if failure is not None:
            return failure
        after = findings(path, select=task_rules(rule), paths=[filename])
        by = f"{agent}, as ruff's fix changed behaviour"
    elif after and agent:
        failure = hand_to_agent(agent, brief, path, after)
        if failure is not None:
            return failure
        after = findings(path, select=task_rules(rule), paths=[filename])
        by = f"ruff --fix, then {agent}"
    if by != "ruff --fix":  # an agent CLI edited the worktree: judged as ruff's fix is, before it is committed
        judged = _agent_edit_judged(path, rule, task["id"], agent)
        if judged is not None:
            return judged
    if before and len(after) == len(before):
        if changes:
            return {"failure": {"category": "judgment",
                                "reason": f"ruff's fix for {rule} in {filename} changes behaviour ({'; '.join(changes)}) "
                                          f"and {agent} fixed none of the {len(after)} finding(s): a person must judge it"}}
        helper = f"nor could {agent}" if agent else "it needs a model or a person (configure an agent CLI)"
        return {"failure": {"category": "judgment",
                            "reason": f"ruff cannot fix {rule} in {filename} ({len(after)} finding(s) left); {helper}"}}
    git(path, "add", "-A")
    if git(path, "diff", "--cached", "--quiet", check=False).returncode != 0:
        git(path, "commit", "-q", "-m", f"Fix {rule} in {filename} (roster task {task['id']}, {by})")
    main_head = git(repo, "rev-parse", "HEAD").stdout.strip()
    base = git(path, "merge-base", "HEAD", main_head).stdout.strip()
    patch = git(path, "diff", f"{base}..HEAD").stdout
    return {"transition": "build", "writes": {"branch": branch},
            "artifacts": [{"kind": "patch", "name": "fix.patch", "content": patch,
                           "reason": f"{by} for {rule} in {filename}"}],
            "rationale": f"fixed {len(before) - len(after)} of {len(before)} {rule} finding(s) on {branch} ({by})"}


def _agent_edit_judged(path: Path, rule: str, task_id: int, agent: str | None) -> dict[str, Any] | None:
    """``None`` when the agent CLI's uncommitted edit in the worktree ``path`` changes nothing beyond the
    rule's intent (:func:`~roster.agency.safety.behaviour_changes_in_worktree`); otherwise a judgment
    failure giving the reasons, with the edit kept as a patch beside the prompts for the person who looks
    and the worktree reset to its commit (QA would only send it back, round after round)."""
    reasons = behaviour_changes_in_worktree(path, rule)
    if not reasons:
        return None
    kept = path.parent.parent / "prompts" / f"task-{task_id}.rejected.patch"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(git(path, "diff", "--cached", "HEAD").stdout, encoding="utf-8")
    git(path, "reset", "-q", "--hard", "HEAD")
    git(path, "clean", "-q", "-fd")
    return {"failure": {"category": "judgment", "reason": (
        f"{agent}'s edit for {rule} changes more than the rule intends, so it was not committed: "
        f"{'; '.join(reasons)}. A person must judge it: the edit is kept in {kept}")}}


def hand_to_agent(agent: str, brief: dict[str, Any], worktree_path: Path,
                  left: list[dict[str, Any]], why: list[str] | None = None) -> dict[str, Any] | None:
    """Run the agent CLI in the task's worktree with a prompt (on stdin, and as the file named by
    ``ROSTER_PROMPT_FILE``); ``None`` when it finished, else a transient failure (retried with backoff,
    then up the escalation ladder). ``left``: ruff's records of the findings to fix; ``why``: the reasons
    ruff's own fix was not applied (it changed behaviour), told to the agent. Its changes are judged like
    ruff's: by re-running ruff, then QA."""
    task = brief["task"]
    rule, filename = task["fields"]["rule"], task["fields"]["file"]
    listing = "\n".join(f"- line {r['location']['row']}, column {r['location']['column']}: {r['message']}"
                         for r in left)
    prompt = (f"You are the builder of a Roster agency lane. Task {task['id']}: {task['title']}.\n\n"
              f"Spec: {task['fields'].get('spec', '')}\n\nFix these ruff {rule} findings in {filename} "
              f"(the current directory is a git worktree of the repository):\n{listing}\n\n"
              + ("ruff's automatic fix was not applied because it changes behaviour:\n"
                 + "".join(f"- {reason}\n" for reason in why)
                 + "\nFix the findings without that change in behaviour (e.g. keep an import a `try` guards and "
                   "mark it `# noqa` or use importlib.util.find_spec), or leave the file as it is if it cannot be "
                   "done.\n\n" if why else "")
              + f"Change only "
              f"{filename}, keep its behaviour, and do not commit: Roster commits your change, and QA checks it "
              "with ruff and the repository's tests.\n")
    prompts = worktree_path.parent.parent / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    prompt_file = prompts / f"task-{task['id']}.md"
    prompt_file.write_text(prompt, encoding="utf-8")
    try:
        done = run_in_session(shlex.split(agent), cwd=worktree_path, timeout=AGENT_TIMEOUT, input=prompt.encode(),
                              env={**os.environ, "ROSTER_PROMPT_FILE": str(prompt_file)})
    except OSError as exc:
        return {"failure": {"category": "deterministic", "reason": f"cannot start the agent CLI '{agent}': {exc}"}}
    except subprocess.TimeoutExpired:
        return {"failure": {"category": "transient", "reason": f"'{agent}' ran past {AGENT_TIMEOUT} s on task "
                                                               f"{task['id']}; its process group was killed"}}
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[-300:]
        return {"failure": {"category": "transient", "reason": f"'{agent}' exited {done.returncode}: {err or '(no stderr)'}"}}
    return None


def plan_offline(brief: dict[str, Any]) -> dict[str, Any]:
    """The planner's script for the offline model (no network, no model): a spec written from the task's
    findings. The runner labels everything it says as scripted."""
    if brief.get("task") is None:  # a goal run or a reflection: the offline model's own answer
        from roster.runtime.llm import default_script  # noqa: PLC0415 - pydantic-ai loads only for the planner

        return default_script(brief)
    task = brief.get("task") or {}
    fields = task.get("fields") or {}
    if not any(t["name"] == "plan" and not t["blocked"] for t in brief.get("transitions") or []):
        return {"failure": {"category": "judgment", "reason": "no open 'plan' transition"}}
    lines = ", ".join(f"line {f['line']}: {f['message']}" for f in (fields.get("findings") or [])[:5])
    how = "ruff's own fix" if fields.get("fixable") else "a manual change (ruff has no fix for it)"
    spec = (f"Fix {fields.get('count', 0)} {fields.get('rule')} finding(s) in {fields.get('file')} with {how}; "
            f"change nothing else. Findings: {lines or 'see findings.json'}.")
    return {"transition": "plan", "writes": {"spec": spec}, "rationale": "a spec from ruff's findings"}


def _merger(brief: dict[str, Any], repo: Path, max_conflicts: int, batched: bool) -> dict[str, Any]:
    """The merger's run: a review task (:func:`~roster.agency.review.review`), a verified fix in batch mode
    (:func:`~roster.agency.review.batch`), or a fix merged on its own (:func:`~roster.agency.merger.merger`)."""
    task = brief["task"]
    if task.get("workflow") == REVIEW_WORKFLOW:
        return review(brief, repo)
    if batched and task["state"] == "verified":
        return batch(brief, repo, max_conflicts)
    return merger(brief, repo, max_conflicts)


ROLES = {"scout": scout, "builder": builder, "qa": qa, "merger": merger}
CHECKS = {"measure": measure}
"""Programs that take no brief: the KPI's measure program."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roster.agency.workers", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=sorted([*ROLES, *CHECKS]))
    parser.add_argument("--repo", default="repo", help="The repository, relative to the workspace.")
    parser.add_argument("--agent", default=None, help="The builder's agent CLI for what ruff cannot fix, e.g. "
                                                      "'claude -p' (the prompt comes on stdin).")
    parser.add_argument("--tests", default=None, help="QA's test command (default: pytest -q when a tests "
                                                      "folder exists).")
    parser.add_argument("--per-file", action="store_true",
                        help="The scout files one task per file, covering all its findings; without it, one "
                             "per (rule, file), and one for a file's interacting rules (I001 with F401).")
    parser.add_argument("--max-conflicts", type=int, default=MAX_CONFLICTS,
                        help=f"The merger escalates a task's N-th merge conflict to a human instead of sending it "
                             f"back to the builder (default {MAX_CONFLICTS}).")
    parser.add_argument("--batch", action="store_true",
                        help="The merger adds verified fixes to one review branch, merged into main with one "
                             "approval (roster.agency.review), instead of asking for each merge.")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    if args.role in CHECKS:
        try:
            return CHECKS[args.role](repo)
        except RosterError as exc:
            sys.stderr.write(exc.message + "\n")
            return 2
    brief = json.load(sys.stdin)
    try:
        if args.role == "qa":
            result = qa(brief, repo, args.tests)
        elif args.role == "builder":
            result = builder(brief, repo, args.agent)
        elif args.role == "scout":
            result = scout(brief, repo, per_file=args.per_file)
        elif args.role == "merger":
            result = _merger(brief, repo, args.max_conflicts, args.batch)
        else:
            result = ROLES[args.role](brief, repo)
    except RosterError as exc:
        result = {"failure": {"category": "deterministic", "reason": exc.message}}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
