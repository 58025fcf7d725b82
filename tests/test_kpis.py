"""KPI readings: recording them (humans and the runtime; never agents), reading them back as history and
as before -> after, the spec's check of ``measure.after``, the dispatcher measuring on a schedule and
after the transitions a KPI names, failing measure programs, and ``roster kpi``.

Real SQLite files and real measure programs (a Python script run as a subprocess); nothing is mocked."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, js, ok

from roster.cli.context import operator_handle
from roster.errors import ApprovalPending, Denied, NotFound, SpecError, UsageError
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import CompanyStore, Store

KPI = "lint_findings"

MEASURE_SCRIPT = '''\
"""Counts lint findings: a line of chatter, then what value.txt in the working folder says."""
import pathlib
import sys
import time

value = pathlib.Path("value.txt").read_text().strip()
if value.startswith("exit"):
    sys.exit(f"cannot count the findings ({value})")  # stderr, exit status 1
if value == "hang":
    time.sleep(60)
print("counting findings...")
print(value)
'''


# -- helpers ---------------------------------------------------------------------------------------


def kpi_spec(measure: dict | None = None, *, listed: bool = True) -> str:
    """FIX_LINT with KPI ``lint_findings`` (measured by ``measure``, a KpiMeasure as a dict, if given;
    listed by workflow fix-lint when ``listed``) and KPI ``coverage``, which has no measure program."""
    assert "kpis" not in FIX_LINT
    text = FIX_LINT
    if listed:
        text = text.replace("    initial: found\n", f"    initial: found\n    kpis: [{KPI}]\n", 1)
        assert text != FIX_LINT
    lint = {"unit": "findings", "direction": "down", "target": 0, **({"measure": measure} if measure else {})}
    return f"{text}kpis:\n  {KPI}: {json.dumps(lint)}\n  coverage: {{unit: '%'}}\n"  # JSON is YAML


class Meter:
    """A real measure program in ``folder``: its command prints the value written with :meth:`set` into
    ``value.txt`` of the folder it runs in ("exit" makes it fail, "hang" makes it sleep)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        script = folder / "count_findings.py"
        script.write_text(MEASURE_SCRIPT, encoding="utf-8")
        self.command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"

    def set(self, value: object) -> None:
        (self.folder / "value.txt").write_text(f"{value}\n", encoding="utf-8")

    def measure(self, **options: object) -> dict:
        """The ``measure`` mapping of a KPI that runs this program."""
        return {"command": self.command, **options}


class Planner:
    """An in-process planner that takes ``plan``, and while it runs changes what the measure program
    will print (the fix it made), to ``value``."""

    kind = "program"

    def __init__(self, meter: Meter, value: object) -> None:
        self.meter, self.value = meter, value

    def run(self, brief):  # a Brief in, a RunResult out
        self.meter.set(self.value)
        return RunResult.parse({"transition": "plan", "writes": {"spec": GOOD_SPEC}})


def readings(company: CompanyStore) -> list[tuple[float, str, str]]:
    """(value, recorded_by, source) of each reading of lint_findings, oldest first."""
    return [(r.value, r.recorded_by, r.source) for r in company.kpi_readings(KPI, actor=None)]


def new_task(company: CompanyStore) -> int:
    return company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id


@pytest.fixture
def meter(tmp_path) -> Meter:
    """A measure program reading ``tmp_path/value.txt`` (the dispatchers here run in ``tmp_path``)."""
    return Meter(tmp_path)


# -- recording and reading -------------------------------------------------------------------------


def test_readings_by_a_human_and_by_the_runtime_are_kept_with_time_recorder_and_source(opened, clock):
    company = opened(kpi_spec())
    first = company.record_kpi(KPI, 12, actor="alice", source="counted by hand")
    clock.advance(60)
    second = company.record_kpi(KPI, 9.5, actor=None, source="schedule (every 1h)")

    assert (first.kpi, first.value, first.measured_at, first.recorded_by, first.source) == (
        KPI, 12.0, "2026-01-01T00:00:00.000000Z", "alice", "counted by hand")
    assert (second.value, second.measured_at, second.recorded_by) == (9.5, "2026-01-01T00:01:00.000000Z", "system")
    assert company.kpi_readings(KPI, actor="alice") == [first, second]  # oldest first
    assert company.kpi_readings(KPI, actor="planner", limit=1) == [second]  # the newest; agents may read
    assert opened().kpi_readings(KPI, actor=None) == [first, second]  # kept in the file
    assert [(e.principal, e.subject, e.data) for e in company.audit_log(action="kpi.reading")] == [
        ("alice", f"kpi:{KPI}", {"value": 12.0, "source": "counted by hand"}),
        ("system", f"kpi:{KPI}", {"value": 9.5, "source": "schedule (every 1h)"})]

    def summary(name: str) -> tuple:
        s = company.kpi_summaries(actor="alice")[name]
        return s.first, s.latest, s.readings, s.change

    assert sorted(company.kpi_summaries(actor="alice")) == ["coverage", KPI]
    assert summary(KPI) == (first, second, 2, -2.5)
    assert summary("coverage") == (None, None, 0, None)
    only = company.record_kpi("coverage", 80, actor="alice")
    assert summary("coverage") == (only, only, 1, None)  # no change before two readings


