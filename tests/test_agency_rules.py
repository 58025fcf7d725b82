"""The project's own rules are the lane's rules (issue 13, deliverables 1 and 3): its ruff configuration and
Python floor, ruff's safe fixes only, and fixes that change behaviour held back for a model or a person.
Every repository is a real git repository built in the test; ruff and git run for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_agency import committed_repo, git

from roster.agency.lint import findings, project_rules, ruff_command
from roster.agency.safety import behaviour_changes, behaviour_changes_in_diff
from roster.agency.workers import builder, measure, scout

repository = committed_repo
"""A git repository at ``root`` holding ``files``, committed on ``main``."""


def own_ruff(root: Path, *args: str) -> list[dict]:
    """The project's own ruff, the way its developers run it: no options but the output format."""
    done = subprocess.run([*ruff_command(), "check", "--no-cache", "--exit-zero", "--output-format", "json", *args],
                          cwd=root, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def brief_for(task: dict, task_id: int = 1) -> dict:
    return {"task": {"id": task_id, "title": task["title"], "fields": {**task["fields"], "spec": "x" * 30}}}


CONFIGURED = {
    "pyproject.toml": """[project]
name = "configured"
requires-python = ">=3.8"

[tool.ruff]
extend-exclude = ["generated.py"]

[tool.ruff.lint]
select = ["E", "F", "I"]
ignore = ["E711"]
per-file-ignores = {"pkg/__init__.py" = ["F401"]}

[tool.ruff.lint.isort]
force-single-line = true
""",
    # already sorted the project's way (one import per line): the lane's own isort would merge them
    "pkg/core.py": "import sys\nfrom os import path\nfrom os import sep\n\n\ndef f(x):\n"
                   "    if x == None:\n        return path, sep\n    return sys.argv\n",
    "pkg/__init__.py": "from pkg.core import f\n",  # a re-export the project keeps with a per-file ignore
    "pkg/unused.py": "import json\nimport os\n\n\ndef g():\n    return os.sep\n",
    "generated.py": "import json\n",  # excluded by the project
}


def test_the_scout_files_by_the_projects_own_configuration_and_the_builder_adds_nothing_it_reports(tmp_path):
    repo = repository(tmp_path / "ws" / "repo", CONFIGURED)
    rules = project_rules(repo)
    assert rules.config == "pyproject.toml" and rules.floor == "3.8"
    assert rules.describe() == ("ruff configuration pyproject.toml [tool.ruff], Python floor 3.8 "
                                "(requires-python >=3.8)")
    assert "--isolated" not in rules.arguments

    tasks = scout({}, repo)["tasks"]
    # the ignored rule, the per-file ignore, the excluded file and the lane's own import order: none filed
    assert [t["key"] for t in tasks] == ["ruff:F401:pkg/unused.py"]
    assert "ruff configuration pyproject.toml" in scout({}, repo)["rationale"]
    # the KPI is the project's own count, measured the same way
    assert len(findings(repo)) == len(own_ruff(repo)) == 1

    result = builder(brief_for(tasks[0]), repo)
    assert result["transition"] == "build", result
    tree = repo.parent / ".roster" / "worktrees" / "task-1"
    assert own_ruff(tree) == []  # the project's own ruff on the branch: nothing left, nothing new
    assert "-import json" in result["artifacts"][0]["content"]


def test_measure_prints_the_projects_own_count(tmp_path, capsys):
    repo = repository(tmp_path / "repo", CONFIGURED)
    assert measure(repo) == 0
    assert capsys.readouterr().out == f"{len(own_ruff(repo))}\n"


FLOOR_37 = {
    "pyproject.toml": '[project]\nname = "old"\nrequires-python = ">=3.7"\n',
    "clock.py": "import datetime\nimport socket\n\n\ndef now():\n    try:\n        pass\n"
                "    except socket.timeout:\n        pass\n    return datetime.datetime.now(datetime.timezone.utc)\n",
}


def test_a_project_supporting_37_never_gets_a_fix_that_needs_a_newer_python(tmp_path):
    repo = repository(tmp_path / "repo", FLOOR_37)
    rules = project_rules(repo)
    assert rules.config is None and rules.floor == "3.7"
    assert rules.describe() == ("the lane's rule set (no ruff configuration found), Python floor 3.7 "
                                "(requires-python >=3.7)")
    assert rules.arguments[rules.arguments.index("--target-version") + 1] == "py37"
    # the lane's rules at today's Python would propose datetime.UTC (3.11+) and TimeoutError (3.10 semantics)
    newer = subprocess.run([*ruff_command(), "check", "--isolated", "--no-cache", "--exit-zero", "--select", "UP",
                            "--target-version", "py312", "--output-format", "json", "."], cwd=repo,
                           capture_output=True, text=True, check=True)
    assert {r["code"] for r in json.loads(newer.stdout)} == {"UP017", "UP041"}
    assert findings(repo) == [] and scout({}, repo)["tasks"] == []


def test_the_floor_comes_from_target_version_first_and_a_project_declaring_none_is_assumed_old(tmp_path):
    configured = tmp_path / "configured"
    configured.mkdir()
    (configured / "ruff.toml").write_text('target-version = "py39"\n[lint]\nselect = ["UP"]\n')
    (configured / "pyproject.toml").write_text('[project]\nname = "x"\nrequires-python = ">=3.7"\n')
    rules = project_rules(configured)
    assert (rules.config, rules.floor, rules.floor_source) == ("ruff.toml", "3.9", "target-version py39")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "setup.py").write_text("from setuptools import setup\nsetup(name='x', python_requires='>=3.8.1')\n")
    assert project_rules(bare).floor == "3.8"
    (bare / "setup.py").unlink()
    rules = project_rules(bare)
    assert rules.floor is None and "--target-version" in rules.arguments and "py37" in rules.arguments
    assert "assumed 3.7" in rules.describe()


