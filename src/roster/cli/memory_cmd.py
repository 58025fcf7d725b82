"""``roster memory ...``: an agent's memory pad, a portfolio's team pad, shares, consolidation and hand-off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.defaults import MEMORY_KINDS
from roster.errors import UsageError

if TYPE_CHECKING:
    from roster.store.memory import MemoryEntry

app = typer.Typer(help="Memory pads: typed, private memory per agent, and team memory per portfolio.",
                  no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
PAD = Annotated[str | None, typer.Option("--pad", help="An agent's handle or team:WORKSPACE/PORTFOLIO "
                                         "(default: your own pad).")]


def _show(entries: list[MemoryEntry], as_json: bool) -> None:
    if as_json:
        emit_json([e.to_dict() for e in entries])
        return
    if not entries:
        console.print("no entries")
        return
    table = Table("id", "pad", "kind", "conf.", "text", "from", "expires", box=None)
    for e in entries:
        source = e.provenance.get("received_from") or e.provenance.get("run") or e.provenance.get("task") or "-"
        table.add_row(str(e.id), e.pad, e.kind, f"{e.confidence:.2f}", e.text, str(source), e.expires_at or "-")
    console.print(table)


@app.command("list")
@reports_errors
def list_entries(ctx: typer.Context, pad: PAD = None,
                 kind: Annotated[str | None, typer.Option("--kind", help=", ".join(MEMORY_KINDS))] = None,
                 limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100, as_json: JSON = False) -> None:
    """Live entries, newest first."""
    _show(workspace(ctx).session().list_memory(pads=[pad] if pad else None, kind=kind, limit=limit), as_json)


@app.command("add")
@reports_errors
def add(ctx: typer.Context, text: Annotated[str, typer.Argument(help="One short statement.")],
        kind: Annotated[str, typer.Option("--kind", help=", ".join(MEMORY_KINDS))] = "belief",
        confidence: Annotated[float, typer.Option("--confidence", help="From 0 to 1.")] = 0.8,
        expires_in: Annotated[float | None, typer.Option("--expires-in", help="Seconds until it expires.")] = None,
        task: Annotated[int | None, typer.Option("--task", help="The task it came from (provenance).")] = None,
        pad: PAD = None, as_json: JSON = False) -> None:
    """Add an entry."""
    entry = workspace(ctx).session().remember(text, kind=kind, pad=pad, confidence=confidence,
                                              provenance={"task": task} if task else {"cli": True},
                                              expires_in=expires_in)
    if as_json:
        emit_json(entry.to_dict())
    else:
        console.print(f"remembered {entry.kind} {entry.id} in pad {entry.pad}")


@app.command("search")
@reports_errors
def search(ctx: typer.Context, query: Annotated[str, typer.Argument(help="Words to look for (any of them).")],
           pad: Annotated[list[str] | None, typer.Option("--pad", help="Pads to search (repeatable; default: "
                                                         "your own).")] = None,
           limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 10, as_json: JSON = False) -> None:
    """Full-text search, best first (relevance weighted by confidence; docs/memory.md)."""
    _show(workspace(ctx).session().recall(query, pads=pad or None, limit=limit), as_json)


@app.command("forget")
@reports_errors
def forget(ctx: typer.Context, entry_id: Annotated[int, typer.Argument(help="The entry id.")],
           reason: Annotated[str, typer.Option("--reason")] = "", as_json: JSON = False) -> None:
    """Delete an entry (the audit keeps that it existed, not its text)."""
    entry = workspace(ctx).session().forget(entry_id, reason=reason)
    if as_json:
        emit_json({"forgotten": entry.id, "pad": entry.pad})
    else:
        console.print(f"forgot entry {entry.id} of pad {entry.pad}")


@app.command("share")
@reports_errors
def share(ctx: typer.Context, pad: Annotated[str, typer.Argument(help="The agent whose pad is shared.")],
          grantee: Annotated[str, typer.Argument(help="Who may read it.")],
          revoke: Annotated[bool, typer.Option("--revoke", help="Stop sharing.")] = False,
          as_json: JSON = False) -> None:
    """Let another principal read an agent's private pad (its owner or a human may)."""
    workspace(ctx).session().share_memory(pad, grantee, revoke=revoke)
    if as_json:
        emit_json({"pad": pad, "grantee": grantee, "shared": not revoke})
    else:
        console.print(f"{grantee} {'may no longer' if revoke else 'may now'} read pad {pad}")


@app.command("consolidate")
@reports_errors
def consolidate(ctx: typer.Context, pad: Annotated[list[str] | None, typer.Option("--pad", help="Pads "
                                                                                  "(default: every pad).")] = None,
                as_json: JSON = False) -> None:
    """Merge duplicate entries and drop expired ones; each decision is audited."""
    done = workspace(ctx).session().consolidate_memory(pads=pad or None)
    if as_json:
        emit_json({"merged": [{"kept": k, "dropped": d} for k, d in done.merged], "expired": done.expired})
        return
    for kept, dropped in done.merged:
        console.print(f"merged {', '.join(map(str, dropped))} into {kept}")
    console.print(f"{len(done.merged)} merge(s), {len(done.expired)} expired entr(ies) dropped")


@app.command("export")
@reports_errors
def export(ctx: typer.Context, agent: Annotated[str, typer.Argument(help="The pad to export from.")],
           output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
           kind: Annotated[list[str] | None, typer.Option("--kind", help="Only these kinds (repeatable).")] = None,
           query: Annotated[str, typer.Option("--filter", help="Only entries matching these words.")] = "",
           min_confidence: Annotated[float, typer.Option("--min-confidence")] = 0.0, as_json: JSON = False) -> None:
    """Write a slice of a pad, with provenance, to a file (roster.memory/1 JSON)."""
    document = workspace(ctx).session().export_memory(agent, kinds=kind or None, query=query,
                                                      min_confidence=min_confidence)
    output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    if as_json:
        emit_json({"file": str(output), "entries": len(document["entries"])})
    else:
        console.print(f"wrote {len(document['entries'])} entr(ies) of pad {agent} to {output}")


@app.command("import")
@reports_errors
def import_(ctx: typer.Context, agent: Annotated[str, typer.Argument(help="The pad to import into.")],
            file: Annotated[Path, typer.Argument(help="A file written by `roster memory export`.", exists=True,
                                                 dir_okay=False)],
            as_json: JSON = False) -> None:
    """Take an exported slice into a pad; each entry is marked as received from its source pad."""
    try:
        document = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file} is not JSON: {exc}") from None
    entries = workspace(ctx).session().import_memory(agent, document)
    if as_json:
        emit_json([e.to_dict() for e in entries])
    else:
        console.print(f"imported {len(entries)} entr(ies) into pad {agent}")
