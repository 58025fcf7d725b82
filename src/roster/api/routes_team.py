"""The team: principals, your own memory pad, messages, and the approval inbox."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from roster.api import verbs
from roster.api.app import Caller, Id
from roster.api.models import (
    DecisionIn,
    DecisionsIn,
    DecisionsOut,
    MemoryIn,
    MessageIn,
    MessagePage,
    ReadIn,
    ReadOut,
)
from roster.api.pages import cursor_id, page
from roster.store import MemoryEntry, Message, Principal
from roster.store.approvals import ApprovalRequest

router = APIRouter()


@router.get("/principals/self", response_model=Principal, tags=["principals"], summary="Who the token is")
def whoami(caller: Caller) -> Any:
    return caller.principal


@router.get("/principals", response_model=list[Principal], tags=["principals"],
            summary="The company's humans and agents")
def principals(caller: Caller) -> Any:
    return caller.list_principals()


@router.post("/memory", response_model=MemoryEntry, status_code=201, tags=["memory"],
             summary="Add an entry to your own pad (or a pad you may write)")
def remember(caller: Caller, body: MemoryIn) -> Any:
    return caller.remember(body.text, kind=body.kind, pad=body.pad, confidence=body.confidence,
                           provenance=body.provenance, expires_in=body.expires_in)


@router.get("/memory", response_model=list[MemoryEntry], tags=["memory"],
            summary="Search (q) or list your pad, or pads shared with you")
def recall(caller: Caller, q: Annotated[str, Query(max_length=1000)] = "",
           pad: Annotated[list[str] | None, Query()] = None,
           limit: Annotated[int, Query(ge=1, le=100)] = 10) -> Any:
    return caller.recall(q, pads=pad or None, limit=limit)


@router.post("/messages", response_model=Message, status_code=201, tags=["messages"],
             summary="Send a message to a principal of your company")
def send(caller: Caller, body: MessageIn) -> Any:
    return verbs.send(caller, body)


@router.post("/messages/read", response_model=ReadOut, tags=["messages"],
             summary="Mark messages addressed to you as read")
def mark_read(caller: Caller, body: ReadIn) -> Any:
    return {"marked": caller.mark_read(body.ids)}


@router.get("/messages", response_model=MessagePage, tags=["messages"], summary="Your inbox, newest first")
def inbox(caller: Caller, unread: bool = False, cursor: str | None = None,
          limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    found = caller.message_inbox(unread_only=unread, limit=limit + 1, before_id=cursor_id(cursor) or None)
    return page(found, limit, lambda message: message.id)


@router.get("/threads/{thread_id}", response_model=list[Message], tags=["messages"],
            summary="A thread you are in, oldest first")
def thread(caller: Caller, thread_id: Id) -> Any:
    return caller.thread(thread_id)


@router.get("/approvals/inbox", response_model=list[ApprovalRequest], tags=["approvals"],
            summary="Pending requests you may decide")
def approval_inbox(caller: Caller) -> Any:
    return caller.inbox()


@router.post("/approvals/decisions", response_model=DecisionsOut, tags=["approvals"],
             summary="Approve or reject many requests, each on its own (one refusal undoes nothing else)")
def decide(caller: Caller, body: DecisionsIn) -> Any:
    return {"results": verbs.decide(caller, body.decisions)}


@router.post("/approvals/{request_id}/approve", response_model=ApprovalRequest, tags=["approvals"], summary="Approve: the action runs now")
def approve(caller: Caller, request_id: Id, body: DecisionIn) -> Any:
    return caller.approve_request(request_id, note=body.note)


@router.post("/approvals/{request_id}/reject", response_model=ApprovalRequest, tags=["approvals"], summary="Reject with a note the requester sees")
def reject(caller: Caller, request_id: Id, body: DecisionIn) -> Any:
    return caller.reject_request(request_id, note=body.note)
