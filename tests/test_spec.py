"""The workforce spec loader: every problem is reported with file, 1-based line, dotted key and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from roster.errors import PayloadTooLarge, SpecError, SpecIssue
from roster.specfile import MAX_SPEC_BYTES, load_spec, parse_spec


def issues_of(text: str) -> list[SpecIssue]:
    """Parse dedented ``text``, expecting it to be refused; return the issues."""
    with pytest.raises(SpecError) as caught:
        parse_spec(textwrap.dedent(text))
    assert caught.value.issues, "a SpecError must list at least one issue"
    return caught.value.issues


def only_issue(text: str) -> SpecIssue:
    issues = issues_of(text)
    assert len(issues) == 1, issues
    return issues[0]


# -- malformed YAML --------------------------------------------------------------------------------


def test_bad_indent_is_malformed_yaml_at_the_misindented_line():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found]
           initial: found
        """)
    assert issue.line == 5
    assert issue.key == ""
    assert issue.message.startswith("malformed YAML")


def test_unclosed_bracket_is_malformed_yaml_at_the_line_of_the_bracket():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            initial: found
            states: [found, planned
        """)
    assert issue.line == 5  # the file has 5 lines; the '[' that is never closed is on line 5
    assert issue.message.startswith("malformed YAML")


# -- schema violations -----------------------------------------------------------------------------


def test_misspelled_key_is_an_unknown_key():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: found
            trnsitions:
              plan: {from: found, to: planned, by: [human]}
        """)
    assert (issue.line, issue.key) == (6, "workflows.fix-lint.trnsitions")
    assert "unknown key 'trnsitions'" in issue.message


def test_states_as_a_number_is_a_wrong_type():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: 5
            initial: found
        """)
    assert (issue.line, issue.key) == (4, "workflows.fix-lint.states")
    assert "valid list" in issue.message


def test_missing_initial_is_reported_at_its_workflow():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
        """)
    assert (issue.line, issue.key) == (3, "workflows.fix-lint.initial")
    assert "required key 'initial' is missing" in issue.message


def test_uppercase_name_breaks_the_name_pattern():
    issue = only_issue("""\
        company: acme
        agents:
          planner: {}
          Builder: {}
        """)
    assert (issue.line, issue.key) == (4, "agents.Builder")
    assert "invalid name 'Builder'" in issue.message
    assert "lowercase" in issue.message


# -- unknown states --------------------------------------------------------------------------------


def test_unknown_state_in_transition_from():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: found
            transitions:
              plan:
                from: [found, lost]
                to: planned
                by: [human]
        """)
    assert (issue.line, issue.key) == (8, "workflows.fix-lint.transitions.plan.from[1]")
    assert "unknown state 'lost'; expected one of found, planned" in issue.message


def test_unknown_state_in_transition_to():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: found
            transitions:
              plan:
                from: found
                to: done
                by: [human]
        """)
    assert (issue.line, issue.key) == (9, "workflows.fix-lint.transitions.plan.to")
    assert "unknown state 'done'; expected one of found, planned" in issue.message


def test_unknown_initial_state():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: start
        """)
    assert (issue.line, issue.key) == (5, "workflows.fix-lint.initial")
    assert "unknown state 'start'; expected one of found, planned" in issue.message


# -- undefined references --------------------------------------------------------------------------


def test_agent_tool_without_a_tools_section_is_undefined():
    issue = only_issue("""\
        company: acme
        agents:
          planner: {}
          builder:
            tools: [ruff]
        """)
    assert (issue.line, issue.key) == (5, "agents.builder.tools[0]")
    assert "tool 'ruff' is referenced but not defined" in issue.message


def test_reports_to_naming_nobody_is_undefined():
    issue = only_issue("""\
        company: acme
        agents:
          planner:
            reports_to: boss
        humans:
          alice: {}
        """)
    assert (issue.line, issue.key) == (4, "agents.planner.reports_to")
    assert "'boss' is referenced but not defined" in issue.message
    assert "alice, planner" in issue.message  # what was expected: the defined handles


# -- duplicates ------------------------------------------------------------------------------------


def test_same_key_twice_in_a_mapping_names_the_earlier_line():
    issue = only_issue("""\
        company: acme
        agents:
          planner: {}
          builder: {}
          planner: {reports_to: builder}
        """)
    assert (issue.line, issue.key) == (5, "agents.planner")
    assert "duplicate name 'planner'" in issue.message
    assert "line 3" in issue.message


def test_same_handle_under_agents_and_humans_is_a_duplicate():
    issue = only_issue("""\
        company: acme
        agents:
          alice: {}
        humans:
          bob: {}
          alice: {}
        """)
    assert (issue.line, issue.key) == (6, "humans.alice")
    assert "duplicate name 'alice'" in issue.message
    assert "already defined under agents" in issue.message


# -- who may act -----------------------------------------------------------------------------------


def test_transition_by_naming_nobody():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: found
            transitions:
              plan:
                from: found
                to: planned
                by: [planner, ghost]
        agents:
          planner: {}
        """)
    assert (issue.line, issue.key) == (10, "workflows.fix-lint.transitions.plan.by[1]")
    assert "'ghost' names nobody" in issue.message
    assert "expected an agent or human handle (planner)" in issue.message


