"""The real ``roster`` CLI, in-process through the ``cli`` fixture (cwd = a fresh workspace folder)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, js, ok

from roster.cli.context import operator_handle
from roster.specfile import load_spec

AGENTS = ("builder", "merger", "planner", "qa")


# -- helpers ---------------------------------------------------------------------------------------


def flat(text: str) -> str:
    """Collapse whitespace, so text Rich wrapped inside a table cell reads as one line."""
    return " ".join(text.split())


def audit(cli, *filters: str) -> list[dict]:
    return js(cli("audit", "log", "--json", *filters))


def shown(cli, task_id: int = 1) -> dict:
    return js(cli("task", "show", str(task_id), "--json"))["task"]


def token_for(cli, handle: str) -> str:
    """Issue a token for ``handle`` as the local operator (the default identity) and return it."""
    return js(cli("token", "issue", handle, "--json"))["token"]


def as_(cli, handle: str, *args: str):
    """Run ``roster --token <a new token of handle> ARGS...``."""
    return cli("--token", token_for(cli, handle), *args)


def secret_of(token: str) -> str:
    return token.split(".")[-1]


def names_a_handle(text: str, handles) -> list[str]:
    return [h for h in handles if re.search(rf"(?<![\w-]){re.escape(h)}(?![\w-])", text)]


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
    moved = js(as_(task, "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}", "--json"))
    assert (moved["state"], moved["version"]) == ("planned", 2)


# -- task create -----------------------------------------------------------------------------------


def test_task_create_types_set_values_by_the_field_schema(cli):
    (cli.workspace / "roster.yaml").write_text(FIX_LINT, encoding="utf-8")
    ok(cli("apply"))
    created = js(as_(cli, "alice", "task", "create", "fix-lint", "--title", "t",
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

REFUSALS = {  # (commands run first, the refused move, exit code, what stderr says); a command is (handle, args)
    "wrong-state": ((), ("builder", ("task", "move", "1", "build", "--set", "branch=fix/e501")),
                    5, "clause 'from'"),
    "write-outside-writes": ((), ("planner", ("task", "move", "1", "plan", "--set", "branch=fix/e501")),
                             5, "clause 'writes'"),
    "invalid-field": ((), ("planner", ("task", "move", "1", "plan", "--set", "spec=too short")),
                      5, "clause 'fields'"),
    "stale-version": ((("qa", ("task", "check", "1", "lint_clean", "--pass")),),
                      ("planner", ("task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}",
                                   "--expect-version", "1")),
                      6, "is at version 2, not 1"),
    "unknown-task": ((), ("planner", ("task", "move", "99", "plan", "--set", f"spec={GOOD_SPEC}")),
                     4, "no task 99"),
}


@pytest.mark.parametrize(("prep", "move", "exit_code", "says"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_move_leaves_the_task_unchanged_and_is_audited(task, prep, move, exit_code, says):
    for handle, command in prep:
        ok(as_(task, handle, *command))
    handle, command = move
    token = token_for(task, handle)
    before = shown(task)
    rejected = len(audit(task, "--action", "task.transition.rejected"))

    result = task("--token", token, *command)

    assert result.exit_code == exit_code
    assert says in flat(result.stderr)
    after = shown(task)
    assert (after["state"], after["version"], after["fields"]) == (before["state"], before["version"],
                                                                   before["fields"])
    refusals = audit(task, "--action", "task.transition.rejected")
    assert len(refusals) == rejected + 1
    assert refusals[-1]["principal"] == handle


# -- task show -------------------------------------------------------------------------------------


def test_task_show_table_says_which_transitions_are_possible_or_blocked_and_why(task):
    out = flat(ok(as_(task, "planner", "task", "show", "1")))
    assert "transitions (judged for planner)" in out
    assert "plan planned planner possible" in out
    assert "reject rejected human, qa blocked: by: 'planner' may not perform it; allowed: 'human', 'qa'" in out
    assert "build built builder blocked: from: task is in state 'found'" in out
    assert "merge merged merger blocked: from: task is in state 'found'" in out
    assert "approval: needs an approval by 'human'" in out

    as_operator = flat(ok(task("task", "show", "1")))  # the operator is a human: reject is theirs
    assert f"transitions (judged for {operator_handle()})" in as_operator
    assert "reject rejected human, qa possible" in as_operator
    assert f"plan planned planner blocked: by: '{operator_handle()}' may not perform it" in as_operator


def test_task_show_json_lists_transitions_with_blocking_clauses(task):
    moves = {t["name"]: t for t in js(as_(task, "builder", "task", "show", "1", "--json"))["transitions"]}
    assert set(moves) == {"plan", "build", "verify", "merge", "reject"}
    clauses = {name: [b["clause"] for b in t["blocked"]] for name, t in moves.items()}
    assert clauses["plan"] == ["by"]  # judged for builder, who may not plan
    assert clauses["build"] == ["from", "requires.fields", "produces"]
    assert moves["plan"]["possible"] is False
    assert moves["build"]["possible"] is False
    as_planner = {t["name"]: t for t in js(as_(task, "planner", "task", "show", "1", "--json"))["transitions"]}
    assert as_planner["plan"]["possible"] is True
    assert as_planner["plan"]["blocked"] == []


# -- audit -----------------------------------------------------------------------------------------


def test_audit_log_filters_narrow_the_result(task):
    ok(task("task", "create", "fix-lint", "--title", "second", "--set", "rule=E401"))
    ok(as_(task, "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}"))
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


# -- identity: tokens ------------------------------------------------------------------------------


def test_an_agents_token_acts_as_that_agent(task):
    ok(task("--token", token_for(task, "planner"), "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}"))
    [event] = audit(task, "--action", "task.transition")
    assert event["principal"] == "planner"
    assert [e["principal"] for e in audit(task, "--action", "task.create")] == [operator_handle()]


def test_the_roster_token_environment_variable_acts_like_the_option(task, monkeypatch):
    monkeypatch.setenv("ROSTER_TOKEN", token_for(task, "planner"))
    ok(task("task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}"))
    assert task("task", "create", "fix-lint", "--title", "t", "--set", "rule=E1").exit_code == 11
    monkeypatch.delenv("ROSTER_TOKEN")
    [event] = audit(task, "--action", "task.transition")
    assert event["principal"] == "planner"


def test_the_as_option_no_longer_exists(task):
    result = task("--as", "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}")
    assert result.exit_code == 2
    assert "No such option: --as" in flat(result.stderr)
    assert shown(task)["state"] == "found"


BAD_TOKENS = {
    "malformed": "not-a-token",
    "unknown-id": "rst.example.000000000000.c2VjcmV0c2VjcmV0c2VjcmV0",
    "wrong-secret": None,  # a real token id with another secret
    "other-company": "rst.elsewhere.000000000000.c2VjcmV0c2VjcmV0c2VjcmV0",
}


@pytest.mark.parametrize("bad", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_exits_12_and_names_no_principal(ws, bad):
    if bad is None:
        real = token_for(ws, "planner")
        bad = real[: -len(secret_of(real))] + "x" * 43
    result = ws("--token", bad, "task", "create", "fix-lint", "--title", "t", "--set", "rule=E501")
    assert result.exit_code == 12, result.output
    assert "token" in result.stderr
    assert names_a_handle(result.stderr, (*AGENTS, operator_handle())) == []
    assert js(ws("task", "list", "--json")) == []

    as_json = ws("--token", bad, "task", "list", "--json")
    assert as_json.exit_code == 12
    assert json.loads(as_json.stderr)["error"] == "unauthenticated"


def test_an_agent_token_outside_its_rights_exits_11_and_is_audited(ws):
    result = as_(ws, "planner", "task", "create", "fix-lint", "--title", "t", "--set", "rule=E501")
    assert result.exit_code == 11, result.output
    assert "'planner' may not create" in flat(result.stderr)
    assert js(ws("task", "list", "--json")) == []
    [event] = audit(ws, "--action", "task.create.rejected")
    assert event["principal"] == "planner"
    assert event["data"]["error"]["error"] == "denied"

    as_json = as_(ws, "planner", "task", "create", "fix-lint", "--title", "t", "--set", "rule=E501", "--json")
    assert as_json.exit_code == 11
    assert json.loads(as_json.stderr)["error"] == "denied"


# -- principals ------------------------------------------------------------------------------------


def test_principal_list_json_lists_the_specs_agents_and_the_operator(ws):
    listed = {p["handle"]: p for p in js(ws("principal", "list", "--json"))}
    assert set(listed) == {*AGENTS, operator_handle()}
    assert {h: p["kind"] for h, p in listed.items()} == {**dict.fromkeys(AGENTS, "agent"), operator_handle(): "human"}
    assert {p["status"] for p in listed.values()} == {"active"}
    assert listed["planner"]["id"] == "example/planner"
    assert listed["planner"]["reports_to"] == operator_handle()
    text = flat(ok(ws("principal", "list")))
    assert all(handle in text for handle in listed)


def test_principal_add_then_show(ws):
    ok(ws("principal", "add", "carol", "--kind", "human"))
    shown_ = js(ws("principal", "show", "carol", "--json"))
    assert (shown_["handle"], shown_["kind"], shown_["status"], shown_["source"]) == ("carol", "human", "active",
                                                                                     "cli")
    assert shown_["id"] == "example/carol"
    assert shown_["tokens"] == []
    assert "carol" in {p["handle"] for p in js(ws("principal", "list", "--json"))}
    [event] = audit(ws, "--action", "principal.add")
    assert (event["principal"], event["subject"]) == (operator_handle(), "principal:carol")

    again = ws("principal", "add", "carol", "--kind", "human")
    assert again.exit_code == 2 and "already exists" in again.stderr

    # carol is a human: with her own token she may create tasks, on the record as herself
    ok(as_(ws, "carol", "task", "create", "fix-lint", "--title", "t", "--set", "rule=E501"))
    assert [e["principal"] for e in audit(ws, "--action", "task.create")] == ["carol"]
    assert len(js(ws("principal", "show", "carol", "--json"))["tokens"]) == 1


def test_principal_pause_resume_and_retire(task):
    token = token_for(task, "planner")
    listing = ("--token", token, "task", "list", "--json")
    assert [t["id"] for t in js(task(*listing))] == [1]

    ok(task("principal", "pause", "planner"))
    paused = task(*listing)
    assert paused.exit_code == 12
    assert "paused" in paused.stderr
    assert js(task("principal", "show", "planner", "--json"))["status"] == "paused"

    ok(task("principal", "resume", "planner"))
    assert [t["id"] for t in js(task(*listing))] == [1]

    other = token_for(task, "planner")
    ok(task("principal", "retire", "planner"))
    for used in (token, other):
        retired = task("--token", used, "task", "list", "--json")
        assert retired.exit_code == 12
    assert js(task("principal", "show", "planner", "--json"))["status"] == "retired"

    resumed = task("principal", "resume", "planner")
    assert resumed.exit_code == 2
    assert "retire is permanent" in flat(resumed.stderr)
    assert js(task("principal", "show", "planner", "--json"))["status"] == "retired"
    assert task("--token", token, "task", "list").exit_code == 12

    tokens = js(task("token", "list", "--principal", "planner", "--json"))
    assert len(tokens) == 2
    assert all(t["revoked_at"] is not None for t in tokens)
    assert task("token", "issue", "planner").exit_code == 2

    actions = [e["action"] for e in audit(task, "--action", "principal.*") if not e["action"].endswith(".rejected")]
    assert actions == ["principal.pause", "principal.resume", "principal.retire"]


def test_a_refused_principal_status_change_is_audited_under_its_verb(ws):
    """Refusals are audited as ``<action>.rejected``, like ``task.transition.rejected`` and
    ``token.issue.rejected``: refusing ``principal resume`` is ``principal.resume.rejected``."""
    ok(ws("principal", "retire", "planner"))
    assert ws("principal", "resume", "planner").exit_code == 2
    assert as_(ws, "builder", "principal", "pause", "qa").exit_code == 11
    rejected = [(e["principal"], e["action"]) for e in audit(ws) if e["action"].endswith(".rejected")]
    assert rejected == [(operator_handle(), "principal.resume.rejected"), ("builder", "principal.pause.rejected")]


def test_principal_verbs_on_an_unknown_handle_exit_4(ws):
    for verb in ("show", "pause", "resume", "retire"):
        result = ws("principal", verb, "nobody")
        assert result.exit_code == 4, (verb, result.output)
        assert "no principal 'nobody'" in result.stderr


# -- tokens ----------------------------------------------------------------------------------------


def test_token_issue_prints_the_token_once_and_nothing_else_ever_shows_its_secret(ws):
    out = ok(ws("token", "issue", "planner", "--name", "ci"))
    [token] = re.findall(r"rst\.example\.[0-9a-f]+\.\S+", out)
    assert out.count(token) == 1
    secret = secret_of(token)
    assert len(secret) >= 40
    assert [t["id"] for t in js(ws("--token", token, "token", "list", "--json"))] == [token.split(".")[2]]

    listed = js(ws("token", "list", "--json"))
    [record] = [t for t in listed if t["principal"] == "planner"]
    assert (record["id"], record["name"], record["created_by"]) == (token.split(".")[2], "ci", operator_handle())
    assert record["last_used_at"] is not None  # it was used just above
    for shows in (ws("token", "list", "--json"), ws("token", "list"), ws("principal", "show", "planner", "--json"),
                  ws("principal", "show", "planner"), ws("audit", "log", "--json")):
        assert shows.exit_code == 0
        assert secret not in shows.output
    saved = (ws.workspace / ".roster" / "roster.db").read_bytes()
    assert secret.encode() not in saved


def test_token_revoke_makes_that_token_exit_12(task):
    issued = js(task("token", "issue", "planner", "--json"))
    kept = token_for(task, "planner")
    assert task("--token", issued["token"], "task", "list", "--json").exit_code == 0

    revoked = js(task("token", "revoke", issued["id"], "--json"))
    assert revoked["id"] == issued["id"]
    assert revoked["revoked_at"] is not None

    result = task("--token", issued["token"], "task", "list", "--json")
    assert result.exit_code == 12
    assert "revoked" in result.stderr
    assert [t["id"] for t in js(task("--token", kept, "task", "list", "--json"))] == [1]  # other tokens live on
    assert ok(task("task", "list"))  # and so does the operator's
    [event] = audit(task, "--action", "token.revoke")
    assert event["data"]["token_id"] == issued["id"]
    assert task("token", "revoke", "nosuchtoken").exit_code == 4


# -- rights ----------------------------------------------------------------------------------------


def test_rights_explain_names_the_deciding_policy(task):
    allowed = flat(ok(task("rights", "explain", "planner", "transition:plan", "task:1")))
    assert "ALLOW" in allowed
    assert "agent:planner:transition:fix-lint.plan" in allowed
    denied = flat(ok(task("rights", "explain", "builder", "transition:merge", "task:1")))
    assert "DENY" in denied
    assert "tier:approval-gated" in denied

    yes = js(task("rights", "explain", "planner", "transition:plan", "task:1", "--json"))
    assert yes["allowed"] is True
    assert yes["policies"] == ["agent:planner:transition:fix-lint.plan"]
    assert (yes["principal"], yes["action"], yes["transition"], yes["resource"]) == ("planner", "transition", "plan",
                                                                                    "task:1")
    no = js(task("rights", "explain", "builder", "transition:merge", "task:1", "--json"))
    assert no["allowed"] is False
    assert "tier:approval-gated" in no["policies"]
    assert js(task("rights", "explain", "planner", "create", "workflow:fix-lint", "--json"))["allowed"] is False
    assert js(task("rights", "explain", "builder", "call_tool", "tool:ruff", "--json"))["allowed"] is True
    assert js(task("rights", "explain", "planner", "admin", "company", "--json"))["allowed"] is False
    assert js(task("rights", "explain", operator_handle(), "admin", "company", "--json"))["allowed"] is True


def test_rights_explain_rejects_an_unknown_action_or_resource(task):
    assert task("rights", "explain", "planner", "fly", "task:1").exit_code == 2
    assert task("rights", "explain", "planner", "read", "spaceship").exit_code == 2
    assert task("rights", "explain", "planner", "read", "task:99").exit_code == 4


def test_rights_policies_prints_the_compiled_policies(ws):
    out = ok(ws("rights", "policies"))
    for policy_id in ("agents-never-admin", "tier:approval-gated", "agent:planner:transition:fix-lint.plan"):
        assert policy_id in out


# -- the kill switch -------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "policy"), [(("engineering/tooling",), "kill-switch:engineering/tooling"),
                                                (("--all",), "kill-switch:*")], ids=["portfolio", "all"])
def test_pause_stops_agents_in_scope_and_resume_restores_them(task, target, policy):
    token = token_for(task, "planner")
    move = ("--token", token, "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}")
    ok(task("pause", *target))

    assert js(task("--token", token, "task", "list", "--json")) == []
    result = task(*move)
    assert result.exit_code == 11
    assert policy in flat(result.stderr)
    assert shown(task)["state"] == "found"
    assert [t["id"] for t in js(task("task", "list", "--json"))] == [1]  # humans keep working
    assert [e["action"] for e in audit(task, "--action", "killswitch.*")] == ["killswitch.pause"]
    assert any(e["principal"] == "planner" and e["data"]["error"]["error"] == "denied"
               for e in audit(task) if e["action"].endswith(".rejected"))

    ok(task("resume", *target))
    assert [t["id"] for t in js(task("--token", token, "task", "list", "--json"))] == [1]
    assert js(task(*move, "--json"))["state"] == "planned"
    assert [e["action"] for e in audit(task, "--action", "killswitch.*")] == ["killswitch.pause", "killswitch.resume"]


def test_pause_and_resume_of_an_agent_handle(task):
    token = token_for(task, "planner")
    ok(task("pause", "planner"))
    assert task("--token", token, "task", "list").exit_code == 12
    assert js(as_(task, "builder", "task", "list", "--json")) != []  # other agents are unaffected
    ok(task("resume", "planner"))
    assert task("--token", token, "task", "list").exit_code == 0


def test_pause_needs_exactly_one_known_target(ws):
    assert ws("pause").exit_code == 2
    assert ws("pause", "engineering/tooling", "--all").exit_code == 2
    assert ws("pause", "nowhere/nothing").exit_code == 4


ADMIN = {
    "principal-add": ("principal", "add", "mallory", "--kind", "human"),
    "principal-pause": ("principal", "pause", "builder"),
    "token-issue": ("token", "issue", "planner"),
    "token-issue-other": ("token", "issue", "merger"),
    "pause-portfolio": ("pause", "engineering/tooling"),
    "pause-all": ("pause", "--all"),
    "pause-agent": ("pause", "builder"),
}


@pytest.mark.parametrize("command", ADMIN.values(), ids=ADMIN.keys())
def test_an_agent_may_not_administer_the_company(task, command):
    token = token_for(task, "planner")

    def state():
        return (js(task("principal", "list", "--json")),
                [(t["id"], t["revoked_at"]) for t in js(task("token", "list", "--json"))])

    before = state()

    result = task("--token", token, *command)

    assert result.exit_code == 11, result.output
    assert "agents-never-admin" in flat(result.stderr)
    assert state() == before
    assert [t["id"] for t in js(task("--token", token, "task", "list", "--json"))] == [1]  # nothing was paused
    [*_, event] = [e for e in audit(task) if e["action"].endswith(".rejected")]
    assert event["principal"] == "planner"
    assert event["data"]["error"]["error"] == "denied"


def test_apply_of_a_changed_spec_needs_a_human(ws):
    spec_path = ws.workspace / "roster.yaml"
    spec_path.write_text(spec_path.read_text(encoding="utf-8").replace("Example Co", "Example Inc"), encoding="utf-8")

    refused = as_(ws, "planner", "apply")
    assert refused.exit_code == 11, refused.output
    assert "agents-never-admin" in flat(refused.stderr)
    [event] = audit(ws, "--action", "spec.apply.rejected")
    assert event["principal"] == "planner"
    assert len(audit(ws, "--action", "spec.apply")) == 1

    report = js(ws("apply", "--json"))
    assert (report["changed"], report["revision"]) == (True, 2)
    assert [e["principal"] for e in audit(ws, "--action", "spec.apply")] == [operator_handle()] * 2


# -- the main job ----------------------------------------------------------------------------------


def test_demo_runs_the_main_job_end_to_end(tmp_path: Path):
    where = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "roster", "demo", "--yes", "--workspace", str(where)],
                            capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    compact = "".join(result.stdout.split())
    assert "standardlibrary" in compact and "scripted" in compact and "intact" in compact
    before, after = (int(n) for n in re.search(r"KPIlint_findings:(\d+)->(\d+)findings", compact).groups())
    assert after < before
    assert (where / ".roster" / "roster.db").is_file() and (where / "repo" / ".git").is_dir()


# -- approvals -------------------------------------------------------------------------------------

RATIONALE = "QA verified the branch; lint_clean passed."


@pytest.fixture
def verified(task):
    """``task`` with task 1 walked to ``verified`` by the agents: merge is next, on an approval edge."""
    (task.workspace / "fix.patch").write_text("--- a/app.py\n+++ b/app.py\n", encoding="utf-8")
    ok(as_(task, "planner", "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}"))
    ok(as_(task, "builder", "task", "attach", "1", "patch", "fix.patch"))
    ok(as_(task, "builder", "task", "move", "1", "build", "--set", "branch=fix/e501"))
    ok(as_(task, "qa", "task", "check", "1", "lint_clean", "--pass"))
    ok(as_(task, "qa", "task", "move", "1", "verify"))
    assert shown(task)["state"] == "verified"
    return task


def ask_merge(cli, task_id: int = 1) -> int:
    """The merger asks to merge; the move exits 13 and opens a request. Returns the request's id."""
    result = as_(cli, "merger", "task", "move", str(task_id), "merge", "--rationale", RATIONALE, "--json")
    assert result.exit_code == 13, result.output
    error = json.loads(result.stderr)
    assert error["error"] == "approval-pending" and error["approvers"] == ["human"]
    return error["request_id"]


