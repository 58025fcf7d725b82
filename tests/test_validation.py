"""Spec validation (issue 14, item 5): every block refuses unknown keys with file, line and a did-you-mean;
runner blocks are checked per kind at load; the model string needs a provider pydantic-ai knows; and
``roster validate`` warns about agents that can never run."""

from __future__ import annotations

import inspect
import typing

import pytest
from conftest import FIX_LINT, js

from roster.errors import SpecError, UsageError
from roster.kernel import runner_spec, spec
from roster.kernel.runner_spec import KNOWN_PROVIDERS
from roster.runtime.runners import make_runner
from roster.specfile import parse_spec

PLANNER = "  planner: {reports_to: alice, tier: bounded-mutator}"


def issues_of(text: str) -> list:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "team/roster.yaml")
    return caught.value.issues


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.mark.parametrize("text, typo, key, suggestion", [
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {kind: program, comand: 'python w.py'}}"),
     "comand", "agents.planner.runner.comand", "command"),
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {kind: program, command: x, timout: 5}}"),
     "timout", "agents.planner.runner.timout", "timeout"),
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {kind: llm, model: 'openai:x', baseurl: 'http://h/v1'}}"),
     "baseurl", "agents.planner.runner.baseurl", "base_url"),
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {kind: process, command: 'claude -p', timout: 60}}"),
     "timout", "agents.planner.runner.timout", "timeout"),
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", rigths: {}}"), "rigths", "agents.planner.rigths", "rights"),
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", rights: {transitons: []}}"),
     "transitons", "agents.planner.rights.transitons", "transitions"),
    (FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", triggers: [{evry: 1h}]}"),
     "evry", "agents.planner.triggers[0].evry", "every"),
    (FIX_LINT.replace("by: [planner], writes: [spec]", "by: [planner], write: [spec]"),
     "write:", "workflows.fix-lint.transitions.plan.write", "writes"),
    (FIX_LINT.replace("    initial: found", "    initial: found\n    termnal: [merged]"),
     "termnal", "workflows.fix-lint.termnal", "terminal"),
    (FIX_LINT.replace("  alice: {display_name: Alice}", "  alice: {display_name: Alice, emial: a@x}"),
     "emial", "humans.alice.emial", "email"),
    (FIX_LINT + "budgets:\n  - {scope: company, usd: 1, perod: day}\n", "perod", "budgets[0].perod", "period"),
    (FIX_LINT + "models:\n  'openai:ft': {input_mtok: 1, output_mtok: 2, cache_red_mtok: 0.1}\n",
     "cache_red_mtok", "models.openai:ft.cache_red_mtok", "cache_read_mtok"),
    (FIX_LINT + "tools:\n  lint: {comand: ruff}\n", "comand", "tools.lint.comand", "command"),
    (FIX_LINT + "kpis:\n  k: {measure: {command: x, evry: 1h}}\n", "evry", "kpis.k.measure.evry", "every"),
    (FIX_LINT + "limts: {artifact_bytes: 10}\n", "limts", "limts", "limits"),
])
def test_an_unknown_key_names_file_line_and_the_key_it_may_mean(text, typo, key, suggestion):
    issue = next(i for i in issues_of(text) if i.key == key)
    assert issue.file == "team/roster.yaml" and issue.line == line_of(text, typo)
    assert f"did you mean '{suggestion}'?" in issue.message and "expected one of" in issue.message


def test_a_runner_kind_typo_and_a_missing_kind_are_refused_with_the_kinds():
    text = FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {kind: proces, command: x}}")
    [issue] = issues_of(text)
    assert (issue.key, issue.line) == ("agents.planner.runner.kind", line_of(text, "proces"))
    assert "did you mean 'process'?" in issue.message and "program, llm, process" in issue.message
    [issue] = issues_of(FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {command: x}}"))
    assert issue.key == "agents.planner.runner" and "required key 'kind' is missing" in issue.message


def test_a_program_runner_needs_exactly_one_of_callable_or_command():
    [issue] = issues_of(FIX_LINT.replace(PLANNER, PLANNER[:-1] + ", runner: {kind: program}}"))
    assert issue.key == "agents.planner.runner" and "exactly one of 'callable" in issue.message


@pytest.mark.parametrize("model, complaint", [
    ("opnai:gpt-4o-mini", "unknown provider 'opnai' (did you mean 'openai'?)"),
    ("gpt-4o-mini", "expected 'provider:model'"),
    ("gateway/nowhere:x", "unknown provider 'gateway/nowhere'"),
])
def test_a_model_needs_a_provider_pydantic_ai_knows(model, complaint):
    [issue] = issues_of(FIX_LINT.replace(PLANNER, PLANNER[:-1] + f", runner: {{kind: llm, model: '{model}'}}}}"))
    assert issue.key == "agents.planner.runner" and complaint in issue.message
    with pytest.raises(UsageError, match=complaint.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        make_runner({"kind": "llm", "model": model}, workdir=None)  # the runtime applies the same model


@pytest.mark.parametrize("model", ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5", "ollama:llama3.2",
                                   "openrouter:meta/llama-3", "gateway/openai:gpt-4o", "offline"])
def test_known_providers_pass(model):
    assert parse_spec(FIX_LINT.replace(PLANNER, PLANNER[:-1] + f", runner: {{kind: llm, model: '{model}'}}}}"))


