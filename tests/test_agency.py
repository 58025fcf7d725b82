"""The agency lane on a generated git repository: real ruff, real git worktrees and merges, real pytest,
the dispatcher driving scout -> planner (offline scripted model) -> builder -> qa -> approval -> merger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import js, ok

import roster.agency
from roster.agency.lint import findings
from roster.errors import ContractViolation
from roster.runtime.dispatcher import Dispatcher
from roster.specfile import parse_spec
from roster.store import Store

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
FILES = {
    "a.py": "import os\nimport sys\n\n\ndef f():\n    return sys.argv\n",  # F401: ruff fixes it
    "b.py": "def g(l):\n    return l\n",  # E741: ruff cannot fix it
    "c.py": "x = 1   \n",  # W291: ruff fixes it
    "tests/test_a.py": "from a import f\n\n\ndef test_f():\n    assert f()\n",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout


def committed_repo(repo: Path, files: dict[str, str] | None = None) -> Path:
    """A git repository at ``repo`` holding ``files`` (default :data:`FILES`), committed on ``main``."""
    for name, text in (FILES if files is None else files).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def open_lane(tmp_path: Path, files: dict[str, str] | None = None, spec: str | None = None):
    """The lane's workspace at ``tmp_path/ws`` (``spec``, default the lane's own, applied; ``repo`` holding
    ``files``, default :data:`FILES`): ``(company, dispatcher, repo)``."""
    ws = tmp_path / "ws"
    repo = committed_repo(ws / "repo", files)
    if spec is None:
        spec = (Path(roster.agency.__file__).parent / "roster.yaml").read_text()
        spec = spec.replace("__PYTHON__", sys.executable).replace("__OPERATOR__", "op")
    (ws / "roster.yaml").write_text(spec)
    (ws / ".roster").mkdir()
    store = Store.open(f"sqlite:///{ws / '.roster' / 'roster.db'}", artifact_root=ws / ".roster" / "artifacts")
    store.apply(parse_spec(spec), applied_by="op")
    company = store.company("agency")
    return company, Dispatcher(company, workdir=ws), repo


@pytest.fixture
def lane(tmp_path):
    return open_lane(tmp_path)


def drive(company, dispatcher, cycles: int = 20) -> None:
    for _ in range(cycles):
        ran = dispatcher.cycle()
        for request in company.inbox(actor="op"):
            company.approve_request(request.id, actor="op")
        if not ran and not company.inbox(actor="op"):
            return


def test_the_lane_fixes_what_ruff_can_merges_after_approval_and_escalates_the_rest(lane):
    company, dispatcher, repo = lane
    before = len(findings(repo))
    drive(company, dispatcher)

    tasks = {t.title: t for t in company.list_tasks()}
    assert set(tasks) == {"F401 in a.py", "E741 in b.py", "W291 in c.py"}
    assert tasks["F401 in a.py"].state == "merged" and tasks["W291 in c.py"].state == "merged"
    # the scout's report rides along as an artifact; rescans do not file twice
    [report] = company.list_artifacts(tasks["F401 in a.py"].id, all_versions=True)[:1]
    assert report.kind == "ruff-json" and json.loads(company.artifact(report.task_id, report.name)[1])
    # ground truth on main: the merged fixes are gone, the KPI moved
    after = findings(repo)
    assert {(r["code"], r["filename"]) for r in after} == {("E741", "b.py")}
    assert len(after) < before
    assert tasks["W291 in c.py"].fields["findings_after"] < before
    assert "Merge roster/task-" in git(repo, "log", "--oneline")
    # QA recorded every check the verify contract needs; the merge needed a human
    checks = {e.data["name"] for e in company.history(tasks["F401 in a.py"].id) if e.action == "check.record"}
    assert checks == {"findings_gone", "no_new_findings", "behaviour_unchanged", "tests_pass"}
    approvals = company.list_requests(status="approved")
    assert {r.task_id for r in approvals} == {tasks["F401 in a.py"].id, tasks["W291 in c.py"].id}
    assert all(r.decided_by == "op" for r in approvals)
    # the approver was shown the patch, QA's checks and the KPI effect
    shown = next(r for r in approvals if r.task_id == tasks["F401 in a.py"].id).evidence
    [patch] = [a for a in shown["artifacts"] if a["kind"] == "patch"]
    assert "-import os" in patch["preview"] and patch["truncated"] is False
    assert {c["name"]: c["passed"] for c in shown["checks"]} == {
        "findings_gone": True, "no_new_findings": True, "behaviour_unchanged": True, "tests_pass": True}
    assert shown["kpis"] == ["lint_findings"] and shown["kpi_latest"]["lint_findings"]["value"] == before
    assert "removes the 1 F401 finding(s) in a.py" in shown["rationale"] and "expected" in shown["rationale"]
    # what ruff cannot fix reached the human inbox through the escalation ladder
    [escalation] = company.list_escalations()
    assert (escalation.task_id, escalation.to) == (tasks["E741 in b.py"].id, "human")
    assert "ruff cannot fix E741" in escalation.reason
    assert tasks["E741 in b.py"].state == "planned"
    assert company.verify_audit()[1] is None
    # the KPI was measured by its program, not reported: once on schedule, then after each merge
    readings = company.kpi_readings("lint_findings", actor=None)
    assert readings[0].value == before and readings[0].source.startswith("schedule")
    merges = [r for r in readings if r.source.startswith("after merge of task ")]
    assert len(merges) == 2 and merges[-1].value == len(after) < before
    assert all(r.recorded_by == "system" for r in readings)
    # each merge put a new commit on main, and the scout's condition watcher woke it to rescan
    scans = [r for r in company.list_runs(agent="scout") if "when:" in r.trigger]
    assert len(scans) >= 1

    # a second scan files nothing new
    scout_runs = len(company.list_runs(agent="scout"))
    dispatcher.triggers.company.store.clock = _later(dispatcher.triggers.company.store.clock, 3601)
    drive(company, dispatcher, cycles=3)
    assert len(company.list_runs(agent="scout")) > scout_runs
    assert len(company.list_tasks()) == 3


def test_the_contract_refuses_verify_without_qas_checks(lane):
    company, dispatcher, repo = lane
    built = []
    for _ in range(10):  # until the builder has handed a branch to QA
        dispatcher.cycle()
        built = [t for t in company.list_tasks() if t.state == "built"]
        if built:
            break
    assert built, [t.state for t in company.list_tasks()]
    task = built[0]
    with pytest.raises(ContractViolation) as refused:
        company.transition(task.id, "verify", actor="qa", expected_version=task.version)
    assert refused.value.clause == "requires.checks"
    assert company.get_task(task.id).state == "built"


def _later(clock, seconds: float):  # noqa: ANN001, ANN202
    from datetime import timedelta

    return lambda: clock() + timedelta(seconds=seconds)


def make_repo(root: Path) -> Path:
    repo = committed_repo(root / "src-repo")
    (repo / "a.py").write_text("import os\n")  # uncommitted: the demo works on HEAD and says so
    return repo


def test_roster_demo_lane_runs_the_lane_on_a_copy_and_a_rerun_continues(cli, tmp_path):
    repo = make_repo(tmp_path)
    ws = tmp_path / "lane-ws"
    first = cli("demo", str(repo), "--yes", "--workspace", str(ws))
    assert first.exit_code == 0, first.output
    compact = "".join(first.output.split())  # the console wraps long lines anywhere
    assert "uncommittedchanges:theyarenotpartofthecopy" in compact
    assert "KPIlint_findings:3->1findings" in compact and "intact" in compact
    assert "approvedmergerequest" in compact and "escalation:task" in compact
    # live progress after busy cycles: tasks per state, runs so far, approvals waiting
    assert "--tasks:found3|runs1|approvalswaiting0" in compact and "merged2|runs" in compact
    # the report: transitions, approvals, runs and cost per agent, cost per merged fix
    assert "transitions:build2,merge2,plan3,request_merge2,verify2" in compact
    assert "approval1:task" in compact and "approvedby" in compact
    # three specs, two goal runs (woken by the KPI's readings: idle, then progress), one reflection
    assert "runsofplanner:6(6succeeded),tokens" in compact and "costpermergedfix:0.0000USD" in compact
    # the lane's goal, set once the scout filed: met by the KPI's reading after the last merge, never the
    # agent's word
    assert "goal1forplanner:everysafefixmerged:lintfindingsonmainatmost1(checklint_findings<=1" in compact
    assert "goal1ofplanner(everysafefixmerged" in compact and "):met,thecheckpassed" in compact
    assert "spent2of10goalrun(s),$0.0000of$1" in compact
    # one reflection of the planner: its first plan, as a diff, under the plan contract (a KPI-linked goal)
    assert "plannerreflectedonitsmission:succeeded" in compact
    assert "planofplanner:version1byplanner(reflectionrun" in compact and "---noplan+++planv1(planner)" in compact
    assert "+##Goals+-[offlinescriptedmodel]bringlint_findingstoitstarget(KPIlint_findings<=0)" in compact
    assert "alwayson:0of5agent(s)workedorwatched" in compact  # a lane minutes old: nobody 95% of a day
    # each lane agent's fitness: a lane minutes old has not settled (1d), so it says so and counts
    for agent in ("planner", "builder", "qa", "merger"):
        assert f"fitnessof{agent}:" in compact
    assert "outcome(s)notcorrectedsofar(" in compact and "stillinsidethe1dsettlewindow,sonotyetevidence)" in compact
    assert (repo / "a.py").read_text() == "import os\n"  # the user's tree is untouched
    assert "Merge roster/task-" not in git(repo, "log", "--oneline")
    again = cli("demo", "--yes", "--workspace", str(ws))
    assert again.exit_code == 0, again.output
    assert "continues in" in again.output and " on task " not in again.output  # no run: nothing is redone


def test_roster_demo_lane_refuses_a_path_that_is_not_a_git_repository(cli, tmp_path):
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "plain", tmp_path / "missing"):
        result = cli("demo", str(path), "--workspace", str(tmp_path / f"ws-{path.name}"))
        assert result.exit_code == 2 and ("not a git repository" in result.output or "does not exist" in result.output)


def test_without_approval_the_lane_stops_at_the_inbox_with_the_exact_command(cli, tmp_path):
    repo = make_repo(tmp_path)
    ws = tmp_path / "lane-ws"
    result = cli("demo", str(repo), "--workspace", str(ws))
    assert result.exit_code == 0, result.output
    compact = "".join(result.output.split())  # the console wraps long paths anywhere
    assert "waitforyourapproval" in compact and f"roster--spec{ws / 'roster.yaml'}approve1" in compact
    assert "KPIlint_findings:3->3findings" in compact
    # what the approver is shown: QA's checks, the KPI's latest reading and the patch as a patch
    shown = cli("--spec", str(ws / "roster.yaml"), "approvals", "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "check findings_gone: passed" in shown.output and "check tests_pass: passed" in shown.output
    assert "fix.patch (patch, version 1" in shown.output and "\n--- a/" in shown.output
    assert '"kpi_latest"' in shown.output and "lint_findings on main 3 -> 2 expected" in "".join(
        shown.output.split("\n"))
    # A human rejects that task instead: the next demo run removes its worktree and branch.
    task_id = js(cli("--spec", str(ws / "roster.yaml"), "approvals", "show", "1", "--json"))["task_id"]
    assert (ws / ".roster" / "worktrees" / f"task-{task_id}").is_dir()
    ok(cli("--spec", str(ws / "roster.yaml"), "task", "move", str(task_id), "reject", "--rationale", "not now"))
    assert cli("demo", "--workspace", str(ws)).exit_code == 0
    assert not (ws / ".roster" / "worktrees" / f"task-{task_id}").exists()
    assert f"roster/task-{task_id}" not in git(ws / "repo", "branch", "--list")


def test_roster_model_replaces_the_scripted_planner_in_the_demo_spec():
    from roster.agency.demo import spec_text

    offline = parse_spec(spec_text("op"))
    assert offline.agents["planner"].runner.model_dump()["model"] == "offline"
    real = parse_spec(spec_text("op", "openai:gpt-4o-mini"))
    runner = real.agents["planner"].runner.model_dump()
    assert runner["model"] == "openai:gpt-4o-mini" and runner.get("offline_script") is None
    # ROSTER_BUILDER_AGENT: what ruff cannot fix goes to that agent CLI
    assert "--agent" not in offline.agents["builder"].runner.model_dump()["command"]
    handed = parse_spec(spec_text("op", None, "claude -p")).agents["builder"].runner.model_dump()["command"]
    assert handed.endswith("roster.agency.workers builder --agent 'claude -p'")


@pytest.mark.parametrize(("name", "text"), [("README.md", "# nothing to lint\n"),  # no Python files
                                            ("clean.py", "def f(x):\n    return x\n")])  # Python, no findings
def test_a_repository_with_nothing_to_fix_gives_an_empty_lane_and_a_clean_report(cli, tmp_path, name, text):
    repo = tmp_path / "nothing-to-fix"
    repo.mkdir()
    (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    result = cli("demo", str(repo), "--yes", "--workspace", str(tmp_path / "ws"))
    assert result.exit_code == 0, result.output
    compact = "".join(result.output.split())
    assert "KPIlint_findings:0->0findings" in compact and "intact" in compact
    assert "tasksbystate:none" in compact and "transitions:none" in compact  # no task was filed


def test_qa_does_not_blame_the_patch_for_tests_that_failed_before_it(lane):
    company, dispatcher, repo = lane
    (repo / "tests" / "test_broken.py").write_text("def test_already_broken():\n    assert False\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a test that fails on main")
    drive(company, dispatcher)
    merged = [t for t in company.list_tasks() if t.state == "merged"]
    assert merged, [(t.title, t.state) for t in company.list_tasks()]
    [check] = [e for e in company.history(merged[0].id) if e.action == "check.record"
               and e.data["name"] == "tests_pass"][-1:]
    assert check.data["passed"] and "1 failed there already" in check.data["detail"]


def test_a_merge_conflict_sends_the_task_back_and_never_leaves_a_half_merge(lane):
    from roster.agency.merger import merger

    company, dispatcher, repo = lane
    git(repo, "checkout", "-q", "-b", "roster/task-99")
    (repo / "a.py").write_text("import sys\n\n\ndef f():\n    return sys.argv[1:]\n")
    git(repo, "commit", "-q", "-am", "branch side")
    git(repo, "checkout", "-q", "main")
    (repo / "a.py").write_text("import sys\n\n\ndef f():\n    return list(sys.argv)\n")
    git(repo, "commit", "-q", "-am", "main side")
    head = git(repo, "rev-parse", "HEAD")
    result = merger({"task": {"id": 99, "state": "approved", "fields": {"branch": "roster/task-99"}}}, repo)
    assert result["transition"] == "conflict" and "conflicts" in result["rationale"]
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""  # no half-merge left behind


def test_ctrl_c_in_the_middle_of_the_demo_then_a_rerun_finishes_without_redoing_anything(tmp_path):
    import signal
    import time

    repo = make_repo(tmp_path)
    ws = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    argv = [sys.executable, "-m", "roster", "demo", str(repo), "--yes", "--workspace", str(ws)]
    out = tmp_path / "first.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while " on task " not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, out.read_text()
    first = "".join(out.read_text().split())
    assert "Stopped.Continuewith:rosterdemo--workspace" in first
    again = subprocess.run(argv[:4] + ["--yes", "--workspace", str(ws)], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    compact = "".join(again.stdout.split())
    assert "continuesin" in compact and "KPIlint_findings:3->1findings" in compact and "intact" in compact
    store = Store.open(f"sqlite:///{ws / '.roster' / 'roster.db'}")
    titles = [t.title for t in store.company("agency").list_tasks()]
    assert sorted(titles) == sorted(set(titles)) and len(titles) == 3  # nothing filed twice


def test_ruff_missing_is_a_clear_message_naming_the_install(tmp_path, monkeypatch):
    from roster.agency.lint import ruff_command
    from roster.errors import UsageError

    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="pip install ruff"):
        ruff_command()


def test_the_lanes_skills_are_agent_skills_and_land_in_the_demo_workspace(cli, tmp_path):
    from roster.api.mcp_server import read_skills

    shipped = read_skills(Path(roster.agency.__file__).parent / "skills")
    assert {s["name"] for s in shipped} == {"scout-lint", "plan-lint-fix", "build-on-a-branch", "adversarial-qa",
                                            "merge-after-approval"}
    assert all(s["description"] for s in shipped)
    repo = committed_repo(tmp_path / "r")
    assert cli("demo", str(repo), "--workspace", str(tmp_path / "ws")).exit_code == 0
    assert {s["name"] for s in read_skills(tmp_path / "ws" / "skills")} == {s["name"] for s in shipped}


# An agent CLI stand-in: a real program that reads its prompt (stdin and ROSTER_PROMPT_FILE), logs where it
# ran and what it was asked, and renames the ambiguous variable ruff cannot fix.
FAKE_AGENT = """
import os, pathlib, re, sys
prompt = sys.stdin.read()
log = pathlib.Path(os.environ["AGENT_LOG"])
log.write_text(log.read_text() + f"{os.getcwd()}|{os.environ['ROSTER_PROMPT_FILE']}|{prompt!r}\\n"
               if log.exists() else f"{os.getcwd()}|{os.environ['ROSTER_PROMPT_FILE']}|{prompt!r}\\n")
