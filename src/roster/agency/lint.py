"""Ruff and git, as the agency lane's workers use them: real subprocesses, parsed output, clear errors.

Functions raise :class:`~roster.errors.UsageError` when a tool is missing (naming how to install it) and
:class:`~roster.errors.RunnerExit` when it fails in a way the worker cannot use.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from roster.errors import RunnerExit, UsageError
from roster.runtime.processes import run_in_session

RULES = ("F401", "F841", "E711", "E712", "E713", "E714", "E721", "E741", "W291", "W293", "I001", "UP")
"""The documented rule selection of the lane: unused imports and variables, comparisons to None/True,
`not in`/`is not`, type comparisons, ambiguous names, trailing whitespace, import order, and pyupgrade.
Ruff can fix most of them, but not all (E741, E721 need a person or a model): those reach the inbox."""

GIT_ENV = {"GIT_AUTHOR_NAME": "roster", "GIT_AUTHOR_EMAIL": "roster@localhost",
           "GIT_COMMITTER_NAME": "roster", "GIT_COMMITTER_EMAIL": "roster@localhost"}


def ruff_command() -> list[str]:
    """How to run ruff: the ``ruff`` next to this Python (installed with Roster) or on PATH."""
    beside = Path(sys.executable).parent / "ruff"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ruff")
    if found:
        return [found]
    raise UsageError("ruff is not installed: install it with `pip install ruff` (Roster's requirements.lock "
                     "includes it)")


TOOL_TIMES = "ROSTER_TOOL_TIMES"
"""An environment variable naming a file: when set, each tool call appends ``<tool> <seconds>`` to it
(``bench/lane.py`` uses it to separate time in ruff, git and pytest from Roster's own)."""


def run_tool(tool: str, argv: list[str], *, timeout: float, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one external tool in a session of its own (so a timeout kills what it started too), with its
    output decoded as text; timed when :data:`TOOL_TIMES` is set. Raises :class:`subprocess.TimeoutExpired`
    after ``timeout`` seconds, :class:`OSError` when it cannot start."""
    started = time.perf_counter()
    try:
        done = run_in_session(argv, cwd=cwd, timeout=timeout, env=env)
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))
    finally:
        if log := os.environ.get(TOOL_TIMES):
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{tool} {time.perf_counter() - started:.6f}\n")


CONFIG_FILES = (".ruff.toml", "ruff.toml", "pyproject.toml")
"""Where ruff looks for a project's configuration in a directory, in ruff's own order of precedence
(a ``pyproject.toml`` counts only with a ``[tool.ruff]`` table)."""

OLDEST_TARGET = "3.7"
"""The oldest Python ruff can target (``--target-version py37``): the floor assumed when a project declares
none, so no fix that needs a newer Python is ever proposed to it."""


@dataclass(frozen=True)
class ProjectRules:
    """How the lane runs ruff on one repository: the project's own configuration when it has one, else the
    lane's :data:`RULES` at the project's Python floor. The scout, QA, the KPI's measure program and the
    builder all judge through it (via :func:`findings`), so they judge the same way.

    - ``config``: the configuration file, relative to the repository (``"pyproject.toml"``,
      ``"ruff.toml"``, ``".ruff.toml"``), or ``None`` when there is none;
    - ``floor``: the oldest Python the project supports, ``"3.7"``-style, or ``None`` when it declares none;
    - ``floor_source``: where the floor comes from (``"target-version py37"``, ``"requires-python >=3.7"``),
      or ``None``;
    - ``arguments``: the ``ruff check`` arguments that select the rules (with a configuration: only
      ``--force-exclude``, and ``--target-version`` when the project declares no Python at all; ruff reads
      the rest, per-file ignores and excludes included; without: ``--isolated --select RULES
      --target-version pyXY --force-exclude``).
    """

    config: str | None
    floor: str | None
    floor_source: str | None
    arguments: tuple[str, ...]

    def describe(self) -> str:
        """One line for a report, e.g. "ruff configuration pyproject.toml [tool.ruff], Python floor 3.7
        (requires-python >=3.7)"."""
        which = (f"ruff configuration {self.config}{' [tool.ruff]' if self.config == 'pyproject.toml' else ''}"
                 if self.config else "the lane's rule set (no ruff configuration found)")
        floor = (f"Python floor {self.floor} ({self.floor_source})" if self.floor else
                 f"no Python floor declared (assumed {OLDEST_TARGET}, the oldest ruff targets)")
        return f"{which}, {floor}"

    def ruff_arguments(self, select: tuple[str, ...] | list[str] | None = None) -> list[str]:
        """:attr:`arguments`, with ``select`` (rule codes or prefixes) in place of the rule selection when
        given (ruff adds up repeated ``--select`` options, so the lane's own one is replaced)."""
        arguments = list(self.arguments)
        if select:
            if "--select" in arguments:
                arguments[arguments.index("--select") + 1] = ",".join(select)
            else:
                arguments += ["--select", ",".join(select)]
        return arguments


def _toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; raises :class:`UsageError` naming the file when it does not parse."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}): fix it, since ruff reads it too") from exc


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _floor_of(requires: str) -> str | None:
    """The oldest Python 3 minor version a ``requires-python`` specifier admits (``">=3.7"`` -> ``"3.7"``,
    ``">=3.8.1,<4"`` -> ``"3.8"``), or ``None`` when it admits none or does not parse."""
    try:
        allowed = SpecifierSet(requires)
    except InvalidSpecifier:
        return None
    for minor in range(40):
        if any(allowed.contains(f"3.{minor}.{patch}", prereleases=True) for patch in (0, 99)):
            return f"3.{minor}"
    return None


def _requires_python(repo: Path) -> str | None:
    """The project's declared ``requires-python`` (``pyproject.toml`` [project]), or ``python_requires``
    (``setup.cfg`` [options], or a literal in ``setup.py``'s ``setup(...)`` call), or ``None``."""
    if (repo / "pyproject.toml").is_file():
        declared = _toml(repo / "pyproject.toml").get("project", {}).get("requires-python")
        if isinstance(declared, str):
            return declared
    if (repo / "setup.cfg").is_file():
        parser = configparser.ConfigParser()
        try:
            parser.read(repo / "setup.cfg", encoding="utf-8")
            if parser.has_option("options", "python_requires"):
                return parser.get("options", "python_requires").strip()
        except configparser.Error:
            pass
    if (repo / "setup.py").is_file():
        try:
            tree = ast.parse((repo / "setup.py").read_text(encoding="utf-8"))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            return None
        for node in ast.walk(tree):
            if (isinstance(node, ast.keyword) and node.arg == "python_requires"
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return node.value.value
    return None


def project_rules(repo: Path) -> ProjectRules:
    """The rules the lane applies to ``repo`` (a directory: the repository or one of its worktrees): see
    :class:`ProjectRules`. Reads only the files at its top, the way ruff finds them; raises
    :class:`UsageError` when one of them is not valid TOML."""
    config = target = None
    for name in CONFIG_FILES:
        if (repo / name).is_file():
            tables = _toml(repo / name)
            ruff = tables.get("tool", {}).get("ruff") if name == "pyproject.toml" else tables
            if ruff is not None:
                config, target = name, ruff.get("target-version")
                break
    floor = source = None
    if isinstance(target, str) and target.startswith("py3"):
        floor, source = f"3.{target[3:]}", f"target-version {target}"
    elif (requires := _requires_python(repo)) is not None and (floor := _floor_of(requires)) is not None:
        source = f"requires-python {requires}"
    # ruff cannot target older than 3.7; a project that declares nothing is assumed to be that old
    target_version = "py" + max(floor or OLDEST_TARGET, OLDEST_TARGET, key=_version).replace(".", "")
    if config:  # ruff reads the configuration itself (target-version, else requires-python)
        arguments = ("--force-exclude", *(() if floor else ("--target-version", target_version)))
    else:
        arguments = ("--isolated", "--select", ",".join(RULES), "--target-version", target_version,
                     "--force-exclude")
    return ProjectRules(config, floor, source, arguments)


def findings(root: Path, *, select: tuple[str, ...] | list[str] | None = None, paths: list[str] | None = None,
             fix: bool = False, rules: ProjectRules | None = None) -> list[dict[str, Any]]:
    """Ruff's findings under ``root`` judged by the project's own rules (:func:`project_rules`, or ``rules``
    when given), as JSON records (code, filename relative to root, location, message, fix), after applying
    ruff's safe fixes when ``fix`` (never its unsafe ones, whatever the configuration says).

    ``select`` narrows the rules to those codes (e.g. ``["F401"]`` for one task; the scout only files what
    the project's rules report, so a selected rule is one they select). ``paths`` narrows the files
    (relative to ``root``); files the configuration excludes stay excluded. Raises :class:`RunnerExit`
    when ruff fails."""
    rules = rules or project_rules(root)
    argv = [*ruff_command(), "check", "--output-format", "json", "--exit-zero", "--no-cache",
            *rules.ruff_arguments(select)]
    if fix:
        argv += ["--fix", "--no-unsafe-fixes"]
    done = run_tool("ruff", [*argv, *(paths or ["."])], cwd=root, timeout=600)
    if done.returncode not in (0, 1):
        raise RunnerExit(f"ruff failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    records = json.loads(done.stdout or "[]")
    for record in records:
        record["filename"] = os.path.relpath(record["filename"], root)
    return records


IMPORT_SORTING = frozenset({"I001"})
"""Rules whose fix reorders and regroups a file's imports and nothing else."""
INTERACTING = IMPORT_SORTING | {"F401"}
"""Rules whose fixes interact within one file: removing an unused import (F401) re-sorts the block that
import sorting (I001) also rewrites, so as two tasks their branches conflict. In a file with an import
sorting finding, these rules' findings are one task (:func:`group`); other rules keep a task each, so a
finding no fix can mend does not hold back the ones that can be fixed."""


def task_rules(rule: str) -> list[str]:
    """The ruff codes a task's ``rule`` field names: one (``F401``), or several joined by commas for a task
    covering interacting rules, or a whole file (``F401,I001``)."""
    return [code for code in rule.split(",") if code]


def group(records: list[dict[str, Any]], *,
          per_file: bool = False) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The scout's tasks: findings grouped by (rule, file). In a file with an :data:`IMPORT_SORTING`
    finding, the findings of every :data:`INTERACTING` rule are one group; with ``per_file``, all of a
    file's findings are one group. A group's rule is its sorted codes joined by commas. Keys are
    ``(rule, file)``, in file order."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_file.setdefault(record["filename"], []).append(record)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for filename, found in sorted(by_file.items()):
        codes = sorted({r["code"] for r in found})
        sorting = IMPORT_SORTING & set(codes)
        together = set(codes) if per_file else (INTERACTING & set(codes) if sorting else set())
        if together:
            groups[(",".join(sorted(together)), filename)] = [r for r in found if r["code"] in together]
        for code in codes:
            if code not in together:
                groups[(code, filename)] = [r for r in found if r["code"] == code]
    return groups


SYNTAX_ERROR = "invalid-syntax"
"""The code ruff gives a syntax error (e.g. a ``match`` statement in a project whose floor is 3.7); older
ruff versions gave none."""


def rule_findings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings of lint rules among ``records``: not syntax errors, which no rule's fix can mend (a
    file newer than the project's Python floor, or broken): the scout files no task for them and the KPI
    does not count them. QA still sees every record, so a branch that breaks the syntax fails."""
    return [r for r in records if r.get("code") not in (None, SYNTAX_ERROR)]


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``git`` in ``repo`` with Roster as author; raises :class:`RunnerExit` on failure when ``check``."""
    if shutil.which("git") is None:
        raise UsageError("git is not installed: install it (e.g. `apt-get install git`)")
    done = run_tool("git", ["git", "-C", str(repo), *args], timeout=600, env={**os.environ, **GIT_ENV})
    if check and done.returncode != 0:
        raise RunnerExit(f"git {' '.join(args[:2])} failed: {done.stderr.strip()[-500:] or done.stdout.strip()[-500:]}")
    return done
