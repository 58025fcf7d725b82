"""Content-addressed storage of artifact bytes, behind one small interface.

A blob is named by the SHA-256 of its content (64 lowercase hex digits). :class:`FileBlobStore` keeps
each blob at ``<root>/<first two hex digits>/<digest>`` (under ``.roster/artifacts/`` for a SQLite store),
written atomically (a temporary file, fsync, rename). Reading re-hashes the bytes, so a blob changed or
lost on disk is reported as :class:`~roster.errors.CorruptArtifact` instead of being served.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from roster.errors import CorruptArtifact


class BlobStore(Protocol):
    """Where artifact content lives. ``put`` returns the SHA-256 hex digest; ``get`` verifies it."""

    def put(self, content: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...


class FileBlobStore:
    """Blobs as files under ``root``; identical content is stored once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put(self, content: bytes) -> str:
        """Store ``content`` (bytes); returns its SHA-256 hex digest. An intact existing blob is left alone;
        a corrupt one is replaced (saving the content again repairs it)."""
        digest = hashlib.sha256(content).hexdigest()
        target = self.path(digest)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``. Raises :class:`CorruptArtifact` if the file is missing or its
        content no longer hashes to ``digest``."""
        try:
            content = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise CorruptArtifact(digest, f"the blob is missing from {self.root}") from None
        actual = hashlib.sha256(content).hexdigest()
        if actual != digest:
            raise CorruptArtifact(digest, f"its content now hashes to {actual[:12]}...")
        return content
