"""QA of the agency lane: the ground truth on the branch, never the builder's report.

Each check in :data:`CHECKS` is a function of a :class:`Review` (the task, its branch's worktree, the base
the branch started from) returning ``{"name", "passed", "detail"}``:

- ``findings_gone``: the task's findings are gone from its file on the branch;
- ``no_new_findings``: no new ruff finding anywhere, against the commit the branch started from;
- ``behaviour_unchanged``: nothing changed beyond the rule's intent, judged on the syntax trees
  (:mod:`roster.agency.safety`), whoever made the change;
- ``tests_pass``: the repository's tests, run against the branch's own code (see :func:`run_tests`), fail
  no more on the branch than on that base; a run that cannot collect, crashes, or leaves no result fails.

All pass: ``verify``; otherwise ``rework``. To add a check, append a function to :data:`CHECKS` (and name
it in the ``verify`` contract of ``roster.yaml``).

How the tests run (``docs/agency.md``, "How QA tests"):

- **The branch's code, never an installed copy.** The tree's import roots (its ``src/`` or the
  ``package-dir`` its ``pyproject.toml`` names, then its root) come first on ``PYTHONPATH``, ahead of
  every site-packages entry, ``.pth`` file and editable-install finder. Before the tests, a probe asks the
  test interpreter where each of the tree's top-level modules would be imported from (``find_spec``,
  which executes nothing); one resolving outside the tree fails the check.
- **Results from pytest's ``--junitxml`` report**, failures and errors by test id; collection errors are
  errors of their module (``--continue-on-collection-errors``, so one broken module does not hide the
  rest). Exit codes 2, 3, 4, a timeout, or no readable report are a failed check, whatever the base did.
- **The project's oldest supported Python** (the floor :func:`~roster.agency.lint.project_rules` finds) runs the tests when it is installed
  with pytest (``uv python find`` without downloads, then ``pythonX.Y`` on ``PATH``); otherwise the
  check's detail says the floor was not tested.
- **The project's own dependencies** (``[project].dependencies``, its test extras and groups, its test
  requirements files) are installed once per workspace into a folder of their own, on the import path
  after the tree (:mod:`roster.agency.testdeps`); when they cannot be installed, the detail says so.
- **Something must be tested**: a branch run where no test module could be collected fails the check,
  even when the base was no better.
- **Base results are cached** per (base commit, test command, interpreter, dependencies) in
  ``<workspace>/.roster/qa-cache/<key>.json``, written atomically under a lock: concurrent QA runs on one
  base run its tests once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roster.agency.lint import findings, git, project_rules, run_tool, task_rules
from roster.agency.safety import behaviour_changes_in_diff
from roster.agency.testdeps import dependency_dir
from roster.agency.worktrees import base_tree, worktree

TEST_TIMEOUT = 1800
"""Seconds one test run may take before it is killed (and the check fails)."""
CACHE_VERSION = 1
"""Bumped when what a cached base result holds changes: older entries are then ignored."""
BROKEN_EXITS = {2: "interrupted", 3: "internal error", 4: "usage error (bad command line or a conftest that "
                                                           "failed to import)"}
"""pytest exit codes after which its report cannot be trusted, with what they mean."""

PROBE = r"""
import importlib.util, json, sys
names = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
out = {"version": "%d.%d" % sys.version_info[:2], "executable": sys.executable,
       "pytest": importlib.util.find_spec("pytest") is not None, "origins": {}}
for name in sys.argv[1:]:
    if name in names:
        continue
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        continue
    if spec is not None:
        where = spec.origin if spec.origin not in (None, "namespace") else None
        out["origins"][name] = where or next(iter(spec.submodule_search_locations or []), None)
print(json.dumps(out))
"""
"""Run by the test interpreter with the test environment: its version, whether it has pytest, and where
each named top-level module would be imported from. ``find_spec`` on a top-level name locates it without
executing it, so a sabotaged module cannot stop the probe. Python 3.6+ syntax."""


# --- the test run ------------------------------------------------------------------------------------


@dataclass
class SuiteRun:
    """One test run's result: ``failing`` test ids (failures and errors, a module's collection error under
    the module's path), ``ran`` every test id reported, ``broken`` why the run's result cannot be trusted
    (``None`` when it can), ``python`` the interpreter's ``X.Y`` (``None`` if unknown)."""

    failing: set[str] = field(default_factory=set)
    ran: set[str] = field(default_factory=set)
    broken: str | None = None
    python: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"failing": sorted(self.failing), "ran": sorted(self.ran), "broken": self.broken,
                "python": self.python}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteRun:
        return cls(set(data["failing"]), set(data["ran"]), data["broken"], data["python"])