def test_a_move_on_an_approval_edge_exits_13_and_names_the_request(verified):
    before = shown(verified)
    result = as_(verified, "merger", "task", "move", "1", "merge", "--rationale", RATIONALE)
    assert result.exit_code == 13, result.output
    [request] = js(verified("approvals", "list", "--json"))
    assert f"request {request['id']}" in flat(result.stderr) and "roster inbox" in flat(result.stderr)
    assert (request["status"], request["requested_by"], request["rationale"]) == ("pending", "merger", RATIONALE)
    after = shown(verified)
    assert (after["state"], after["version"]) == (before["state"], before["version"])
    [event] = audit(verified, "--action", "approval.request")
    assert event["principal"] == "merger" and event["data"]["request_id"] == request["id"]
    assert event["data"]["evidence"]["rationale"] == RATIONALE
    assert audit(verified, "--action", "task.transition.rejected") == []
    # asking again finds the same request, as JSON for scripts too
    assert ask_merge(verified) == request["id"]
    assert len(js(verified("approvals", "list", "--json"))) == 1


def test_inbox_lists_the_request_with_its_rationale_for_the_operator(verified):
    request_id = ask_merge(verified)
    [entry] = js(verified("inbox", "--json"))
    assert (entry["id"], entry["workflow"], entry["transition"], entry["task_id"]) == (request_id, "fix-lint",
                                                                                    "merge", 1)
    assert (entry["requested_by"], entry["status"], entry["rationale"]) == ("merger", "pending", RATIONALE)
    assert entry["evidence"]["rationale"] == RATIONALE
    assert entry["evidence"]["task"]["to"] == "merged"
    assert js(as_(verified, "merger", "inbox", "--json")) == []  # not an approver, and it asked
    table = flat(ok(verified("inbox")))
    assert RATIONALE in table and "merger pending" in table


