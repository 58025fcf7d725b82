"""The failure taxonomy: every failure of a run falls in one category, and the category decides what
happens next (BRIEF.md; the seeds' "retries by failure category").

- ``transient`` (a timeout, a crash, a locked database, a lost lease, a task that moved on): retried,
  a bounded number of times, with exponential backoff and jitter.
- ``deterministic`` (a contract violation, invalid fields, malformed output, a non-zero exit): never
  retried unchanged; it goes back to the author with the violation attached.
- ``judgment`` (the agent says it cannot decide, or has low confidence): routed to a peer or for context.
- ``governance`` (a denial by rights or policy): the action stops at once and goes up the escalation
  ladder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from roster.errors import (
    ApprovalPending,
    ContextOverBudget,
    ContractViolation,
    CorruptArtifact,
    Denied,
    InvalidFields,
    PlanHeld,
    PlanRefused,
    LeaseHeld,
    PayloadTooLarge,
    RosterError,
    RunnerError,
    StaleFencingToken,
    StaleVersion,
    StoreBusy,
    StoreUnavailable,
    Unauthenticated,
)


class FailureCategory(StrEnum):
    TRANSIENT = "transient"
    DETERMINISTIC = "deterministic"
    JUDGMENT = "judgment"
    GOVERNANCE = "governance"


@dataclass(frozen=True)
class Failure:
    """What went wrong in a run: the category, a stable code, and the message."""

    category: FailureCategory
    code: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.category is FailureCategory.TRANSIENT


_TRANSIENT = (StoreBusy, StoreUnavailable, StaleFencingToken, StaleVersion, LeaseHeld, PlanHeld)
_DETERMINISTIC = (ContractViolation, InvalidFields, PayloadTooLarge, ContextOverBudget, CorruptArtifact, PlanRefused)
_GOVERNANCE = (Denied, Unauthenticated, ApprovalPending)


def classify(error: BaseException) -> Failure:
    """The :class:`Failure` for an exception raised during a run. Unknown exceptions are transient
    (a bug in a worker may be a flake; the retry bound stops a loop)."""
    message = error.message if isinstance(error, RosterError) else f"{type(error).__name__}: {error}"
    code = error.code if isinstance(error, RosterError) else type(error).__name__
    if isinstance(error, RunnerError):
        return Failure(FailureCategory(error.category), code, message)
    if isinstance(error, _GOVERNANCE):
        return Failure(FailureCategory.GOVERNANCE, code, message)
    if isinstance(error, _DETERMINISTIC):
        return Failure(FailureCategory.DETERMINISTIC, code, message)
    if isinstance(error, _TRANSIENT):
        return Failure(FailureCategory.TRANSIENT, code, message)
    return Failure(FailureCategory.TRANSIENT, code, message)


def backoff_seconds(attempt: int, *, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): ``min(cap, base * 2**(attempt-1))`` seconds,
    with "full jitter" (a uniform draw between half of it and all of it)."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    draw = (rng or random).uniform(0.5, 1.0)
    return delay * draw
