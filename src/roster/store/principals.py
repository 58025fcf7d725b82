"""Principals, their API tokens, the kill switch, tool calls and ``rights explain``: one company's
directory of who may act, and the levers that stop them.

Tokens look like ``rst.<company>.<token id>.<secret>``. Only SHA-256 of the secret is stored; the
whole token is returned once, by :meth:`PrincipalVerbs.issue_token`. Secrets are 32 random bytes, so
a plain hash (no key stretching) is enough to make a stolen table useless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from roster.defaults import DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME
from roster.errors import (
    ContractViolation,
    Denied,
    NotFound,
    PayloadTooLarge,
    StaleVersion,
    Unauthenticated,
    UsageError,
)
from roster.kernel.names import HANDLE, check_handle
from roster.kernel.rights import COMPANY_SCOPE, Decision, Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, Principal, principal_from_row
from roster.store.schema import api_tokens, paused_scopes, principals
from roster.store.store import format_ts

TOKEN_PREFIX = "rst"
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NO_SECRET = "0" * 64
"""Compared against when no token row was found, so an unknown company or token id costs the same
hashing and comparing as a wrong secret."""
_REFUSALS = (ContractViolation, StaleVersion, PayloadTooLarge, NotFound, UsageError, Denied)


@dataclass(frozen=True)
class TokenRecord:
    """A token's metadata (never its secret). Times are ISO 8601 UTC; ``revoked_at`` ``None`` if live."""

    id: str
    principal: str
    name: str
    created_by: str
    created_at: str
    expires_at: str
    last_used_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is the full secret string, shown this once and stored nowhere."""

    record: TokenRecord
    token: str


def hash_secret(secret: str) -> str:
    """SHA-256 (hex) of a token's secret: what the table stores and what a presented secret is compared to."""
    return hashlib.sha256(secret.encode()).hexdigest()


MAX_TOKEN_CHARS = 300
"""Longest token string looked at; anything longer is malformed (real tokens are about 70 characters)."""


def parse_token(token: str) -> tuple[str, str, str]:
    """``(company, token id, secret)`` of a token string. Raises :class:`Unauthenticated` if malformed:
    not ``rst.<company>.<id>.<secret>``, a company that is not a handle, an id of other than 1-32 or a
    secret of other than 1-128 URL-safe characters, or over :data:`MAX_TOKEN_CHARS` characters in all.
    Bounding every part here keeps whatever a refusal records (its audit subject) short."""
    parts = token.strip().split(".") if len(token) <= MAX_TOKEN_CHARS else []
    if (len(parts) != 4 or parts[0] != TOKEN_PREFIX or not HANDLE.fullmatch(parts[1])
            or not _TOKEN_ID.fullmatch(parts[2]) or not _SECRET.fullmatch(parts[3])):
        raise Unauthenticated("malformed token: expected rst.<company>.<id>.<secret>, as 'roster token issue' "
                              "prints it")
    return parts[1], parts[2], parts[3]