def test_approve_exits_0_and_the_task_is_merged(verified):
    request_id = ask_merge(verified)
    out = flat(ok(verified("approve", str(request_id), "--note", "ok")))
    assert f"request {request_id}" in out and "approved" in out
    task = shown(verified)
    assert task["state"] == "merged"
    moved = audit(verified, "--action", "task.transition")[-1]
    assert (moved["principal"], moved["data"]["transition"]) == ("merger", "merge")
    assert (moved["data"]["approved_by"], moved["data"]["approval_request"]) == (operator_handle(), request_id)
    shown_request = js(verified("approvals", "show", str(request_id), "--json"))
    assert (shown_request["status"], shown_request["decided_by"], shown_request["note"]) == (
        "approved", operator_handle(), "ok")
    assert js(verified("inbox", "--json")) == []
    assert verified("approve", str(request_id)).exit_code == 2  # decided already: a usage error
    assert "verifies" in ok(verified("audit", "verify"))


def test_an_agent_approving_exits_5_naming_approval_by(verified):
    request_id = ask_merge(verified)
    result = as_(verified, "merger", "approve", str(request_id))
    assert result.exit_code == 5, result.output
    assert "approval.by" in flat(result.stderr)
    assert js(verified("approvals", "show", str(request_id), "--json"))["status"] == "pending"
    assert shown(verified)["state"] == "verified"
    [event] = audit(verified, "--action", "approval.approve.rejected")
    assert event["principal"] == "merger" and event["data"]["error"]["clause"] == "approval.by"