if os.environ.get("AGENT_EXIT"):
    sys.stderr.write("the agent's model endpoint said 429")
    sys.exit(int(os.environ["AGENT_EXIT"]))
source = pathlib.Path("b.py")
source.write_text(re.sub(r"\\bl\\b", "items", source.read_text()))
"""


def test_what_ruff_cannot_fix_goes_to_the_configured_agent_cli_and_is_merged_after_qa(lane, tmp_path, monkeypatch):
    from roster.agency.demo import BUILDER_COMMAND

    company, _, repo = lane
    ws = repo.parent
    agent = tmp_path / "agent.py"
    agent.write_text(FAKE_AGENT)
    log = tmp_path / "agent.log"
    monkeypatch.setenv("AGENT_LOG", str(log))
    spec = (ws / "roster.yaml").read_text()
    command = BUILDER_COMMAND.replace("__PYTHON__", sys.executable)
    assert command in spec
    spec = spec.replace(command, f"{command} --agent '{sys.executable} {agent}'")
    company.store.apply(parse_spec(spec), applied_by="op")
    dispatcher = Dispatcher(company, workdir=ws)
    drive(company, dispatcher)

    tasks = {t.title: t for t in company.list_tasks()}
    e741 = tasks["E741 in b.py"]
    assert e741.state == "merged" and company.list_escalations() == []  # the agent took it, QA verified it
    assert findings(repo) == []  # ground truth on main: every finding is gone
    assert "def g(items):" in (repo / "b.py").read_text()
    patch = company.artifact(e741.id, "fix.patch")[1].decode()
    assert "+def g(items):" in patch
    # it ran in the task's worktree, with the prompt on stdin and in the file ROSTER_PROMPT_FILE names
    [call] = log.read_text().splitlines()
    cwd, prompt_file, prompt = call.split("|", 2)
    assert cwd == str((ws / ".roster" / "worktrees" / f"task-{e741.id}").resolve())
    assert "E741" in prompt and "b.py" in prompt and "line 1" in prompt
    assert Path(prompt_file).read_text() in eval(prompt)  # noqa: S307 - the log holds repr(prompt)
    [build] = [e for e in company.history(e741.id) if e.action == "task.transition" and e.data["transition"] == "build"]
    assert build.data["rationale"].endswith(f"(ruff --fix, then {sys.executable} {agent})")


def test_an_agent_cli_that_fails_is_a_transient_failure_with_its_stderr(tmp_path, monkeypatch):
    from roster.agency.workers import hand_to_agent

    agent = tmp_path / "agent.py"
    agent.write_text(FAKE_AGENT)
    monkeypatch.setenv("AGENT_LOG", str(tmp_path / "agent.log"))
    monkeypatch.setenv("AGENT_EXIT", "3")
    tree = tmp_path / "ws" / ".roster" / "worktrees" / "task-1"
    tree.mkdir(parents=True)
    brief = {"task": {"id": 1, "title": "E741 in b.py", "fields": {"rule": "E741", "file": "b.py", "spec": "x" * 30}}}
    left = [{"location": {"row": 1, "column": 7}, "message": "Ambiguous variable name: `l`"}]
    failure = hand_to_agent(f"{sys.executable} {agent}", brief, tree, left)
    assert failure == {"failure": {"category": "transient",
                                   "reason": f"'{sys.executable} {agent}' exited 3: the agent's model endpoint said 429"}}
    assert (tmp_path / "ws" / ".roster" / "prompts" / "task-1.md").read_text().startswith("You are the builder")
    missing = hand_to_agent("/nonexistent/agent-cli -p", brief, tree, left)
    assert missing["failure"]["category"] == "deterministic" and "cannot start" in missing["failure"]["reason"]


def test_roster_demo_serve_keeps_the_dashboard_up_with_a_one_time_link(tmp_path):
    import re
    import signal
    import socket
    import time

    import httpx

    repo = make_repo(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    argv = [sys.executable, "-m", "roster", "demo", str(repo), "--yes", "--workspace", str(tmp_path / "ws"),
            "--serve", "--port", str(port)]
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 240
            while "Ctrl-C stops it" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            text = "".join(out.read_text().split())
            assert f"Thedashboardisathttp://127.0.0.1:{port}/" in text, out.read_text()
            link = re.search(r"(http://127\.0\.0\.1:\d+/sign-in\?link=rdl\.agency\.[0-9a-f]+\.[A-Za-z0-9_-]+)",
                             out.read_text())  # printed on a line of its own
            assert link, out.read_text()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as web:
                page = web.get(link.group(1).removeprefix(f"http://127.0.0.1:{port}"))
                assert page.status_code == 200 and "Sign in with this link" in page.text
                nonce = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
                code = re.search(r'name="link" value="([^"]+)"', page.text).group(1)
                signed = web.post("/sign-in", data={"csrf": nonce, "link": code})
                assert signed.status_code == 303, re.findall(r"role=\"alert\">(.*?)<", signed.text)
                board = web.get("/boards")
                assert board.status_code == 200 and "/boards/" in board.text  # the lane's workflows
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, out.read_text()
