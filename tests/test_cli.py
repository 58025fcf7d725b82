"""The real ``roster`` CLI, in-process through the ``cli`` fixture (cwd = a fresh workspace folder)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC

from roster.cli.context import operator_handle
from roster.specfile import load_spec

AGENTS = ("builder", "merger", "planner", "qa")


# -- helpers ---------------------------------------------------------------------------------------


def ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def js(result):
    return json.loads(ok(result))


def flat(text: str) -> str:
    """Collapse whitespace, so text Rich wrapped inside a table cell reads as one line."""
    return " ".join(text.split())


def audit(cli, *filters: str) -> list[dict]:
    return js(cli("audit", "log", "--json", *filters))


def shown(cli, task_id: int = 1) -> dict:
    return js(cli("task", "show", str(task_id), "--json"))["task"]


@pytest.fixture
def ws(cli):
    """A workspace made by ``roster init`` (company ``example``, workflow ``fix-lint``)."""
    ok(cli("init"))
    return cli


@pytest.fixture
def task(ws):
    """``ws`` with task 1 in fix-lint, state ``found``, created by the operator."""
    created = js(ws("task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501", "--json"))
    assert (created["id"], created["state"], created["version"]) == (1, "found", 1)
    return ws


# -- init, validate, apply -------------------------------------------------------------------------


def test_init_creates_spec_and_store_and_the_spec_validates(cli):
    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    assert spec_path.is_file()
    assert (cli.workspace / ".roster" / "roster.db").is_file()
    spec = load_spec(spec_path)
    assert spec.company == "example"
    assert set(spec.agents) == set(AGENTS)
    assert set(spec.humans) == {operator_handle()}
    assert set(spec.workflows["fix-lint"].transitions) == {"plan", "build", "verify", "merge", "reject"}


def test_second_init_without_force_exits_2_and_keeps_the_file(cli):
    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    edited = spec_path.read_text(encoding="utf-8") + "# my edit\n"
    spec_path.write_text(edited, encoding="utf-8")
    result = cli("init")
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert spec_path.read_text(encoding="utf-8") == edited


def test_validate_accepts_the_generated_spec(ws):
    assert "valid" in ok(ws("validate"))
    report = js(ws("validate", "--json"))
    assert report["valid"] is True
    assert report["company"] == "example"
    assert report["agents"] == sorted(AGENTS)


def test_validate_reports_file_line_and_key_of_a_broken_spec(cli):
    (cli.workspace / "roster.yaml").write_text(textwrap.dedent("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: start
        """), encoding="utf-8")
    result = cli("validate")
    assert result.exit_code == 3
    assert "roster.yaml:5: workflows.fix-lint.initial: unknown state 'start'" in result.stderr


def test_second_apply_changes_nothing_and_audits_nothing(ws):
    before = audit(ws)
    assert "unchanged" in ok(ws("apply"))
    report = js(ws("apply", "--json"))
    assert report["changed"] is False
    assert report["changes"] == []
    assert audit(ws) == before


def test_apply_refuses_removing_the_state_of_a_live_task_and_keeps_the_old_spec(task):
    spec_path = task.workspace / "roster.yaml"
    spec_path.write_text(spec_path.read_text(encoding="utf-8").replace("found", "triage"), encoding="utf-8")
    ok(task("validate"))  # the edited spec is valid on its own

    result = task("apply")
    assert result.exit_code == 7
    assert "task 1 is in state 'found'" in flat(result.stderr)

    [listed] = js(task("task", "list", "--json"))
    assert (listed["id"], listed["state"]) == (1, "found")
    moved = js(task("--as", "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}", "--json"))
    assert (moved["state"], moved["version"]) == ("planned", 2)


# -- task create -----------------------------------------------------------------------------------


def test_task_create_types_set_values_by_the_field_schema(cli):
    (cli.workspace / "roster.yaml").write_text(FIX_LINT, encoding="utf-8")
    ok(cli("apply"))
    created = js(cli("--as", "alice", "task", "create", "fix-lint", "--title", "t",
                     "--set", "rule=123", "--set", "count=3", "--json"))
    assert created["fields"] == {"rule": "123", "count": 3}
    assert shown(cli, created["id"])["fields"] == {"rule": "123", "count": 3}


def test_task_create_with_the_same_key_returns_the_same_task(ws):
    args = ("task", "create", "fix-lint", "--title", "E401", "--set", "rule=E401", "--key", "ruff:E401", "--json")
    first = js(ws(*args))
    second = js(ws(*args))
    assert first["created"] is True
    assert second["created"] is False
    assert second["id"] == first["id"]
    assert [t["id"] for t in js(ws("task", "list", "--json"))] == [first["id"]]


# -- task move refusals ----------------------------------------------------------------------------

