"""``roster principal``, ``roster token``, ``roster rights`` and the kill switch (``roster pause|resume``)."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.defaults import ACTIONS, DEFAULT_TOKEN_LIFETIME
from roster.errors import UsageError

principal_app = typer.Typer(help="Humans and agents: add, list, show, pause, resume, retire.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: issue (shown once), revoke, list.", no_args_is_help=True)
rights_app = typer.Typer(help="Explain rights decisions and show the compiled policies.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.add_typer(principal_app, name="principal")
    app.add_typer(token_app, name="token")
    app.add_typer(rights_app, name="rights")
    app.command("pause")(pause)
    app.command("resume")(resume)


# -- principals -------------------------------------------------------------------------------------


@principal_app.command("list")
@reports_errors
def principal_list(ctx: typer.Context, as_json: JSON = False) -> None:
    """List the company's principals."""
    found = workspace(ctx).session().list_principals()
    if as_json:
        emit_json([{**asdict(p), "id": p.id} for p in found])
        return
    table = Table("handle", "kind", "status", "display name", "reports to", "roles", "source", box=None)
    for p in found:
        table.add_row(p.handle, p.kind, p.status, p.display_name, p.reports_to or "-", ", ".join(p.roles) or "-",
                      p.source)
    console.print(table)


@principal_app.command("show")
@reports_errors
def principal_show(ctx: typer.Context, handle: str, as_json: JSON = False) -> None:
    """Show one principal and its tokens."""
    session = workspace(ctx).session()
    found = session.get_principal(handle)
    tokens = session.list_tokens(principal=handle)
    if as_json:
        emit_json({**asdict(found), "id": found.id, "tokens": [asdict(t) for t in tokens]})
        return
    console.print(f"[bold]{found.id}[/] ({found.kind}, {found.status}): {found.display_name}", highlight=False)
    console.print(f"  reports to {found.reports_to or '-'} · roles {', '.join(found.roles) or '-'} · "
                  f"source {found.source} · since {found.created_at}", highlight=False)
    _print_tokens(tokens)


@principal_app.command("add")
@reports_errors
def principal_add(
    ctx: typer.Context,
    handle: str,
    kind: Annotated[str, typer.Option("--kind", help="human or agent")] = "human",
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    reports_to: Annotated[str | None, typer.Option("--reports-to")] = None,
    role: Annotated[list[str] | None, typer.Option("--role", help="A role (repeatable).")] = None,
    as_json: JSON = False,
) -> None:
    """Add a principal outside the spec. An agent added so is read-only with no grants until the spec
    names it."""
    added = workspace(ctx).session().add_principal(handle, kind=kind, display_name=display_name,
                                                   reports_to=reports_to, roles=tuple(role or ()))
    if as_json:
        emit_json({**asdict(added), "id": added.id})
    else:
        console.print(f"added {added.kind} {added.id}")


def _status_command(status: str, verb: str):  # noqa: ANN202
    @reports_errors
    def command(ctx: typer.Context, handle: str, as_json: JSON = False) -> None:
        changed = workspace(ctx).session().set_status(handle, status)
        if as_json:
            emit_json({**asdict(changed), "id": changed.id})
        else:
            console.print(f"{changed.id} is now {changed.status}")

    command.__doc__ = {
        "pause": "Pause a principal at once: its tokens stop working and it may do nothing until resumed.",
        "resume": "Resume a paused principal.",
        "retire": "Retire a principal for good: its tokens are revoked. Retire is permanent.",
    }[verb]
    return command


for _verb, _status in (("pause", "paused"), ("resume", "active"), ("retire", "retired")):
    principal_app.command(_verb)(_status_command(_status, _verb))


# -- tokens -----------------------------------------------------------------------------------------