def import_roots(tree: Path) -> list[Path]:
    """Where the tree's own code imports from, first first: the ``package-dir`` root its ``pyproject.toml``
    gives setuptools, else ``src/`` when it holds Python code, then the tree itself."""
    roots: list[Path] = []
    pyproject = _pyproject(tree)
    mapped = (pyproject.get("tool", {}).get("setuptools", {}).get("package-dir") or {}).get("")
    if isinstance(mapped, str) and (tree / mapped).is_dir():
        roots.append(tree / mapped)
    elif (tree / "src").is_dir() and (any((tree / "src").glob("*/__init__.py")) or any((tree / "src").glob("*.py"))):
        roots.append(tree / "src")
    return [*roots, tree]


def _top_level_names(roots: list[Path]) -> list[str]:
    """The importable top-level names the roots define: packages (with ``__init__.py``) and modules."""
    names = set()
    for root in roots:
        for entry in root.iterdir():
            name = entry.stem if entry.suffix == ".py" else entry.name
            if name.isidentifier() and (entry.suffix == ".py" and entry.is_file()
                                        or (entry / "__init__.py").is_file()):
                names.add(name)
    return sorted(names - {"setup", "conftest", "noxfile", "tasks"})


def _env(tree: Path, deps: Path | None = None) -> dict[str, str]:
    """The test environment: the tree's import roots first on ``PYTHONPATH``, then ``deps`` (the project's
    own dependencies, :mod:`roster.agency.testdeps`); no bytecode written into the (shared,
    committed-from) worktrees."""
    paths = [str(p) for p in import_roots(tree)] + ([str(deps)] if deps else [])
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1"}


def probe(python: str, tree: Path | None = None, deps: Path | None = None) -> dict[str, Any] | None:
    """What ``python`` reports (see :data:`PROBE`): ``{"version": "X.Y", "executable", "pytest": bool,
    "origins": {name: path}}`` for the top-level modules of ``tree`` under the test environment; ``None``
    when the interpreter does not run."""
    names = _top_level_names(import_roots(tree)) if tree else []
    try:
        done = run_tool("python", [python, "-c", PROBE, *names], cwd=tree, timeout=60,
                        env=_env(tree, deps) if tree else None)
        return json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def _junit_results(report: Path) -> tuple[set[str], set[str]] | None:
    """``(failing, ran)`` test ids from pytest's xunit1 report, ``None`` when it is missing or unreadable.
    Ids are ``file::Class::name``; a collection error is its module's ``file``; pytest's own crash is
    ``pytest::internal``."""
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return None
    failing, ran = set(), set()
    for case in root.iter("testcase"):
        classname, name, file = case.get("classname", ""), case.get("name", ""), case.get("file")
        if not classname and file:
            test_id = file  # a module that failed to collect
        elif file:
            module = file.removesuffix(".py").replace("/", ".")
            rest = classname.removeprefix(module).lstrip(".")
            test_id = "::".join(p for p in (file, rest, name) if p)
        else:
            test_id = f"{classname}::{name}"
        ran.add(test_id)
        if case.find("failure") is not None or case.find("error") is not None:
            failing.add(test_id)
    return failing, ran


def _is_pytest(argv: list[str]) -> bool:
    return any(Path(a).name in ("pytest", "py.test") for a in argv) or any(
        argv[i] == "-m" and argv[i + 1] == "pytest" for i in range(len(argv) - 1))