def test_reject_with_a_note_leaves_the_task_and_show_has_the_note(verified):
    request_id = ask_merge(verified)
    before = shown(verified)
    out = flat(ok(verified("reject", str(request_id), "--note", "why")))
    assert "rejected" in out
    request = js(verified("approvals", "show", str(request_id), "--json"))
    assert (request["status"], request["note"], request["decided_by"]) == ("rejected", "why", operator_handle())
    after = shown(verified)
    assert (after["state"], after["version"]) == (before["state"], before["version"])
    # the requester reads the decision and its note
    mine = js(as_(verified, "merger", "approvals", "show", str(request_id), "--json"))
    assert (mine["status"], mine["note"]) == ("rejected", "why")
    assert re.search(rf"decided by {operator_handle()} at \S+: why",
                     flat(ok(as_(verified, "merger", "approvals", "show", str(request_id)))))


def test_reject_without_a_note_exits_2(verified):
    request_id = ask_merge(verified)
    assert verified("reject", str(request_id)).exit_code == 2
    blank = verified("reject", str(request_id), "--note", "  ")
    assert blank.exit_code == 2 and "note" in flat(blank.stderr)
    assert js(verified("approvals", "show", str(request_id), "--json"))["status"] == "pending"
    assert shown(verified)["state"] == "verified"


