"""Content-addressed storage of artifact bytes, per company, behind one small interface.

A blob is named by the SHA-256 of its content (64 lowercase hex digits) *within its company*.
:class:`FileBlobStore` keeps each blob at ``<root>/<company>/<first two hex digits>/<digest>`` (under
``.roster/artifacts/`` for a SQLite store), written atomically (a temporary file, fsync, rename). Reading
re-hashes the bytes, so a blob changed or lost on disk is reported as
:class:`~roster.errors.CorruptArtifact` instead of being served.

Identical content is stored once per company, never shared between companies: whether a save finds its
bytes already stored (a dedupe, which is faster) can only ever depend on the same company's own
artifacts, and deleting or corrupting one company's file never touches another's.

Stores written before blobs were kept per company hold them at ``<root>/<xx>/<digest>`` (the *legacy*
layout). :meth:`FileBlobStore.adopt_legacy` copies each such blob into the directory of every company
whose artifacts name it and then removes the shared file (``Store.open`` does this once); until then,
:meth:`FileBlobStore.get` falls back to the legacy file, so existing artifacts keep reading.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from roster.errors import CorruptArtifact

_HEX2 = re.compile(r"^[0-9a-f]{2}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlobStore(Protocol):
    """Where artifact content lives, kept apart per company (the spec's ``company`` id).

    ``put(company, content)`` returns the SHA-256 hex digest; ``get(company, digest)`` returns the bytes
    after verifying them, raising :class:`~roster.errors.CorruptArtifact` when they are missing or changed.
    An implementation must never let one company's ``put`` or ``get`` depend on another company's blobs."""

    def put(self, company: str, content: bytes) -> str: ...

    def get(self, company: str, digest: str) -> bytes: ...


class FileBlobStore:
    """Blobs as files under ``root``, one directory per company; identical content is stored once per
    company."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, company: str, digest: str) -> Path:
        """Where ``company``'s blob ``digest`` lives: ``<root>/<company>/<xx>/<digest>``."""
        return self.root / company / digest[:2] / digest

    def legacy_path(self, digest: str) -> Path:
        """Where a store written before per-company blobs kept ``digest``: ``<root>/<xx>/<digest>``."""
        return self.root / digest[:2] / digest

    def put(self, company: str, content: bytes) -> str:
        """Store ``content`` (bytes) for ``company``; returns its SHA-256 hex digest. An intact existing blob
        of the same company is left alone; a corrupt one is replaced (saving the content again repairs
        it). Other companies' blobs are never looked at."""
        digest = hashlib.sha256(content).hexdigest()
        target = self.path(company, digest)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return digest
        _write_atomically(target, content)
        return digest

    def get(self, company: str, digest: str) -> bytes:
        """The bytes ``company`` stored under ``digest`` (falling back to the legacy layout's file for a
        blob not yet adopted). Raises :class:`CorruptArtifact` if the file is missing or its content no
        longer hashes to ``digest``."""
        content = _read(self.path(company, digest))
        if content is None:
            content = _read(self.legacy_path(digest))
        if content is None:  # adopted meanwhile by another process: the company's copy is there now
            content = _read(self.path(company, digest))
        if content is None:
            raise CorruptArtifact(digest, f"the blob is missing from {self.root / company}")
        actual = hashlib.sha256(content).hexdigest()
        if actual != digest:
            raise CorruptArtifact(digest, f"its content now hashes to {actual[:12]}...")
        return content

    def legacy_digests(self) -> list[str]:
        """The digests of blobs still kept in the legacy, shared layout (``<root>/<xx>/<digest>``), sorted.
        A company directory is never mistaken for one: it holds directories, not blob files."""
        found: list[str] = []
        if not self.root.is_dir():
            return found
        for shard in os.scandir(self.root):
            if not (_HEX2.match(shard.name) and shard.is_dir(follow_symlinks=False)):
                continue
            for entry in os.scandir(shard.path):
                if _DIGEST.match(entry.name) and entry.name[:2] == shard.name and entry.is_file(follow_symlinks=False):
                    found.append(entry.name)
        return sorted(found)

    def adopt_legacy(self, owners: Iterable[tuple[str, str]]) -> int:
        """Move legacy blobs into their companies' directories. ``owners`` are ``(company, digest)`` pairs
        (every company whose artifacts name the digest). Each company gets its own copy (the bytes as they
        are: a corrupt legacy blob stays detectably corrupt); the legacy file is removed once every owner
        has one. A legacy blob no artifact names is left where it is. Returns the number of copies made.
        Safe to run from several processes at once (copies are atomic renames; removal tolerates a race)."""
        by_digest: dict[str, set[str]] = {}
        for company, digest in owners:
            by_digest.setdefault(digest, set()).add(company)
        copies = 0
        for digest, companies in sorted(by_digest.items()):
            legacy = self.legacy_path(digest)
            content = _read(legacy)
            if content is None:
                continue
            for company in sorted(companies):
                if not self.path(company, digest).exists():
                    _write_atomically(self.path(company, digest), content)
                    copies += 1
            legacy.unlink(missing_ok=True)
            try:
                legacy.parent.rmdir()
            except OSError:  # not empty (other legacy blobs, or unreferenced ones kept): leave it
                pass
        return copies


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomically(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
