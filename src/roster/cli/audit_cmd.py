"""``roster audit log|verify|checkpoint|rotate-key``: read the hash-chained audit trail, check it against
its signed checkpoints and the tables, sign its head, and rotate the signing key (docs/security.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from roster.cli.context import Workspace, console, emit_json, reports_errors, workspace
from roster.errors import AuditChainBroken, AuditStateMismatch

app = typer.Typer(help="Read and verify the audit trail.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
KEY = Annotated[str | None, typer.Option("--key", help="The signing key file (default $ROSTER_AUDIT_KEY, else "
                                         ".roster/audit-key); its trusted public keys are in KEY.trusted.")]


@app.command("log")
@reports_errors
def log(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option("--principal", "-p", help="Only this principal's events.")] = None,
    task: Annotated[int | None, typer.Option("--task", help="Only this task's events.")] = None,
    action: Annotated[str | None, typer.Option("--action", "-a", help="Only this action; 'task.*' for a prefix.")]
    = None,
    since: Annotated[str | None, typer.Option("--since", help="From this UTC time (ISO 8601), inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before this UTC time (ISO 8601).")] = None,
    after: Annotated[int, typer.Option("--after", help="Cursor: events with seq above this one.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 200,
    as_json: JSON = False,
) -> None:
    """List audit events, oldest first, filtered."""
    events = workspace(ctx).session().audit_log(principal=principal, task_id=task, action=action, since=since,
                                                until=until, after_seq=after, limit=limit)
    if as_json:
        emit_json([asdict(e) for e in events])
        return
    table = Table("seq", "time (UTC)", "principal", "action", "subject", "data", box=None)
    for e in events:
        table.add_row(str(e.seq), e.ts, e.principal, e.action, e.subject,
                      json.dumps(e.data, sort_keys=True)[:120])
    console.print(table if events else "no events")


@app.command("verify")
@reports_errors
def verify(
    ctx: typer.Context,
    state: Annotated[bool, typer.Option("--state", help="Also compare the rows of tasks, tokens, principals "
                                        "and approvals with the hashes their latest events recorded.")] = False,
    witness: Annotated[list[str] | None, typer.Option("--witness", help="A witness file of checkpoints (JSON "
                                                      "lines) to check too; repeatable. File and git witnesses "
                                                      "of $ROSTER_AUDIT_WITNESS are read anyway.")] = None,
    key: KEY = None,
    as_json: JSON = False,
) -> None:
    """Walk the company's audit chain and check every signed checkpoint (stored, and in witness files)
    against the trusted keys. Exits 9 naming the first bad seq if an event was edited, or the chain was
    rewritten or truncated before a checkpoint; with --state, exits 9 naming each row that differs."""
    from roster.store.checkpoints import verify_chain, verify_state

    ws = workspace(ctx)
    session = ws.session()
    session.verify_audit()  # the right to read the whole company's trail (audited if refused)
    company = session.principal.company
    trusted = _keyring(ws, key).trusted()
    witnessed, names = _witnessed(witness or [])
    report = verify_chain(ws.store(), company, trusted, witnessed, names)
    state_checked, state_problems = verify_state(ws.store(), company) if state else (0, [])
    if as_json:
        out = report.to_dict()
        if state:
            out["state"] = {"rows": state_checked, "problems": [p.to_dict() for p in state_problems]}
            out["valid"] = out["valid"] and not state_problems
        emit_json(out)
    if report.broken is not None:
        raise AuditChainBroken(company, *report.broken)
    for result in report.checkpoints:
        if result.problem:
            raise AuditChainBroken(company, result.checkpoint.seq, f"checkpoint ({result.source}): {result.problem}")
    if state_problems:
        raise AuditStateMismatch(company, [p.to_dict() for p in state_problems])
    if as_json:
        return
    console.print(f"audit chain of company '{company}' verifies: {report.events} events, no break")
    newest = report.newest
    if newest is None:
        console.print("no signed checkpoints: a database writer could rewrite the whole chain consistently "
                      "unseen; run 'roster audit checkpoint' (docs/security.md)")
    else:
        by_key: dict[str, int] = {}
        for result in report.checkpoints:
            by_key[result.checkpoint.key_id] = by_key.get(result.checkpoint.key_id, 0) + 1
        keys = ", ".join(f"key {k} ({n})" for k, n in sorted(by_key.items()))
        console.print(f"{len(report.checkpoints)} checkpoints verify, signed by {keys}; the newest is seq "
                      f"{newest.checkpoint.seq} ({newest.checkpoint.ts}, {newest.source}, key "
                      f"{newest.checkpoint.key_id}); {report.unwitnessed} events after it are not yet checkpointed")
    if state:
        console.print(f"state: {state_checked} rows of tasks, principals, tokens and approvals match the chain")


@app.command("checkpoint")
@reports_errors
def checkpoint(
    ctx: typer.Context,
    witness: Annotated[list[str] | None, typer.Option("--witness", help="Also send it to this witness: "
                                                      "file:PATH, http(s)://URL or git:DIR; repeatable.")] = None,
    key: KEY = None,
    as_json: JSON = False,
) -> None:
    """Verify the chain, then sign its head with the signing key (created, 0600, if there is none), store
    the checkpoint and send it to the witnesses ($ROSTER_AUDIT_WITNESS and --witness). Exits 9 without
    signing if the chain does not verify; exits 2 if a witness did not take it (the checkpoint is stored)."""
    from roster.errors import UsageError
    from roster.store.checkpoints import export, make_checkpoint, verify_chain
    from roster.store.witness import configured_witnesses

    ws = workspace(ctx)
    session = ws.session()
    session.verify_audit()
    company = session.principal.company
    ring = _keyring(ws, key)
    targets = configured_witnesses(witness or [])
    private = ring.private_key()
    witnessed, names = _witnessed([])
    report = verify_chain(ws.store(), company, ring.trusted(), witnessed, names)
    if report.broken is not None:
        raise AuditChainBroken(company, *report.broken)
    for result in report.checkpoints:
        if result.problem:
            raise AuditChainBroken(company, result.checkpoint.seq, f"checkpoint ({result.source}): {result.problem}")
    signed = make_checkpoint(ws.store(), company, private)
    failures = export(signed, private.public_key(), targets)
    if as_json:
        emit_json({**signed.to_dict(), "key_file": str(ring.path), "witnesses": [t.name for t in targets],
                   "failed": failures})
    else:
        console.print(f"checkpoint of company '{company}' at seq {signed.seq} (head {signed.head[:16]}...) "
                      f"signed by key {signed.key_id} ({ring.path})")
        for target in targets:
            if not any(f.startswith(f"{target.name}: ") for f in failures):
                console.print(f"  sent to {target.name}")
    if failures:
        raise UsageError("the checkpoint is stored but not every witness took it: " + "; ".join(failures))


@app.command("rotate-key")
@reports_errors
def rotate_key(ctx: typer.Context, key: KEY = None, as_json: JSON = False) -> None:
    """Replace the signing key with a new one. The old public key stays trusted, so the checkpoints it
    signed still verify; new checkpoints are signed with the new key."""
    ws = workspace(ctx)
    ws.session().verify_audit()
    ring = _keyring(ws, key)
    old, new = ring.rotate()
    if as_json:
        emit_json({"key_file": str(ring.path), "old_key_id": old, "new_key_id": new,
                   "trusted": sorted(ring.trusted())})
        return
    console.print(f"signing key {ring.path} is now key {new}" + (f"; key {old} stays trusted" if old else ""))


def _keyring(ws: Workspace, explicit: str | None):
    from roster.store.witness import KeyRing, key_path

    return KeyRing(key_path(ws.state_dir, explicit))


def _witnessed(paths: list[str]):
    """The checkpoints of the witness files given and of the file and git witnesses configured."""
    from pathlib import Path

    from roster.store.witness import FileWitness, GitWitness, configured_witnesses, read_witness

    files = [Path(p).expanduser() for p in paths]
    for target in configured_witnesses():
        if isinstance(target, FileWitness) and target.path.exists():
            files.append(target.path)
        elif isinstance(target, GitWitness):
            files.extend(sorted((target.repo / "roster-checkpoints").glob("*.jsonl")))
    found = [cp for path in files for cp in read_witness(path)]
    return found, ", ".join(f"witness {p}" for p in files) or "witness"
