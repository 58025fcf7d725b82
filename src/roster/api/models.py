"""Request and response bodies of the REST API (pydantic models, so the OpenAPI document is exact).

Responses mirror the store's records field for field; times are ISO 8601 UTC strings.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSONObject = dict[str, Any]
MAX_ID = 2**53 - 1
"""Largest id a request body may name (the same bound as ``roster.api.app.MAX_ID``)."""


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PrincipalOut(_Record):
    company: str
    handle: str
    kind: str
    display_name: str
    status: str
    roles: list[str]
    reports_to: str | None
    source: str
    created_at: str


class TaskOut(_Record):
    company: str
    id: int
    workflow: str
    state: str
    title: str
    fields: JSONObject
    owner: str | None
    priority: int
    parent_id: int | None
    idempotency_key: str | None
    version: int
    created_by: str
    created_at: str
    updated_at: str
    fencing_token: int
    lease_holder: str | None
    lease_run: str | None
    lease_expires_at: str | None
    packet: JSONObject | None


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(min_length=1, max_length=63)
    title: str = Field(min_length=1, max_length=500)
    fields: JSONObject = {}
    owner: str | None = None
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    parent_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transition: str = Field(min_length=1, max_length=63)
    expected_version: int = Field(ge=1, le=2**53 - 1)
    writes: JSONObject = {}
    rationale: str = Field(default="", max_length=4000)
    fencing_token: int | None = Field(default=None, ge=0, le=2**53 - 1)


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=60.0, gt=0, le=3600.0)


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=8 * 3600.0, gt=0, le=7 * 86400.0)
    note: str = Field(default="", max_length=4000)


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=4000)


class LeaseOut(_Record):
    task_id: int
    holder: str
    run_id: str
    fencing_token: int
    expires_at: str


class ArtifactOut(_Record):
    id: int
    task_id: int
    kind: str
    name: str
    sha256: str
    size: int
    reason: str
    created_by: str
    created_at: str
    version: int
    parent_id: int | None
    run_id: str | None


class DiffOut(BaseModel):
    task_id: int
    name: str
    diff: str


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000)
    kind: str = "belief"
    confidence: float = Field(default=0.8, ge=0, le=1)
    pad: str | None = None
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400.0)
    provenance: JSONObject = {}


class MemoryOut(_Record):
    id: int
    pad: str
    kind: str
    text: str
    confidence: float
    provenance: JSONObject
    expires_at: str | None
    created_by: str
    created_at: str
    score: float | None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=127)
    body: str = Field(min_length=1, max_length=16_000)
    task_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    thread_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class MessageOut(_Record):
    id: int
    thread_id: int
    sender: str
    recipient: str
    task_id: int | None
    body: str
    created_at: str
    read_at: str | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class ApprovalOut(_Record):
    id: int
    company: str
    kind: str
    task_id: int | None
    workflow: str | None
    transition: str | None
    tool: str | None
    requested_by: str
    task_version: int | None
    payload: JSONObject
    evidence: JSONObject
    rationale: str
    status: str
    decided_by: str | None
    note: str
    created_at: str
    expires_at: str
    decided_at: str | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=4000)


class RunOut(_Record):
    id: str
    agent: str
    trigger: str
    task_id: int | None
    fencing_token: int | None
    attempt: int
    started_at: str
    ended_at: str | None
    outcome: str
    transition: str | None
    failure_category: str | None
    failure_code: str | None
    failure_message: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    wall_seconds: float | None


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class SpendOut(BaseModel):
    name: str
    runs: int
    successes: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    cost_per_success_usd: float | None


class CostsOut(BaseModel):
    agents: list[SpendOut]
    portfolios: list[SpendOut]


class KpiOut(BaseModel):
    name: str
    description: str
    unit: str
    direction: str
    target: float | None


class AuditEventOut(_Record):
    seq: int
    ts: str
    company: str
    principal: str
    action: str
    subject: str
    data: Any
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


class VerifyOut(BaseModel):
    events: int
    intact: bool
    first_bad_seq: int | None
    reason: str | None