def run_tests(tree: Path, argv: list[str], python: str | None, deps: Path | None = None) -> SuiteRun:
    """Run the test command ``argv`` in ``tree`` against the tree's own code, and read its result.

    ``python``: the interpreter the command runs on (probed first: where the tree's modules import from,
    and its version), ``None`` for a command that is not a Python one; ``deps``: the folder of the
    project's own dependencies, on the import path after the tree. A pytest command gets
    ``--junitxml`` (xunit1) and ``--continue-on-collection-errors``; its result is read from that report.
    Any other command is judged by its exit code alone. Never raises for a failed run: a run that cannot
    be trusted comes back with ``broken`` saying why and how to fix it."""
    result = SuiteRun()
    if python:
        found = probe(python, tree, deps)
        if found is None:
            return SuiteRun(broken=f"the test interpreter {python} did not run: check that it exists and works")
        result.python = found["version"]
        foreign = {name: origin for name, origin in found["origins"].items()
                   if origin and not Path(origin).resolve().is_relative_to(tree.resolve())}
        if foreign:
            name, origin = min(foreign.items())
            result.broken = (f"the tests would import {name} from {origin}, not from the branch ({tree}): an "
                             f"installed copy comes first on {python}'s import path (a .pth file that imports "
                             f"it, or an import finder placed first); uninstall it from that interpreter or "
                             f"give QA another test command (--tests)")
            return result
    report_dir = Path(tempfile.mkdtemp(prefix="roster-qa-"))
    report = report_dir / "junit.xml"
    pytest = _is_pytest(argv)
    extra = ([f"--junitxml={report}", "-o", "junit_family=xunit1", "--continue-on-collection-errors"]
             + ([] if "no:cacheprovider" in argv else ["-p", "no:cacheprovider"])) if pytest else []
    try:
        done = run_tool("pytest", [*argv, *extra], cwd=tree, timeout=TEST_TIMEOUT, env=_env(tree, deps))
        parsed = _junit_results(report) if pytest else None
    except subprocess.TimeoutExpired:
        result.broken = f"the tests did not finish within {TEST_TIMEOUT}s and were stopped"
        return result
    except OSError as exc:
        result.broken = f"the test command {shlex.join(argv)!r} could not start ({exc}): fix QA's --tests"
        return result
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)
    tail = (done.stderr.strip() or done.stdout.strip())[-300:]
    if pytest and done.returncode in BROKEN_EXITS:
        result.broken = f"pytest exited {done.returncode} ({BROKEN_EXITS[done.returncode]}): {tail}"
    elif pytest and parsed is None:
        result.broken = (f"pytest exited {done.returncode} without a readable --junitxml report (the run "
                         f"died before it could write one): {tail}")
    elif pytest:
        result.failing, result.ran = parsed
        if done.returncode not in (0, 1, 5):
            result.broken = f"pytest exited {done.returncode}: {tail}"
    elif done.returncode != 0:
        result.broken = f"the test command exited {done.returncode} (not pytest: no per-test result): {tail}"
    return result


# --- the interpreter and the project's floor ---------------------------------------------------------


def _pyproject(tree: Path) -> dict[str, Any]:
    """The tree's ``pyproject.toml`` tables, ``{}`` when it has none or it does not parse."""
    try:
        return tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def find_python(version: str) -> str | None:
    """An installed interpreter of ``version`` (``"3.7"``), found without downloading anything: this Python
    when it is that version, else ``uv python find`` (downloads off) when uv is installed, else
    ``pythonX.Y`` on ``PATH``; ``None`` when there is none. The caller checks what it finds (:func:`probe`)."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    if shutil.which("uv"):
        try:
            done = run_tool("uv", ["uv", "python", "find", version], timeout=60,
                            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_OFFLINE": "1"})
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip().splitlines()[-1]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return shutil.which(f"python{version}")


def floor_interpreter(tree: Path) -> tuple[str, str]:
    """The interpreter to run the default test command on, and a note for the check's detail.

    The project's floor (``project_rules(tree).floor``: ruff's ``target-version``, else ``requires-python``,
    else ``python_requires``; the same floor the scout fixes for) when it is installed and has pytest;
    otherwise the Python running Roster, and the note says the floor was not tested and why."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    rules = project_rules(tree)
    floor, source = rules.floor, rules.floor_source
    if floor is None:
        return sys.executable, f"tests ran on Python {here} (the project declares no Python floor)"
    found = find_python(floor)
    if found == sys.executable:
        return found, f"tests ran on Python {here}, the project's floor ({source})"
    if found is None:
        return sys.executable, (f"tests ran on Python {here}; the floor {floor} ({source}) is not installed "
                                f"here, so it was not tested")
    facts = probe(found)
    if facts is None or facts["version"] != floor:
        return sys.executable, (f"tests ran on Python {here}; the floor {floor} found at {found} did not run "
                                f"as Python {floor}, so it was not tested")
    if not facts["pytest"]:
        return sys.executable, (f"tests ran on Python {here}; the floor {floor} is installed ({found}) but "
                                f"has no pytest, so it was not tested (install pytest for it to test the floor)")
    return found, f"tests ran on Python {floor} ({found}), the project's floor ({source})"


