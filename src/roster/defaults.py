"""Defaults and closed vocabularies that the layers and the command line's help share.

This module imports nothing of Roster's and nothing heavy, so ``roster --help`` can print them without
loading the store, the rights engine or the runtime. The modules that use them import them from here
(``roster.store.leases.DEFAULT_LEASE_SECONDS`` is this module's), so each is defined once.
"""

from __future__ import annotations

from datetime import timedelta

SPEC_NAME = "roster.yaml"
"""The spec's file name, looked for in the working folder and the folders above it."""

ACTIONS = ("read", "create", "write", "assign", "transition", "approve", "call_tool", "admin", "claim", "hold",
           "memory.read", "memory.write", "message", "kpi.record", "brief.preview", "profile.read", "tool.see", "oversee",
           "goal.set", "plan.edit")
"""Every Cedar action an authorization decision is taken for (see :mod:`roster.kernel.rights` for the
policies and resources of each; ``roster rights explain`` takes any of them)."""
MEMORY_KINDS = ("belief", "decision", "constraint", "preference", "lesson")
"""The kinds of memory entries (see :mod:`roster.store.memory`)."""
DEFAULT_TOKEN_LIFETIME = timedelta(days=30)
"""How long an API token lives unless its issuer says otherwise."""
MAX_TOKEN_LIFETIME = timedelta(days=366)
"""The longest an API token may live."""
DEFAULT_LEASE_SECONDS = 60.0
"""Seconds a run's lease on its task lasts before it must be renewed (renewed every third of it)."""
DEFAULT_MAX_ATTEMPTS = 3
"""Failed attempts of one agent at one task before a blocker is persisted and the task escalates."""

MAX_ID = 2**31 - 1
"""Largest id (of a task, approval request, message or thread) and fencing token that anything may name:
ids are 32-bit ``integer`` columns on PostgreSQL, so past it no id exists, and PostgreSQL could not even
compare one (it answered 500). Interfaces refuse a larger one as invalid input (422)."""
