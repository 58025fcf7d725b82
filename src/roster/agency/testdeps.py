"""The project's own dependencies for QA's test runs, installed once per workspace and reused.

QA runs the tests against the branch's code (its import roots first on ``PYTHONPATH``, see
:mod:`roster.agency.qa`). A project's tests usually also import what the project depends on, and what its
tests need; without them every test module fails to collect, on the base and the branch alike, and
nothing is tested. So QA installs them, with the test interpreter's own pip, into a folder of their own:
``<workspace>/.roster/qa-env/<key>``, which goes on ``PYTHONPATH`` after the tree's roots (the branch's
code still comes first) and before the interpreter's site-packages.

What is installed (:func:`requirements`): ``[project].dependencies``; the optional dependencies and the
dependency groups (PEP 735) named ``test``, ``tests``, ``testing`` or ``dev``; and the requirements files
``requirements-test.txt``, ``requirements-tests.txt``, ``test-requirements.txt``,
``requirements-dev.txt``, ``requirements/test.txt``, ``requirements/tests.txt`` and
``requirements/dev.txt``. The key is the SHA-256 of the interpreter's version and path and all of that, so
a change of dependencies builds a new folder and an unchanged one is reused (built once, under a lock, and
marked complete only when pip succeeded). When pip fails (offline, a package that does not build), the
tests run without them, and the check's detail says so with pip's own last words.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from roster.agency.lint import run_tool

GROUPS = ("test", "tests", "testing", "dev")
"""The optional-dependency extras and dependency groups QA installs."""
FILES = ("requirements-test.txt", "requirements-tests.txt", "test-requirements.txt", "requirements-dev.txt",
         "requirements/test.txt", "requirements/tests.txt", "requirements/dev.txt")
"""The requirements files QA installs, relative to the repository."""
INSTALL_TIMEOUT = 900
"""Seconds pip may take to install them, once per workspace."""
COMPLETE = ".complete"


@dataclass(frozen=True)
class Requirements:
    """What a tree declares: ``specs`` (PEP 508 strings) and ``files`` (requirements files, absolute)."""

    specs: tuple[str, ...]
    files: tuple[Path, ...]

    def __bool__(self) -> bool:
        return bool(self.specs or self.files)


def requirements(tree: Path) -> Requirements:
    """The dependencies ``tree`` declares for running its tests (see the module docstring); a
    ``pyproject.toml`` that does not parse declares none."""
    try:
        project = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        project = {}
    table = project.get("project") or {}
    specs = [s for s in table.get("dependencies") or [] if isinstance(s, str)]
    extras = table.get("optional-dependencies") or {}
    groups = project.get("dependency-groups") or {}
    for name in GROUPS:
        specs += [s for s in extras.get(name) or [] if isinstance(s, str)]
        specs += [s for s in groups.get(name) or [] if isinstance(s, str)]  # {include-group = ...} is skipped
    files = tuple(tree / name for name in FILES if (tree / name).is_file())
    return Requirements(tuple(dict.fromkeys(specs)), files)


def dependency_dir(state: Path, python: str, tree: Path) -> tuple[Path | None, str]:
    """The folder holding ``tree``'s declared dependencies for ``python`` (built on first use under
    ``state/qa-env``), and a note for the check's detail. ``(None, "")`` when the tree declares none;
    ``(None, why)`` when they could not be installed. Never raises for a failed install."""
    wanted = requirements(tree)
    if not wanted:
        return None, ""
    digest = hashlib.sha256(json.dumps({
        "python": python, "version": _version(python), "specs": wanted.specs,
        "files": {str(f.relative_to(tree)): f.read_text(encoding="utf-8", errors="replace") for f in wanted.files},
    }, sort_keys=True).encode()).hexdigest()[:16]
    root = state / "qa-env"
    root.mkdir(parents=True, exist_ok=True)
    target = root / digest
    what = f"{len(wanted.specs)} declared dependenc(ies)" + (
        f" and {', '.join(str(f.relative_to(tree)) for f in wanted.files)}" if wanted.files else "")
    with (root / f"{digest}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).exists():
            return target, f"the project's {what} installed in {target} (reused)"
        building = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest}."))
        argv = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                "--target", str(building), *wanted.specs, *(arg for f in wanted.files for arg in ("-r", str(f)))]
        try:
            done = run_tool("pip", argv, cwd=tree, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(building, ignore_errors=True)
            return None, f"the project's {what} could not be installed ({exc}); the tests ran without them"
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            said = " ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-2:])[-300:]
            return None, (f"the project's {what} could not be installed with {python} -m pip (exit "
                          f"{done.returncode}: {said or 'no message'}); the tests ran without them")
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
        (target / COMPLETE).write_text("")
        return target, f"the project's {what} installed in {target}"


def _version(python: str) -> str:
    """``python``'s full version (``sys.version``), so a rebuilt interpreter at the same path gets a new key."""
    try:
        done = run_tool("python", [python, "-c", "import sys; print(sys.version)"], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()
