"""The benchmark stays runnable and measures what it says: contract-checked, audited transitions."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import transitions


def test_transitions_benchmark_writes_and_verifies_one_event_per_transition(tmp_path):
    for batch in (0, 3):
        result = transitions.run(5, tmp_path / f"b{batch}.db", batch=batch)
        assert result["transitions"] == 20
        # one spec.apply, five task.create, twenty task.transition: all chained and verified
        assert result["audit_events_verified"] == 26
        assert result["p99_ms"] >= result["p50_ms"] > 0


def test_fitness_benchmark_counts_what_it_seeded(tmp_path):
    import fitness

    result = fitness.measure(f"sqlite:///{tmp_path / 'fitness.db'}", n_runs=2000, n_tasks=400, repeat=1, cli=False,
                             workdir=tmp_path)
    # measure() already raised unless each report counted exactly the seeded runs, outcomes, successes, burden
    week, month = result["totals"]["fitness 7d"], result["totals"]["fitness 30d"]
    assert 0 < week["runs"] < month["runs"] <= 2000
    assert month["runs"] >= 2000 - 10  # every run but the few still running
    assert 0 < month["successes"] < month["task_outcomes"] < month["runs"]
    assert month["burden"]["rejected"] > 0 and month["burden"]["escalations"] == 300
    assert set(result["figures"]) == {"fitness 7d", "costs 7d", "fitness 30d", "costs 30d"}
    assert result["figures"]["fitness 30d"]["x_costs"] > 0


def test_dashboard_benchmark_times_every_page_it_checked(tmp_path):
    import dashboard

    result = dashboard.measure(f"sqlite:///{tmp_path / 'dashboard.db'}", n_agents=50, n_tasks=500, n_runs=500,
                               repeat=1, deep_offset=100)
    # measure() already raised unless each page answered 200 with what was seeded (carol: 403 where refused)
    assert (result["agents"], result["tasks"]) == (50, 501)
    assert result["audit_events"] > result["tasks"]
    figures = result["figures"]
    lead = {name for name in figures if name.startswith("lead ")}
    assert len(lead) == 18 and {"lead /inbox", "lead /costs", "lead /audit?before=<deep>"} <= lead
    assert any(name.startswith("lead /boards/fix/") and "offset=" in name for name in lead)
    assert {f"carol {name}" for name in dashboard.SCOPED} <= set(figures)
    assert figures["carol /boards/fix (refused)"]["status"] == 403
    assert figures[dashboard.REFERENCE]["x_ref"] == 1.0
    assert figures[dashboard.VERIFY]["median_ms"] >= figures[dashboard.VERIFY_ANSWER]["median_ms"] > 0
    assert all(f["median_ms"] > 0 and f["max_ms"] >= f["median_ms"] for f in figures.values())
