"""QA tests the branch, in the project's environment (issue 13, deliverable 2): real git repositories and
worktrees, real pytest subprocesses, a real virtual environment with the project installed in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_agency import committed_repo, git

from roster.agency.qa import qa
from roster.agency.worktrees import worktree

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
CORE = "import os\n\n\ndef double(x):\n    return 2 * x\n"  # F401: the task removes `import os`
FIXED = "def double(x):\n    return 2 * x\n"
PACKAGE = {
    "pyproject.toml": f'[project]\nname = "pkg"\nversion = "0.1"\nrequires-python = ">={HERE}"\n',
    "src/pkg/__init__.py": "",
    "src/pkg/core.py": CORE,
    "tests/test_core.py": "from pkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
}
"""A src-layout package whose tests import it: only the import path decides which copy they test."""


def make_repo(ws: Path, files: dict[str, str]) -> Path:
    """``ws/repo``: a git repository holding ``files`` committed on ``main`` (the lane's workspace layout)."""
    repo = committed_repo(ws / "repo", files)
    (ws / ".roster").mkdir(exist_ok=True)
    return repo


def built(repo: Path, task_id: int, changes: dict[str, str], rule: str = "F401",
          file: str = "src/pkg/core.py") -> dict:
    """The task's branch as the builder leaves it (``changes`` committed in its worktree), and QA's brief."""
    path, _ = worktree(repo, task_id)
    for name, text in changes.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", f"task {task_id}")
    return {"task": {"id": task_id, "state": "built", "fields": {"rule": rule, "file": file}}}


def check(result: dict, name: str = "tests_pass") -> dict:
    [found] = [c for c in result["checks"] if c["name"] == name]
    return found


def venv_with_the_package_installed(tmp_path: Path, repo: Path, how: str) -> Path:
    """A real virtual environment (``python -m venv``) with pytest (this environment's site-packages, via a
    ``.pth``: nothing is downloaded) and the repository's main checkout installed ``how``:

    - ``pth``: a ``.pth`` naming ``repo/src``, what setuptools and hatchling write for an editable install
      of a src layout;
    - ``finder``: setuptools' other editable form, a ``.pth`` that installs an import finder mapping
      ``pkg`` to ``repo/src/pkg``;
    - ``finder-first``: the same finder placed ahead of Python's own (``sys.meta_path.insert(0, ...)``), which
      no import path can outrank.

    Returns the environment's ``python``."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "_test_tools.pth").write_text(str(Path(pytest.__file__).parent.parent) + "\n")
    src = repo / "src"
    if how == "pth":
        (purelib / "__editable__.pkg-0.1.pth").write_text(f"{src}\n")
    else:
        (purelib / "__editable___pkg_finder.py").write_text(
            "import importlib.util, sys\n"
            f"MAPPING = {{'pkg': {str(src / 'pkg')!r}}}\n\n"
            "class Finder:\n"
            "    @classmethod\n"
            "    def find_spec(cls, name, path=None, target=None):\n"
            "        if name in MAPPING:\n"
            "            return importlib.util.spec_from_file_location(\n"
            "                name, MAPPING[name] + '/__init__.py', submodule_search_locations=[MAPPING[name]])\n"
            "        return None\n\n"
            "def install():\n"
            f"    sys.meta_path.{'insert(0, Finder)' if how == 'finder-first' else 'append(Finder)'}\n")
        (purelib / "__editable__.pkg-0.1.pth").write_text(
            "import __editable___pkg_finder; __editable___pkg_finder.install()\n")
    where = subprocess.run([python, "-c", "import pkg.core; print(pkg.core.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(src)  # the installed copy is what a plain import finds
    return python


@pytest.mark.parametrize("how", ["pth", "finder", "finder-first"])
def test_a_sabotaged_branch_of_a_package_also_installed_in_the_test_environment_fails_qa(tmp_path, how):
    repo = make_repo(tmp_path / "ws", PACKAGE)
    python = venv_with_the_package_installed(tmp_path, repo, how)
    tests = f"{python} -m pytest -q"
    honest = qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo, tests=tests)
    sabotaged = qa(built(repo, 2, {"src/pkg/core.py": FIXED + "raise SystemExit\n"}), repo, tests=tests)
    assert sabotaged["transition"] == "rework"
    assert not check(sabotaged)["passed"]
    assert check(sabotaged)["detail"].startswith("the tests could not be judged on roster/task-2: ")
    if how == "finder-first":  # the tests would run the installed copy whatever the path says: QA refuses
        assert honest["transition"] == "rework"
        assert "would import pkg from" in check(honest)["detail"] and str(repo / "src") in check(honest)["detail"]
    else:
        assert "pytest exited 3 (internal error)" in check(sabotaged)["detail"]
        assert "SystemExit" in check(sabotaged)["detail"]
        assert honest["transition"] == "verify", honest  # the same environment judges an honest fix sound
        assert "1 test(s) on the branch" in check(honest)["detail"]


def test_a_syntax_error_in_the_package_fails_the_check(tmp_path):
    repo = make_repo(tmp_path / "ws", PACKAGE)
    result = qa(built(repo, 1, {"src/pkg/core.py": FIXED + "def broken(:\n    pass\n"}), repo)
    assert result["transition"] == "rework"
    assert not check(result)["passed"]
    assert check(result)["detail"].startswith("newly failing: tests/test_core.py (base run now)")


def test_a_collection_error_fails_the_check_and_the_other_tests_still_run(tmp_path):
    files = {**PACKAGE, "tests/test_reexport.py": "from pkg.core import os\n\n\ndef test_os():\n    assert os.sep\n"}
    repo = make_repo(tmp_path / "ws", files)
    result = qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo)  # the fix removes a re-exported name
    assert result["transition"] == "rework"
    assert not check(result)["passed"]
    assert "newly failing: tests/test_reexport.py" in check(result)["detail"]
    assert "tests/test_core.py" not in check(result)["detail"]  # it ran, and passed


def test_a_run_that_cannot_start_collecting_fails_the_check_even_when_nothing_is_reported_failed(tmp_path):
    repo = make_repo(tmp_path / "ws", PACKAGE)
    conftest = {"src/pkg/core.py": FIXED, "tests/conftest.py": "import a_module_that_does_not_exist\n"}
    result = qa(built(repo, 1, conftest), repo)
    assert not check(result)["passed"]
    assert "pytest exited 4 (usage error" in check(result)["detail"]
    assert "a_module_that_does_not_exist" in check(result)["detail"]


def test_base_results_are_cached_so_two_tasks_on_one_base_test_it_once(tmp_path):
    marker = tmp_path / "runs.txt"
    files = {**PACKAGE, "tests/test_marker.py": (
        f"import os\n\n\ndef test_marker():\n    with open({str(marker)!r}, 'a') as out:\n"
        "        out.write(os.getcwd() + '\\n')\n")}
    repo = make_repo(tmp_path / "ws", files)
    briefs = [built(repo, n, {"src/pkg/core.py": FIXED}) for n in (1, 2)]
    started = time.perf_counter()
    first = qa(briefs[0], repo)
    middle = time.perf_counter()
    second = qa(briefs[1], repo)
    ended = time.perf_counter()
    print(f"QA wall time: {middle - started:.2f}s without the base cache, {ended - middle:.2f}s with it")
    assert first["transition"] == second["transition"] == "verify", (first, second)
    assert "base run now" in check(first)["detail"] and "cached base result" in check(second)["detail"]
    runs = [Path(line).name for line in marker.read_text().splitlines()]
    bases = [name for name in runs if name.startswith("base-")]
    assert len(bases) == 1 and sorted(runs) == sorted([*bases, "task-1", "task-2"]), runs  # the base ran once
    [entry] = (tmp_path / "ws" / ".roster" / "qa-cache").glob("*.json")
    assert json.loads(entry.read_text())["result"]["ran"] == ["tests/test_core.py::test_double",
                                                              "tests/test_marker.py::test_marker"]


def test_three_concurrent_qa_processes_on_one_base_run_it_once_and_leave_a_sound_cache(tmp_path):
    marker = tmp_path / "runs.txt"
    files = {**PACKAGE, "tests/test_marker.py": (
        f"import os\n\n\ndef test_marker():\n    with open({str(marker)!r}, 'a') as out:\n"
        "        out.write(os.getcwd() + '\\n')\n")}
    ws = tmp_path / "ws"
    repo = make_repo(ws, files)
    briefs = [built(repo, n, {"src/pkg/core.py": FIXED}) for n in (1, 2, 3)]
    workers = [subprocess.Popen([sys.executable, "-m", "roster.agency.workers", "qa", "--repo", "repo"], cwd=ws,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in briefs]
    for process, brief in zip(workers, briefs, strict=True):
        process.stdin.write(json.dumps(brief))
        process.stdin.close()
    results = [json.loads(process.stdout.read()) for process in workers]
    assert [process.wait(timeout=120) for process in workers] == [0, 0, 0]
    assert [r["transition"] for r in results] == ["verify"] * 3, results
    runs = [Path(line).name for line in marker.read_text().splitlines()]
    assert sum(name.startswith("base-") for name in runs) == 1, runs
    [entry] = (ws / ".roster" / "qa-cache").glob("*.json")
    assert json.loads(entry.read_text())["result"]["broken"] is None
    assert not list((ws / ".roster" / "qa-cache").glob("*.tmp"))


def test_when_the_projects_floor_python_is_not_installed_the_check_says_it_was_not_tested(tmp_path):
    if shutil.which("python3.2"):
        pytest.skip("a Python 3.2 is installed here")
    files = {**PACKAGE, "pyproject.toml": PACKAGE["pyproject.toml"].replace(f">={HERE}", ">=3.2")}
    repo = make_repo(tmp_path / "ws", files)
    result = qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo)
    assert check(result)["passed"]
    assert (f"tests ran on Python {HERE}; the floor 3.2 (requires-python >=3.2) is not installed here, so it was not tested"
            in check(result)["detail"])


def test_when_the_floor_is_this_python_the_check_says_the_floor_was_tested(tmp_path):
    repo = make_repo(tmp_path / "ws", PACKAGE)
    result = qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo)
    assert check(result)["passed"]
    assert f"tests ran on Python {HERE}, the project's floor (requires-python >={HERE})" in check(result)["detail"]


def test_qa_writes_no_bytecode_or_pytest_cache_into_the_worktrees_it_tests(tmp_path):
    repo = make_repo(tmp_path / "ws", PACKAGE)
    qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo)
    path, _ = worktree(repo, 1)
    assert git(path, "status", "--porcelain", "--untracked-files=all") == ""  # the builder's `add -A` adds nothing
    assert os.listdir(tmp_path / "ws" / ".roster" / "qa-cache")


def helper_wheel(folder: Path) -> Path:
    """A wheel of a one-module distribution ``helperdep`` (``four()`` returns 4), built by hand: a
    dependency the project declares and this environment lacks, installable without a network."""
    import zipfile

    wheel = folder / "helperdep-1.0-py3-none-any.whl"
    files = {"helperdep.py": "def four():\n    return 4\n",
             "helperdep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: helperdep\nVersion: 1.0\n",
             "helperdep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n"}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("helperdep-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in files)
                         + "helperdep-1.0.dist-info/RECORD,,\n")
    return wheel


def package_needing(requirement: str) -> dict[str, str]:
    """:data:`PACKAGE` whose tests import ``helperdep``, declared as its ``test`` extra."""
    return {**PACKAGE,
            "pyproject.toml": PACKAGE["pyproject.toml"] + f'\n[project.optional-dependencies]\ntest = ["{requirement}"]\n',
            "tests/test_core.py": "import helperdep\nfrom pkg.core import double\n\n\ndef test_double():\n"
                                  "    assert double(2) == helperdep.four()\n"}


def test_the_projects_declared_test_dependencies_are_installed_once_and_the_tests_really_run(tmp_path):
    wheel = helper_wheel(tmp_path)
    repo = make_repo(tmp_path / "ws", package_needing(f"helperdep @ {wheel.as_uri()}"))
    honest = qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo)
    assert honest["transition"] == "verify", honest
    assert "1 test(s) on the branch" in check(honest)["detail"]
    assert "declared dependenc(ies) installed in" in check(honest)["detail"]
    sabotaged = qa(built(repo, 2, {"src/pkg/core.py": FIXED.replace("2 * x", "2 * x + 1")}), repo)
    assert not check(sabotaged)["passed"]
    assert check(sabotaged)["detail"].startswith("newly failing: tests/test_core.py::test_double")
    assert "(reused)" in check(sabotaged)["detail"]  # built once per workspace
    envs = [p for p in (tmp_path / "ws" / ".roster" / "qa-env").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(envs) == 1 and (envs[0] / "helperdep.py").is_file()


def test_dependencies_that_cannot_be_installed_are_named_and_nothing_tested_fails_the_check(tmp_path):
    missing = (tmp_path / "nowhere" / "helperdep-1.0-py3-none-any.whl").as_uri()
    repo = make_repo(tmp_path / "ws", package_needing(f"helperdep @ {missing}"))
    result = qa(built(repo, 1, {"src/pkg/core.py": FIXED}), repo)
    assert result["transition"] == "rework"
    detail = check(result)["detail"]
    assert detail.startswith("nothing was tested on roster/task-1: none of its 1 test module(s) could be collected "
                             "(tests/test_core.py)")
    assert "could not be installed with" in detail and "the tests ran without them" in detail