class PrincipalVerbs(CompanyBase):
    """Verbs on the company's principals, tokens and kill switch (mixed into ``CompanyStore``)."""

    # -- a guarded write ----------------------------------------------------------------------------

    def _admin_write(self, actor: ActorRef | None, action: str, subject: str, request: Mapping[str, Any],
                     body) -> Any:  # noqa: ANN001 - body(conn, head, cache, who_handle) -> result
        """One write transaction that needs ``admin`` on the company (``actor=None``: trusted bootstrap).
        A refusal is audited as ``<action>.rejected``."""
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                if actor is None:
                    who = "system"
                else:
                    actor_ = self._actor(cache, actor)
                    self._authorize(cache, actor_, "admin", Resource("company", self.company))
                    who = actor_.handle
                result = body(conn, head, cache, who)
                audit.save_head(conn, head)
                return result
        except _REFUSALS as exc:
            self._audit_rejection(actor if actor is not None else "system", action, subject, exc, request)
            raise

    # -- principals ---------------------------------------------------------------------------------

    def list_principals(self, *, actor: ActorRef | None = None) -> list[Principal]:
        """Every principal of the company, any status, by handle. Any active principal may list them."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            if actor is not None:
                self._actor(cache, actor)
            return [cache.principals[h] for h in sorted(cache.principals)]

    def get_principal(self, handle: str, *, actor: ActorRef | None = None) -> Principal:
        """The principal ``handle`` of this company. Raises :class:`NotFound`."""
        for principal in self.list_principals(actor=actor):
            if principal.handle == handle:
                return principal
        raise NotFound(f"no principal '{handle}' in company '{self.company}'")

    def add_principal(self, handle: str, *, kind: str, actor: ActorRef | None, display_name: str = "",
                      roles: tuple[str, ...] = (), reports_to: str | None = None) -> Principal:
        """Add a principal outside the spec (``source`` = ``cli``); an agent added so has the read-only
        tier and no grants until the spec names it. Needs ``admin``. Raises :class:`UsageError` for a bad
        or taken handle, :class:`Denied`."""

        def body(conn, head, cache, who):  # noqa: ANN001, ANN202
            check_handle(handle)
            if kind not in ("human", "agent"):
                raise UsageError(f"kind must be 'human' or 'agent', not '{kind}'")
            if handle in cache.principals:
                raise UsageError(f"principal '{handle}' already exists ({cache.principals[handle].status})")
            if reports_to is not None and reports_to not in cache.principals:
                raise NotFound(f"no principal '{reports_to}' to report to")
            now = self.store.now()
            row = {"company_id": self.company, "handle": handle, "kind": kind, "display_name": display_name or handle,
                   "status": "active", "roles": json.dumps(sorted(roles)), "reports_to": reports_to,
                   "created_at": now, "source": "cli"}
            conn.execute(insert(principals), row)
            head.rights_revision += 1
            audit.append(conn, head, ts=now, principal=who, action="principal.add", subject=f"principal:{handle}",
                         data={"kind": kind, "display_name": row["display_name"], "roles": sorted(roles),
                               "reports_to": reports_to})
            return Principal(self.company, handle, kind, row["display_name"], "active", tuple(sorted(roles)),
                             reports_to, "cli", now)

        return self._admin_write(actor, "principal.add", f"principal:{handle}", {"kind": kind}, body)

    def set_status(self, handle: str, status: str, *, actor: ActorRef | None, reason: str = "") -> Principal:
        """Pause, resume (``active``) or retire a principal, at once: its tokens stop working and every
        rights decision about it changes in every process at its next transaction. Retire is permanent
        and revokes its tokens. Needs ``admin``. Raises :class:`NotFound`, :class:`UsageError`."""
        if status not in ("active", "paused", "retired"):
            raise UsageError(f"status must be active, paused or retired, not '{status}'")

        def body(conn, head, cache, who):  # noqa: ANN001, ANN202
            current = cache.principals.get(handle)
            if current is None:
                raise NotFound(f"no principal '{handle}' in company '{self.company}'")
            if current.status == "retired":
                raise UsageError(f"principal '{handle}' is retired; retire is permanent. Add a new principal.")
            now = self.store.now()
            conn.execute(update(principals).where(principals.c.company_id == self.company,
                                                  principals.c.handle == handle), {"status": status})
            if status == "retired":
                conn.execute(update(api_tokens).where(api_tokens.c.company_id == self.company,
                                                      api_tokens.c.principal == handle,
                                                      api_tokens.c.revoked_at.is_(None)), {"revoked_at": now})
            if status != "active":  # the kill switch: its leases go at once, so others may take the work
                self.release_leases_txn(conn, head, reason=f"principal {status}", by=who, holders=[handle])
                self.pause_goals_txn(conn, head, handle, by=who, reason=f"its agent was {status}")
            head.rights_revision += 1
            verb = {"active": "resume", "paused": "pause", "retired": "retire"}[status]
            audit.append(conn, head, ts=now, principal=who, action=f"principal.{verb}",
                         subject=f"principal:{handle}", data={"from": current.status, "to": status,
                                                              "reason": reason})
            return Principal(self.company, handle, current.kind, current.display_name, status, current.roles,
                             current.reports_to, current.source, current.created_at)

        verb = {"active": "resume", "paused": "pause", "retired": "retire"}[status]
        return self._admin_write(actor, f"principal.{verb}", f"principal:{handle}", {"status": status}, body)

    # -- tokens -------------------------------------------------------------------------------------

    def issue_token(self, handle: str, *, actor: ActorRef | None, name: str = "",
                    lifetime: timedelta = DEFAULT_TOKEN_LIFETIME) -> IssuedToken:
        """Issue an API token for principal ``handle``, valid for ``lifetime`` (at most 366 days).
        The returned :class:`IssuedToken` holds the secret; only its hash is stored. Needs ``admin``."""
        if not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
            raise UsageError(f"a token's lifetime must be more than 0 and at most {MAX_TOKEN_LIFETIME.days} days")

        def body(conn, head, cache, who):  # noqa: ANN001, ANN202
            principal = cache.principals.get(handle)
            if principal is None:
                raise NotFound(f"no principal '{handle}' in company '{self.company}'")
            if principal.status == "retired":
                raise UsageError(f"principal '{handle}' is retired")
            token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            now = self.store.clock()
            record = TokenRecord(token_id, handle, name or f"{handle} token", who, format_ts(now),
                                 format_ts(now + lifetime), None, None)
            conn.execute(insert(api_tokens), {
                "company_id": self.company, "id": token_id, "principal": handle, "secret_sha256": hash_secret(secret),
                "name": record.name, "created_by": who, "created_at": record.created_at,
                "expires_at": record.expires_at})
            audit.append(conn, head, ts=record.created_at, principal=who, action="token.issue",
                         subject=f"principal:{handle}",
                         data={"token_id": token_id, "name": record.name, "expires_at": record.expires_at})
            return IssuedToken(record, f"{TOKEN_PREFIX}.{self.company}.{token_id}.{secret}")

        return self._admin_write(actor, "token.issue", f"principal:{handle}", {"name": name}, body)

    def revoke_token(self, token_id: str, *, actor: ActorRef | None) -> TokenRecord:
        """Revoke a token at once. Needs ``admin``. Raises :class:`NotFound`."""

        def body(conn, head, cache, who):  # noqa: ANN001, ANN202
            row = conn.execute(select(api_tokens).where(api_tokens.c.company_id == self.company,
                                                        api_tokens.c.id == token_id)).first()
            if row is None:
                raise NotFound(f"no token '{token_id}' in company '{self.company}'")
            now = self.store.now()
            if row.revoked_at is None:
                conn.execute(update(api_tokens).where(api_tokens.c.company_id == self.company,
                                                      api_tokens.c.id == token_id), {"revoked_at": now})
                audit.append(conn, head, ts=now, principal=who, action="token.revoke",
                             subject=f"principal:{row.principal}", data={"token_id": token_id})
            return dataclasses.replace(_token_record(row), revoked_at=row.revoked_at or now)

        return self._admin_write(actor, "token.revoke", f"token:{token_id}", {}, body)

    def list_tokens(self, *, actor: ActorRef | None = None, principal: str | None = None) -> list[TokenRecord]:
        """Token metadata, newest first. A principal with ``admin`` (a human) sees all; anyone else
        (an agent) only its own."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            query = select(api_tokens).where(api_tokens.c.company_id == self.company)
            if actor is not None:
                who = self._actor(cache, actor)
                if not self._decide(cache, who.handle, "admin", Resource("company", self.company)).allowed:
                    principal = who.handle  # without admin, one's own tokens only
            if principal is not None:
                query = query.where(api_tokens.c.principal == principal)
            return [_token_record(r) for r in conn.execute(query.order_by(api_tokens.c.created_at.desc()))]

    # -- kill switch --------------------------------------------------------------------------------

    def pause(self, scope: str, *, actor: ActorRef | None, reason: str = "") -> None:
        """Stop every agent from acting in ``scope`` (``*`` for the whole company, or
        ``workspace/portfolio``) from its next transaction on; humans are unaffected. Needs ``admin``."""
        self._switch(scope, "pause", actor, reason)

    def resume(self, scope: str, *, actor: ActorRef | None) -> None:
        """Lift a :meth:`pause`. Needs ``admin``."""
        self._switch(scope, "resume", actor)

    def paused(self) -> list[str]:
        """The scopes whose kill switch is on (``company``, ``<workspace>/<portfolio>``), sorted."""
        with self.store.read() as conn:
            return list(conn.scalars(select(paused_scopes.c.scope).where(
                paused_scopes.c.company_id == self.company).order_by(paused_scopes.c.scope)))

    def _switch(self, scope: str, verb: str, actor: ActorRef | None, reason: str = "") -> None:
        def body(conn, head, cache, who):  # noqa: ANN001, ANN202
            known = {COMPANY_SCOPE} | {f"{w}/{p}" for w, ws in cache.spec.workspaces.items() for p in ws.portfolios}
            if scope not in known:
                raise NotFound(f"no scope '{scope}'; expected '*' or one of: {', '.join(sorted(known - {'*'}))}")
            exists = conn.scalar(select(paused_scopes.c.scope).where(paused_scopes.c.company_id == self.company,
                                                                     paused_scopes.c.scope == scope))
            now = self.store.now()
            if verb == "pause" and exists is None:
                conn.execute(insert(paused_scopes), {"company_id": self.company, "scope": scope, "paused_by": who,
                                                     "paused_at": now})
                agents = [h for h, p in cache.principals.items() if p.kind == "agent"]
                workflows = None if scope == COMPANY_SCOPE else [
                    name for name, wf in cache.spec.workflows.items() if wf.portfolio == scope]
                self.release_leases_txn(conn, head, reason=f"scope {scope} paused", by=who, holders=agents,
                                         workflows=workflows)
            elif verb == "resume" and exists is not None:
                conn.execute(paused_scopes.delete().where(paused_scopes.c.company_id == self.company,
                                                          paused_scopes.c.scope == scope))
            else:
                return
            head.rights_revision += 1
            audit.append(conn, head, ts=now, principal=who, action=f"killswitch.{verb}", subject=f"scope:{scope}",
                         data={"reason": reason} if reason else {})

        self._admin_write(actor, f"killswitch.{verb}", f"scope:{scope}", {}, body)

    # -- tool calls and explanations ----------------------------------------------------------------

    def record_tool_call(self, tool: str, *, actor: ActorRef, arguments: Mapping[str, Any] | None = None,
                         rationale: str = "") -> None:
        """Check that ``actor`` may call ``tool`` and put the call on the record (``tool.call``), before
        the caller runs it. A tool on an approval edge needs an approved request for exactly these
        ``arguments``: the first call opens one and raises :class:`ApprovalPending`; once approved, the
        next identical call uses it up. Raises :class:`Denied` (audited as ``tool.call.rejected``),
        :class:`NotFound`."""
        arguments = dict(arguments or {})
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                spec_tool = cache.spec.tools.get(tool)
                if spec_tool is None:
                    raise NotFound(f"no tool '{tool}' in company '{self.company}'")
                self._authorize(cache, who, "call_tool", Resource("tool", tool))
                opened = None
                if spec_tool.approval is not None:
                    opened = self.consume_tool_approval_txn(conn, head, who, tool, spec_tool.approval, arguments,
                                                             rationale)
                if opened is None:
                    audit.append(conn, head, ts=self.store.now(), principal=who.handle, action="tool.call",
                                 subject=f"tool:{tool}", data={"arguments": arguments})
                audit.save_head(conn, head)
        except _REFUSALS as exc:
            self._audit_rejection(actor, "tool.call", f"tool:{tool}", exc, {"arguments": sorted(arguments)})
            raise
        if opened is not None:
            raise opened.error()

    def policy_text(self) -> str:
        """The Cedar policies in force: compiled from the spec, with the kill switches."""
        with self.store.read() as conn:
            rights = self.current_txn(conn).rights
        assert rights is not None
        return rights.policy_text

    def explain(self, principal: str, action: str, resource: str, transition: str = "") -> Decision:
        """``rights explain``: :meth:`~roster.store.company_base.CompanyBase.decide`, the decision
        enforcement takes, with the deciding policies. Raises :class:`NotFound`, :class:`UsageError`."""
        return self.decide(principal, action, resource, transition)