def test_refused_readings_store_nothing_and_a_refused_agent_is_audited(opened):
    company = opened(kpi_spec())

    with pytest.raises(Denied):
        company.record_kpi(KPI, 0, actor="planner", source="I fixed them all")
    with pytest.raises(NotFound) as unknown:
        company.record_kpi("bugs", 1, actor="alice")
    assert "'bugs'" in unknown.value.message and "coverage, lint_findings" in unknown.value.message
    for bad in (math.nan, math.inf, -math.inf, True, "3", None, 10**400):
        with pytest.raises(UsageError):
            company.record_kpi(KPI, bad, actor="alice")
    with pytest.raises(UsageError):
        company.record_kpi(KPI, 1, actor="alice", source="x" * 501)

    assert all(s.readings == 0 for s in company.kpi_summaries(actor=None).values())
    assert company.kpi_readings(KPI, actor=None) == []
    assert company.audit_log(action="kpi.reading") == []
    rejected = company.audit_log(action="kpi.reading.rejected")
    assert [(e.principal, e.subject, e.data["value"], e.data["error"]["error"]) for e in rejected] == [
        ("planner", f"kpi:{KPI}", 0, "denied"), ("alice", "kpi:bugs", 1, "not-found")]
    assert company.verify_audit()[1] is None


# -- the spec --------------------------------------------------------------------------------------


def test_measure_after_names_transitions_of_the_workflows_that_list_the_kpi():
    assert parse_spec(kpi_spec({"command": "true", "after": ["plan", "merge"]})).kpis[KPI].measure.after == [
        "plan", "merge"]

    def only_problem(text: str, index: int) -> str:
        with pytest.raises(SpecError) as refused:
            parse_spec(text)
        [issue] = refused.value.issues
        assert issue.key == f"kpis.{KPI}.measure.after[{index}]", issue
        return issue.message

    unknown = only_problem(kpi_spec({"command": "true", "after": ["plan", "deploy"]}), 1)
    assert "unknown transition 'deploy'" in unknown and "build, merge, plan, reject, verify" in unknown
    # 'plan' exists, but not in a workflow that lists the KPI
    unlisted = only_problem(kpi_spec({"command": "true", "after": ["plan"]}, listed=False), 0)
    assert "unknown transition 'plan'" in unlisted and "none defined" in unlisted


# -- the dispatcher --------------------------------------------------------------------------------


def test_the_dispatcher_measures_on_schedule_and_a_restart_does_not_measure_again(opened, clock, meter,
                                                                                   tmp_path):
    meter.set(7)
    company = opened(kpi_spec(meter.measure(every="1h")))
    logs: list[str] = []
    dispatcher = Dispatcher(company, workdir=tmp_path, log=logs.append)

    assert dispatcher.cycle() == []
    assert readings(company) == [(7.0, "system", "schedule (every 1h)")]
    meter.set(6)
    clock.advance(3599)
    dispatcher.cycle()
    assert len(readings(company)) == 1  # not due yet
    clock.advance(2)  # 3601 s after the first
    dispatcher.cycle()
    assert readings(company) == [(7.0, "system", "schedule (every 1h)"), (6.0, "system", "schedule (every 1h)")]
    assert logs == ["KPI lint_findings: 7 findings (schedule (every 1h))",
                    "KPI lint_findings: 6 findings (schedule (every 1h))"]
    assert company.trigger_states("runtime")[f"kpi:{KPI}"].last_fired_at == "2026-01-01T01:00:01.000000Z"

    meter.set(5)
    clock.advance(1800)
    restarted = opened()  # a new store on the same file, a new dispatcher: the schedule is remembered
    Dispatcher(restarted, workdir=tmp_path).cycle()
    assert len(readings(restarted)) == 2
    clock.advance(1801)
    Dispatcher(restarted, workdir=tmp_path).cycle()
    assert readings(restarted)[-1] == (5.0, "system", "schedule (every 1h)")


