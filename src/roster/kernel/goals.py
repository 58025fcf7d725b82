"""Goals: an agent's objective with a check a program decides, a budget, and a state. Pure: no I/O.

A goal belongs to one agent. Its **check** is never the agent's word:

- a ``command`` that exits 0 when the goal is met (run by the runtime, in the spec's folder, for at most
  ``timeout`` seconds), or
- a ``kpi`` reading compared with a ``target`` (``lint_findings<=5``: the latest reading of KPI
  ``lint_findings`` at most 5).

Its **budget** limits what work toward it may spend, in any of USD, model tokens, runs and wall-clock
seconds; its **spend** counts what was attributed to it so far. Its **state** is one of
:data:`GOAL_STATES`:

- ``active``: the agent works toward it (the runtime wakes the agent for it when it has no task work);
- ``met``: the check passed (closed, with the evidence);
- ``exhausted``: a budget limit was reached, or the deadline passed, before the check passed (closed;
  escalated);
- ``stalled``: ``stall_after`` goal runs in a row changed nothing (a judgment failure; escalated);
- ``paused``: held by a human, or because its agent was paused or retired;
- ``abandoned``: given up by whoever may set it (closed).

Who may move a goal from one state to another is :data:`MOVES`; :func:`move` refuses anything else.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from roster.errors import UsageError

GOAL_STATES = ("active", "met", "exhausted", "stalled", "paused", "abandoned")
CLOSED_STATES = frozenset({"met", "exhausted", "abandoned"})
"""States a goal never leaves."""
DEFAULT_EVERY_SECONDS = 900
"""A goal's cadence when none is given: its agent is woken for it at most every 15 minutes."""
MIN_EVERY_SECONDS = 60
"""The shortest cadence a goal may have, in seconds: a goal never loops tightly."""
DEFAULT_STALL_AFTER = 3
"""Goal runs in a row that changed nothing before a goal goes ``stalled``."""
MAX_OBJECTIVE_CHARS = 2000

Comparison = Literal["<=", ">=", "<", ">", "=="]
_KPI_CHECK = re.compile(r"^\s*([a-z][a-z0-9_-]{0,62})\s*(<=|>=|==|<|>)\s*(\S+)\s*$")

MOVES: dict[str, dict[str, frozenset[str]]] = {
    "pause": {"to": frozenset({"paused"}), "from": frozenset({"active", "stalled"})},
    "resume": {"to": frozenset({"active"}), "from": frozenset({"paused", "stalled"})},
    "abandon": {"to": frozenset({"abandoned"}), "from": frozenset({"active", "paused", "stalled"})},
    "meet": {"to": frozenset({"met"}), "from": frozenset({"active", "paused", "stalled"})},
    "exhaust": {"to": frozenset({"exhausted"}), "from": frozenset({"active"})},
    "stall": {"to": frozenset({"stalled"}), "from": frozenset({"active"})},
}
"""Each move of a goal's state: the states it may start from and the one it reaches. ``pause``,
``resume`` and ``abandon`` are asked for (by a human, or the agent that may set the goal); ``meet``,
``exhaust`` and ``stall`` are decided by the runtime from the check, the spend and the goal runs."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GoalCheck(_Model):
    """What decides that the goal is met: exactly one of ``command`` or ``kpi`` (with ``op`` and
    ``target``). ``timeout`` (seconds) bounds a command."""

    command: str | None = Field(default=None, min_length=1, max_length=4000)
    kpi: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    op: Comparison | None = None
    target: float | None = None
    timeout: float = Field(default=300.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_kind(self) -> GoalCheck:
        if (self.command is None) == (self.kpi is None):
            raise ValueError("a goal's check is exactly one of a command (exit 0: met) or a KPI target "
                             "(e.g. lint_findings<=5)")
        if self.kpi is not None and (self.op is None or self.target is None or not math.isfinite(self.target)):
            raise ValueError("a KPI check needs a comparison and a finite target, e.g. lint_findings<=5")
        if self.command is not None and (self.op is not None or self.target is not None):
            raise ValueError("a command check takes no comparison or target: it is met when the command exits 0")
        return self

    @classmethod
    def parse_kpi(cls, text: str, *, timeout: float = 300.0) -> GoalCheck:
        """``NAME<=VALUE`` (or ``>=``, ``<``, ``>``, ``==``) as a KPI check. Raises :class:`UsageError`."""
        found = _KPI_CHECK.match(text)
        if found is None:
            raise UsageError(f"a KPI check is NAME<=VALUE (or >=, <, >, ==), e.g. lint_findings<=5; not '{text[:80]}'")
        try:
            target = float(found.group(3))
        except ValueError:
            raise UsageError(f"the target of '{text[:80]}' is not a number") from None
        if not math.isfinite(target):
            raise UsageError(f"the target of '{text[:80]}' is not a finite number")
        return cls(kpi=found.group(1), op=found.group(2), target=target, timeout=timeout)

    def describe(self) -> str:
        """One line for a person: ```make check` exits 0`` or ``lint_findings <= 5``."""
        if self.command is not None:
            return f"`{self.command}` exits 0"
        return f"{self.kpi} {self.op} {self.target:g}"

    def closer(self, before: float, after: float) -> bool:
        """Whether a KPI reading moved from ``before`` to ``after`` toward the check's target: progress."""
        assert self.op is not None and self.target is not None
        if self.op in ("<=", "<"):
            return after < before
        if self.op in (">=", ">"):
            return after > before
        return abs(after - self.target) < abs(before - self.target)

    def kpi_evidence(self, value: float | None, measured_at: str | None) -> tuple[bool, dict[str, Any]]:
        """Whether a reading ``value`` (``None``: no reading yet) at ``measured_at`` meets the check, and the
        evidence kept of it: ``kind``, ``kpi``, ``op``, ``target``, ``value``, ``measured_at``."""
        evidence = {"kind": "kpi", "kpi": self.kpi, "op": self.op, "target": self.target, "value": value,
                    "measured_at": measured_at}
        return (value is not None and self.kpi_met(value)), evidence

    def kpi_met(self, value: float) -> bool:
        """Whether a reading ``value`` of the check's KPI meets its target."""
        assert self.op is not None and self.target is not None
        return {"<=": value <= self.target, ">=": value >= self.target, "<": value < self.target,
                ">": value > self.target, "==": value == self.target}[self.op]


