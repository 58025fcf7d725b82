"""The exception tiers every layer raises, and the one place they map to exit codes.

Each error carries a stable ``code`` (a slug used later for RFC 9457 problem types and MCP tool
errors) and the CLI ``exit_code`` documented in ``docs/cli.md``. Interfaces translate errors once, at
their boundary; nothing below them prints or exits.

Tiers:

- :class:`SpecError`, :class:`UsageError`: the caller misused Roster (a bad spec, a bad argument).
- :class:`ContractViolation`, :class:`InvalidFields`, :class:`StaleVersion` (and :class:`ApprovalStale`),
  :class:`PayloadTooLarge`: a write was refused by a rule. The state is unchanged and the refusal is audited.
- :class:`NotFound`: the named task, principal or company does not exist in the caller's company.
- :class:`ApplyRefused`: a spec change would orphan live tasks.
- :class:`StoreBusy`: another process held the database lock for longer than the lock timeout.
- :class:`AuditChainBroken`: ``audit verify`` found an edited, deleted, inserted or reordered event, or
  a chain that disagrees with a signed checkpoint (rewritten or truncated), or a forged checkpoint.
- :class:`AuditStateMismatch`: ``audit verify --state`` found rows that differ from what the chain recorded.
- :class:`Denied`: the principal's rights do not allow the action (audited).
- :class:`Unauthenticated`: a token that is unknown, revoked or expired, or whose principal is not active.
- :class:`ApprovalPending`: the action is on an approval edge; a request now waits for an approver.
- :class:`StaleFencingToken`, :class:`LeaseHeld`: a write from a run that lost its lease, or against a
  task another principal holds.
- :class:`CorruptArtifact`: stored artifact content no longer matches its SHA-256.
- :class:`ContextOverBudget`: the mandatory parts of a brief alone exceed its token budget.
- :class:`InvalidValue`: a value that could not be stored and read back (too deeply nested, a NUL in
  text, a name outside its character set); nothing is stored.
- :class:`TooManyAttempts`: too many failed authentications from one client or against one company.
"""

from __future__ import annotations

from dataclasses import dataclass


class RosterError(Exception):
    """Base of every error Roster raises on purpose."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        """A JSON-ready description: ``{"error": code, "message": str, ...details}``."""
        return {"error": self.code, "message": self.message}


class UsageError(RosterError):
    """A command was called wrongly (missing spec file, bad ``--set`` syntax, unknown principal)."""

    code = "usage"
    exit_code = 2


class InvalidValue(UsageError):
    """A value Roster refuses to store because it could not be stored or read back whole: JSON nested
    deeper than its limit, a NUL character in text, a name outside its character set or length. ``what``
    names the value (``"task fields"``, ``"artifact name"``); nothing was stored."""

    code = "invalid-value"

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        super().__init__(f"{what}: {problem}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "what": self.what}


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec file: where it is (file, 1-based line, dotted key path) and what was expected."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '<top level>'}: {self.message}"


class SpecError(RosterError):
    """The workforce spec is malformed or inconsistent. ``issues`` lists every problem found."""

    code = "invalid-spec"
    exit_code = 3

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"the spec has {len(self.issues)} error(s):\n{lines}")

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "issues": [
                {"file": i.file, "line": i.line, "key": i.key, "message": i.message} for i in self.issues
            ],
        }


class NotFound(RosterError):
    """The named object does not exist in the caller's company (or the caller may not see it)."""

    code = "not-found"
    exit_code = 4


