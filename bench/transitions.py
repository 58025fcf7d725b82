"""Durable task transitions per second on SQLite, each with its contract checked and an audit event written.

Creates N tasks, then drives each through a 4-transition workflow (``triage -> start -> submit -> accept``)
with writes, required fields and ``by`` checks, from one process, in two modes measured side by side:

- ``single``: one database transaction (and commit) per transition: what one CLI or API call costs;
- ``batch``: :meth:`CompanyStore.batch` groups ``--batch`` transitions per commit (group commit), as a
  dispatcher driving many tasks does. Each transition is still contract-checked and audited one by one.
- ``single, no rights``: as ``single`` but with the rights checks (Cedar, two decisions per transition:
  ``read`` and ``transition``) switched off in a bench-only subclass, to show what they cost. The store
  has no such switch: this mode exists only here.

Prints transitions per second and the p50/p99 latency of one transition (milliseconds) per mode, the
ratio between the modes, and verifies the audit chain each run wrote. Absolute figures are noise on a
shared machine; see docs/performance.md for recorded runs.

Usage: python bench/transitions.py [--tasks N] [--batch N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from roster.specfile import parse_spec
from roster.store import CompanyStore, Store

SPEC = """
company: bench
workflows:
  ticket:
    states: [new, triaged, doing, review, done]
    initial: new
    fields:
      severity: {type: string, enum: [low, medium, high]}
      assignee: {type: string}
      summary: {type: string, minLength: 5}
    transitions:
      triage: {from: new,     to: triaged, by: [triager], writes: [severity]}
      start:  {from: triaged, to: doing,   by: [worker],  writes: [assignee], requires: {fields: [severity]}}
      submit: {from: doing,   to: review,  by: [worker],  writes: [summary],  requires: {fields: [assignee]}}
      accept: {from: review,  to: done,    by: [human],   requires: {fields: [summary]}}
agents:
  triager: {tier: bounded-mutator}
  worker: {tier: bounded-mutator}
humans:
  lead: {}
"""

STEPS = [
    ("triage", "triager", {"severity": "high"}),
    ("start", "worker", {"assignee": "worker"}),
    ("submit", "worker", {"summary": "fixed the thing"}),
    ("accept", "lead", {}),
]


class _NoRights(CompanyStore):
    """Bench only: the same store with the rights checks skipped, to measure their cost."""

    def _authorize(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202, ARG002 - any decision's arguments
        return None

    def _may_read(self, cache, who, workflow):  # noqa: ANN001, ANN202, ARG002
        return None


def run(n_tasks: int, db: Path, batch: int = 0, rights: bool = True) -> dict[str, float]:
    """Drive ``n_tasks`` through the workflow; ``batch`` > 0 commits that many transitions at a time;
    ``rights=False`` skips the rights checks (bench only)."""
    store = Store.open(f"sqlite:///{db}")
    store.apply(parse_spec(SPEC), applied_by="bench")
    company = store.company("bench") if rights else _NoRights(store, "bench")
    ids = [company.create_task(workflow="ticket", title=f"ticket {i}", actor="lead")[0].id for i in range(n_tasks)]
    versions = dict.fromkeys(ids, 1)
    latencies: list[float] = []
    started = time.perf_counter()
    for name, actor, writes in STEPS:
        if batch:
            for start in range(0, len(ids), batch):
                t0 = time.perf_counter()
                with company.batch() as unit:
                    for task_id in ids[start:start + batch]:
                        task = unit.transition(task_id, name, actor=actor, expected_version=versions[task_id],
                                               writes=writes)
                        versions[task_id] = task.version
                per = (time.perf_counter() - t0) / len(ids[start:start + batch])
                latencies.extend([per] * len(ids[start:start + batch]))
        else:
            for task_id in ids:
                t0 = time.perf_counter()
                task = company.transition(task_id, name, actor=actor, expected_version=versions[task_id],
                                          writes=writes)
                latencies.append(time.perf_counter() - t0)
                versions[task_id] = task.version
    elapsed = time.perf_counter() - started
    checked, broken = company.verify_audit()
    assert broken is None, broken
    store.close()
    latencies.sort()
    return {
        "transitions": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "audit_events_verified": checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="transitions per commit in batch mode")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, batch, rights in (("single, no rights", 0, False), ("single", 0, True),
                                    ("batch", args.batch, True)):
            result = results[mode] = run(args.tasks, Path(tmp) / f"{mode.replace(', ', '-')}.db", batch, rights)
            label = mode if not batch else f"batch of {batch}"
            print(f"{label:>17}: {result['transitions']} transitions in {result['seconds']:.2f} s = "
                  f"{result['per_second']:,.0f}/s, p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms "
                  f"(audit chain of {result['audit_events_verified']} events verified)")
    print(f"batch / single throughput ratio: {results['batch']['per_second'] / results['single']['per_second']:.1f}x")
    cost = 1 - results["single"]["per_second"] / results["single, no rights"]["per_second"]
    print(f"rights enforced / not: {results['single']['per_second'] / results['single, no rights']['per_second']:.2f}x "
          f"({cost:.0%} drop; the budget is 20%)")


if __name__ == "__main__":
    main()