class GoalBudget(_Model):
    """Limits on what work toward a goal may spend; any of them, at least one. ``usd`` in US dollars,
    ``tokens`` model tokens in and out, ``runs`` goal runs, ``seconds`` wall-clock seconds of those runs."""

    usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tokens: int | None = Field(default=None, gt=0)
    runs: int | None = Field(default=None, gt=0)
    seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_limit(self) -> GoalBudget:
        if all(v is None for v in (self.usd, self.tokens, self.runs, self.seconds)):
            raise ValueError("a goal needs a budget: at least one of usd, tokens, runs or seconds; without one "
                             "nothing stops an agent that loops on it")
        return self


class GoalSpend(_Model):
    """What work toward a goal has spent: USD over priced runs (``unpriced_runs`` could not be priced),
    model tokens, goal runs and their wall-clock seconds."""

    usd: float = 0.0
    tokens: int = 0
    runs: int = 0
    seconds: float = 0.0
    unpriced_runs: int = 0

    def usd_text(self) -> str:
        """The USD spent, for a person: ``$0.2500``, with ``(+N unpriced run(s))`` when some could not be
        priced (their cost is unknown, never counted as 0)."""
        return f"${self.usd:.4f}" + (f" (+{self.unpriced_runs} unpriced run(s))" if self.unpriced_runs else "")

    def plus(self, *, usd: float | None, tokens: int, seconds: float, runs: int = 1) -> GoalSpend:
        """This spend with one more run's (``usd=None``: the run could not be priced)."""
        return GoalSpend(usd=self.usd + (usd or 0.0), tokens=self.tokens + tokens, runs=self.runs + runs,
                         seconds=self.seconds + seconds, unpriced_runs=self.unpriced_runs + (usd is None))


def exhausted_by(budget: GoalBudget, spend: GoalSpend) -> str | None:
    """The first limit of ``budget`` that ``spend`` has reached, as a sentence, or None."""
    for unit, limit, spent in (("usd", budget.usd, spend.usd), ("tokens", budget.tokens, spend.tokens),
                               ("runs", budget.runs, spend.runs), ("seconds", budget.seconds, spend.seconds)):
        if limit is not None and spent >= limit:
            return f"{unit} budget spent: {spent:g} of {limit:g}"
    return None


def move(state: str, verb: str) -> str:
    """The state ``verb`` (a key of :data:`MOVES`) takes a goal in ``state`` to. Raises
    :class:`UsageError` naming the states it may be taken from."""
    rule = MOVES.get(verb)
    if rule is None:
        raise UsageError(f"no goal move '{verb}'; moves: {', '.join(MOVES)}")
    if state not in rule["from"]:
        allowed = ", ".join(sorted(rule["from"]))
        raise UsageError(f"a goal that is {state} cannot be {_PAST[verb]}; only one that is {allowed}")
    return next(iter(rule["to"]))


_PAST = {"pause": "paused", "resume": "resumed", "abandon": "abandoned", "meet": "met", "exhaust": "exhausted",
         "stall": "stalled"}