def _command(tree: Path, tests: str | None) -> tuple[list[str], str | None, str] | None:
    """``(argv, python, note)`` for the test run, or ``None`` when the tree has no tests and no command
    was given. A given command runs as written (its interpreter is its first word when that is a Python)."""
    if tests is None:
        if not any((tree / name).is_dir() for name in ("tests", "test")):
            return None
        python, note = floor_interpreter(tree)
        return [python, "-m", "pytest", "-q"], python, note
    argv = shlex.split(tests)
    python = shutil.which(argv[0]) if argv and Path(argv[0]).name.startswith("python") else None
    facts = probe(python) if python else None
    floor = project_rules(tree).floor
    ran = f"tests ran with the given command ({tests})" + (f" on Python {facts['version']}" if facts else "")
    if floor and facts and facts["version"] != floor:
        ran += f"; the floor {floor} was not tested: the command names another Python"
    return argv, python, ran


# --- the base cache ----------------------------------------------------------------------------------


def _cache_key(commit: str, argv: list[str], python: str | None, deps: Path | None = None) -> str:
    """The cache key of a base result: the base commit, the test command, the interpreter (its path and
    the file it resolves to, so a replaced interpreter is a new key), and the dependencies' folder."""
    interpreter = [python, os.path.realpath(python)] if python else None
    return hashlib.sha256(json.dumps([CACHE_VERSION, commit, argv, interpreter, str(deps) if deps else None])
                          .encode()).hexdigest()[:32]


