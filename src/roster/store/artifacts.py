"""Versioned artifacts: the outputs a task's work leaves behind (documents, patches, reports, data files).

An artifact is named on its task (``name``, default: its ``kind``). Each new content saved under that
name is its next version (1, 2, ...); each version records its author (a human or agent principal), the
run that made it (if any), the reason, and its parent version. Content lives in the store's
:class:`~roster.store.blobs.BlobStore` by SHA-256, kept apart per company (identical bytes saved by two
companies are two blobs, so a dedupe is never observable across tenants), and is re-hashed on every read,
so a corrupt blob is detected (:class:`~roster.errors.CorruptArtifact`) rather than served.

Contracts look at artifacts by kind (``requires.artifacts``, ``produces``; see
:mod:`roster.kernel.contracts`): work that is not saved here does not count.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from roster.errors import NotFound, PayloadTooLarge, RosterError, UsageError
from roster.kernel.names import check_artifact
from roster.store import audit
from roster.store.company_base import ActorRef
from roster.store.corrections import record_artifact_revert_txn
from roster.store.schema import artifacts
from roster.store.tasks import Task, TaskVerbs, task_from_row

PREVIEW_CHARS = 4000
"""Characters of each text artifact an approver is shown in the request itself."""

MAX_DIFF_LINES = 2000
"""A diff longer than this many lines is cut, with a last line saying how many were left out."""


@dataclass(frozen=True)
class ArtifactRecord:
    """One artifact version. ``sha256`` names its content; ``size`` is in bytes; ``parent_id`` is the id of
    the version it replaced (``None`` for version 1)."""

    id: int
    task_id: int
    kind: str
    name: str
    sha256: str
    size: int
    reason: str
    created_by: str
    created_at: str
    version: int = 1
    parent_id: int | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def artifact_record(row: Any) -> ArtifactRecord:
    return ArtifactRecord(row.id, row.task_id, row.kind, row.name, row.sha256, row.size, row.reason, row.created_by,
                          row.created_at, row.version, row.parent_id, row.run_id)


class ArtifactVerbs(TaskVerbs):
    """Save, list, read and diff artifact versions (mixed into ``CompanyStore``)."""

    def record_artifact(self, task_id: int, kind: str, content: bytes, *, actor: ActorRef, name: str = "",
                        reason: str = "", run_id: str | None = None,
                        fencing_token: int | None = None) -> ArtifactRecord:
        """Save ``content`` (bytes) as the next version of the task's artifact ``name`` (default ``kind``).

        Content equal to the latest version's is not saved again: that version is returned. Otherwise the
        task's version goes up (evidence changed, so approvals given before no longer count). Needs
        ``write`` on the task's workflow. Raises :class:`PayloadTooLarge` (over the spec's
        ``limits.artifact_bytes``; nothing is stored), :class:`NotFound`, :class:`Denied`,
        :class:`LeaseHeld`, :class:`StaleFencingToken`, :class:`UsageError` (no blob store)."""
        name = name or kind
        check_artifact(kind, name)  # the names' character set and length: roster.kernel.names
        with self._evidence_write(task_id, actor, "artifact.record", {"kind": kind, "name": name,
                                                                      "size": len(content)},
                                  fencing_token=fencing_token) as write:
            assert write.cache.spec is not None
            limit = write.cache.spec.limits.artifact_bytes
            if len(content) > limit:
                raise PayloadTooLarge(f"artifact '{name}'", len(content), limit)
            if self.store.blobs is None:
                raise UsageError("this store has no artifact storage; open it with artifact_root=")
            latest = self._latest_txn(write.conn, task_id, name)
            digest = self.store.blobs.put(self.company, content)
            if latest is not None and latest.sha256 == digest and latest.kind == kind:
                return latest
            row = {"company_id": self.company, "task_id": task_id, "kind": kind, "name": name, "sha256": digest,
                   "size": len(content), "reason": reason, "created_by": write.actor.handle, "created_at": write.now,
                   "version": latest.version + 1 if latest else 1, "parent_id": latest.id if latest else None,
                   "run_id": run_id}
            artifact_id = write.conn.execute(insert(artifacts), row).inserted_primary_key[0]
            if latest is not None and write.actor.kind == "human" and write.task.lease_holder == write.actor.handle:
                record_artifact_revert_txn(write.conn, self.company, write.cache.spec, workflow=write.task.workflow,
                                           task_id=task_id, run_id=latest.run_id, name=name,
                                           by=write.actor.handle, now=write.now)
            task_version = self.bump_txn(write)
            audit.append(write.conn, write.head, ts=write.now, principal=write.actor.handle,
                         action="artifact.record", subject=f"task:{task_id}",
                         data={"kind": kind, "name": name, "sha256": digest, "size": len(content), "reason": reason,
                               "artifact_version": row["version"], "run_id": run_id, "version": task_version})
        return ArtifactRecord(artifact_id, task_id, kind, name, digest, len(content), reason, write.actor.handle,
                              write.now, row["version"], row["parent_id"], run_id)

    def _latest_txn(self, conn: Connection, task_id: int, name: str) -> ArtifactRecord | None:
        row = conn.execute(select(artifacts).where(artifacts.c.company_id == self.company,
                                                   artifacts.c.task_id == task_id, artifacts.c.name == name)
                           .order_by(artifacts.c.version.desc()).limit(1)).first()
        return artifact_record(row) if row is not None else None

    def _versions_txn(self, conn: Connection, task_id: int, name: str | None = None) -> list[ArtifactRecord]:
        query = select(artifacts).where(artifacts.c.company_id == self.company, artifacts.c.task_id == task_id)
        if name is not None:
            query = query.where(artifacts.c.name == name)
        return [artifact_record(r) for r in conn.execute(query.order_by(artifacts.c.id))]

    def latest_artifacts_txn(self, conn: Connection, task_id: int) -> dict[str, ArtifactRecord]:
        """The latest version of each of the task's artifacts, by name (a trusted internal read)."""
        latest: dict[str, ArtifactRecord] = {}
        for record in self._versions_txn(conn, task_id):
            latest[record.name] = record
        return latest

    def _approval_evidence_txn(self, conn: Connection, task: Task, kpis: list[str]) -> dict[str, Any]:
        """Adds the task's artifacts (latest version of each) to what an approver sees, with the first
        :data:`PREVIEW_CHARS` characters of each text one (a patch, a report)."""
        evidence = super()._approval_evidence_txn(conn, task, kpis)
        shown = []
        for record in sorted(self.latest_artifacts_txn(conn, task.id).values(), key=lambda r: r.id):
            item = {"name": record.name, "kind": record.kind, "version": record.version, "size": record.size,
                    "sha256": record.sha256}
            if self.store.blobs is not None:
                try:
                    text = self.store.blobs.get(self.company, record.sha256).decode("utf-8")
                    item["preview"] = text[:PREVIEW_CHARS]
                    item["truncated"] = len(text) > PREVIEW_CHARS
                except (UnicodeDecodeError, RosterError):  # binary, or a blob that fails its check: no preview
                    pass
            shown.append(item)
        return {**evidence, "artifacts": shown}

    def list_artifacts(self, task_id: int, *, actor: ActorRef | None = None,
                       all_versions: bool = False) -> list[ArtifactRecord]:
        """The task's artifacts: the latest version of each name (every version with ``all_versions``),
        in the order they were saved. Needs ``read`` on the workflow. Raises :class:`NotFound`."""
        with self._reading(actor, "task.read", f"task:{task_id}") as (conn, cache, who):
            self._may_read(cache, who, task_from_row(self.task_row_txn(conn, task_id)).workflow)
            if all_versions:
                return self._versions_txn(conn, task_id)
            return sorted(self.latest_artifacts_txn(conn, task_id).values(), key=lambda r: r.id)

    def artifact_history(self, task_id: int, name: str, *, actor: ActorRef | None = None) -> list[ArtifactRecord]:
        """Every version of the task's artifact ``name``, oldest first. Raises :class:`NotFound`."""
        with self._reading(actor, "artifact.read", f"task:{task_id}") as (conn, cache, who):
            self._may_read(cache, who, task_from_row(self.task_row_txn(conn, task_id)).workflow)
            versions = self._versions_txn(conn, task_id, name)
        if not versions:
            raise NotFound(self._no_artifact(task_id, name))
        return versions

    def artifact(self, task_id: int, name: str, version: int | None = None, *,
                 actor: ActorRef | None = None) -> tuple[ArtifactRecord, bytes]:
        """One version of an artifact (default: the latest) and its content, verified against its SHA-256.
        Raises :class:`NotFound`, :class:`CorruptArtifact`, :class:`UsageError` (no blob store)."""
        record = self._version(task_id, name, version, actor)
        if self.store.blobs is None:
            raise UsageError("this store has no artifact storage; open it with artifact_root=")
        return record, self.store.blobs.get(self.company, record.sha256)

    def artifact_diff(self, task_id: int, name: str, from_version: int | None = None,
                      to_version: int | None = None, *, actor: ActorRef | None = None) -> str:
        """A unified text diff between two versions of an artifact (default: the latest and its parent; a
        first version diffs against nothing). Non-UTF-8 content is summarised by hash and size instead.
        At most :data:`MAX_DIFF_LINES` lines. Raises :class:`NotFound`, :class:`CorruptArtifact`."""
        new, new_content = self.artifact(task_id, name, to_version, actor=actor)
        old_version = from_version if from_version is not None else (new.version - 1 if new.version > 1 else None)
        old, old_content = (self.artifact(task_id, name, old_version, actor=actor) if old_version is not None
                            else (None, b""))
        return unified_diff(name, old, old_content, new, new_content)

    def _version(self, task_id: int, name: str, version: int | None, actor: ActorRef | None) -> ArtifactRecord:
        versions = self.artifact_history(task_id, name, actor=actor)
        if version is None:
            return versions[-1]
        for record in versions:
            if record.version == version:
                return record
        raise NotFound(f"artifact '{name}' of task {task_id} has no version {version}; it has versions "
                       f"1 to {versions[-1].version}")

    def _no_artifact(self, task_id: int, name: str) -> str:
        return f"task {task_id} has no artifact named '{name}'; `roster task show {task_id}` lists its artifacts"


def unified_diff(name: str, old: ArtifactRecord | None, old_content: bytes, new: ArtifactRecord,
                 new_content: bytes, max_lines: int = MAX_DIFF_LINES) -> str:
    """The unified diff of two artifact versions' content (``old`` ``None``: against nothing)."""
    try:
        old_text, new_text = old_content.decode(), new_content.decode()
    except UnicodeDecodeError:
        before = f"v{old.version} {old.sha256[:12]} ({old.size} bytes)" if old else "nothing"
        return f"binary artifact '{name}': {before} -> v{new.version} {new.sha256[:12]} ({new.size} bytes)\n"
    lines = list(difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                      fromfile=f"{name}@v{old.version}" if old else "/dev/null",
                                      tofile=f"{name}@v{new.version}"))
    lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... {len(lines) - max_lines} more diff lines left out\n"]
    return "".join(lines)