@pytest.mark.parametrize(("after", "measured"), [(["plan"], True), (["build"], False)])
def test_a_kpi_is_measured_after_the_transitions_it_names(opened, meter, tmp_path, after, measured):
    meter.set(12)
    company = opened(kpi_spec(meter.measure(after=after)))  # no 'every': only after transitions
    task_id = new_task(company)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Planner(meter, 3)})

    [outcome] = dispatcher.cycle()

    assert (outcome.agent, outcome.task_id, outcome.outcome, outcome.transition) == (
        "planner", task_id, "succeeded", "plan")
    # the value the program printed after the run's change, not before it
    assert readings(company) == ([(3.0, "system", f"after plan of task {task_id}")] if measured else [])


def verified_task(company: CompanyStore) -> int:
    """A fix-lint task walked to ``verified`` by the agents: merge, on an approval edge, is next."""
    task_id = new_task(company)
    task = company.transition(task_id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task_id, "patch", b"--- a\n+++ b\n", actor="builder")
    task = company.transition(task_id, "build", actor="builder", expected_version=task.version + 1,
                              writes={"branch": "fix/e501"})
    company.record_check(task_id, "lint_clean", passed=True, actor="qa")
    company.transition(task_id, "verify", actor="qa", expected_version=task.version + 1)
    return task_id


def test_a_transition_run_by_roster_approve_is_measured_by_the_running_dispatcher(cli, db_url):
    folder = cli.workspace / "acme"
    folder.mkdir()
    meter = Meter(folder)
    meter.set(12)
    spec_path = folder / "roster.yaml"
    spec_path.write_text(kpi_spec(meter.measure(after=["merge"])), encoding="utf-8")

    def roster(*args: str, token: str | None = None):
        return cli("--spec", str(spec_path), "--db", db_url, *(("--token", token) if token else ()), *args)

    ok(roster("apply"))
    alice = js(roster("token", "issue", "alice", "--json"))["token"]
    store = Store.open(db_url, artifact_root=folder / "art")
    try:
        company = store.company("acme")
        dispatcher = Dispatcher(company, workdir=folder)  # no agent has a runner: it only keeps house
        assert dispatcher.cycle() == []
        task_id = verified_task(company)
        with pytest.raises(ApprovalPending) as asked:
            company.transition(task_id, "merge", actor="merger", expected_version=company.get_task(task_id).version)
        dispatcher.cycle()
        assert readings(company) == []  # plan, build and verify are not named by measure.after
        meter.set(3)  # what the merge changed

        approved = roster("approve", str(asked.value.request_id), token=alice)

        assert approved.exit_code == 0, approved.output
        assert f"task {task_id} took merge" in " ".join(approved.output.split())
        assert company.get_task(task_id).state == "merged"
        [moved] = company.audit_log(action="task.transition", task_id=task_id)[-1:]
        assert (moved.principal, moved.data["approved_by"]) == ("merger", "alice")
        dispatcher.cycle()
        assert readings(company) == [(3.0, "system", f"after merge of task {task_id}")]
        dispatcher.cycle()
        assert len(readings(company)) == 1  # once
        assert company.trigger_states("runtime")["kpi:transitions"].last_event_id >= moved.seq
        dispatcher.close()
    finally:
        store.close()


def test_transitions_are_followed_from_the_record_across_restarts_each_kpi_once_per_look(opened, meter, tmp_path):
    meter.set(9)
    company = opened(kpi_spec(meter.measure(after=["reject"])))
    before = [new_task(company) for _ in range(2)]
    company.transition(before[0], "reject", actor="alice", expected_version=1)  # before the runtime ever looked
    first = Dispatcher(company, workdir=tmp_path)
    first.cycle()
    first.close()  # a clean stop: its leader lease goes back
    assert readings(company) == []  # the first look starts from the head of the record

    later = [new_task(company) for _ in range(5)]
    for task_id in [before[1], *later]:  # a human moves six tasks while no runtime runs
        company.transition(task_id, "reject", actor="alice", expected_version=1)
    meter.set(4)
    restarted = opened()
    logs: list[str] = []
    second = Dispatcher(restarted, workdir=tmp_path, log=logs.append)
    second.cycle()
    second.close()
    source = f"after reject of task {before[1]}, reject of task {later[0]}, reject of task {later[1]} and 3 more"
    assert readings(restarted) == [(4.0, "system", source)]  # one measurement for the six
    assert logs == [f"KPI lint_findings: 4 findings ({source})"]
    Dispatcher(opened(), workdir=tmp_path).cycle()
    assert len(readings(restarted)) == 1  # the cursor was kept: no measurement twice