class ContractViolation(RosterError):
    """A transition broke a clause of its contract. The task is unchanged; the attempt is audited.

    ``clause`` is one of: ``transition``, ``from``, ``by``, ``writes``, ``fields``, ``requires.fields``,
    ``requires.artifacts``, ``produces``, ``requires.checks``, ``approval``, ``approval.by`` (deciding a
    request the edge does not name you for), ``approval.rejected`` (asking again for a move an approver
    rejected, with the same writes, while the task has not changed since), ``children`` (open delegated
    children), or ``delegation-cycle`` (an adoption that would make the parent chain loop).
    """

    code = "contract-violation"
    exit_code = 5

    def __init__(self, *, workflow: str, transition: str, clause: str, detail: str, task_id: int | None = None):
        self.workflow = workflow
        self.transition = transition
        self.clause = clause
        self.detail = detail
        self.task_id = task_id
        subject = f"task {task_id}: " if task_id is not None else ""
        super().__init__(f"{subject}transition '{workflow}.{transition}' violates clause '{clause}': {detail}")

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "workflow": self.workflow,
            "transition": self.transition,
            "clause": self.clause,
            "detail": self.detail,
            "task_id": self.task_id,
        }


class InvalidFields(RosterError):
    """Task fields failed the workflow's JSON Schema on a write outside a transition (task creation)."""

    code = "invalid-fields"
    exit_code = 5

    def __init__(self, workflow: str, problems: list[str]) -> None:
        self.workflow = workflow
        self.problems = list(problems)
        super().__init__(f"fields do not match workflow '{workflow}': " + "; ".join(self.problems))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "workflow": self.workflow, "problems": self.problems}


class StaleVersion(RosterError):
    """The write expected a task version that is no longer current (optimistic concurrency)."""

    code = "stale-version"
    exit_code = 6

    def __init__(self, task_id: int, expected: int, actual: int) -> None:
        self.task_id = task_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"task {task_id} is at version {actual}, not {expected}: someone changed it since you read it; "
            "re-read it (roster task show) and try again"
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "task_id": self.task_id, "expected": self.expected, "actual": self.actual}


class ApprovalStale(StaleVersion):
    """An approval request whose task changed after it was asked for: it went ``stale`` and there is
    nothing left to decide. Approving or rejecting it raises this; the requester asks again, against the
    task as it is now, if the move is still needed. Same ``code`` and exit code as :class:`StaleVersion`
    (``expected``: the version the request was made at; ``actual``: the task's version now)."""

    def __init__(self, request_id: int, task_id: int, expected: int, actual: int, why: str) -> None:
        super().__init__(task_id, expected, actual)
        self.request_id = request_id
        self.why = why
        self.message = (f"request {request_id} is stale, so there is nothing to decide: {why}. Approving it would "
                        f"apply a change judged against version {expected} of task {task_id}, which is now at "
                        f"version {actual}. The requester asks again against the task as it is now if the move "
                        f"is still needed (an agent does so on its next run); see 'roster task show {task_id}'")
        self.args = (self.message,)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "request_id": self.request_id, "why": self.why}


class PlanRefused(RosterError):
    """A plan version broke the plan contract (see :mod:`roster.kernel.plans`); the current plan stays.
    ``problems`` are ``(clause, detail)`` pairs; ``clause`` is ``priorities``, ``kpi-goal`` or ``kpi``."""

    code = "plan-refused"
    exit_code = 5

    def __init__(self, agent: str, problems: list[tuple[str, str]]) -> None:
        self.agent = agent
        self.problems = problems
        said = "; ".join(f"clause '{clause}': {detail}" for clause, detail in problems)
        super().__init__(f"the plan for '{agent}' is refused, the current one stays: {said}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "agent": self.agent,
                "problems": [{"clause": c, "detail": d} for c, d in self.problems]}


class PlanHeld(RosterError):
    """Someone else holds the agent's plan to edit it; wait for its release (or the hold to expire)."""

    code = "plan-held"
    exit_code = 15

    def __init__(self, agent: str, holder: str, expires_at: str) -> None:
        self.agent, self.holder, self.expires_at = agent, holder, expires_at
        super().__init__(f"the plan of '{agent}' is held by '{holder}' until {expires_at}; wait for "
                         f"`roster mission release {agent}` or for the hold to expire")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "agent": self.agent, "holder": self.holder, "expires_at": self.expires_at}


