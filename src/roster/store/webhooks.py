"""Webhook deliveries: the events humans should hear about, followed from the audit chain, and the
delivery log.

Every event a webhook sends (an approval requested, an escalation that reached a human, a budget warning
or hard stop, a task held or released, a goal met or exhausted) is already an audit event, written in the
transaction that caused it. :meth:`WebhookVerbs.enqueue_webhooks` follows each company's chain by ``seq``
from a cursor per hook (``webhook_cursors``) and, in ONE write transaction, inserts a delivery per (hook,
event) and moves the cursors: after a crash at any point, every event is enqueued once, none twice (a
unique key on (company, hook, seq) backs this up). A hook new to the spec follows the chain from the
``spec.apply`` of the revision that added it.

The runtime's worker (``roster/runtime/webhooks.py``) takes the due deliveries
(:meth:`~WebhookVerbs.claim_webhook_deliveries`, a conditional update so one attempt is made by one
process), posts them and records each answer (:meth:`~WebhookVerbs.record_webhook_attempt`). Humans read the
log (``read`` on the company) and re-queue deliveries (``admin``, audited as ``webhook.replay``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from roster.errors import Denied, NotFound, UsageError
from roster.kernel.rights import Resource
from roster.kernel.spec import CompanySpec
from roster.kernel.webhooks import EVENT_OF_ACTION, payload
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.schema import audit_events, spec_revisions, webhook_cursors, webhook_deliveries
from roster.store.store import format_ts

STATUSES = ("pending", "delivered", "failed")
ENQUEUE_PAGE = 500
"""Audit events read per enqueue: a backlog is worked through a page per round."""
CLAIM_SECONDS = 60.0
"""How long a claimed attempt is kept from other workers: longer than one attempt's timeout."""
MAX_REPLAY = 1000
"""Deliveries re-queued by one ``replay --failed`` at most."""
_ACTIONS = tuple(EVENT_OF_ACTION)