def base_results(repo: Path, base: Path, argv: list[str], python: str | None,
                 deps: Path | None = None) -> tuple[SuiteRun, bool]:
    """The base tree's test results and whether they came from the cache
    (``<workspace>/.roster/qa-cache/<key>.json``, see :func:`_cache_key`). The first QA run on a base runs
    its tests under the key's lock file, so concurrent runs wait for it and read its result; results are
    written to a temporary file and renamed over the entry, so a reader never sees half a file. A run that
    timed out is not cached."""
    commit = git(base, "rev-parse", "HEAD").stdout.strip()
    cache = repo.parent / ".roster" / "qa-cache"
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(commit, argv, python, deps)
    entry = cache / f"{key}.json"
    with (cache / f"{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                return SuiteRun.from_json(json.loads(entry.read_text())["result"]), True
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no entry yet, or an unreadable one: run the tests
            result = run_tests(base, argv, python, deps)
            if result.broken is None or "did not finish" not in result.broken:
                fd, temp = tempfile.mkstemp(dir=cache, prefix=f".{key}.", suffix=".tmp")
                with os.fdopen(fd, "w") as out:
                    json.dump({"commit": commit, "command": argv, "python": python, "result": result.to_json()}, out)
                os.replace(temp, entry)
            return result, False
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- the checks --------------------------------------------------------------------------------------


@dataclass
class Review:
    """What the checks look at: the task's rule and file, the repository (main's checkout), the branch and
    its worktree, the base tree the branch started from, and QA's test command (``None``: the default)."""

    task: dict[str, Any]
    repo: Path
    path: Path
    branch: str
    base: Path
    tests: str | None
    _memo: dict[str, Any] = field(default_factory=dict)

    @property
    def rule(self) -> str:
        return self.task["fields"]["rule"]

    @property
    def filename(self) -> str:
        return self.task["fields"]["file"]

    def memo(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per review (e.g. findings shared by several checks)."""
        if name not in self._memo:
            self._memo[name] = compute()
        return self._memo[name]


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    """A finding, independent of where lines moved: rule (``syntax-error`` for a syntax error), file and
    message."""
    return record.get("code") or "syntax-error", record["filename"], record["message"]


def findings_gone(review: Review) -> dict[str, Any]:
    left = findings(review.path, select=task_rules(review.rule), paths=[review.filename])
    return {"name": "findings_gone", "passed": not left,
            "detail": f"{len(left)} {review.rule} finding(s) left in {review.filename} on {review.branch}"}


def no_new_findings(review: Review) -> dict[str, Any]:
    on_base, on_branch = review.memo("base_findings", lambda: findings(review.base)), findings(review.path)
    new = Counter(_key(r) for r in on_branch) - Counter(_key(r) for r in on_base)
    return {"name": "no_new_findings", "passed": not new,
            "detail": (f"new on the branch: {', '.join(f'{c} in {f}' for c, f, _ in sorted(new))}" if new else
                       f"ruff findings: base {len(on_base)}, branch {len(on_branch)}, none new")}


def tests_pass(review: Review) -> dict[str, Any]:
    """The branch's tests fail no more than the base's (same command, same interpreter). Fails when the
    branch's run cannot be trusted (:attr:`SuiteRun.broken`), when a test fails that did not on the base,
    or when tests that ran on the base no longer run on the branch."""
    planned = _command(review.path, review.tests)
    if planned is None:
        return {"name": "tests_pass", "passed": True, "detail": "no tests in the repository"}
    argv, python, note = planned
    deps, installed = dependency_dir(review.repo.parent / ".roster", python, review.path) if python else (None, "")
    note = f"{note}; {installed}" if installed else note
    now = run_tests(review.path, argv, python, deps)
    if now.broken:
        return {"name": "tests_pass", "passed": False,
                "detail": f"the tests could not be judged on {review.branch}: {now.broken}; {note}"}
    baseline, cached = base_results(review.repo, review.base, argv, python, deps)
    new_failures = sorted(now.failing - baseline.failing)
    vanished = sorted(baseline.ran - now.ran) if len(now.ran) < len(baseline.ran) else []
    where = "cached base result" if cached else "base run now"
    if new_failures or vanished:
        detail = "; ".join(part for part in (
            f"newly failing: {', '.join(new_failures)}" if new_failures else "",
            f"{len(vanished)} test(s) that ran on the base no longer run: {', '.join(vanished[:10])}"
            if vanished else "") if part)
        return {"name": "tests_pass", "passed": False, "detail": f"{detail} ({where}); {note}"}
    if now.ran and not any("::" in name for name in now.ran - {"pytest::internal"}):  # only modules: none collected
        return {"name": "tests_pass", "passed": False,
                "detail": (f"nothing was tested on {review.branch}: none of its {len(now.ran)} test module(s) could be "
                           f"collected ({', '.join(sorted(now.ran)[:5])}), on the base neither; {note}")}
    base_state = (f"the base's run was not usable either ({baseline.broken})" if baseline.broken else
                  f"{len(baseline.failing)} failed there already")
    return {"name": "tests_pass", "passed": True,
            "detail": (f"no test fails that did not fail on the base ({base_state}); {len(now.ran)} test(s) "
                       f"on the branch, {where}; {note}")}


def behaviour_unchanged(review: Review) -> dict[str, Any]:
    """The adversarial check: the branch changes nothing beyond the rule's intent, judged file by file on
    the syntax trees (:func:`roster.agency.safety.behaviour_changes_in_diff`), whoever made the change
    (ruff, an agent CLI)."""
    start = git(review.base, "rev-parse", "HEAD").stdout.strip()
    changed = git(review.path, "diff", "--name-only", f"{start}..HEAD").stdout.split()
    reasons = behaviour_changes_in_diff(review.base, review.path, changed, review.rule)
    return {"name": "behaviour_unchanged", "passed": not reasons,
            "detail": "; ".join(reasons) or (f"no change beyond {review.rule}'s intent in "
                                             f"{', '.join(changed) or 'no file'}")}


CHECKS: list[Callable[[Review], dict[str, Any]]] = [findings_gone, no_new_findings, behaviour_unchanged, tests_pass]
"""QA's checks, in order; each returns ``{"name": str, "passed": bool, "detail": str}``. The ``verify``
contract in ``roster.yaml`` names the ones it requires."""


def qa(brief: dict[str, Any], repo: Path, tests: str | None = None) -> dict[str, Any]:
    """Run :data:`CHECKS` on the task's branch (its worktree under ``.roster/worktrees``) against the base
    it started from. ``brief``: the runner's brief (``brief["task"]`` with ``id`` and ``fields.rule``,
    ``fields.file``); ``repo``: main's checkout (``<workspace>/repo``); ``tests``: the test command (``None``:
    ``pytest -q`` on the project's floor Python when a ``tests``/``test`` folder exists).

    Returns ``{"checks": [...], "transition": "verify" | "rework", "rationale": str}``."""
    task = brief["task"]
    path, branch = worktree(repo, task["id"])
    base = base_tree(repo, path)  # what the branch started from: main may have moved on since
    review = Review(task=task, repo=repo, path=path, branch=branch, base=base, tests=tests)
    checks = [check(review) for check in CHECKS]
    passed = all(c["passed"] for c in checks)
    return {"checks": checks, "transition": "verify" if passed else "rework",
            "rationale": "every check passed on the branch" if passed else
            "; ".join(c["detail"] for c in checks if not c["passed"])}
