"""The agency lane's wall time, and Roster's own overhead: the time not spent in ruff, git or pytest.

Runs the whole lane (scout -> planner -> builder -> qa -> approval, given at once as with ``roster demo
--yes`` -> merger) in-process, as the demo does, on two repositories:

- ``default``: the demo's scratch repository (eight standard-library modules of this Python);
- ``large``: a generated repository of ``--files`` Python modules (default 1,000) in 20 packages, with
  findings planted in ``--planted`` of them: an unused import (ruff fixes it) in most, an ambiguous
  variable name (ruff cannot fix it: escalated) in every fifth; plus a tests folder with a passing test.

Every call of ruff, git and pytest, in every worker and measure process, appends its duration to a
file (``ROSTER_TOOL_TIMES``, see ``roster.agency.lint.run_tool``). Overhead = wall time - tool time: the
dispatcher, the store and audit, and the worker processes' own start-up (a Python interpreter per run).

Usage: python bench/lane.py [--files 1000] [--planted 40] [--only default|large] [--batch-merge]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from roster.agency.demo import prepare_repository, run_lane, spec_text
from roster.agency.lint import TOOL_TIMES, findings, git
from roster.specfile import parse_spec
from roster.store import Store

MODULE = '''"""Module {i} of a generated package."""

{imports}

def value_{i}({arg}):
    """Return a value derived from the argument."""
    return {arg} * {i}
'''


def generate(repo: Path, files: int, planted: int) -> None:
    """A git repository of ``files`` modules; ``planted`` of them carry a finding."""
    every = max(1, files // max(1, planted))
    for i in range(files):
        flawed = i % every == 0 and i // every < planted
        unfixable = flawed and (i // every) % 5 == 4
        imports = "import os\n" if flawed and not unfixable else ""
        arg = "l" if unfixable else "number"
        path = repo / f"pkg{i % 20:02d}" / f"mod_{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(MODULE.format(i=i, imports=imports, arg=arg), encoding="utf-8")
    for package in {p.parent for p in repo.glob("pkg*/mod_*.py")}:
        (package / "__init__.py").write_text("", encoding="utf-8")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_values.py").write_text(
        "from pkg00.mod_0000 import value_0\n\n\ndef test_value():\n    assert value_0(3) == 0\n", encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "A generated repository for bench/lane.py")


def measure(name: str, prepare, batch_merge: bool = False) -> dict:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        prepare(where / "repo")
        py_files = sum(1 for _ in (where / "repo").rglob("*.py"))
        before = len(findings(where / "repo"))
        (where / "roster.yaml").write_text(spec_text("bench", batch_merge=batch_merge), encoding="utf-8")
        (where / ".roster").mkdir()
        times = where / "tool-times.txt"
        os.environ[TOOL_TIMES] = str(times)
        store = Store.open(f"sqlite:///{where / '.roster' / 'roster.db'}", artifact_root=where / ".roster" / "artifacts")
        store.apply(parse_spec((where / "roster.yaml").read_text()), applied_by="bench")
        company = store.company("agency")
        started = time.perf_counter()
        run_lane(company, where, operator="bench", approve=True, say=lambda _line: None, max_cycles=100_000)
        wall = time.perf_counter() - started
        os.environ.pop(TOOL_TIMES)
        tools: dict[str, float] = defaultdict(float)
        calls: dict[str, int] = defaultdict(int)
        for line in times.read_text().splitlines():
            tool, seconds = line.split()
            tools[tool] += float(seconds)
            calls[tool] += 1
        runs = company.list_runs(limit=1_000_000)
        result = {"repository": name, "py_files": py_files, "findings": f"{before} -> {len(findings(where / 'repo'))}",
                  "tasks": company.task_counts(), "runs": len(runs), "wall_s": wall, "tools": dict(tools),
                  "calls": dict(calls), "in_runs_s": sum(r.wall_seconds or 0 for r in runs),
                  "merges": len(git(where / "repo", "log", "--first-parent", "--merges", "--format=%h").stdout.split()),
                  "approvals": len(company.list_requests())}
        assert company.verify_audit()[1] is None
        store.close()
        return result


def report(result: dict) -> None:
    tool_s = sum(result["tools"].values())
    overhead = result["wall_s"] - tool_s
    print(f"\n{result['repository']}: {result['py_files']} Python files, lint findings {result['findings']}, "
          f"tasks {result['tasks']}, {result['runs']} runs, {result['approvals']} approval(s), "
          f"{result['merges']} merge commit(s) on main")
    print(f"  wall {result['wall_s']:.1f} s; in ruff/git/pytest {tool_s:.1f} s "
          + ", ".join(f"({t} {s:.1f} s in {result['calls'][t]} calls)" for t, s in sorted(result["tools"].items())))
    print(f"  Roster's overhead (wall - tools) {overhead:.1f} s = {100 * overhead / result['wall_s']:.0f}% of wall, "
          f"{1000 * overhead / max(1, result['runs']):.0f} ms per run; worker processes (runs' wall) "
          f"{result['in_runs_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--planted", type=int, default=40)
    parser.add_argument("--only", choices=["default", "large"])
    parser.add_argument("--batch-merge", action="store_true",
                        help="The lane as `roster demo --batch-merge`: one review branch, one approval.")
    args = parser.parse_args()
    mode = " --batch-merge" if args.batch_merge else ""
    if args.only in (None, "default"):
        report(measure(f"default (8 standard-library modules){mode}", lambda repo: prepare_repository(None, repo),
                       args.batch_merge))
    if args.only in (None, "large"):
        report(measure(f"large (generated, {args.files} modules){mode}",
                       lambda repo: generate(repo, args.files, args.planted), args.batch_merge))


if __name__ == "__main__":
    main()
