"""The read tools of every ``llm`` run: what a model may look up while it decides, as its agent.

Writes (a transition, artifacts, checks, messages and replies, memories, filed and delegated tasks, a
failure that escalates) go in the run's decision and are applied by the runtime under the contract, all
or nothing. Reads happen during the run, through the store's own verbs with the agent as the actor, so
the rights that hold everywhere else hold here (a denial is audited and stops the run):

================  =====================================================  ====================================
tool              arguments                                              store verb
================  =====================================================  ====================================
read_artifact     name, version (default latest), task_id (default the   ``artifact``
                  run's task)
artifact_versions name, task_id                                          ``artifact_history``
artifact_diff     name, from_version, to_version, task_id                ``artifact_diff``
recall            query, limit (1-50), pad (default your own)            ``recall``
inbox             unread_only, limit (1-50)                              ``message_inbox``
thread            thread_id                                              ``thread``
================  =====================================================  ====================================

Each tool answers with text: JSON for records, the content or diff itself, cut at
:data:`MAX_TOOL_OUTPUT` characters. A name or version that does not exist answers with the store's
explanation, so the model can correct itself. Reading the inbox marks nothing read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from roster.errors import NotFound, UsageError

MAX_TOOL_OUTPUT = 20_000
"""Characters of a tool's answer passed back to the model."""


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadArtifact(_Arguments):
    """Read one version of an artifact's content."""

    name: str = Field(min_length=1, description="The artifact's name on the task.")
    version: int | None = Field(None, ge=1, description="Which version (default: the latest).")
    task_id: int | None = Field(None, ge=1, description="Which task (default: this run's task).")


class ArtifactVersions(_Arguments):
    """List every version of an artifact: author, run, reason, size, oldest first."""

    name: str = Field(min_length=1, description="The artifact's name on the task.")
    task_id: int | None = Field(None, ge=1, description="Which task (default: this run's task).")


class ArtifactDiff(_Arguments):
    """A unified diff between two versions of an artifact (default: the latest against its parent)."""

    name: str = Field(min_length=1, description="The artifact's name on the task.")
    from_version: int | None = Field(None, ge=1)
    to_version: int | None = Field(None, ge=1)
    task_id: int | None = Field(None, ge=1, description="Which task (default: this run's task).")


class Recall(_Arguments):
    """Search a memory pad by full text, best first (an empty query lists the newest entries)."""

    query: str = Field("", max_length=1000)
    limit: int = Field(8, ge=1, le=50)
    pad: str | None = Field(None, description="A pad you may read (default: your own).")


class Inbox(_Arguments):
    """Your messages, newest first (reading marks nothing read)."""

    unread_only: bool = False
    limit: int = Field(20, ge=1, le=50)


class Thread(_Arguments):
    """Every message of a thread you are in, oldest first."""

    thread_id: int = Field(ge=1)


@dataclass(frozen=True)
class ReadTool:
    """One read tool: its name, argument model and what it does with the store."""

    name: str
    arguments: type[_Arguments]
    read: Callable[[Any, str, int | None, Any], Any]

    @property
    def description(self) -> str:
        return (self.arguments.__doc__ or self.name).strip()

    def json_schema(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        schema.pop("description", None)
        return schema


def _task_of(args: Any, run_task: int | None) -> int:
    task_id = args.task_id or run_task
    if task_id is None:
        raise UsageError("this run has no task: name one with 'task_id'")
    return task_id


def _read_artifact(company: Any, agent: str, run_task: int | None, args: ReadArtifact) -> str:
    record, content = company.artifact(_task_of(args, run_task), args.name, args.version, actor=agent)
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return f"artifact '{record.name}' v{record.version} is binary ({record.size} bytes, sha256 {record.sha256})"
    return f"artifact '{record.name}' v{record.version} ({record.kind}, by {record.created_by}):\n{text}"


READ_TOOLS: dict[str, ReadTool] = {tool.name: tool for tool in (
    ReadTool("read_artifact", ReadArtifact, _read_artifact),
    ReadTool("artifact_versions", ArtifactVersions, lambda company, agent, run_task, args: [
        r.to_dict() for r in company.artifact_history(_task_of(args, run_task), args.name, actor=agent)]),
    ReadTool("artifact_diff", ArtifactDiff, lambda company, agent, run_task, args: company.artifact_diff(
        _task_of(args, run_task), args.name, args.from_version, args.to_version, actor=agent)
        or "(no difference)"),
    ReadTool("recall", Recall, lambda company, agent, run_task, args: [
        {"id": e.id, "pad": e.pad, "kind": e.kind, "text": e.text, "confidence": e.confidence, "score": e.score}
        for e in company.recall(args.query, actor=agent, pads=[args.pad] if args.pad else None, limit=args.limit)]),
    ReadTool("inbox", Inbox, lambda company, agent, run_task, args: [
        m.to_dict() for m in company.message_inbox(actor=agent, unread_only=args.unread_only, limit=args.limit)]),
    ReadTool("thread", Thread, lambda company, agent, run_task, args: [
        m.to_dict() for m in company.thread(args.thread_id, actor=agent)]),
)}
"""Every read tool, by name (see the module docstring)."""


class AgentReads:
    """The read tools bound to one agent's run: ``company`` is its :class:`~roster.store.CompanyStore`,
    ``task_id`` the run's task (``None`` for a run without one)."""

    def __init__(self, company: Any, agent: str, task_id: int | None) -> None:
        self.company = company
        self.agent = agent
        self.task_id = task_id

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run the read tool ``name`` with the model's ``arguments``; the answer as text. Invalid arguments,
        unknown names and versions answer with what was wrong (for the model to correct); a denial raises
        :class:`~roster.errors.Denied` (it stops the run)."""
        tool = READ_TOOLS[name]
        try:
            args = tool.arguments.model_validate(arguments)
            value = tool.read(self.company, self.agent, self.task_id, args)
        except (NotFound, UsageError) as exc:
            return f"'{name}' found nothing: {exc.message}"
        except ValueError as exc:  # pydantic's ValidationError
            return f"'{name}' was called with invalid arguments: {exc}"
        text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True, default=str)
        return text if len(text) <= MAX_TOOL_OUTPUT else text[:MAX_TOOL_OUTPUT] + "\n[answer truncated]"
