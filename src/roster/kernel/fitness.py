"""Fitness arithmetic: a tally of outcomes turned into figures, reputation and routing weights; no I/O.

The store counts (``roster.store.fitness``); this module judges. Every definition is in docs/fitness.md:

- an **outcome** is a task run that ended (succeeded, waiting on an approval, failed, crashed or
  abandoned; a run stopped by a kill switch, a budget or a hold is nobody's outcome). It is **settled**
  once it failed, was corrected, or ended longer ago than the settle window with its approval decided;
- a **success** is a settled outcome whose transition was made (or approved) and never corrected;
- the **success rate** is successes over settled outcomes; the **cost per success** is what every run
  of the grain cost in the window over its successes (unknown if any run could not be priced);
- the **correction burden** counts each kind of correction apart (:data:`BURDEN_KINDS`);
- **latency** is the wall time of the grain's ended task runs, p50 and p95 (nearest rank);
- **evidence** is the number of settled outcomes; under the spec's ``min_outcomes`` a figure is
  "not enough evidence", never a rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

BURDEN_KINDS = ("rework", "rejected", "reverted", "check_failed", "escalations", "contract_rejections",
                "crashed", "timed_out")
"""The correction burden, each counted apart: corrections of the grain's transitions (rework, rejected
approvals, human reverts under a hold, failed checks after it), escalations it raised, and its runs that
failed on a contract, crashed, or timed out."""

FAILURE_BURDEN = {"contract-violation": "contract_rejections", "invalid-fields": "contract_rejections",
                  "plan-refused": "contract_rejections", "crashed": "crashed", "runner-crashed": "crashed",
                  "runner-timeout": "timed_out"}
"""The burden kind of a run's failure code: the contract refused its result, it crashed, it timed out."""

Z95 = 1.959963984540054
"""The normal quantile of a two-sided 95% interval: the confidence of reputation's lower bound."""


@dataclass
class Tally:
    """What the store counted for one grain (an agent, an agent on a workflow, a model or runner) in a
    window. USD sums only priced runs; ``unpriced_runs`` could not be priced."""

    runs: int = 0
    outcomes: int = 0
    successes: int = 0
    unsettled: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    unpriced_runs: int = 0
    tokens: int = 0
    burden: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BURDEN_KINDS, 0))
    latencies: list[float] = field(default_factory=list)
    kpis: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per linked KPI: how it moved from the reading before to the reading after each success,
    ``{"toward", "away", "unchanged", "unmeasured"}`` (toward or away from the KPI's direction)."""

    def merge(self, other: Tally) -> None:
        """Add ``other``'s counts to this one (a coarser grain gathering finer ones)."""
        for name in ("runs", "outcomes", "successes", "unsettled", "failed", "cost_usd", "unpriced_runs", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, n in other.burden.items():
            self.burden[kind] += n
        self.latencies.extend(other.latencies)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The nearest-rank ``p`` percentile (0 < p <= 100) of ascending values; ``None`` when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def lower_bound(successes: int, outcomes: int) -> float:
    """The Wilson score interval's lower bound (95%) of a success rate: what ``successes`` of
    ``outcomes`` shows at least, so that 3 of 3 (0.44) ranks below 95 of 100 (0.89). 0 without outcomes."""
    if outcomes <= 0:
        return 0.0
    rate = successes / outcomes
    z2 = Z95 * Z95
    centre = rate + z2 / (2 * outcomes)
    spread = Z95 * math.sqrt(rate * (1 - rate) / outcomes + z2 / (4 * outcomes * outcomes))
    return max(0.0, (centre - spread) / (1 + z2 / outcomes))


def figures(tally: Tally, *, min_outcomes: int) -> dict[str, Any]:
    """The figures of one grain, as JSON: ``evidence`` (settled outcomes) and ``enough``; when enough,
    ``success_rate`` (0..1), ``usd_per_success`` (``None``: unknown, some run could not be priced, or no
    success), ``tokens_per_success`` and ``reason`` ``None``; else those are ``None`` and ``reason`` says
    why. Always: the raw counts, the ``burden`` by kind, latency ``p50_seconds`` and ``p95_seconds``, and
    ``kpis``."""
    enough = tally.outcomes >= min_outcomes
    latencies = sorted(tally.latencies)
    out: dict[str, Any] = {
        "evidence": tally.outcomes, "enough": enough, "runs": tally.runs, "successes": tally.successes,
        "failed": tally.failed, "unsettled": tally.unsettled, "success_rate": None, "usd_per_success": None,
        "tokens_per_success": None, "reputation": round(lower_bound(tally.successes, tally.outcomes), 4),
        "cost_usd": round(tally.cost_usd, 6) if tally.unpriced_runs == 0 else None,
        "priced_cost_usd": round(tally.cost_usd, 6), "unpriced_runs": tally.unpriced_runs, "tokens": tally.tokens,
        "burden": dict(tally.burden), "p50_seconds": _round(percentile(latencies, 50)),
        "p95_seconds": _round(percentile(latencies, 95)), "kpis": {k: dict(v) for k, v in sorted(tally.kpis.items())},
        "reason": None,
    }
    if not enough:
        out["reason"] = (f"not enough evidence: {tally.outcomes} settled outcome(s), {min_outcomes} needed "
                         "(fitness.min_outcomes)")
        return out
    out["success_rate"] = round(tally.successes / tally.outcomes, 4)
    if tally.successes:
        if tally.unpriced_runs == 0:
            out["usd_per_success"] = round(tally.cost_usd / tally.successes, 6)
        out["tokens_per_success"] = round(tally.tokens / tally.successes, 1)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def burden_text(burden: dict[str, int]) -> str:
    """The non-zero burden kinds in words: ``1 rework, 2 check failed``; empty when there is none."""
    return ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in burden.items() if n)


def median(values: list[float]) -> float | None:
    """The upper median of ``values`` (the pool's cost per success); ``None`` when empty."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def describe(fig: dict[str, Any]) -> str:
    """One line for humans: ``success 92% (23 of 25 settled), $0.0120 per success, burden: 1 rework`` or
    ``not enough evidence: ...``."""
    burden = burden_text(fig["burden"]) or "no corrections"
    if not fig["enough"]:
        return f"{fig['reason']}; burden: {burden}"
    usd = fig["usd_per_success"]
    if usd is not None:
        cost = f"${usd:.4f} per success"
    elif fig["successes"] and fig["unpriced_runs"]:
        cost = f"cost per success unknown ({fig['unpriced_runs']} run(s) could not be priced)"
    else:
        cost = "no success to price"
    return (f"success {fig['success_rate']:.0%} ({fig['successes']} of {fig['evidence']} settled), {cost}, "
            f"burden: {burden}")
