"""Webhooks, the pure part: which audit actions notify humans and under which event name, what a delivery
carries (a Roster payload or a Slack-compatible one), how it is signed, and the retry schedule.

The events come from the audit chain: every one of them is already recorded, inside the transaction that
caused it, as one of :data:`EVENT_OF_ACTION`'s actions. The store follows the chain and enqueues one
delivery per (hook, event); the runtime sends them (see ``roster/store/webhooks.py`` and
``roster/runtime/webhooks.py``). Nothing here does I/O.

Signatures follow the Standard Webhooks specification (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``), computed by its
reference library, ``standardwebhooks``.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime
from typing import Any

from roster.errors import RosterError

EVENT_OF_ACTION: dict[str, str] = {
    "approval.request": "approval.requested",
    "escalation.human": "escalation.raised",
    "budget.warn": "budget.warned",
    "budget.exhausted": "budget.exhausted",
    "task.hold": "task.held",
    "task.handoff": "task.released",
    "goal.met": "goal.met",
    "goal.exhausted": "goal.exhausted",
}
"""Audit action -> webhook event. The one table: an event is sent for exactly these actions."""

EVENTS: tuple[str, ...] = tuple(EVENT_OF_ACTION.values())
"""The events a hook may subscribe to (``webhooks.<hook>.events`` in the spec)."""

FORMATS = ("roster", "slack")
"""``roster``: the Standard Webhooks payload ``{type, timestamp, data}``; ``slack``: ``{"text": ...}``."""

MAX_ATTEMPTS = 8
"""Attempts per delivery before it is ``failed``."""
FIRST_RETRY_SECONDS = 10.0
RETRY_FACTOR = 3.0
MAX_RETRY_SECONDS = 7200.0
JITTER = 0.2
"""Each delay is drawn uniformly within +-20% of its step, so receivers that came back are not hit by every
sender at once."""
TIMEOUT_SECONDS = 5.0
"""Seconds one HTTP attempt may take (connect, send, answer)."""
MAX_DETAIL_CHARS = 1000
"""Longest string of an event's details kept in a payload; longer ones are cut (the record has them whole)."""
DROPPED_DETAILS = frozenset({"evidence"})
"""Details never put in a payload: an approval's evidence (patches, logs) may be large or sensitive; the
payload names the command that shows it."""


class WebhookSecretError(RosterError):
    """A hook's secret cannot sign: its ``secret_env`` variable is not set (or empty) where the runtime runs,
    or its value is not a usable secret. The delivery fails; nothing is sent unsigned."""

    code = "webhook-secret"


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next one: 10 s, 30 s,
    90 s, 270 s, 810 s, 2430 s, 7200 s (capped at 2 h), each +-20% jitter."""
    step = min(FIRST_RETRY_SECONDS * RETRY_FACTOR ** max(0, attempt - 1), MAX_RETRY_SECONDS)
    return step * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_DETAIL_CHARS else value[:MAX_DETAIL_CHARS] + "..."
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items() if k not in DROPPED_DETAILS}
    if isinstance(value, list):
        return [_short(v) for v in value[:50]]
    return value


def _id_of(subject: str) -> str:
    return subject.partition(":")[2]


def describe(event: str, *, principal: str, subject: str, data: dict[str, Any]) -> tuple[str, str]:
    """A one-line human sentence saying what happened, and the ``roster`` command to look at it."""
    target = _id_of(subject)
    note = str(data.get("note") or data.get("reason") or "").strip()
    tail = f": {note}" if note else ""
    if event == "approval.requested":
        request = data.get("request_id")
        what = f"task {target}" if subject.startswith("task:") else f"tool {target}"
        return (f"{principal} asks for approval of {data.get('edge', what)} on {what} (request {request})",
                f"roster approvals show {request}")
    if event == "escalation.raised":
        kinds = {"task": f"task {target}", "goal": f"goal {target}", "principal": f"agent {target}"}
        about = kinds.get(subject.partition(":")[0], subject)
        return (f"escalation {data.get('escalation')} from {principal} about {about} reached {data.get('to')} "
                f"({data.get('category')}){tail}", "roster escalations list")
    if event == "budget.warned":
        return f"budget warning for {target}{tail}", "roster costs"
    if event == "budget.exhausted":
        return f"budget of {target} exhausted, hard stop{tail}", "roster costs"
    if event == "task.held":
        return f"{principal} holds task {target}{tail}", f"roster task show {target}"
    if event == "task.released":
        return f"{principal} released task {target}{tail}", f"roster task show {target}"
    if event in ("goal.met", "goal.exhausted"):
        return f"goal {target} {event.partition('.')[2]}{tail}", f"roster goal show {target}"
    return f"{event} on {subject}", "roster audit log"


def payload(event: str, fmt: str, *, company: str, seq: int, ts: str, action: str, principal: str,
            subject: str, data: Any) -> str:
    """The body of a delivery of audit event ``seq`` as JSON text (what is signed and sent, byte for byte).

    ``roster``: ``{"type": event, "timestamp": ts, "data": {company, seq, action, principal, subject, text,
    command, details}}``; ``slack``: ``{"text": "[company] sentence: `command`"}``."""
    details = _short(data) if isinstance(data, dict) else {}
    details.pop("via", None)
    text, command = describe(event, principal=principal, subject=subject, data=details)
    if fmt == "slack":
        return json.dumps({"text": f"[{company}] {text}. See `{command}`"}, sort_keys=True)
    return json.dumps({"type": event, "timestamp": ts, "data": {
        "company": company, "seq": seq, "action": action, "principal": principal, "subject": subject,
        "text": text, "command": command, "details": details}}, sort_keys=True)


def message_id(company: str, delivery_id: int) -> str:
    """The ``webhook-id`` of a delivery: the same on every attempt (a receiver drops duplicates by it)."""
    return f"msg_{company}_{delivery_id}"


def signed_headers(secret: str, *, msg_id: str, moment: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, signed with ``secret`` (``whsec_`` and base64, as the
    spec's libraries take it). Raises :class:`WebhookSecretError` for an empty or unusable secret."""
    from standardwebhooks.webhooks import Webhook  # the library only where deliveries are signed

    try:
        signature = Webhook(secret).sign(msg_id, moment, body)
    except Exception as exc:  # noqa: BLE001 - the library raises its own classes, binascii's and ValueError
        raise WebhookSecretError(f"the secret cannot sign: {type(exc).__name__}: {exc}") from None
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}


def new_secret() -> str:
    """A fresh secret in the Standard Webhooks form: ``whsec_`` and 32 random bytes in base64."""
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