@dataclass(frozen=True)
class WebhookDelivery:
    """One event to one hook: ``status`` ``pending`` (next try at ``next_attempt_at``), ``delivered`` or
    ``failed``; ``last_status`` the last HTTP answer (``None`` before any, or when none came), ``last_error``
    why the last attempt failed. ``payload`` is the body, exactly as signed and sent."""

    id: int
    hook: str
    event: str
    seq: int
    payload: str
    status: str
    attempts: int
    next_attempt_at: str
    last_status: int | None
    last_error: str
    created_at: str
    delivered_at: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the payload parsed."""
        return {**self.__dict__, "payload": json.loads(self.payload)}


def _delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(row.id, row.hook, row.event, row.seq, row.payload, row.status, row.attempts,
                           row.next_attempt_at, row.last_status, row.last_error, row.created_at, row.delivered_at)


def _hooks_of(spec_json: str) -> set[str]:
    return set(json.loads(spec_json).get("webhooks") or {})


class WebhookVerbs(CompanyBase):
    """Follow the record into webhook deliveries, and keep their log (mixed into ``CompanyStore``)."""

    _webhook_floors_at: int | None = None
    """The spec revision for which the cursors were last held to where each hook was (re)added."""

    # -- the runtime's (trusted: no actor) -------------------------------------------------------------

    def webhook_backlog(self, spec: CompanySpec) -> bool:
        """Whether the chain holds events after some hook's cursor (a read; the worker enqueues only then).
        A hook with no cursor yet counts as behind."""
        if not spec.webhooks:
            return False
        with self.store.read() as conn:
            cursors = {r.hook: r.seq for r in conn.execute(select(webhook_cursors.c.hook, webhook_cursors.c.seq)
                                                           .where(webhook_cursors.c.company_id == self.company))}
            if set(spec.webhooks) - set(cursors) or set(cursors) - set(spec.webhooks):
                return True
            lowest = min(cursors.values())
            return conn.scalar(select(audit_events.c.seq).where(
                audit_events.c.company_id == self.company, audit_events.c.seq > lowest,
                audit_events.c.action.in_(_ACTIONS)).limit(1)) is not None

    def enqueue_webhooks(self, *, limit: int = ENQUEUE_PAGE) -> int:
        """Enqueue, for each hook of the current spec, the events it subscribes to that the chain recorded
        after its cursor (at most ``limit`` audit events per call), and move the cursors, in one
        transaction. Returns how many deliveries were enqueued. Cursors of hooks gone from the spec are
        dropped (a hook added again starts afresh)."""
        with self.store.write() as conn:
            cache = self.current_txn(conn)
            spec, revision = cache.spec, cache.revision[0]
            assert spec is not None
            if not spec.webhooks:
                conn.execute(delete(webhook_cursors).where(webhook_cursors.c.company_id == self.company))
                return 0
            now = self.store.now()
            cursors = {r.hook: r.seq for r in conn.execute(
                select(webhook_cursors.c.hook, webhook_cursors.c.seq)
                .where(webhook_cursors.c.company_id == self.company).with_for_update())}
            gone = set(cursors) - set(spec.webhooks)
            if gone:
                conn.execute(delete(webhook_cursors).where(webhook_cursors.c.company_id == self.company,
                                                           webhook_cursors.c.hook.in_(sorted(gone))))
            for hook in sorted(set(spec.webhooks) - set(cursors)):
                cursors[hook] = self._first_seq_txn(conn, hook)
                conn.execute(insert(webhook_cursors), {"company_id": self.company, "hook": hook,
                                                       "seq": cursors[hook], "updated_at": now})
            if self._webhook_floors_at != revision:  # a hook removed and added again starts afresh too
                for hook in sorted(set(spec.webhooks) & set(cursors)):
                    cursors[hook] = max(cursors[hook], self._first_seq_txn(conn, hook))
            mine = {hook: cursors[hook] for hook in spec.webhooks}
            lowest = min(mine.values())
            head = int(conn.scalar(select(func.coalesce(func.max(audit_events.c.seq), 0)).where(
                audit_events.c.company_id == self.company)) or 0)
            rows = list(conn.execute(
                select(audit_events.c.seq, audit_events.c.ts, audit_events.c.principal, audit_events.c.action,
                       audit_events.c.subject, audit_events.c.data)
                .where(audit_events.c.company_id == self.company, audit_events.c.seq > lowest,
                       audit_events.c.seq <= head, audit_events.c.action.in_(_ACTIONS))
                .order_by(audit_events.c.seq).limit(limit)))
            upto = rows[-1].seq if len(rows) == limit else head
            deliveries = []
            for row in rows:
                event = EVENT_OF_ACTION[row.action]
                data = json.loads(row.data) if row.data else {}
                for hook, after in sorted(mine.items()):
                    webhook = spec.webhooks[hook]
                    if row.seq <= after or event not in webhook.events:
                        continue
                    deliveries.append({
                        "company_id": self.company, "hook": hook, "event": event, "seq": row.seq,
                        "payload": payload(event, webhook.format, company=self.company, seq=row.seq, ts=row.ts,
                                           action=row.action, principal=row.principal, subject=row.subject,
                                           data=data),
                        "status": "pending", "attempts": 0, "next_attempt_at": now, "last_status": None,
                        "last_error": "", "created_at": now, "delivered_at": None})
            if deliveries:
                conn.execute(insert(webhook_deliveries), deliveries)
            for hook, after in mine.items():
                conn.execute(update(webhook_cursors).where(webhook_cursors.c.company_id == self.company,
                                                           webhook_cursors.c.hook == hook),
                             {"seq": max(upto, after), "updated_at": now})
        self._webhook_floors_at = revision  # once committed
        return len(deliveries)

    def _first_seq_txn(self, conn: Connection, hook: str) -> int:
        """Where a hook new to the cursors starts following: the ``spec.apply`` event of the oldest revision
        of the unbroken run of latest revisions that define it (events before it was configured are not
        sent); the chain's head if that event cannot be found."""
        added = None
        for row in conn.execute(select(spec_revisions.c.revision, spec_revisions.c.spec_json).where(
                spec_revisions.c.company_id == self.company).order_by(spec_revisions.c.revision.desc())):
            if hook not in _hooks_of(row.spec_json):
                break
            added = row.revision
        for row in conn.execute(select(audit_events.c.seq, audit_events.c.data).where(
                audit_events.c.company_id == self.company, audit_events.c.action == "spec.apply")
                .order_by(audit_events.c.seq.desc())):
            if added is not None and json.loads(row.data).get("revision") == added:
                return int(row.seq)
        return int(conn.scalar(select(func.coalesce(func.max(audit_events.c.seq), 0)).where(
            audit_events.c.company_id == self.company)) or 0)

    def webhooks_due(self) -> bool:
        """Whether a pending delivery is due now (a read; the worker claims only then)."""
        with self.store.read() as conn:
            return conn.scalar(select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.company_id == self.company, webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= self.store.now()).limit(1)) is not None

    def claim_webhook_deliveries(self, *, limit: int = 20, hold_seconds: float = CLAIM_SECONDS) -> list[WebhookDelivery]:
        """Take up to ``limit`` due pending deliveries, oldest due first, for one attempt each: their
        ``next_attempt_at`` moves ``hold_seconds`` ahead (so no other worker tries them meanwhile, and a
        worker killed mid-attempt leaves them due again then). A delivery another worker claimed first is
        skipped."""
        claimed = []
        with self.store.write() as conn:
            moment = self.store.clock()
            now, until = format_ts(moment), format_ts(moment + timedelta(seconds=hold_seconds))
            rows = list(conn.execute(select(webhook_deliveries).where(
                webhook_deliveries.c.company_id == self.company, webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now)
                .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id).limit(limit)))
            for row in rows:
                taken = conn.execute(update(webhook_deliveries).where(
                    webhook_deliveries.c.id == row.id, webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.next_attempt_at == row.next_attempt_at), {"next_attempt_at": until})
                if taken.rowcount == 1:
                    claimed.append(_delivery(row))
        return claimed

    def record_webhook_attempt(self, delivery_id: int, *, outcome: str, http_status: int | None = None,
                               error: str = "", retry_in: float | None = None) -> WebhookDelivery:
        """Record one attempt of a claimed delivery: ``outcome`` ``delivered``, ``failed`` (given up: 410,
        no secret, attempts spent) or ``retry`` (pending again in ``retry_in`` seconds). Counts the attempt."""
        if outcome not in ("delivered", "failed", "retry"):
            raise UsageError(f"an attempt is delivered, failed or retry, not {outcome!r}")
        with self.store.write() as conn:
            moment = self.store.clock()
            values: dict[str, Any] = {"attempts": webhook_deliveries.c.attempts + 1, "last_status": http_status,
                                      "last_error": error[:2000]}
            if outcome == "delivered":
                values.update(status="delivered", delivered_at=format_ts(moment), last_error="")
            elif outcome == "failed":
                values.update(status="failed")
            else:
                values.update(next_attempt_at=format_ts(moment + timedelta(seconds=retry_in or 0.0)))
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.company_id == self.company,
                                                          webhook_deliveries.c.id == delivery_id).values(values))
            row = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.company_id == self.company,
                                                                webhook_deliveries.c.id == delivery_id)).first()
        if row is None:
            raise NotFound(f"no webhook delivery {delivery_id} in company '{self.company}'")
        return _delivery(row)

    # -- humans' ---------------------------------------------------------------------------------------

    def webhook_deliveries(self, *, hook: str | None = None, status: str | None = None, limit: int = 50,
                           actor: ActorRef | None) -> list[WebhookDelivery]:
        """The delivery log, newest first: at most ``limit``, of one ``hook`` and one ``status`` if given.
        Needs ``read`` on the company (``actor=None``: a trusted read). Raises :class:`UsageError` (an
        unknown status), :class:`Denied` (audited)."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"a delivery's status is one of {', '.join(STATUSES)}, not {status!r}")
        with self._reading(actor, "webhook.read", f"company:{self.company}") as (conn, cache, who):
            if who is not None:
                self._authorize(cache, who, "read", Resource("company", self.company),
                                why="the delivery log shows what every hook was sent")
            query = select(webhook_deliveries).where(webhook_deliveries.c.company_id == self.company)
            if hook is not None:
                query = query.where(webhook_deliveries.c.hook == hook)
            if status is not None:
                query = query.where(webhook_deliveries.c.status == status)
            rows = conn.execute(query.order_by(webhook_deliveries.c.id.desc()).limit(max(1, min(limit, 10_000))))
            return [_delivery(r) for r in rows]

    def replay_webhooks(self, delivery_ids: list[int] | None = None, *, failed: bool = False,
                        actor: ActorRef) -> list[int]:
        """Queue deliveries again, due now with their attempts at zero and the same body and ``webhook-id``
        (a receiver that got one already can drop it): the ones named, or with ``failed`` every failed one
        (at most 1,000). Needs ``admin`` on the company; audited as ``webhook.replay``. Returns the ids
        queued. Raises :class:`UsageError` (neither or both given), :class:`NotFound` (an unknown id),
        :class:`Denied`."""
        if bool(delivery_ids) == failed:
            raise UsageError("name the deliveries to replay, or replay every failed one (--failed), not both")
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                self._authorize(cache, who, "admin", Resource("company", self.company),
                                why="replaying a webhook sends the company's events again")
                mine = webhook_deliveries.c.company_id == self.company
                if failed:
                    ids = list(conn.scalars(select(webhook_deliveries.c.id).where(
                        mine, webhook_deliveries.c.status == "failed").order_by(webhook_deliveries.c.id)
                        .limit(MAX_REPLAY)))
                else:
                    wanted = sorted(set(delivery_ids or []))
                    ids = list(conn.scalars(select(webhook_deliveries.c.id).where(
                        mine, webhook_deliveries.c.id.in_(wanted))))
                    missing = sorted(set(wanted) - set(ids))
                    if missing:
                        raise NotFound(f"no webhook delivery {', '.join(map(str, missing))} in company "
                                       f"'{self.company}'; 'roster webhooks log' lists them")
                if ids:
                    now = self.store.now()
                    conn.execute(update(webhook_deliveries).where(mine, webhook_deliveries.c.id.in_(ids)),
                                 {"status": "pending", "attempts": 0, "next_attempt_at": now, "delivered_at": None})
                    audit.append(conn, head, ts=now, principal=who.handle, action="webhook.replay",
                                 subject=f"company:{self.company}", data={"deliveries": ids, "failed": failed})
                    audit.save_head(conn, head)
        except (Denied, NotFound) as exc:
            self._audit_rejection(actor, "webhook.replay", f"company:{self.company}", exc,
                                  {"deliveries": list(delivery_ids or []), "failed": failed})
            raise
        return ids
