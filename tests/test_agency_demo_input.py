"""``roster demo`` on bad input, and ``roster demo --plan`` (issue 13, deliverables 5 and 6): real git
repositories built in each test, real ``python -m roster demo`` subprocesses.

Every failure must say what was wrong and how to fix it, exit with the code docs/cli.md gives (2), print
no traceback, and leave nothing behind: no workspace, no file in the user's tree, and no temporary folder
(each run's ``TMPDIR`` is a folder of the test's own, checked empty afterwards).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_agency import committed_repo as committed
from test_agency import git

FILES = {
    "pkg/a.py": "import os\nimport sys\n\n\ndef f():\n    return sys.argv\n",  # F401: ruff fixes it safely
    "pkg/b.py": "def g(l):\n    return l\n",  # E741: ruff has no fix
    "c.py": "x = 1   \n",  # W291: ruff fixes it safely
}


def committed_repo(repo: Path) -> Path:
    return committed(repo, FILES)


class Demo:
    """``python -m roster demo ARGS`` in a folder of its own (``cwd``), with ``TMPDIR`` pointed at a folder
    of the test's (``tmp``), so whatever it leaves behind can be seen."""

    def __init__(self, root: Path) -> None:
        self.cwd = root / "cwd"
        self.tmp = root / "tmpdir"
        self.cwd.mkdir()
        self.tmp.mkdir()

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
        env.update(TMPDIR=str(self.tmp), COLUMNS="400")
        done = subprocess.run([sys.executable, "-m", "roster", "demo", *args], capture_output=True, text=True,
                              env=env, cwd=self.cwd, timeout=timeout, check=False)
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        return done

    def left_behind(self) -> list[str]:
        """What the runs left in ``TMPDIR`` and in the folder they ran in."""
        return sorted(os.listdir(self.tmp)) + sorted(os.listdir(self.cwd))


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    return Demo(tmp_path)


def said(done: subprocess.CompletedProcess) -> str:
    """Everything the run printed, whitespace removed (the console wraps long lines anywhere)."""
    return "".join((done.stdout + done.stderr).split())