@pytest.mark.parametrize(("value", "timeout", "why"), [
    ("exit 1", 30, "exited 1: cannot count the findings (exit 1)"),
    ("n/a", 30, "printed no number on its last line of output"),
    ("hang", 0.5, "ran past its timeout of 0.5 s"),
    ("inf", 30, "printed 'inf': a reading is a finite number"),
])
def test_a_failing_measure_program_records_nothing_logs_why_and_the_cycle_goes_on(
        opened, clock, meter, tmp_path, value, timeout, why):
    meter.set(value)
    company = opened(kpi_spec(meter.measure(every="1h", after=["plan"], timeout=timeout)))
    task_id = new_task(company)
    logs: list[str] = []
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Planner(meter, value)}, log=logs.append)

    [outcome] = dispatcher.cycle()

    assert (outcome.outcome, outcome.transition) == ("succeeded", "plan")
    assert company.get_task(task_id).state == "planned"
    assert readings(company) == []
    assert [line.split(": ", 1)[0] for line in logs] == ["KPI lint_findings"] * 2, logs
    for line, source in zip(logs, [f"after plan of task {task_id}", "schedule (every 1h)"], strict=True):
        assert line.startswith(f"KPI lint_findings: not measured ({source}): ") and why in line, line
    clock.advance(60)
    assert dispatcher.cycle() == [] and len(logs) == 2  # the schedule moves on: no retry every cycle
    assert company.verify_audit()[1] is None


# -- the CLI ---------------------------------------------------------------------------------------


def test_roster_kpi_record_measure_list_and_history(cli):
    folder = cli.workspace / "acme"  # the measure program must run here, in the spec's folder, not in cwd
    folder.mkdir()
    meter = Meter(folder)
    meter.set(9)
    spec_path = folder / "roster.yaml"
    spec_path.write_text(kpi_spec(meter.measure()), encoding="utf-8")

    def roster(*args: str, token: str | None = None):
        return cli("--spec", str(spec_path), *(("--token", token) if token else ()), *args)

    ok(roster("apply"))
    alice = js(roster("token", "issue", "alice", "--json"))["token"]
    planner = js(roster("token", "issue", "planner", "--json"))["token"]

    recorded = js(roster("kpi", "record", KPI, "12", "--note", "counted by hand", "--json", token=alice))
    assert (recorded["value"], recorded["recorded_by"], recorded["source"]) == (12.0, "alice", "counted by hand")
    measured = js(roster("kpi", "measure", KPI, "--json"))
    assert (measured["value"], measured["recorded_by"], measured["source"]) == (
        9.0, operator_handle(), "measured by hand")
    assert "recorded lint_findings = 9" in ok(roster("kpi", "measure", KPI))

    listed = {k["name"]: k for k in js(roster("kpi", "list", "--json"))}
    assert sorted(listed) == ["coverage", KPI]
    lint = listed[KPI]
    assert (lint["unit"], lint["direction"], lint["target"], lint["readings"]) == ("findings", "down", 0, 3)
    assert (lint["first"]["value"], lint["latest"]["value"], lint["change"]) == (12.0, 9.0, -3.0)
    assert (listed["coverage"]["first"], listed["coverage"]["latest"], listed["coverage"]["change"]) == (
        None, None, None)
    history = js(roster("kpi", "history", KPI, "--json"))
    assert [(r["value"], r["recorded_by"]) for r in history] == [
        (12.0, "alice"), (9.0, operator_handle()), (9.0, operator_handle())]
    assert [r["value"] for r in js(roster("kpi", "history", KPI, "--limit", "1", "--json"))] == [9.0]

    no_program = roster("kpi", "measure", "coverage")
    assert no_program.exit_code == NotFound.exit_code
    assert "add 'measure: {command: ...}'" in " ".join(no_program.stderr.split())
    meter.set("n/a")
    failed = roster("kpi", "measure", KPI)
    assert failed.exit_code == 1 and "printed no number" in failed.stderr
    for unknown in (("history", "bugs"), ("measure", "bugs"), ("record", "bugs", "1")):
        assert roster("kpi", *unknown).exit_code == NotFound.exit_code, unknown
    assert roster("kpi", "record", KPI, "0", token=planner).exit_code == Denied.exit_code
    assert len(js(roster("kpi", "history", KPI, "--json"))) == 3  # the refusals stored nothing