class PayloadTooLarge(RosterError):
    """A payload (task fields, artifact content, spec file) is larger than its documented limit, in bytes."""

    code = "payload-too-large"
    exit_code = 10

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes; the limit is {limit} bytes")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "what": self.what, "size": self.size, "limit": self.limit}


class ApplyRefused(RosterError):
    """Applying a spec would orphan live tasks (a removed workflow, state or owner they depend on)."""

    code = "apply-refused"
    exit_code = 7

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        lines = "\n".join(f"  {r}" for r in self.reasons)
        super().__init__(
            "refusing to apply: the change would orphan live tasks:\n"
            f"{lines}\nMove or finish those tasks first, or keep the states they are in."
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "reasons": self.reasons}


class StoreBusy(RosterError):
    """The database stayed locked by another process for longer than the lock timeout (seconds)."""

    code = "store-busy"
    exit_code = 8


class AuditChainBroken(RosterError):
    """The audit chain does not verify. ``seq`` is the first bad sequence number."""

    code = "audit-chain-broken"
    exit_code = 9

    def __init__(self, company: str, seq: int, reason: str) -> None:
        self.company = company
        self.seq = seq
        self.reason = reason
        super().__init__(f"audit chain of company '{company}' is broken at seq {seq}: {reason}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "company": self.company, "seq": self.seq, "reason": self.reason}


class AuditStateMismatch(RosterError):
    """``audit verify --state`` found rows that do not match the chain: ``problems`` are
    ``{"table", "key", "what"}`` (edited, inserted or deleted outside roster)."""

    code = "audit-state-mismatch"
    exit_code = 9

    def __init__(self, company: str, problems: list[dict]) -> None:
        self.company = company
        self.problems = problems
        named = "; ".join(f"{p['table']} {p['key']}: {p['what']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"the state of company '{company}' does not match its audit chain: {named}{more}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "company": self.company, "problems": self.problems}


class Denied(RosterError):
    """The principal's rights do not allow the action (default deny, or a forbid policy). Audited.

    ``policies`` names the forbid policies that decided it; empty means no policy permitted it. The
    message never names another company or lists principals the caller may not see.
    """

    code = "denied"
    exit_code = 11

    def __init__(self, principal: str, action: str, resource: str, explanation: str,
                 policies: tuple[str, ...] = ()) -> None:
        self.principal = principal
        self.action = action
        self.resource = resource
        self.policies = tuple(policies)
        super().__init__(f"'{principal}' may not {action} {resource}: {explanation}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "principal": self.principal, "action": self.action,
                "resource": self.resource, "policies": list(self.policies)}


class Unauthenticated(RosterError):
    """The API token is unknown, malformed, revoked or expired, or its principal is not active."""

    code = "unauthenticated"
    exit_code = 12


class TooManyAttempts(RosterError):
    """Too many failed authentications from one client address or against one company in a window:
    try again after ``retry_after`` seconds (whole seconds, at least 1)."""

    code = "too-many-attempts"
    exit_code = 12

    def __init__(self, scope: str, retry_after: int) -> None:
        self.scope = scope
        self.retry_after = max(1, int(retry_after))
        super().__init__(f"too many failed authentications from this {scope}; retry after "
                         f"{self.retry_after} s with a valid token")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "retry_after": self.retry_after}


class ApprovalPending(RosterError):
    """The action sits on an approval edge: it did not run; an approval request (``request_id``) waits
    in the approvers' inbox. Approving it runs the action, atomically."""

    code = "approval-pending"
    exit_code = 13

    def __init__(self, request_id: int, approvers: list[str], created: bool) -> None:
        self.request_id = request_id
        self.approvers = list(approvers)
        self.created = created
        state = "is waiting" if created else "was already waiting"
        super().__init__(f"this needs an approval by {', '.join(approvers)}: request {request_id} {state} in "
                         "their inbox ('roster inbox'); nothing ran yet")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "request_id": self.request_id, "approvers": self.approvers}


