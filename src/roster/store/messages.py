"""Messages between principals: direct messages and threads, tied to a task or standing alone.

A message goes from one principal to another of the *same* company; an address in another company is
refused and the refusal audited. An agent may message whom its spec ``rights.message`` names (handles,
roles, ``human``, ``agent`` or ``*``; default ``human``); humans may message anyone in their company.
A reply names its ``thread_id`` (the id of the thread's first message) and must come from one of the
thread's participants. Every message is audited. The addressee wakes through the runtime's message
trigger: an agent with unread messages gets a run whose brief carries them (see runtime/dispatcher.py),
and its result's ``messages`` are the answers, in the same thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, or_, select, update

from roster.errors import Denied, NotFound, PayloadTooLarge, RosterError, UsageError
from roster.kernel.contracts import Actor
from roster.kernel.rights import DEFAULT_MESSAGE_GRANT, Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.prepared import Prepared
from roster.store.schema import messages, tasks

MAX_MESSAGE_CHARS = 16_000
_UNREAD_RECIPIENTS = Prepared(select(messages.c.recipient, func.count()).where(
    messages.c.company_id == bindparam("company"), messages.c.read_at.is_(None)).group_by(messages.c.recipient))
_UNREAD = Prepared(select(messages).where(messages.c.company_id == bindparam("company"),
                                          messages.c.recipient == bindparam("recipient"),
                                          messages.c.read_at.is_(None))
                   .order_by(messages.c.id).limit(bindparam("limit")))


@dataclass(frozen=True)
class Message:
    id: int
    thread_id: int
    sender: str
    recipient: str
    task_id: int | None
    body: str
    created_at: str
    read_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _message(row: Any) -> Message:
    return Message(row.id, row.thread_id, row.sender, row.recipient, row.task_id, row.body, row.created_at,
                   row.read_at)


class MessageVerbs(CompanyBase):
    """Send, read and answer messages (mixed into ``CompanyStore``)."""

    def _may_message(self, cache: CompanyCache, who: Actor, recipient: str) -> None:
        """Raise :class:`Denied` unless the ``message`` decision on the recipient allows ``who`` (Cedar:
        ``humans``, or the agent's ``agent:<h>:message:<name>`` grants from ``rights.message``)."""
        assert cache.spec is not None
        agent = cache.spec.agents.get(who.handle)
        grant = agent.rights.message if agent and agent.rights.message is not None else DEFAULT_MESSAGE_GRANT
        self._authorize(cache, who, "message", Resource("principal", recipient),
                        why=f"rights.message grants only {', '.join(grant) or 'nobody'}")

    def send_message(self, recipient: str, body: str, *, actor: ActorRef, task_id: int | None = None,
                     thread_id: int | None = None) -> Message:
        """Send ``body`` to ``recipient`` (a handle, or ``company/handle``). Raises :class:`Denied` for a
        principal of another company or one the sender may not message, :class:`NotFound` (recipient,
        task or thread), :class:`UsageError` (empty body; a reply from outside the thread),
        :class:`PayloadTooLarge` (over 16,000 characters). Refusals are audited."""
        request = {"to": recipient, "task_id": task_id, "thread_id": thread_id}
        try:
            if not body.strip():
                raise UsageError("a message needs a body")
            if len(body) > MAX_MESSAGE_CHARS:
                raise PayloadTooLarge("message", len(body), MAX_MESSAGE_CHARS)
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                company, _, handle = recipient.rpartition("/")
                if company and company != self.company:
                    raise Denied(who.handle, "message", f"principal '{recipient}'",
                                 "messages never leave the sender's company")
                if handle not in cache.principals:
                    raise NotFound(f"no principal '{handle}' in company '{self.company}'")
                if cache.principals[handle].status == "retired":
                    raise UsageError(f"'{handle}' is retired and reads no messages; write to whoever took over")
                self._may_message(cache, who, handle)
                if task_id is not None:
                    row = conn.execute(select(tasks.c.workflow).where(tasks.c.company_id == self.company,
                                                                      tasks.c.id == task_id)).first()
                    if row is None:
                        raise NotFound(f"no task {task_id} in company '{self.company}'")
                    self._may_read(cache, who, row.workflow)
                if thread_id is not None:
                    self._check_thread(conn, thread_id, who.handle)
                now = self.store.now()
                values = {"company_id": self.company, "thread_id": thread_id or 0, "sender": who.handle,
                          "recipient": handle, "task_id": task_id, "body": body, "created_at": now}
                message_id = conn.execute(insert(messages), values).inserted_primary_key[0]
                if thread_id is None:
                    conn.execute(update(messages).where(messages.c.company_id == self.company,
                                                        messages.c.id == message_id), {"thread_id": message_id})
                audit.append(conn, head, ts=now, principal=who.handle, action="message.send",
                             subject=f"principal:{handle}",
                             data={"id": message_id, "thread_id": thread_id or message_id, "task_id": task_id,
                                   "chars": len(body)})
                audit.save_head(conn, head)
        except RosterError as exc:
            self._audit_rejection(actor, "message.send", f"principal:{recipient}", exc, request)
            raise
        return Message(message_id, thread_id or message_id, who.handle, handle, task_id, body, now, None)

    def _check_thread(self, conn: Connection, thread_id: int, handle: str) -> None:
        first = conn.execute(select(messages).where(messages.c.company_id == self.company,
                                                    messages.c.id == thread_id)).first()
        if first is None or first.thread_id != thread_id:
            raise NotFound(f"no thread {thread_id} in company '{self.company}'")
        participants = set(conn.scalars(select(messages.c.sender).where(
            messages.c.company_id == self.company, messages.c.thread_id == thread_id)))
        participants |= set(conn.scalars(select(messages.c.recipient).where(
            messages.c.company_id == self.company, messages.c.thread_id == thread_id)))
        if handle not in participants:
            raise UsageError(f"'{handle}' is not in thread {thread_id}; start a new thread instead")

    def message_inbox(self, *, actor: ActorRef, unread_only: bool = False, limit: int = 50,
                      before_id: int | None = None) -> list[Message]:
        """Messages to the actor, newest first (at most ``limit``; ``before_id``: the cursor, ids below it)."""
        with self._reading(actor, "message.read", f"principal:{self._handle(actor)}") as (conn, _cache, who):
            assert who is not None
            query = select(messages).where(messages.c.company_id == self.company,
                                           messages.c.recipient == who.handle)
            if unread_only:
                query = query.where(messages.c.read_at.is_(None))
            if before_id is not None:
                query = query.where(messages.c.id < before_id)
            return [_message(r) for r in conn.execute(query.order_by(messages.c.id.desc()).limit(limit))]

    def thread(self, thread_id: int, *, actor: ActorRef | None) -> list[Message]:
        """Every message of a thread, oldest first. Only its participants and humans may read it.
        Raises :class:`NotFound` (also for a thread the actor is not in: existence does not leak)."""
        with self._reading(actor, "message.read", f"thread:{thread_id}") as (conn, cache, who):
            rows = [_message(r) for r in conn.execute(select(messages).where(
                messages.c.company_id == self.company, messages.c.thread_id == thread_id).order_by(messages.c.id))]
            oversees = who is None or self._decide(cache, who.handle, "oversee",
                                                   Resource("company", self.company)).allowed
        if not rows or (not oversees and who.handle not in {m.sender for m in rows} | {m.recipient for m in rows}):
            raise NotFound(f"no thread {thread_id} in company '{self.company}'")
        return rows

    def unread_messages(self, recipients: list[str], *, limit: int = 20) -> dict[str, list[Message]]:
        """Unread messages per recipient, oldest first, at most ``limit`` each (the runtime's message
        trigger: one grouped query, then one per recipient that has any)."""
        if not recipients:
            return {}
        wanted = set(recipients)
        found: dict[str, list[Message]] = {}
        with self.store.read() as conn:
            # Every recipient with unread mail (few; the unread index), filtered here: an IN list of
            # thousands of idle agents cost more to build than the query did to run.
            counts = _UNREAD_RECIPIENTS.all(conn, {"company": self.company})
            for recipient, _count in [row for row in counts if row[0] in wanted]:
                found[recipient] = [_message(r) for r in conn.execute(select(messages).where(
                    messages.c.company_id == self.company, messages.c.recipient == recipient,
                    messages.c.read_at.is_(None)).order_by(messages.c.id).limit(limit))]
        return found

    def unread_txn(self, conn: Connection, recipient: str, limit: int = 20) -> list[Message]:
        """Unread messages to ``recipient``, oldest first, at most ``limit`` (a trusted read: a run's brief
        shows them whatever task the run is on, so a busy agent still reads its mail)."""
        params = {"company": self.company, "recipient": recipient, "limit": limit}
        return [_message(r) for r in _UNREAD.all(conn, params)]

    def mark_read(self, message_ids: list[int], *, actor: ActorRef) -> int:
        """Mark messages addressed to the actor as read. Returns how many changed."""
        if not message_ids:
            return 0
        handle = self._handle(actor)
        with self.store.write() as conn:
            return self.mark_read_txn(conn, message_ids, handle)

    def mark_read_txn(self, conn: Connection, message_ids: list[int], recipient: str) -> int:
        """:meth:`mark_read` for ``recipient`` inside ``conn``'s transaction (a run's end in its transition's)."""
        return conn.execute(update(messages).where(
            messages.c.company_id == self.company, messages.c.id.in_(message_ids),
            messages.c.recipient == recipient, or_(messages.c.read_at.is_(None))),
            {"read_at": self.store.now()}).rowcount