def test_approvals_stats_json_counts_each_edge(verified):
    ok(verified("reject", str(ask_merge(verified)), "--note", "rebase first"))
    ok(as_(verified, "qa", "task", "check", "1", "lint_clean", "--pass"))  # a change since the rejection
    ok(verified("approve", str(ask_merge(verified))))
    assert shown(verified)["state"] == "merged"
    assert js(verified("approvals", "stats", "--json")) == [
        {"edge": "fix-lint.merge", "requested": 2, "approved": 1, "rejected": 1, "expired": 0, "stale": 0,
         "pending": 0, "decided": 2, "approval_rate": 0.5, "verdict": "too-few",
         "summary": "2 decided in 30 days: too few to judge (20 needed)"}]
    table = flat(ok(verified("approvals", "stats")))
    assert "2 1 1 0 0 0 50%" in table  # requested, approved, rejected, expired, stale, pending, approval rate
    assert "fix-lint.merge too-few 2 decided in 30 days: too few to judge (20 needed)" in table
    assert js(as_(verified, "qa", "approvals", "stats", "--json"))[0]["requested"] == 2


def test_approvals_list_json_shows_an_agent_only_its_own_requests(verified):
    spec = verified.workspace / "roster.yaml"
    text = spec.read_text(encoding="utf-8")
    gated = text.replace("to: rejected, by: [human, qa]}", "to: rejected, by: [human, qa], approval: {by: [human]}}")
    gated = gated.replace("display_name: QA\n    tier: bounded-mutator", "display_name: QA\n    tier: high-impact-executor")
    assert gated.count("approval: {by: [human]}") == 2 and "tier: high-impact-executor" in gated.split("qa:")[1]
    spec.write_text(gated, encoding="utf-8")
    ok(verified("apply"))
    ok(verified("task", "create", "fix-lint", "--title", "second", "--set", "rule=E401"))
    merge = ask_merge(verified)
    result = as_(verified, "qa", "task", "move", "2", "reject", "--rationale", "a duplicate of task 1")
    assert result.exit_code == 13, result.output

    listed = js(verified("approvals", "list", "--json"))
    assert [(r["requested_by"], r["task_id"], r["transition"]) for r in listed] == [("merger", 1, "merge"),
                                                                                   ("qa", 2, "reject")]
    qa_request = listed[1]["id"]
    assert [r["id"] for r in js(as_(verified, "merger", "approvals", "list", "--json"))] == [merge]
    assert [r["id"] for r in js(as_(verified, "qa", "approvals", "list", "--json"))] == [qa_request]
    assert js(as_(verified, "builder", "approvals", "list", "--json")) == []
    assert [r["id"] for r in js(verified("approvals", "list", "--status", "pending", "--json"))] == [merge, qa_request]