def _token_record(row: Any) -> TokenRecord:
    return TokenRecord(row.id, row.principal, row.name, row.created_by, row.created_at, row.expires_at,
                       row.last_used_at, row.revoked_at)


LAST_USED_RESOLUTION = 60.0
"""Seconds: a token's ``last_used_at`` is stamped at most this often, so checking a token is a read, not
a write, on almost every request."""


def authenticate_txn(conn, company: str, token_id: str, secret: str, now: str) -> tuple[str | None, str, bool]:  # noqa: ANN001
    """Check a token against the table: ``(principal handle, "", stamp)`` if valid, else ``(handle or
    None, reason, False)``. ``stamp`` says ``last_used_at`` is older than :data:`LAST_USED_RESOLUTION`
    (the caller stamps it in a write: :func:`stamp_token_txn`)."""
    row = conn.execute(select(api_tokens).where(api_tokens.c.company_id == company,
                                                api_tokens.c.id == token_id)).first()
    # Always one hash and one constant-time comparison, found or not: an unknown company or token id is
    # refused after the same work as a wrong secret.
    matches = hmac.compare_digest(row.secret_sha256 if row is not None else _NO_SECRET, hash_secret(secret))
    if row is None or not matches:
        return None, "unknown token", False
    if row.revoked_at is not None:
        return row.principal, f"token {token_id} was revoked at {row.revoked_at}", False
    if row.expires_at <= now:
        return row.principal, f"token {token_id} expired at {row.expires_at}", False
    status = conn.scalar(select(principals.c.status).where(principals.c.company_id == company,
                                                           principals.c.handle == row.principal))
    if status != "active":
        return row.principal, f"principal '{row.principal}' is {status}", False
    stale = row.last_used_at is None or (
        datetime.fromisoformat(now) - datetime.fromisoformat(row.last_used_at)).total_seconds() >= LAST_USED_RESOLUTION
    return row.principal, "", stale


def stamp_token_txn(conn, company: str, token_id: str, now: str) -> None:  # noqa: ANN001
    conn.execute(update(api_tokens).where(api_tokens.c.company_id == company, api_tokens.c.id == token_id),
                 {"last_used_at": now})


def principal_row_txn(conn, company: str, handle: str) -> Principal:  # noqa: ANN001
    row = conn.execute(select(principals).where(principals.c.company_id == company,
                                                principals.c.handle == handle)).first()
    return principal_from_row(row)