def test_the_kernels_provider_list_is_pydantic_ais():
    from pydantic_ai.models import KnownModelName
    from pydantic_ai.providers import infer_provider_class

    names = typing.get_args(KnownModelName.__value__)
    prefixes = {name.split(":", 1)[0].removeprefix("gateway/") for name in names if ":" in name}
    assert prefixes <= KNOWN_PROVIDERS, prefixes - KNOWN_PROVIDERS
    for provider in KNOWN_PROVIDERS:
        try:
            infer_provider_class(provider)  # raises ValueError for a provider pydantic-ai does not know
        except ImportError:
            pass  # known, but its optional SDK is not installed here
    source = inspect.getsource(infer_provider_class)
    matched = {word.strip("'") for line in source.splitlines() if line.strip().startswith("case '")
               for word in line.strip()[5:].rstrip(":").split(" | ")}
    not_chat = {"elevenlabs", "sentence-transformers", "system-one", "voyageai"}  # embeddings or speech only
    assert matched - not_chat == KNOWN_PROVIDERS, (matched - not_chat) ^ KNOWN_PROVIDERS


def test_the_runtime_refuses_the_typos_the_spec_refuses():
    with pytest.raises(UsageError, match="program runner: comand: Extra inputs are not permitted"):
        make_runner({"kind": "program", "comand": "python w.py"}, workdir=None)
    with pytest.raises(UsageError, match="process runner: timout: Extra inputs are not permitted"):
        make_runner({"kind": "process", "command": "claude -p", "timout": 5}, workdir=None)


def test_every_spec_block_forbids_unknown_keys():
    models = [m for module in (spec, runner_spec) for _, m in inspect.getmembers(module, inspect.isclass)
              if issubclass(m, spec.BaseModel) and m.__module__ == module.__name__ and not m.__name__.startswith("_")]
    assert len(models) > 20
    assert [m.__name__ for m in models if m.model_config.get("extra") != "forbid"] == []


NEVER_RUN = FIX_LINT.replace(
    "  qa: {reports_to: alice, tier: bounded-mutator}",
    "  qa: {reports_to: alice, runner: {kind: program, command: qa}}",  # tier read-only: may take no transition
).replace(
    "  merger: {reports_to: alice, tier: high-impact-executor}",
    "  merger: {reports_to: alice, tier: high-impact-executor, rights: {transitions: []}, runner: {kind: program, "
    "command: m}}\n  idle: {tier: bounded-mutator, runner: {kind: program, command: i}}",
).replace(PLANNER, PLANNER[:-1] + ", runner: {kind: program, command: p}}")


def test_roster_validate_warns_about_agents_that_can_never_run_and_still_exits_0(cli):
    path = cli.workspace / "roster.yaml"
    path.write_text(NEVER_RUN, encoding="utf-8")
    result = cli("validate")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "valid - company 'acme'" in text and "4 warning(s)" in text
    assert f"roster.yaml:{line_of(NEVER_RUN, '  builder:')}: agents.builder: agent 'builder' has no runner" in text
    assert f"roster.yaml:{line_of(NEVER_RUN, '  qa:')}: agents.qa.tier: agent 'qa' has tier read-only" in text
    assert "agents.merger.rights.transitions: agent 'merger' has no right to take any transition" in text
    assert "agents.idle: agent 'idle' is offered no work" in text
    assert "agents.planner" not in text  # offered plan, granted it, with a runner
    warnings = js(cli("validate", "--json"))["warnings"]
    assert [(w["key"], w["line"]) for w in warnings] == [
        ("agents.builder", line_of(NEVER_RUN, "  builder:")), ("agents.qa.tier", line_of(NEVER_RUN, "  qa:")),
        ("agents.merger.rights.transitions", line_of(NEVER_RUN, "  merger:")),
        ("agents.idle", line_of(NEVER_RUN, "  idle:"))]


def test_an_agent_with_a_trigger_is_not_idle_without_transitions(cli):
    path = cli.workspace / "roster.yaml"
    path.write_text(NEVER_RUN.replace("  idle: {tier: bounded-mutator,", "  idle: {triggers: [{every: 1h}],"),
                    encoding="utf-8")
    assert "agents.idle" not in cli("validate").output


def test_a_stored_revision_with_a_runner_typo_still_opens_and_a_corrected_spec_applies(tmp_path):
    """A revision stored before runner blocks were checked may hold a typo: that agent never ran then. The
    company still opens (the agent without a runner), and applying the corrected spec works."""
    import json as json_

    from sqlalchemy import update

    from roster.store import Store
    from roster.store.schema import spec_revisions

    text = FIX_LINT.replace("planner: {reports_to: alice, tier: bounded-mutator}",
                            "planner: {reports_to: alice, tier: bounded-mutator, runner: {kind: program, command: echo}}")
    store = Store.open(f"sqlite:///{tmp_path / 'old.db'}", artifact_root=tmp_path / "art")
    store.apply(parse_spec(text), applied_by="alice")
    with store.write() as conn:  # what an older Roster let through
        stored = json_.loads(conn.scalar(spec_revisions.select().with_only_columns(spec_revisions.c.spec_json)))
        stored["agents"]["planner"]["runner"]["comand"] = "echo"
        conn.execute(update(spec_revisions).values(spec_json=json_.dumps(stored)))
    store.close()

    store = Store.open(f"sqlite:///{tmp_path / 'old.db'}", artifact_root=tmp_path / "art")
    try:
        company = store.company("acme")
        assert company.spec().agents["planner"].runner is None
        assert company.spec().agents["builder"].runner is None and "qa" in company.spec().agents
        result = store.apply(parse_spec(text.replace("command: echo", "command: echo fixed")), applied_by="alice")
        assert result.changed and company.spec().agents["planner"].runner.command == "echo fixed"
    finally:
        store.close()