REFUSALS = {
    "wrong-state": ((), ("--as", "builder", "task", "move", "1", "build", "--set", "branch=fix/e501"),
                    5, "clause 'from'"),
    "write-outside-writes": ((), ("--as", "planner", "task", "move", "1", "plan", "--set", "branch=fix/e501"),
                             5, "clause 'writes'"),
    "invalid-field": ((), ("--as", "planner", "task", "move", "1", "plan", "--set", "spec=too short"),
                      5, "clause 'fields'"),
    "stale-version": ((("--as", "qa", "task", "check", "1", "lint_clean", "--pass"),),
                      ("--as", "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}",
                       "--expect-version", "1"),
                      6, "is at version 2, not 1"),
    "unknown-task": ((), ("--as", "planner", "task", "move", "99", "plan", "--set", f"spec={GOOD_SPEC}"),
                     4, "no task 99"),
}


@pytest.mark.parametrize(("prep", "move", "exit_code", "says"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_move_leaves_the_task_unchanged_and_is_audited(task, prep, move, exit_code, says):
    for command in prep:
        ok(task(*command))
    before = shown(task)
    rejected = len(audit(task, "--action", "task.transition.rejected"))

    result = task(*move)

    assert result.exit_code == exit_code
    assert says in flat(result.stderr)
    after = shown(task)
    assert (after["state"], after["version"], after["fields"]) == (before["state"], before["version"],
                                                                   before["fields"])
    assert len(audit(task, "--action", "task.transition.rejected")) == rejected + 1


# -- task show -------------------------------------------------------------------------------------


def test_task_show_table_says_which_transitions_are_possible_or_blocked_and_why(task):
    out = flat(ok(task("task", "show", "1")))
    assert "plan planned planner possible" in out
    assert "reject rejected human, qa possible" in out
    assert "build built builder blocked: from: task is in state 'found'" in out
    assert "merge merged merger blocked: from: task is in state 'found'" in out
    assert "approval: needs an approval by 'human'" in out


def test_task_show_json_lists_transitions_with_blocking_clauses(task):
    moves = {t["name"]: t for t in js(task("--as", "builder", "task", "show", "1", "--json"))["transitions"]}
    assert set(moves) == {"plan", "build", "verify", "merge", "reject"}
    clauses = {name: [b["clause"] for b in t["blocked"]] for name, t in moves.items()}
    assert clauses["plan"] == ["by"]  # judged for builder, who may not plan
    assert clauses["build"] == ["from", "requires.fields", "produces"]
    assert moves["plan"]["possible"] is False
    assert moves["build"]["possible"] is False
    as_planner = {t["name"]: t for t in js(task("--as", "planner", "task", "show", "1", "--json"))["transitions"]}
    assert as_planner["plan"]["possible"] is True
    assert as_planner["plan"]["blocked"] == []


# -- audit -----------------------------------------------------------------------------------------


def test_audit_log_filters_narrow_the_result(task):
    ok(task("task", "create", "fix-lint", "--title", "second", "--set", "rule=E401"))
    ok(task("--as", "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}"))
    everything = audit(task)
    assert {e["subject"] for e in everything} >= {"company:example", "task:1", "task:2"}

    by_planner = audit(task, "--principal", "planner")
    assert by_planner == [e for e in everything if e["principal"] == "planner"]
    assert [e["action"] for e in by_planner] == ["task.transition"]

    on_task_1 = audit(task, "--task", "1")
    assert on_task_1 == [e for e in everything if e["subject"] == "task:1"]
    assert [e["action"] for e in on_task_1] == ["task.create", "task.transition"]

    task_actions = audit(task, "--action", "task.*")
    assert task_actions == [e for e in everything if e["action"].startswith("task.")]
    assert len(task_actions) == 3 < len(everything)


def test_audit_verify_passes_on_a_fresh_workspace(ws):
    assert "verifies" in ok(ws("audit", "verify"))
    report = js(ws("audit", "verify", "--json"))
    assert report["valid"] is True
    assert report["events"] == len(audit(ws)) >= 1


# -- principals ------------------------------------------------------------------------------------


def test_as_planner_acts_as_the_agent(task):
    ok(task("--as", "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}"))
    [event] = audit(task, "--action", "task.transition")
    assert event["principal"] == "planner"
    assert [e["principal"] for e in audit(task, "--action", "task.create")] == [operator_handle()]


def test_as_unknown_principal_exits_2_naming_the_known_principals(ws):
    result = ws("--as", "nobody", "task", "create", "fix-lint", "--title", "t", "--set", "rule=E501")
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "'nobody' is not a principal" in message
    assert f"known: {', '.join(sorted((*AGENTS, operator_handle())))}" in message
    assert js(ws("task", "list", "--json")) == []


# -- the main job ----------------------------------------------------------------------------------


def test_demo_runs_the_main_job_end_to_end(tmp_path: Path):
    where = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "roster", "demo", str(where)], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verifies" in result.stdout
    assert (where / ".roster" / "roster.db").is_file()
