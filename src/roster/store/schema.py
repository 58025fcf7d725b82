"""The tables, in portable SQLAlchemy Core. Every row carries ``company_id`` and every query filters on it.

Timestamps are ISO 8601 UTC strings with microseconds (``2026-11-21T05:25:45.123456Z``), stored as text
so that the audit hash sees exactly what is stored, on SQLite and PostgreSQL alike. JSON documents are
stored as text for the same reason. Migrations (``store/migrations``) must produce exactly this schema;
``tests/test_store.py`` checks that they do.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = String(32)
HANDLE = String(63)

companies = Table(
    "companies",
    metadata,
    Column("id", HANDLE, primary_key=True),
    Column("display_name", Text, nullable=False, default=""),
    Column("spec_revision", Integer, nullable=False),
    Column("task_seq", Integer, nullable=False, default=0),
    Column("audit_seq", Integer, nullable=False, default=0),
    Column("audit_head", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    # Bumped whenever anything rights decisions depend on changes (spec, principal status, kill switch),
    # so every process knows its cached decisions are stale.
    Column("rights_revision", Integer, nullable=False, server_default="0"),
)

spec_revisions = Table(
    "spec_revisions",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("spec_hash", String(64), nullable=False),
    Column("spec_json", Text, nullable=False),
    Column("applied_by", Text, nullable=False),
    Column("applied_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

principals = Table(
    "principals",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("handle", HANDLE, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("roles", Text, nullable=False),
    Column("reports_to", HANDLE, nullable=True),
    Column("created_at", TS, nullable=False),
    # 'spec' (declared in roster.yaml; retired when removed from it) or 'cli' (added by hand)
    Column("source", String(8), nullable=False, server_default="spec"),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("id", String(16), primary_key=True),
    Column("principal", HANDLE, nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("name", Text, nullable=False),
    Column("created_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("last_used_at", TS, nullable=True),
    Column("revoked_at", TS, nullable=True),
    ForeignKeyConstraint(["company_id", "principal"], ["principals.company_id", "principals.handle"]),
)

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    # A human's browser session on the dashboard (kind 'session', its secret in an HttpOnly cookie) or a
    # one-time sign-in link printed by `roster dashboard` (kind 'link', spent at first use: used_at) (0021).
    Column("company_id", HANDLE, primary_key=True),
    Column("id", String(16), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("principal", HANDLE, nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("used_at", TS, nullable=True),
    Column("revoked_at", TS, nullable=True),
    ForeignKeyConstraint(["company_id", "principal"], ["principals.company_id", "principals.handle"]),
)

paused_scopes = Table(
    "paused_scopes",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("scope", String(127), primary_key=True),  # '*' for the whole company, or 'workspace/portfolio'

    Column("paused_by", HANDLE, nullable=False),
    Column("paused_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

tasks = Table(
    "tasks",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("workflow", HANDLE, nullable=False),
    Column("state", HANDLE, nullable=False),
    Column("title", Text, nullable=False),
    Column("fields", Text, nullable=False),
    Column("owner", HANDLE, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("parent_id", Integer, nullable=True),
    # A delegated child's packet (subproblem, context, tried, desired output, success condition or
    # blocking threshold), as JSON text; NULL for a task that was not delegated.
    Column("packet", Text, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    # The lease: who holds the task until when, for which run, and the fencing token of that claim.
    # The token goes up by one on every claim and never down, so a stale holder's writes are recognised.
    Column("fencing_token", Integer, nullable=False, server_default="0"),
    Column("lease_holder", HANDLE, nullable=True),
    Column("lease_run", String(64), nullable=True),
    Column("lease_expires_at", TS, nullable=True),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    UniqueConstraint("company_id", "idempotency_key"),
    Index(None, "company_id", "parent_id"),  # a parent's delegated children
    # Task lists by workflow and state, and the dispatcher's work query: per (workflow, state), most
    # urgent first, a page at a time. (It replaced a plain (company, workflow, state) index.)
    Index("ix_tasks_work_order", "company_id", "workflow", "state", text("priority DESC"), "id"),
)

artifacts = Table(
    "artifacts",
    metadata,
    # One row per artifact *version*. An artifact is named on its task (``name``); each new content under
    # that name is the next ``version``, whose ``parent_id`` is the version it replaced.
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("kind", HANDLE, nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("parent_id", Integer, nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id", "task_id"], ["tasks.company_id", "tasks.id"]),
    Index(None, "company_id", "task_id", "name", "version"),
)

check_results = Table(
    "check_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("name", HANDLE, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Column("recorded_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id", "task_id"], ["tasks.company_id", "tasks.id"]),
    Index(None, "company_id", "task_id"),
)

approval_requests = Table(
    "approval_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("kind", String(16), nullable=False),  # 'transition' or 'tool'
    Column("task_id", Integer, nullable=True),
    Column("workflow", HANDLE, nullable=True),
    Column("transition", HANDLE, nullable=True),
    Column("tool", HANDLE, nullable=True),
    Column("requested_by", HANDLE, nullable=False),
    Column("task_version", Integer, nullable=True),
    Column("payload", Text, nullable=False),  # JSON: the writes of a transition, the arguments of a tool call
    Column("evidence", Text, nullable=False),  # JSON: what the approver is shown
    Column("rationale", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending, approved, rejected, expired, stale, used
    Column("decided_by", HANDLE, nullable=True),
    Column("note", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("decided_at", TS, nullable=True),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "status"),
    Index(None, "company_id", "task_id"),  # a task's earlier requests: the inbox's earlier rejections (0023)
)

runs = Table(
    "runs",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("id", String(32), primary_key=True),
    Column("agent", HANDLE, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("task_id", Integer, nullable=True),
    Column("fencing_token", Integer, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS, nullable=True),
    Column("outcome", String(16), nullable=False),  # running, succeeded, failed, abandoned
    Column("transition", HANDLE, nullable=True),
    Column("failure_category", String(16), nullable=True),
    Column("failure_code", String(64), nullable=True),
    Column("failure_message", Text, nullable=True),
    Column("model", Text, nullable=True),
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("cost_usd", Float, nullable=True, server_default="0"),  # NULL: the run could not be priced (0013)
    Column("wall_seconds", Float, nullable=True),
    Column("dispatcher_id", String(32), nullable=True),  # the roster up process that ran it (dispatchers)
    Column("goal_id", Integer, nullable=True),  # the goal the run worked toward (0017): its spend is the goal's
    Column("reflection", Boolean, nullable=False, server_default="0"),  # a reflection run (0018)
    # Fitness (0019): the approval request a run's transition opened (outcome 'waiting'), and when its
    # transition was first corrected within the settle window (see corrections): NULL, it stuck so far.
    Column("approval_id", Integer, nullable=True),
    Column("corrected_at", TS, nullable=True),
    # A shadow run (0020): what it proposed (JSON: transition, writes; never applied) and whether that
    # matched what happened on the task (NULL: not compared yet).
    Column("proposal", Text, nullable=True),
    Column("agreed", Boolean, nullable=True),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "agent"),
    Index(None, "company_id", "task_id"),
    Index(None, "company_id", "outcome", "agent"),  # runs in flight: per agent at claim, the sweep, status
    Index(None, "company_id", "started_at"),  # a window of runs: fitness, costs since, the reflection's period
    Index(None, "company_id", "ended_at"),  # runs overlapping a window: running (NULL) or ended in it (0023)
)

stages = Table(
    "stages",
    metadata,
    # An agent's autonomy stage on a workflow ('*': every workflow) set after the spec (0020): by a human
    # (roster stage --set; it sticks until new evidence crosses a criterion) or by the criteria ('system').
    # Without a row the spec's `stage` holds. Changing one moves the company's rights revision.
    Column("company_id", HANDLE, primary_key=True),
    Column("agent", HANDLE, primary_key=True),
    Column("workflow", HANDLE, primary_key=True),
    Column("stage", String(16), nullable=False),
    Column("set_by", HANDLE, nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False, server_default="{}"),
    Column("set_at", TS, nullable=False),
    Column("breaches", Integer, nullable=False, server_default="0"),  # breaches while in shadow: retirement
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

corrections = Table(
    "corrections",
    metadata,
    # One row per event that corrected an agent's transition within the settle window (0019): the task
    # came back to the state the transition left (rework), its approval request was rejected (rejected), a
    # human edited under a hold what it wrote (reverted), or a check failed on its result (check_failed).
    # Derived from audited actions in their own transactions; the correction burden of fitness counts them.
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("agent", HANDLE, nullable=False),
    Column("workflow", HANDLE, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("by", HANDLE, nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "at"),
    Index(None, "company_id", "run_id"),
)

dispatchers = Table(
    "dispatchers",
    metadata,
    # One row per roster up process (a dispatcher) serving a company: it heartbeats while it lives, so
    # the runs of one that stopped heartbeating are known to have crashed.
    Column("company_id", HANDLE, primary_key=True),
    Column("id", String(32), primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("agents", Text, nullable=True),  # JSON list of the handles it serves; NULL: every agent
    Column("max_runs", Integer, nullable=False),
    Column("lease_seconds", Float, nullable=False),
    Column("started_at", TS, nullable=False),
    Column("heartbeat_at", TS, nullable=False),
    Column("stopped_at", TS, nullable=True),
    Column("runs_in_flight", Integer, nullable=False, server_default="0"),
    Column("runs_started", Integer, nullable=False, server_default="0"),
    Column("lost_races", Integer, nullable=False, server_default="0"),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

runtime_leases = Table(
    "runtime_leases",
    metadata,
    # Named leases between dispatchers, so that work every process could do is done by one: the
    # runtime's periodic jobs ("leader") and each agent's triggers ("agent:<handle>").
    Column("company_id", HANDLE, primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("holder", String(32), nullable=False),
    Column("expires_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

attempts = Table(
    "attempts",
    metadata,
    # One row per (task, agent) that has failed: how often, when it may try again, and whether it stopped.
    Column("company_id", HANDLE, primary_key=True),
    Column("task_id", Integer, primary_key=True, autoincrement=False),
    Column("agent", HANDLE, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("next_at", TS, nullable=False),
    Column("last_category", String(16), nullable=False),
    Column("last_message", Text, nullable=False),
    Column("blocked_reason", Text, nullable=True),  # set: a persisted blocker; the agent stops trying
    # JSON: what the failed attempt tried (transition, writes) and what of it was saved before it failed
    Column("last_attempt", Text, nullable=False, server_default="{}"),
    ForeignKeyConstraint(["company_id", "task_id"], ["tasks.company_id", "tasks.id"]),
)

goals = Table(
    "goals",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("id", Integer, primary_key=True, autoincrement=False),  # numbered per company
    Column("agent", HANDLE, nullable=False),
    Column("objective", Text, nullable=False),
    Column("check_spec", Text, nullable=False),  # JSON: roster.kernel.goals.GoalCheck
    Column("budget", Text, nullable=False),  # JSON: roster.kernel.goals.GoalBudget
    Column("every_seconds", Integer, nullable=False),
    Column("stall_after", Integer, nullable=False),
    Column("deadline_at", TS, nullable=True),
    Column("state", String(16), nullable=False),  # roster.kernel.goals.GOAL_STATES
    Column("reason", Text, nullable=False, server_default=""),  # why it reached its state
    Column("spent_usd", Float, nullable=False, server_default="0"),
    Column("spent_tokens", Integer, nullable=False, server_default="0"),
    Column("spent_runs", Integer, nullable=False, server_default="0"),
    Column("spent_seconds", Float, nullable=False, server_default="0"),
    Column("unpriced_runs", Integer, nullable=False, server_default="0"),
    Column("idle_runs", Integer, nullable=False, server_default="0"),  # goal runs in a row that changed nothing
    Column("due_at", TS, nullable=True),  # when its agent may next be woken for it (set with the goal)
    Column("last_check", Text, nullable=True),  # JSON: the evidence of the last check
    Column("checked_at", TS, nullable=True),
    Column("created_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("version", Integer, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "agent", "state"),
    Index(None, "company_id", "state", "due_at"),  # the dispatcher's query for due goals
)

plans = Table(
    "plans",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("agent", HANDLE, primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),  # 1, 2, ... per agent
    Column("plan", Text, nullable=False),  # JSON: roster.kernel.plans.Plan
    Column("reason", Text, nullable=False, server_default=""),
    Column("author", HANDLE, nullable=False),  # the agent (a reflection run) or a human (an edit)
    Column("run_id", String(32), nullable=True),  # the reflection run that wrote it
    Column("created_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

goal_tasks = Table(
    "goal_tasks",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("task_id", Integer, primary_key=True, autoincrement=False),  # a task filed by a goal run (0018)
    Column("goal_id", Integer, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

plan_holds = Table(
    "plan_holds",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("agent", HANDLE, primary_key=True),
    Column("holder", HANDLE, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("held_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

escalations = Table(
    "escalations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("task_id", Integer, nullable=True),  # None: a goal's escalation (0017)
    Column("goal_id", Integer, nullable=True),  # the goal that was exhausted or stalled (0017)
    Column("from_agent", HANDLE, nullable=False),
    Column("step", String(8), nullable=False),  # peer or human
    Column("to", HANDLE, nullable=False),  # the peer's handle, or 'human'
    Column("category", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open, resolved
    Column("created_at", TS, nullable=False),
    Column("resolved_by", HANDLE, nullable=True),
    Column("resolved_at", TS, nullable=True),
    Column("note", Text, nullable=False, server_default=""),
    ForeignKeyConstraint(["company_id", "task_id"], ["tasks.company_id", "tasks.id"]),
    Index(None, "company_id", "status"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("name", HANDLE, nullable=False),
    Column("data", Text, nullable=False),
    Column("emitted_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "name"),
)

trigger_state = Table(
    "trigger_state",
    metadata,
    # What each trigger of each agent last did, so a restart neither loses nor repeats a wake-up.
    Column("company_id", HANDLE, primary_key=True),
    Column("agent", HANDLE, primary_key=True),
    Column("trigger", String(255), primary_key=True),
    Column("last_fired_at", TS, nullable=True),
    Column("last_event_id", Integer, nullable=False, server_default="0"),
    Column("holding", Boolean, nullable=False, server_default="0"),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("company_id", HANDLE, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", TS, nullable=False),
    Column("principal", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # The rows the event produced, as canonical JSON [[table, key, sha256 or null], ...] (see
    # roster.kernel.audit.row_hash); part of the event's hash when set. NULL: the event names no row.
    Column("state", Text, nullable=True),
    # A task's latest events, newest first, without sorting its whole history.
    Index(None, "company_id", "subject", "seq"),
    # One principal's or action's newest events in seq order, without walking the chain (0023).
    Index(None, "company_id", "principal", "seq"),
    Index(None, "company_id", "action", "seq"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    # A signed chain head (roster.kernel.checkpoints): the key that signed it, the head hash at ``seq``,
    # when, and the Ed25519 signature (base64). The private key is never in the database.
    Column("company_id", HANDLE, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("key_id", String(64), primary_key=True),
    Column("head", String(64), nullable=False),
    Column("ts", TS, nullable=False),
    Column("signature", Text, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

memory_entries = Table(
    "memory_entries",
    metadata,
    # One entry of a memory pad. ``pad`` is an agent's handle (its private pad) or ``team:<workspace>/<portfolio>``.
    # On SQLite an FTS5 table per company, ``memory_fts_<company>_index`` (rowid = id; see store/memory.py,
    # migration 0015), indexes ``text``; PostgreSQL a GIN index on ``to_tsvector('english', text)``.
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("pad", String(127), nullable=False),
    Column("kind", String(16), nullable=False),  # belief, decision, constraint, preference, lesson
    Column("text", Text, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("provenance", Text, nullable=False),  # JSON: {"run": ..., "task": ..., "event": ..., "received_from": ...}
    Column("expires_at", TS, nullable=True),
    Column("created_by", HANDLE, nullable=False),
    Column("created_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "pad", "id"),
)

memory_shares = Table(
    "memory_shares",
    metadata,
    # ``grantee`` may read ``pad`` (an agent's private pad), until revoked.
    Column("company_id", HANDLE, primary_key=True),
    Column("pad", String(127), primary_key=True),
    Column("grantee", HANDLE, primary_key=True),
    Column("granted_by", HANDLE, nullable=False),
    Column("granted_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

messages = Table(
    "messages",
    metadata,
    # A direct message. ``thread_id`` is the id of the thread's first message (itself for a new thread).
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("thread_id", Integer, nullable=False),
    Column("sender", HANDLE, nullable=False),
    Column("recipient", HANDLE, nullable=False),
    Column("task_id", Integer, nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("read_at", TS, nullable=True),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "recipient", "id"),
    Index(None, "company_id", "thread_id", "id"),
    Index(None, "company_id", "read_at", "recipient"),  # unread mail per cycle, however much was read
)

task_views = Table(
    "task_views",
    metadata,
    # What a principal last saw of a task (at the end of its last run, or when it released a hold): the
    # audit seq, the task's version and fields, and the artifact versions (name -> artifact id), so the
    # next brief can show what others changed since (the hand-off diff).
    Column("company_id", HANDLE, primary_key=True),
    Column("task_id", Integer, primary_key=True),
    Column("principal", HANDLE, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("fields", Text, nullable=False),
    Column("artifacts", Text, nullable=False),
    Column("seen_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id", "task_id"], ["tasks.company_id", "tasks.id"]),
)

kpi_readings = Table(
    "kpi_readings",
    metadata,
    # One measurement of a KPI the spec defines, with its time (readings are never changed).
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("kpi", HANDLE, nullable=False),
    Column("value", Float, nullable=False),
    Column("measured_at", TS, nullable=False),
    Column("recorded_by", HANDLE, nullable=False),
    Column("source", Text, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    Index(None, "company_id", "kpi", "id"),
)

webhook_cursors = Table(
    "webhook_cursors",
    metadata,
    # How far along the company's audit chain each webhook of the spec has been followed: events after
    # ``seq`` are still to be enqueued for it (0022). Moved in the transaction that enqueues them.
    Column("company_id", HANDLE, primary_key=True),
    Column("hook", HANDLE, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("updated_at", TS, nullable=False),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    # One audit event (``seq``) to one webhook: its body as sent (``payload``, JSON text, signed byte for
    # byte), and how its delivery went: ``pending`` (due at ``next_attempt_at``), ``delivered`` or ``failed``;
    # the last answer's HTTP status and the last error (0022).
    Column("id", Integer, primary_key=True),
    Column("company_id", HANDLE, nullable=False),
    Column("hook", HANDLE, nullable=False),
    Column("event", String(63), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created_at", TS, nullable=False),
    Column("delivered_at", TS, nullable=True),
    ForeignKeyConstraint(["company_id"], ["companies.id"]),
    UniqueConstraint("company_id", "hook", "seq"),  # an event is enqueued once per hook, whoever follows
    Index(None, "company_id", "status", "next_attempt_at"),  # the worker's query: pending and due
)
