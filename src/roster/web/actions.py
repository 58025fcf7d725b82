"""The dashboard's forms (POST): each one store verb through the signed-in human's :class:`Session`,
after :func:`~roster.web.signin.acting` checked the form token. Success redirects back (303, so a
reload does not post again); a refusal shows the error page with the REST API's status (403 for a
principal who may not, 404 for what they may not see, 409 for a contract), nothing done.

Everything a form does is audited as that human, ``via: dashboard``.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from roster.api.verbs import Decision, decide
from roster.errors import RosterError, UsageError
from roster.kernel.values import scan_json
from roster.web.render import page, refused
from roster.web.signin import Acting, Viewer

router = APIRouter(include_in_schema=False)
Note = Annotated[str, Form(max_length=4000)]


def _done(request: Request, who: Viewer, act, back: str) -> Response:
    try:
        act()
    except RosterError as exc:
        return refused(request, who, exc)
    return RedirectResponse(back, status_code=303)


# -- approvals and escalations ------------------------------------------------------------------------------


@router.post("/approvals/{request_id}/approve")
def approve(request: Request, who: Acting, request_id: int, note: Note = "") -> Response:
    return _done(request, who, lambda: who.session.approve_request(request_id, note=note), "/inbox")


@router.post("/approvals/{request_id}/reject")
def reject(request: Request, who: Acting, request_id: int, note: Note = "") -> Response:
    def act() -> None:
        if not note.strip():
            raise UsageError("a rejection needs a note saying why: the agent reads it in its next brief")
        who.session.reject_request(request_id, note=note)
    return _done(request, who, act, "/inbox")


@router.post("/approvals/bulk")
def bulk(request: Request, who: Acting, decision: Annotated[str, Form(pattern="^(approve|reject)$")],
         ids: Annotated[list[int], Form()] = [], note: Note = "") -> Response:  # noqa: B006 - FastAPI's form list
    if not ids:
        return refused(request, who, UsageError("tick at least one approval request"))
    if decision == "reject" and not note.strip():
        return refused(request, who, UsageError("a rejection needs a note saying why"))
    results = decide(who.session, [Decision(id=i, decision=decision, note=note) for i in ids[:200]])
    return page(request, "bulk.html", who, title="Decided", results=results)


@router.post("/escalations/{escalation_id}/resolve")
def resolve(request: Request, who: Acting, escalation_id: int, note: Note = "") -> Response:
    def act() -> None:
        if not note.strip():
            raise UsageError("resolving an escalation needs a note saying what was done")
        who.session.resolve_escalation(escalation_id, note=note)
    return _done(request, who, act, "/inbox")


@router.post("/messages")
def reply(request: Request, who: Acting, recipient: Annotated[str, Form(max_length=63)],
          body: Annotated[str, Form(min_length=1, max_length=8000)], task_id: Annotated[int | None, Form()] = None,
          back: Annotated[str, Form()] = "/inbox") -> Response:
    target = back if back.startswith("/") and not back.startswith("//") else "/inbox"
    return _done(request, who, lambda: who.session.send_message(recipient, body, task_id=task_id), target)


# -- tasks: the human side of the hand-off ------------------------------------------------------------------


@router.post("/tasks/{task_id}/move")
def move(request: Request, who: Acting, task_id: int, transition: Annotated[str, Form(max_length=63)],
         version: Annotated[int, Form()], rationale: Note = "") -> Response:
    return _done(request, who, lambda: who.session.transition(task_id, transition, expected_version=version,
                                                              rationale=rationale), f"/tasks/{task_id}")


@router.post("/tasks/{task_id}/hold")
def hold(request: Request, who: Acting, task_id: int, note: Note = "") -> Response:
    return _done(request, who, lambda: who.session.hold(task_id, note=note), f"/tasks/{task_id}")


@router.post("/tasks/{task_id}/edit")
def edit(request: Request, who: Acting, task_id: int, fields: Annotated[str, Form(max_length=200_000)],
         version: Annotated[int, Form()], note: Note = "") -> Response:
    def act() -> None:
        wrong = scan_json(fields.encode())  # too deep, or a NUL escape: refused before parsing
        if wrong:
            raise UsageError(f"the fields cannot be stored: {wrong}")
        try:
            wanted = json.loads(fields)
        except ValueError as exc:
            raise UsageError(f"the fields are not valid JSON: {exc}") from None
        if not isinstance(wanted, dict):
            raise UsageError("the fields must be a JSON object of field -> value")
        current = who.session.get_task(task_id).fields
        writes = {k: v for k, v in wanted.items() if current.get(k) != v}
        writes.update({k: None for k in current if k not in wanted})  # a field removed from the object
        if writes:
            who.session.edit_fields(task_id, writes, note=note, expected_version=version)
    return _done(request, who, act, f"/tasks/{task_id}")


@router.post("/tasks/{task_id}/release")
def release(request: Request, who: Acting, task_id: int, note: Note = "") -> Response:
    return _done(request, who, lambda: who.session.release_hold(task_id, note=note), f"/tasks/{task_id}")


# -- the org chart: pause, resume, the kill switch -----------------------------------------------------------


@router.post("/principals/{handle}/pause")
def pause_principal(request: Request, who: Acting, handle: str, reason: Note = "") -> Response:
    return _done(request, who, lambda: who.session.set_status(handle, "paused", reason=reason or "paused from the "
                                                                "dashboard"), "/org")


@router.post("/principals/{handle}/resume")
def resume_principal(request: Request, who: Acting, handle: str) -> Response:
    return _done(request, who, lambda: who.session.set_status(handle, "active"), "/org")


@router.post("/scopes/pause")
def pause_scope(request: Request, who: Acting, scope: Annotated[str, Form(max_length=200)], reason: Note = "") -> Response:
    return _done(request, who, lambda: who.session.pause(scope, reason=reason or "paused from the dashboard"), "/org")


@router.post("/scopes/resume")
def resume_scope(request: Request, who: Acting, scope: Annotated[str, Form(max_length=200)]) -> Response:
    return _done(request, who, lambda: who.session.resume(scope), "/org")


# -- webhooks -------------------------------------------------------------------------------------------------


@router.post("/webhooks/replay")
def replay(request: Request, who: Acting, ids: Annotated[list[int], Form()] = [],  # noqa: B006 - FastAPI's form list
           failed: Annotated[bool, Form()] = False) -> Response:
    def act() -> None:
        if not ids and not failed:
            raise UsageError("tick the deliveries to send again, or replay every failed one")
        who.session.replay_webhooks(ids[:500] or None, failed=failed)
    return _done(request, who, act, "/webhooks")


# -- audit ---------------------------------------------------------------------------------------------------


@router.post("/audit/verify")
def verify(request: Request, who: Acting) -> Response:
    def act() -> None:
        request.app.state.verifications.start(who.session)
    return _done(request, who, act, "/audit/verify")