def test_an_empty_repository_is_refused_saying_commit_something_first_and_nothing_is_left(demo, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    (empty / "a.py").write_text("import os\n")  # uncommitted: still nothing to copy
    ws = tmp_path / "ws"
    for args in ((str(empty),), (str(empty), "--workspace", str(ws)), (str(empty), "--plan")):
        done = demo(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{empty}hasnocommitsyet" in said(done) and "Commitsomethingfirst" in said(done)
    assert demo.left_behind() == [] and not ws.exists()
    assert sorted(os.listdir(empty)) == [".git", "a.py"]


def test_a_subdirectory_works_on_the_enclosing_repository_and_says_so(demo, tmp_path):
    repo = committed_repo(tmp_path / "src-repo")
    ws = tmp_path / "ws"
    done = demo(str(repo / "pkg"), "--workspace", str(ws))  # stops at the approval edge (no --yes)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{repo / 'pkg'}isinsidethegitrepository{repo}:thedemoworksonthatwholerepository" in said(done)
    assert f"Workingonacopyof{repo}(itscommittedHEAD)" in said(done)
    # the whole repository was copied and scanned, c.py (outside pkg/) included
    assert (ws / "repo" / "c.py").exists() and (ws / "repo" / "pkg" / "a.py").exists()
    assert "KPIlint_findings:3->3findings" in said(done)
    assert said(done).count("Thelane'srules:thelane'sruleset(noruffconfigurationfound)") == 2  # start, report
    assert git(repo, "status", "--porcelain") == ""


def test_a_workspace_inside_the_source_repository_is_refused_and_nothing_is_written(demo, tmp_path):
    repo = committed_repo(tmp_path / "src-repo")
    for where, how in ((repo, "istherepository"), (repo / "lane", "isinsidetherepository"),
                       (repo / "pkg" / "ws", "isinsidetherepository")):
        for path in (repo, repo / "pkg"):  # the repository, or a folder inside it
            done = demo(str(path), "--workspace", str(where))
            assert done.returncode == 2, done.stdout + done.stderr
            assert f"theworkspace{where}{how}{repo}" in said(done) and "outside" in said(done)
            assert "nothingwaswritten" in said(done)
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    assert not (repo / "lane").exists() and not (repo / "roster.yaml").exists()
    assert demo.left_behind() == []


def corrupt_repo(repo: Path) -> Path:
    """A repository whose HEAD commit is fine but one of its blobs is gone: git reads the history, then
    fails to check the file out."""
    committed_repo(repo)
    blob = git(repo, "rev-parse", "HEAD:c.py").strip()
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    return repo


def test_a_git_failure_shows_gits_own_message_and_leaves_nothing(demo, tmp_path):
    broken = corrupt_repo(tmp_path / "broken")
    existing = tmp_path / "existing-ws"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine\n")
    for args in ((str(broken),), (str(broken), "--workspace", str(tmp_path / "new" / "ws")),
                 (str(broken), "--workspace", str(existing)), (str(broken), "--plan")):
        done = demo(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"gitcouldnotcopy{broken}(gitcloneexited128):" in said(done)
        assert "fatal:" in done.stderr  # git's own words
    assert demo.left_behind() == []
    assert not (tmp_path / "new").exists()
    assert sorted(os.listdir(existing)) == ["notes.txt"]  # what was there stays; what the run made is gone


def test_a_folder_outside_any_repository_is_refused_with_gits_reason(demo, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.py").write_text("import os\n")
    done = demo(str(plain))
    assert done.returncode == 2
    assert f"{plain}isnotagitrepository" in said(done) and "fatal:notagitrepository" in said(done)
    done = demo(str(plain / "a.py"))
    assert done.returncode == 2 and "isafile" in said(done)
    assert demo.left_behind() == []


def test_plan_shows_the_tasks_totals_and_expected_kpi_change_and_writes_nothing(demo, tmp_path):
    repo = committed_repo(tmp_path / "src-repo")
    done = demo("--plan", str(repo))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert "Plan: the scout would file 3 task(s), one per (rule, file):" in lines
    assert "E741 pkg/b.py 1 no: needs a model or a person" in lines
    assert "F401 pkg/a.py 1 yes, 1 of 1 safely" in lines and "W291 c.py 1 yes, 1 of 1 safely" in lines
    assert ("totals: 3 finding(s) of 3 rule(s) in 3 file(s); ruff fixes 2 safely, 1 need a model or a person"
            in lines)
    assert any(line.startswith("expected KPI lint_findings: 3 -> 1 findings once every safe fix is merged")
               for line in lines)
    assert "Thelane'srules:thelane'sruleset(noruffconfigurationfound),noPythonfloordeclared" in said(done)
    # nothing changed: the source tree, no workspace, no temporary folder, nothing where it ran
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    assert demo.left_behind() == []
    refused = demo("--plan", str(repo), "--workspace", str(tmp_path / "ws"))
    assert refused.returncode == 2 and "--planwritesnothing" in said(refused)
    assert not (tmp_path / "ws").exists()


def test_plan_follows_the_projects_own_ruff_configuration_and_names_it(demo, tmp_path):
    repo = tmp_path / "configured"
    repo.mkdir()
    (repo / "ruff.toml").write_text('target-version = "py38"\n[lint]\nselect = ["W291"]\n')
    committed_repo(repo)
    done = demo("--plan", str(repo))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert "Plan: the scout would file 1 task(s), one per (rule, file):" in lines
    assert "W291 c.py 1 yes, 1 of 1 safely" in lines
    assert "Thelane'srules:ruffconfigurationruff.toml,Pythonfloor3.8(target-versionpy38)" in said(done)
    assert git(repo, "status", "--porcelain", "--ignored") == "" and demo.left_behind() == []
