"""Tasks and their artifacts: list, create (idempotent), show, transition, claim, hold/release, context,
checks, delegation, escalation, and artifact upload, versions, diff and download."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from roster.api import verbs
from roster.api.app import Caller, Id
from roster.api.models import (
    CheckIn,
    CheckRecorded,
    ClaimIn,
    DelegationIn,
    DiffOut,
    EscalationIn,
    HoldIn,
    ReleaseIn,
    TaskCreate,
    TaskPage,
    TransitionIn,
)
from roster.api.pages import MAX_PAGE, cursor_id, page
from roster.api.problems import documented
from roster.defaults import MAX_ID
from roster.runtime.context import ContextAssembler, Wakeup
from roster.runtime.runners import CheckOut, TaskOut
from roster.store import ArtifactRecord, Task
from roster.store.escalations import Escalation
from roster.store.leases import Lease

router = APIRouter(tags=["tasks"])


@router.get("/tasks", response_model=TaskPage, summary="List tasks the caller may read, oldest first")
def list_tasks(caller: Caller, workflow: str | None = None, state: str | None = None, owner: str | None = None,
               cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> Any:
    found = caller.list_tasks(workflow=workflow, state=state, owner=owner, after_id=cursor_id(cursor),
                              limit=limit + 1)
    return page(found, limit, lambda task: task.id)


@router.post("/tasks", response_model=Task, status_code=201,
             responses={200: {"model": Task, "description": "Existing task for a reused Idempotency-Key"}},
             summary="Create a task in its workflow's initial state")
def create_task(caller: Caller, body: TaskCreate, response: Response,
                idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> Any:
    task, created = caller.create_task(workflow=body.workflow, title=body.title, fields=body.fields,
                                       owner=body.owner, priority=body.priority, parent_id=body.parent_id,
                                       idempotency_key=idempotency_key)
    if not created:
        response.status_code = 200
    return task


@router.get("/tasks/{task_id}", response_model=Task, summary="One task")
def get_task(caller: Caller, task_id: Id) -> Any:
    return caller.get_task(task_id)


@router.post("/tasks/{task_id}/transitions", response_model=Task,
             responses={202: documented("An approval edge: an approval request now waits for an approver")},
             summary="Take a transition under its contract")
def transition(caller: Caller, task_id: Id, body: TransitionIn) -> Any:
    return caller.transition(task_id, body.transition, expected_version=body.expected_version, writes=body.writes,
                             rationale=body.rationale, fencing_token=body.fencing_token)


@router.post("/tasks/{task_id}/claim", response_model=Lease,
             summary="Claim the task with a lease (seconds) and a new fencing token, to work on it")
def claim(caller: Caller, task_id: Id, body: ClaimIn) -> Any:
    return caller.claim(task_id, run_id=f"api:{uuid.uuid4().hex[:16]}", ttl=body.seconds)


@router.post("/tasks/{task_id}/hold", response_model=Lease,
             summary="Hold the task (take its lease as yourself) so agents wait")
def hold(caller: Caller, task_id: Id, body: HoldIn) -> Any:
    return caller.hold(task_id, ttl=body.seconds, note=body.note)


@router.post("/tasks/{task_id}/release", status_code=204,
             summary="Release a task you hold, with a note for whoever works on it next")
def release(caller: Caller, task_id: Id, body: ReleaseIn) -> Response:
    caller.release_hold(task_id, note=body.note)
    return Response(status_code=204)


@router.get("/tasks/{task_id}/context", summary="The brief you would get for this task now (your own view)")
def context(caller: Caller, task_id: Id) -> dict[str, Any]:
    task = caller.get_task(task_id)
    me = caller.principal.handle
    company = caller.company_for("brief.preview", f"principal:{me}")  # your own brief (brief:own; humans any)
    return ContextAssembler(company).brief(me, task, Wakeup("preview", task.fencing_token or None)).data


@router.post("/tasks/{task_id}/checks", response_model=CheckRecorded, status_code=201,
             summary="Record the result of a named check (requires.checks counts the latest per name)")
def record_check(caller: Caller, task_id: Id, body: CheckIn) -> Any:
    check = CheckOut.model_validate(body.model_dump(include=set(CheckOut.model_fields)))
    return verbs.record_check(caller, task_id, check, body.fencing_token)


@router.post("/tasks/{task_id}/children", response_model=Task, status_code=201,
             responses={200: {"model": Task, "description": "The existing child for a reused key"}},
             summary="Delegate a subproblem as a child task carrying a delegation packet")
def delegate(caller: Caller, task_id: Id, body: DelegationIn, response: Response) -> Any:
    task, created = verbs.file_task(caller, TaskOut.model_validate(body.model_dump()), parent_id=task_id)
    if not created:
        response.status_code = 200
    return task


@router.post("/tasks/{task_id}/escalations", response_model=Escalation, status_code=201,
             summary="Say you cannot finish the task: the next step up the ladder (a peer, else a human)")
def escalate(caller: Caller, task_id: Id, body: EscalationIn) -> Any:
    return verbs.escalate(caller, task_id, body.reason, body.category)


@router.get("/tasks/{task_id}/artifacts", response_model=list[ArtifactRecord],
            summary="The latest version of each artifact (every version with all_versions=true)")
def list_artifacts(caller: Caller, task_id: Id, all_versions: bool = False) -> Any:
    return caller.list_artifacts(task_id, all_versions=all_versions)


@router.put("/tasks/{task_id}/artifacts/{name}", response_model=ArtifactRecord,
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
            summary="Save the request body as the next version of an artifact")
async def put_artifact(caller: Caller, request: Request, task_id: Id, name: str,
                       kind: Annotated[str | None, Query(max_length=63)] = None,
                       reason: Annotated[str, Query(max_length=4000)] = "",
                       fencing_token: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None) -> Any:
    # Read at most one byte past the spec's limit: the store then refuses (and audits) the upload, so
    # an oversized body never sits in memory whole.
    limit = caller.spec().limits.artifact_bytes
    content = bytearray()
    async for chunk in request.stream():
        content += chunk
        if len(content) > limit:
            break
    return caller.record_artifact(task_id, kind or name, bytes(content), name=name, reason=reason,
                                  fencing_token=fencing_token)


@router.get("/tasks/{task_id}/artifacts/{name}/versions", response_model=list[ArtifactRecord],
            summary="Every version of an artifact, oldest first")
def artifact_versions(caller: Caller, task_id: Id, name: str) -> Any:
    return caller.artifact_history(task_id, name)


@router.get("/tasks/{task_id}/artifacts/{name}/content", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}}},
            summary="Download one version (default: the latest), verified against its SHA-256")
def artifact_content(caller: Caller, task_id: Id, name: str,
                     version: Annotated[int | None, Query(ge=1, le=2**31)] = None) -> Response:
    record, content = caller.artifact(task_id, name, version)
    return Response(content, media_type="application/octet-stream",
                    headers={"ETag": f'"{record.sha256}"', "X-Roster-Version": str(record.version)})


@router.get("/tasks/{task_id}/artifacts/{name}/diff", response_model=DiffOut,
            summary="Unified diff between two versions (default: the latest and its parent)")
def artifact_diff(caller: Caller, task_id: Id, name: str,
                  from_version: Annotated[int | None, Query(alias="from", ge=1, le=2**31)] = None,
                  to_version: Annotated[int | None, Query(alias="to", ge=1, le=2**31)] = None) -> Any:
    return {"task_id": task_id, "name": name,
            "diff": caller.artifact_diff(task_id, name, from_version, to_version)}


