"""The company handle, and the session through which an authenticated principal acts.

:class:`CompanyStore` is every verb on one company's rows (tasks from :mod:`roster.store.tasks`;
principals, tokens and the kill switch from :mod:`roster.store.principals`; artifacts, memory, messages,
delegation and hand-off from their modules). Each verb takes the actor
explicitly. :class:`Session` is what interfaces hold after authenticating a token: the same verbs with
the actor fixed to the token's principal, so nothing reached through a session can act as anyone else.
"""

from __future__ import annotations

from functools import wraps
from typing import Any

from roster.errors import Unauthenticated
from roster.store import audit
from roster.store.approvals import ApprovalVerbs
from roster.store.company_base import Principal
from roster.store.costs import CostVerbs
from roster.store.escalations import EscalationVerbs
from roster.store.fleet import FleetVerbs
from roster.store.handoff import HandoffVerbs
from roster.store.kpis import KpiVerbs
from roster.store.memory import MemoryVerbs
from roster.store.messages import MessageVerbs
from roster.store.principals import (
    PrincipalVerbs,
    authenticate_txn,
    parse_token,
    principal_row_txn,
    stamp_token_txn,
)
from roster.store.store import Store
from roster.store.triggers import TriggerVerbs


class CompanyStore(KpiVerbs, HandoffVerbs, MemoryVerbs, MessageVerbs, ApprovalVerbs, FleetVerbs, EscalationVerbs,
                   TriggerVerbs, CostVerbs, PrincipalVerbs):
    """All verbs on one company's rows. Obtain with :meth:`Store.company`."""


class Session:
    """An authenticated principal's handle on its own company. Obtain with :meth:`Store.session`.

    Exposes the verbs listed in :attr:`VERBS`, with ``actor`` bound to :attr:`principal`; passing
    ``actor`` yourself is a :class:`TypeError`.
    """

    VERBS = (
        "create_task", "get_task", "list_tasks", "transition", "assign", "options", "history", "record_artifact",
        "list_artifacts", "record_check", "audit_log", "verify_audit", "list_principals",
        "get_principal", "add_principal", "set_status", "issue_token", "revoke_token", "list_tokens", "pause",
        "resume", "record_tool_call", "claim", "renew", "release", "inbox", "approve_request", "reject_request",
        "get_request", "list_requests", "emit_event", "list_escalations", "resolve_escalation",
        "artifact_history", "artifact", "artifact_diff", "remember", "recall", "list_memory", "forget",
        "share_memory", "consolidate_memory", "export_memory", "import_memory", "send_message", "message_inbox",
        "thread", "mark_read", "delegate", "delegate_filed", "adopt", "children", "hold", "release_hold",
        "edit_fields", "handoff",
        "list_runs", "costs", "record_kpi", "kpi_readings", "kpi_summaries", "authorize",
    )

    def __init__(self, company: CompanyStore, principal: Principal) -> None:
        self.company = company
        self.principal = principal

    def __getattr__(self, name: str) -> Any:
        if name not in Session.VERBS:
            raise AttributeError(f"Session has no verb '{name}'; verbs: {', '.join(Session.VERBS)}")
        verb = getattr(self.company, name)
        principal = self.principal

        @wraps(verb)
        def bound(*args: Any, **kwargs: Any) -> Any:
            if "actor" in kwargs:
                raise TypeError(f"Session.{name}() acts as {principal.id}; it takes no 'actor' argument")
            return verb(*args, actor=principal, **kwargs)

        return bound

    def explain(self, action: str, resource: str, transition: str = "", principal: str | None = None):  # noqa: ANN201
        """``rights explain`` for ``principal`` (default: yourself)."""
        return self.company.explain(principal or self.principal.handle, action, resource, transition)


def authenticate(store: Store, token: str, *, audit_refusal: bool = True) -> Session:
    """Check ``token`` and return its principal's :class:`Session`.

    Raises :class:`Unauthenticated` for a malformed, unknown, revoked or expired token, or one whose
    principal is paused or retired; each refusal with a known company is audited as ``auth.rejected``
    (unless ``audit_refusal`` is false: the HTTP interface's rate limiter, once a company's failures are
    over their limit, so failing on purpose cannot flood its chain).
    """
    company, token_id, secret = parse_token(token)
    with store.read() as conn:  # a read: the last-used stamp is written at most once a minute
        head = audit.read_head(conn, company)
        now = store.now()
        handle, reason, stale = authenticate_txn(conn, company, token_id, secret, now)  # same work, known or not
        if head is None:
            raise Unauthenticated("unknown token")
        if not reason:
            principal = principal_row_txn(conn, company, handle)
    if not reason and stale:
        with store.write() as conn:
            stamp_token_txn(conn, company, token_id, now)
    if reason and audit_refusal:
        with store.write() as conn:
            head = audit.read_head(conn, company)
            audit.append(conn, head, ts=store.now(), principal=handle or "unknown", action="auth.rejected",
                         subject=f"token:{token_id}", data={"reason": reason})
            audit.save_head(conn, head)
    if reason:
        raise Unauthenticated(f"token refused: {reason}")
    return Session(store.shared_company(company), principal)