def test_ruffs_unsafe_fixes_are_never_applied_even_when_the_configuration_enables_them(tmp_path):
    repo = repository(tmp_path / "ws" / "repo", {
        "ruff.toml": 'unsafe-fixes = true\n[lint]\nselect = ["C4"]\n',
        "d.py": "def make():\n    return dict()\n",  # C408: ruff's fix is unsafe
    })
    [task] = scout({}, repo)["tasks"]
    [record] = json.loads(task["artifacts"][0]["content"])
    assert task["fields"]["rule"] == "C408" and record["fix"]["applicability"] == "unsafe"
    assert [r["code"] for r in findings(repo, fix=True)] == ["C408"]
    assert (repo / "d.py").read_text() == "def make():\n    return dict()\n"
    result = builder(brief_for(task), repo)  # nothing safe to apply: a person or a model must judge it
    assert result["failure"]["category"] == "judgment" and "ruff cannot fix C408" in result["failure"]["reason"]
    # the project's own ruff would have applied it: the configuration does enable it
    own_ruff(repo, "--fix")
    assert "return {}" in (repo / "d.py").read_text()


GUARDED = ("try:\n    import readline\n    HAVE_READLINE = True\nexcept Exception:\n    HAVE_READLINE = False\n\n\n"
           "def has_readline():\n    return HAVE_READLINE\n")