def test_approval_by_naming_nobody():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [verified, merged]
            initial: verified
            transitions:
              merge:
                from: verified
                to: merged
                by: [human]
                approval: {by: [ghost]}
        """)
    assert (issue.line, issue.key) == (11, "workflows.fix-lint.transitions.merge.approval.by[0]")
    assert "'ghost' names nobody" in issue.message


# -- field schemas ---------------------------------------------------------------------------------


def test_field_schema_with_an_unknown_type_is_invalid():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found]
            initial: found
            fields:
              rule: {type: string}
              spec: {type: strin}
        """)
    assert (issue.line, issue.key) == (8, "workflows.fix-lint.fields.spec")
    assert "invalid JSON Schema" in issue.message
    assert "'strin'" in issue.message


def test_field_schema_with_a_negative_min_length_is_invalid():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found]
            initial: found
            fields:
              spec: {minLength: -1}
        """)
    assert (issue.line, issue.key) == (7, "workflows.fix-lint.fields.spec")
    assert "invalid JSON Schema at minLength" in issue.message


# -- reporting lines -------------------------------------------------------------------------------


def test_reports_to_cycle_between_two_principals():
    issue = only_issue("""\
        company: acme
        agents:
          a:
            reports_to: b
          b:
            reports_to: a
        """)
    assert (issue.line, issue.key) == (4, "agents.a.reports_to")
    assert "reports_to forms a cycle: a -> b -> a" in issue.message


def test_reports_to_self_is_a_cycle():
    issue = only_issue("""\
        company: acme
        humans:
          alice: {}
          bob:
            reports_to: bob
        """)
    assert (issue.line, issue.key) == (5, "humans.bob.reports_to")
    assert "reports_to forms a cycle: bob -> bob" in issue.message


# -- many problems at once -------------------------------------------------------------------------


def test_every_problem_in_a_file_is_reported():
    issues = issues_of("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned]
            initial: start
            transitions:
              plan: {from: found, to: done, by: [ghost]}
        agents:
          planner: {tools: [ruff]}
        """)
    assert len(issues) >= 3
    assert {(i.line, i.key) for i in issues} == {
        (5, "workflows.fix-lint.initial"),
        (7, "workflows.fix-lint.transitions.plan.to"),
        (7, "workflows.fix-lint.transitions.plan.by[0]"),
        (9, "agents.planner.tools[0]"),
    }


# -- defaults --------------------------------------------------------------------------------------


def test_no_workspaces_gives_default_workspace_and_portfolio_for_workflows():
    spec = parse_spec(textwrap.dedent("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, done]
            initial: found
        """))
    assert list(spec.workspaces) == ["default"]
    assert list(spec.workspaces["default"].portfolios) == ["default"]
    assert spec.workflows["fix-lint"].portfolio == "default/default"


def test_workflow_in_a_declared_portfolio_loads():
    spec = parse_spec(textwrap.dedent("""\
        company: acme
        workspaces:
          eng:
            portfolios: {tools: {}}
        workflows:
          fix-lint:
            portfolio: eng/tools
            states: [found]
            initial: found
        """))
    assert spec.workflows["fix-lint"].portfolio == "eng/tools"


def test_workflow_naming_an_unknown_portfolio_is_an_error():
    issue = only_issue("""\
        company: acme
        workflows:
          fix-lint:
            states: [found]
            initial: found
            portfolio: eng/tools
        """)
    assert (issue.line, issue.key) == (6, "workflows.fix-lint.portfolio")
    assert "unknown portfolio 'eng/tools'; expected one of default/default" in issue.message


def test_terminal_states_default_to_states_without_outgoing_transitions():
    spec = parse_spec(textwrap.dedent("""\
        company: acme
        workflows:
          fix-lint:
            states: [found, planned, merged, rejected]
            initial: found
            transitions:
              plan: {from: found, to: planned, by: [human]}
              merge: {from: planned, to: merged, by: [human]}
              reject: {from: [found, planned], to: rejected, by: [human]}
        """))
    assert spec.workflows["fix-lint"].terminal_states() == frozenset({"merged", "rejected"})


# -- files -----------------------------------------------------------------------------------------


def test_load_spec_refuses_a_file_over_one_mebibyte(tmp_path: Path):
    path = tmp_path / "roster.yaml"
    head = "company: acme\n"
    path.write_text(head + "#" * (MAX_SPEC_BYTES - len(head)) + "\n", encoding="utf-8")
    with pytest.raises(PayloadTooLarge) as caught:
        load_spec(path)
    assert (caught.value.size, caught.value.limit) == (1_048_577, 1_048_576)


def test_load_spec_accepts_a_file_of_exactly_one_mebibyte(tmp_path: Path):
    path = tmp_path / "roster.yaml"
    head = "company: acme\n"
    path.write_text(head + "#" * (MAX_SPEC_BYTES - len(head) - 1) + "\n", encoding="utf-8")
    assert path.stat().st_size == 1_048_576
    assert load_spec(path).company == "acme"


def test_load_spec_names_the_file_in_each_issue(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("company: acme\nagents:\n  planner: {reports_to: boss}\n", encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    [issue] = caught.value.issues
    assert issue.file == str(path)
    assert (issue.line, issue.key) == (3, "agents.planner.reports_to")
    assert str(issue).startswith(f"{path}:3: agents.planner.reports_to: ")


def test_team_memory_and_message_grants_must_name_someone(tmp_path):
    path = tmp_path / "roster.yaml"
    path.write_text("company: x\nworkspaces:\n  default:\n    portfolios:\n      default: {team_memory: {read: [ghost]}}\n"
                    "agents:\n  a: {rights: {message: ['*', nobody]}}\nhumans:\n  h: {}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert "team_memory.read[0]: 'ghost' names nobody" in text
    assert "rights.message[1]: 'nobody' names nobody" in text and "message[0]" not in text
