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