class StaleFencingToken(RosterError):
    """A write carried a fencing token that is no longer the task's current one: its lease expired and
    the task was claimed again (or released). The write is refused and audited; the task is unchanged."""

    code = "stale-fencing-token"
    exit_code = 14

    def __init__(self, task_id: int, presented: int, current: int) -> None:
        self.task_id = task_id
        self.presented = presented
        self.current = current
        super().__init__(f"task {task_id}: fencing token {presented} is stale (current: {current}); this run "
                         "lost its lease, so its writes are refused. Claim the task again to go on.")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "task_id": self.task_id, "presented": self.presented, "current": self.current}


class LeaseHeld(RosterError):
    """Another principal holds a live lease on the task; wait for it to finish or expire."""

    code = "lease-held"
    exit_code = 15

    def __init__(self, task_id: int, holder: str, expires_at: str) -> None:
        self.task_id = task_id
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(f"task {task_id} is leased by '{holder}' until {expires_at}; wait for the lease to be "
                         "released or to expire")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "task_id": self.task_id, "holder": self.holder, "expires_at": self.expires_at}


class LostRace(RosterError):
    """A claim found the task no longer offered to this agent: it moved on, another run leased it, or it
    is held back for the agent (backoff, blocker, its own pending approval). Costs nothing: no run is
    started, nothing is written, and the runtime only counts it."""

    code = "lost-race"
    exit_code = 15

    def __init__(self, task_id: int, agent: str, reason: str) -> None:
        self.task_id = task_id
        self.agent = agent
        self.reason = reason
        super().__init__(f"task {task_id} is no longer offered to '{agent}': {reason}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "task_id": self.task_id, "agent": self.agent, "reason": self.reason}


class StoreUnavailable(RosterError):
    """The database cannot be reached (a dropped connection, a server restarting). Nothing of the
    failed transaction was kept; ``roster up`` waits and goes on."""

    code = "store-unavailable"
    exit_code = 8


class CorruptArtifact(RosterError):
    """An artifact's stored content does not hash to its recorded SHA-256 (or is missing): the blob on
    disk was changed or lost. Nothing is returned; restore the blob from a backup."""

    code = "corrupt-artifact"
    exit_code = 17

    def __init__(self, digest: str, detail: str) -> None:
        self.digest = digest
        super().__init__(f"artifact blob {digest[:12]}... is corrupt: {detail}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "sha256": self.digest}


class ContextOverBudget(RosterError):
    """The mandatory parts of a brief alone need more tokens than the agent's context budget allows.
    Raise the agent's ``context_budget`` or shorten the named part (e.g. the task's fields)."""

    code = "context-over-budget"
    exit_code = 18

    def __init__(self, part: str, tokens: int, budget: int, reserve: int = 0) -> None:
        self.part, self.tokens, self.budget = part, tokens, budget
        room = f"the {budget - reserve} of the budget of {budget} left after {reserve} for the brief's own report" \
            if reserve else f"the budget of {budget}"
        super().__init__(f"the brief's mandatory parts need {tokens} tokens, more than {room}; the largest is "
                         f"'{part}'. Raise the agent's context_budget or shorten '{part}'")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "part": self.part, "tokens": self.tokens, "budget": self.budget}


class RunnerError(RosterError):
    """A runner did not produce a usable result. ``category`` is its failure category (see
    :mod:`roster.kernel.failures`)."""

    code = "runner-error"
    exit_code = 16
    category = "transient"


class RunnerTimeout(RunnerError):
    """The runner did not finish within its timeout (seconds); its whole process group was killed."""

    code = "runner-timeout"


class RunnerCrashed(RunnerError):
    """The runner's process died from a signal, or the callable raised."""

    code = "runner-crashed"


class RunnerExit(RunnerError):
    """A command runner exited non-zero: the same input will fail the same way, so it is not retried."""

    code = "runner-exit"
    category = "deterministic"


class MalformedOutput(RunnerError):
    """The runner's output was not a valid result (not JSON, or not the result's shape)."""

    code = "malformed-output"
    category = "deterministic"
