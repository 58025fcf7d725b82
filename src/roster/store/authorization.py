"""Which authorization decision each public store verb takes: the map a reader (and a test) checks.

Every decision is taken by one function, :meth:`roster.store.company_base.CompanyBase._decide`, which asks
Cedar (:class:`roster.kernel.rights.Rights`); interfaces ask it through :meth:`CompanyBase.decide` and
:meth:`CompanyBase.authorize` (``Session.explain``, ``Session.authorize``, ``Session.company_for``). This
module only *lists* what each verb decides, so that ``tests/test_authorization.py`` can check, for every
public verb, that the list is complete and that calling the verb reaches the decision with those actions: a
verb added without an authorization decision fails that test until it takes one (or is listed here, with
its reason, as one that acts only on its caller's own rows or as a trusted runtime call that takes no
principal).

Interfaces hold a :class:`~roster.store.company.Session`, never the :class:`CompanyStore`: its methods are
the verbs of :data:`VERB_DECISIONS` and :data:`OWN_ROWS` with the actor bound, plus the few of
:data:`SESSION_DECISIONS` and :data:`SESSION_OPEN` (each listed with its decision, or why it takes none).
The whole company handle, which the runtime needs (a dispatcher, a brief's assembler, budgets), is had only
through ``Session.company_for(action, resource)``, after that decision allowed it.
"""

from __future__ import annotations

VERB_DECISIONS: dict[str, tuple[str, ...]] = {
    # tasks
    "create_task": ("read", "create"),
    "get_task": ("read",),
    "list_tasks": ("read",),
    "transition": ("read", "transition"),
    "assign": ("read", "assign"),
    "options": ("read",),
    "history": ("read",),
    "delegate": ("read", "create"),
    "delegate_filed": ("read", "create"),
    "adopt": ("read",),
    "children": ("read",),
    # evidence
    "record_artifact": ("read", "write"),
    "list_artifacts": ("read",),
    "artifact_history": ("read",),
    "artifact": ("read",),
    "artifact_diff": ("read",),
    "record_check": ("read", "write"),
    "edit_fields": ("read", "write"),
    # leases and holds
    "claim": ("read", "claim"),
    "renew": ("read",),
    "release": ("read",),
    "hold": ("read", "claim", "hold"),
    "release_hold": ("read",),
    "handoff": ("read",),
    # the record
    "audit_log": ("read",),
    "verify_audit": ("read",),
    "costs": ("read",),
    "fitness": ("read",),
    "set_stage": ("admin",),
    # administration
    "add_principal": ("admin",),
    "set_status": ("admin",),
    "issue_token": ("admin",),
    "revoke_token": ("admin",),
    "list_tokens": ("admin",),
    "pause": ("admin",),
    "resume": ("admin",),
    # tools and approvals
    "record_tool_call": ("call_tool",),
    "inbox": ("approve",),
    "approve_request": ("approve",),
    "reject_request": ("approve",),
    "get_request": ("approve",),
    # memory
    "remember": ("memory.write",),
    "forget": ("memory.write",),
    "share_memory": ("memory.write",),
    "consolidate_memory": ("memory.write",),
    "import_memory": ("memory.write",),
    "recall": ("memory.read",),
    "list_memory": ("memory.read",),
    "export_memory": ("memory.read",),
    # messages, KPIs, the interfaces' own questions
    "send_message": ("message",),
    "record_kpi": ("kpi.record",),
    "list_runs": ("oversee",),
    "list_requests": ("oversee",),
    "thread": ("oversee",),
    "list_escalations": ("oversee",),
    "resolve_escalation": ("oversee",),
    # goals
    "set_goal": ("goal.set",),
    "move_goal": ("goal.set",),
    "get_goal": ("goal.set",),  # unless the goal is the caller's own or one it set; then oversee if denied
    "list_goals": ("oversee",),
    "presence": ("oversee",),  # without it, the caller's own time only  # without it, the caller's own goals and those it set
    # plans
    "plan": ("plan.edit",),  # then profile.read (the agent itself) when plan.edit (humans, a manager) was denied
    "plan_history": ("plan.edit",),  # the same
    "revise_plan": ("plan.edit",),
    "hold_plan": ("plan.edit",),
    "release_plan": ("plan.edit",),
    # webhooks
    "webhook_deliveries": ("read",),
    "replay_webhooks": ("admin",),
    "authorize": (),  # decides the action it is given (the test asks it for each of ACTIONS)
}
"""Per public verb taking an ``actor``, the Cedar actions (:data:`roster.defaults.ACTIONS`) it decides."""

OWN_ROWS: dict[str, str] = {
    "message_inbox": "the caller's own messages",
    "mark_read": "messages addressed to the caller",
    "list_principals": "the company's directory, open to every active principal of it",
    "get_principal": "one entry of that directory",
    "emit_event": "an event any active principal may emit (agents' event triggers decide what it wakes)",
    "kpi_readings": "readings of the company's KPIs, open to every active principal of it",
    "kpi_summaries": "the same, summarised",
    "stages": "each agent's autonomy stage per workflow, open to every active principal of the company (as "
              "the spec that sets most of them is)",
}
"""Public verbs taking an ``actor`` that take no Cedar decision of their own, and why: each acts on its
caller's own rows, or on the company's directory that every active principal of it may see. The caller
is still resolved to an active principal of this company (tenancy, :meth:`CompanyBase._actor`)."""

INTERFACE_DECISIONS: dict[str, str] = {
    "brief.preview": "roster context TASK --as AGENT, and your own brief over REST and MCP (Session.company_for)",
    "tool.see": "the MCP server's tools/list (Session.explain, per tool set)",
    "profile.read": "the MCP resource roster://agents/{handle} (Session.explain)",
    "admin": "roster up / roster run (Session.company_for), besides the administration verbs",
}
"""Actions decided for an interface before it acts, through the public entry points. Besides these,
``roster status`` takes ``oversee`` (every agent's queue, the leases, the fleet: as :data:`VERB_DECISIONS`
has it for ``list_runs``) and ``roster costs`` takes ``read`` on the company (as ``costs``), both through
``Session.company_for``."""

SESSION_DECISIONS: dict[str, tuple[str, ...]] = {
    "escalate": ("read",),  # the task escalated from, as get_task decides it (from_agent: the caller)
    "company_for": (),  # decides the action it is given (Session.authorize), then hands over the company
}
"""Session methods that are not :class:`CompanyStore` verbs with an actor, and the Cedar actions they
decide for the session's principal."""

SESSION_OPEN: dict[str, str] = {
    "spec": "the company's spec, open to every active principal of it (the token was checked at authentication)",
    "pending_work": "the caller's own work: the tasks its rights and contracts offer it, as the work query "
                    "decides them for the runtime",
    "approval_stats": "request counts per approval edge, company-wide, open to every principal of the company "
                      "as roster approval stats always was",
    "policy_text": "the Cedar policies in force, open to every principal of the company as roster rights "
                   "policies always was",
    "explain": "rights explain: it answers the decision for an action, refusing nothing",
}
"""Session methods beyond the verbs that take no Cedar decision of their own, and why."""