def test_a_fix_removing_an_import_a_try_guards_is_refused_with_the_reason(tmp_path):
    repo = repository(tmp_path / "ws" / "repo", {"shell.py": GUARDED})
    [task] = scout({}, repo)["tasks"]
    assert task["fields"]["rule"] == "F401" and task["fields"]["fixable"] is True  # ruff calls its fix safe
    result = builder(brief_for(task), repo)
    assert result["failure"]["category"] == "judgment", result
    reason = result["failure"]["reason"]
    assert "changes behaviour" in reason and "`import readline`" in reason and "`except Exception`" in reason
    tree = repo.parent / ".roster" / "worktrees" / "task-1"
    assert (tree / "shell.py").read_text() == GUARDED  # ruff's change reverted, nothing committed
    assert git(tree, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    # with `except ImportError` ruff itself offers no fix (its own guard): the builder says so
    other = repository(tmp_path / "ws2" / "repo", {"shell.py": GUARDED.replace("Exception", "ImportError")})
    [task] = scout({}, other)["tasks"]
    assert "ruff cannot fix F401 in shell.py" in builder(brief_for(task), other)["failure"]["reason"]


NOQA_AGENT = """
import os, pathlib, sys
prompt = sys.stdin.read()
pathlib.Path(os.environ["AGENT_LOG"]).write_text(prompt)
source = pathlib.Path("shell.py")
source.write_text(source.read_text().replace("import readline\\n", "import readline  # noqa: F401\\n"))
"""


def test_a_behaviour_changing_fix_goes_to_the_agent_cli_with_the_reason(tmp_path, monkeypatch):
    repo = repository(tmp_path / "ws" / "repo", {"shell.py": GUARDED})
    agent = tmp_path / "agent.py"
    agent.write_text(NOQA_AGENT)
    monkeypatch.setenv("AGENT_LOG", str(tmp_path / "prompt.txt"))
    [task] = scout({}, repo)["tasks"]
    result = builder(brief_for(task), repo, agent=f"{sys.executable} {agent}")
    assert result["transition"] == "build", result
    prompt = (tmp_path / "prompt.txt").read_text()
    assert "not applied because it changes behaviour" in prompt and "`import readline`" in prompt
    patch = result["artifacts"][0]["content"]
    assert "+    import readline  # noqa: F401" in patch and "-    import readline\n" in patch
    assert "HAVE_READLINE" not in "".join(line for line in patch.splitlines() if line.startswith(("+ ", "- ")))
    assert "as ruff's fix changed behaviour" in result["rationale"]


SLOPPY_AGENT = """
import pathlib
source = pathlib.Path("shell.py")
source.write_text(source.read_text().replace("    import readline\\n", "    pass\\n"))
pathlib.Path("notes.txt").write_text("I also wrote this")
"""


def test_an_agent_clis_edit_that_changes_behaviour_is_not_committed_and_goes_to_a_person(tmp_path):
    repo = repository(tmp_path / "ws" / "repo", {"shell.py": GUARDED})
    agent = tmp_path / "agent.py"
    agent.write_text(SLOPPY_AGENT)
    [task] = scout({}, repo)["tasks"]
    result = builder(brief_for(task), repo, agent=f"{sys.executable} {agent}")
    assert result["failure"]["category"] == "judgment", result
    reason = result["failure"]["reason"]
    assert "edit for F401 changes more than the rule intends, so it was not committed" in reason
    assert "shell.py: " in reason and "`import readline`" in reason
    assert "notes.txt: the fix creates the file" in reason
    tree = repo.parent / ".roster" / "worktrees" / "task-1"
    assert (tree / "shell.py").read_text() == GUARDED and not (tree / "notes.txt").exists()  # reset
    assert git(tree, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")  # nothing committed
    kept = repo.parent / ".roster" / "prompts" / "task-1.rejected.patch"
    assert "+    pass" in kept.read_text() and "I also wrote this" in kept.read_text()


# --- behaviour_changes, unit by unit ------------------------------------------------------------------


def test_only_the_rules_intent_passes():
    assert behaviour_changes("import os\nimport sys\nprint(sys)\n", "import sys\nprint(sys)\n", "F401") == []
    assert behaviour_changes("if x == None:\n    y = 1\n", "if x is None:\n    y = 1\n", "E711") == []
    assert behaviour_changes("x = 1  \n\n", "x = 1\n\n", "W291") == []
    assert behaviour_changes("import sys\nimport os\nfrom a import b, c\n",
                             "import os\nimport sys\nfrom a import b\nfrom a import c\n", "I001") == []
    assert behaviour_changes("def f():\n    x = g()\n    y = 2\n    return 1\n",
                             "def f():\n    g()\n    return 1\n", "F841") == []


def test_a_change_beyond_the_rules_intent_is_named():
    [reason] = behaviour_changes("import os\nimport sys\nprint(sys)\n", "import sys\nprint(sys, 1)\n", "F401")
    assert "more than F401 intends" in reason and "line 3 `print(sys)` became `print(sys, 1)`" in reason
    [reason] = behaviour_changes('x = """a  \nb"""\n', 'x = """a\nb"""\n', "W291")  # whitespace inside a string
    assert "more than W291 intends (layout only)" in reason
    [reason] = behaviour_changes("import sys\nimport os\n", "import os\n", "I001")
    assert "more than I001 intends" in reason
    [reason] = behaviour_changes("x = 1\n", "x = (\n", "W291")
    assert "does not parse" in reason


def test_removing_or_changing_a_statement_a_try_guards_is_behaviour_changing():
    after = "try:\n    pass\nexcept ImportError:\n    HAVE_READLINE = False\n"
    [reason] = behaviour_changes("try:\n    import readline\nexcept ImportError:\n    HAVE_READLINE = False\n",
                                 after, "F401")
    assert reason.startswith("line 2:") and "`import readline`" in reason and "`except ImportError`" in reason
    for handler in ("except ModuleNotFoundError:", "except (OSError, ImportError):", "except:"):
        before = f"try:\n    import a, b\n    print(a)\n{handler}\n    pass\n"
        assert behaviour_changes(before, before.replace("import a, b", "import a"), "F401"), handler
    # a try that guards nothing but ValueError: removing an unused import there is only F401's intent
    plain = "try:\n    import a\n    x = 1\nexcept ValueError:\n    pass\n"
    assert behaviour_changes(plain, plain.replace("    import a\n", ""), "F401") == []


def test_removing_a_name_used_elsewhere_is_behaviour_changing(tmp_path):
    [reason] = behaviour_changes("from os import path\n__all__ = ['path']\n", "__all__ = ['path']\n", "F401")
    assert "removes `path`" in reason and "__all__" in reason
    [reason] = behaviour_changes("def f():\n    x = g()\n    return locals()\n", "def f():\n    g()\n    return locals()\n",
                                 "F841")
    assert "removes `x` from `f`" in reason and "dynamically" in reason
    [reason] = behaviour_changes("import os\nimport os.path\nos.sep\n", "os.sep\n", "E711")
    assert "removes `os` from the module, which still uses it (line 1)" in reason


def test_behaviour_changes_in_diff_finds_a_re_export_and_files_a_fix_should_not_touch(tmp_path):
    base, branch = tmp_path / "base", tmp_path / "branch"
    for root in (base, branch):
        (root / "src" / "pkg").mkdir(parents=True)
        (root / "src" / "pkg" / "api.py").write_text("from pkg.core import f\nfrom pkg import _version\n")
        (root / "src" / "pkg" / "core.py").write_text("def f():\n    return 1\n")
        (root / "src" / "pkg" / "_version.py").write_text("V = 1\n")
        (root / "app.py").write_text("from pkg.api import f\n\nf()\n")
        (root / "README").write_text("hello\n")
    (branch / "src" / "pkg" / "api.py").write_text("from pkg import _version\n")  # F401 removed a re-export
    (branch / "README").write_text("changed\n")
    reasons = behaviour_changes_in_diff(base, branch, ["src/pkg/api.py", "README", "src/pkg/core.py"], "F401")
    assert reasons == ["src/pkg/api.py: the fix removes `f`, which app.py imports from this module (a re-export)",
                       "README: not a Python file, and a F401 fix changes only Python files"]
    (branch / "app.py").write_text("print(1)\n")
    assert behaviour_changes_in_diff(base, branch, ["src/pkg/api.py"], "F401") == []
    (branch / "src" / "pkg" / "core.py").unlink()
    assert behaviour_changes_in_diff(base, branch, ["src/pkg/core.py"], "F401") == [
        "src/pkg/core.py: the fix deletes the file; a F401 fix edits a file in place"]


def test_syntax_newer_than_the_floor_is_no_lint_task_and_no_kpi_finding(tmp_path, capsys):
    """A project declaring Python 3.7 whose code uses `match`: ruff reports `invalid-syntax`, which no
    rule's fix mends. The scout files no task for it (a task for it made the builder run `ruff --select
    invalid-syntax`, which ruff refuses) and the KPI does not count it; the real findings still count."""
    repo = repository(tmp_path / "repo", {
        "pyproject.toml": '[project]\nname = "old"\nrequires-python = ">=3.7"\n',
        "new.py": "import os\n\n\ndef f(x):\n    match x:\n        case 1:\n            return 1\n",
    })
    assert any(r["code"] == "invalid-syntax" for r in findings(repo))
    tasks = scout({}, repo)["tasks"]
    assert [t["fields"]["rule"] for t in tasks] == ["F401"]
    assert measure(repo) == 0
    assert capsys.readouterr().out == "1\n"


INTERACTING = {
    "pyproject.toml": '[project]\nname = "mixed"\nrequires-python = ">=3.11"\n',
    # an unused import in an unsorted block: fixing one re-sorts the other, so one task covers the file
    "a.py": "import sys\nimport os\nimport json\n\n\ndef f():\n    return sys.argv, os.sep\n",
    # no import sorting here: a task per rule
    "b.py": "import json\n\nx = 1   \n",
    # import sorting with a rule no fix mends: the import rules are one task, E741 one of its own
    "c.py": "import sys\nimport os\n\n\ndef g(l):\n    return l, sys.argv, os.sep\n",
}


def test_a_file_whose_rules_interact_is_one_task_fixed_and_verified_whole(tmp_path):
    from roster.agency.qa import qa

    repo = repository(tmp_path / "ws" / "repo", INTERACTING)
    tasks = scout({}, repo)["tasks"]
    assert [(t["fields"]["rule"], t["fields"]["file"], t["key"]) for t in tasks] == [
        ("F401,I001", "a.py", "ruff:F401,I001:a.py"), ("F401", "b.py", "ruff:F401:b.py"),
        ("W291", "b.py", "ruff:W291:b.py"), ("I001", "c.py", "ruff:I001:c.py"), ("E741", "c.py", "ruff:E741:c.py")]
    assert tasks[0]["title"] == "F401, I001 in a.py" and tasks[0]["fields"]["count"] == 2

    result = builder(brief_for(tasks[0]), repo)
    assert result["transition"] == "build", result  # both rules fixed, and nothing beyond their intents
    tree = repo.parent / ".roster" / "worktrees" / "task-1"
    assert (tree / "a.py").read_text().startswith("import os\nimport sys\n")
    checks = {c["name"]: c for c in qa({"task": {"id": 1, "fields": tasks[0]["fields"]}}, repo)["checks"]}
    assert checks["findings_gone"]["passed"] and checks["behaviour_unchanged"]["passed"], checks

    per_file = scout({}, repo, per_file=True)["tasks"]
    assert [(t["fields"]["rule"], t["fields"]["file"]) for t in per_file] == [
        ("F401,I001", "a.py"), ("F401,W291", "b.py"), ("E741,I001", "c.py")]


def test_the_intents_of_several_rules_compose():
    before = "import sys\nimport os\nimport json\n\nprint(sys.argv, os.sep)\n"
    fixed = "import os\nimport sys\n\nprint(sys.argv, os.sep)\n"
    assert behaviour_changes(before, fixed, "F401,I001") == []
    assert behaviour_changes(before, fixed, "F401") != []  # the re-sort is beyond F401 alone
    beyond = "import os\nimport sys\n\nprint(sys.argv)\n"
    [reason] = behaviour_changes(before, beyond, "F401,I001")
    assert "changes more than F401,I001 intends" in reason