def parse_lifetime(text: str) -> timedelta:
    """``30d``, ``12h`` or ``45m`` as a timedelta. Raises :class:`UsageError`."""
    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if not match:
        raise UsageError(f"--expires-in expects a number and a unit, like 30d, 12h or 45m; got {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]


@token_app.command("issue")
@reports_errors
def token_issue(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The principal the token acts as.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "",
    expires_in: Annotated[str, typer.Option("--expires-in", help="Lifetime: 30d, 12h, 45m (at most 366d).")]
    = f"{DEFAULT_TOKEN_LIFETIME.days}d",
    as_json: JSON = False,
) -> None:
    """Issue an API token. The token is printed once and never stored: keep it."""
    issued = workspace(ctx).session().issue_token(handle, name=name, lifetime=parse_lifetime(expires_in))
    if as_json:
        emit_json({**asdict(issued.record), "token": issued.token})
        return
    console.print(f"token {issued.record.id} for {handle}, expires {issued.record.expires_at}. "
                  "It is shown this once:", highlight=False)
    print(issued.token)


@token_app.command("revoke")
@reports_errors
def token_revoke(ctx: typer.Context, token_id: str, as_json: JSON = False) -> None:
    """Revoke a token at once."""
    record = workspace(ctx).session().revoke_token(token_id)
    if as_json:
        emit_json(asdict(record))
    else:
        console.print(f"token {record.id} of {record.principal} revoked at {record.revoked_at}")


@token_app.command("list")
@reports_errors
def token_list(ctx: typer.Context, principal: Annotated[str | None, typer.Option("--principal")] = None,
               as_json: JSON = False) -> None:
    """List tokens (never their secrets). Agents see only their own."""
    tokens = workspace(ctx).session().list_tokens(principal=principal)
    if as_json:
        emit_json([asdict(t) for t in tokens])
    else:
        _print_tokens(tokens)


def _print_tokens(tokens) -> None:  # noqa: ANN001
    table = Table("id", "principal", "name", "expires", "last used", "revoked", box=None, title="tokens",
                  title_justify="left")
    for t in tokens:
        table.add_row(t.id, t.principal, t.name, t.expires_at, t.last_used_at or "-", t.revoked_at or "-")
    console.print(table if tokens else "tokens: none")


# -- rights -----------------------------------------------------------------------------------------


@rights_app.command("explain")
@reports_errors
def rights_explain(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="A principal's handle.")],
    action: Annotated[str, typer.Argument(help=f"One of {', '.join(ACTIONS)}; transition, approve and claim "
                                               "take the transition as transition:NAME.")],
    resource: Annotated[str, typer.Argument(help="task:ID, workflow:NAME, tool:NAME, company, pad:PAD, "
                                                 "principal:HANDLE, kpi:NAME, toolset:SET or approval:ID.")],
    as_json: JSON = False,
) -> None:
    """Print allow or deny for PRINCIPAL doing ACTION on RESOURCE, and the policy that decided. It is the
    decision enforcement takes (the store's one decision function, with the same facts: a task's state
    for claim and hold, a pad's shares, a request's requester)."""
    verb, _, transition = action.partition(":")
    decision = workspace(ctx).session().explain(verb, resource, transition, principal=principal)
    if as_json:
        emit_json({"principal": principal, "action": verb, "transition": transition or None, "resource": resource,
                   "allowed": decision.allowed, "policies": list(decision.policies),
                   "errors": list(decision.errors)})
        return
    console.print(f"{'ALLOW' if decision.allowed else 'DENY'}: {principal} {action} {resource}: "
                  f"{decision.explain()}", highlight=False)


@rights_app.command("policies")
@reports_errors
def rights_policies(ctx: typer.Context) -> None:
    """Print the Cedar policies compiled from the spec and the kill switches in force."""
    print(workspace(ctx).session().policy_text(), end="")


# -- kill switch ------------------------------------------------------------------------------------


def _kill_switch(ctx: typer.Context, target: str | None, everything: bool, verb: str, as_json: bool) -> None:
    session = workspace(ctx).session()
    if everything == (target is not None):
        raise UsageError("name one target: an agent handle, a workspace/portfolio, or --all for the company")
    if everything or "/" in target:
        scope = "*" if everything else target
        getattr(session, verb)(scope)
        what = "the whole company" if everything else f"portfolio {scope}"
    else:
        session.set_status(target, "paused" if verb == "pause" else "active")
        what = f"agent {target}"
    if as_json:
        emit_json({"action": verb, "target": "*" if everything else target})
    else:
        console.print(f"{verb}d {what}")


@reports_errors
def pause(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(help="An agent handle, or workspace/portfolio.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Pause every agent of the company.")] = False,
    as_json: JSON = False,
) -> None:
    """Kill switch: stop an agent, a portfolio's agents, or all agents, at once. Humans keep working."""
    _kill_switch(ctx, target, everything, "pause", as_json)


@reports_errors
def resume(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(help="An agent handle, or workspace/portfolio.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Lift the company-wide pause.")] = False,
    as_json: JSON = False,
) -> None:
    """Lift a pause made with 'roster pause'."""
    _kill_switch(ctx, target, everything, "resume", as_json)
