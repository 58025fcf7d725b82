"""Where checkpoints are signed and sent, outside the database: the key files and the witnesses.

Keys (:class:`KeyRing`): the Ed25519 private key is a PEM (PKCS 8) file of mode 0600, by default
``.roster/audit-key`` beside the workspace's database; ``ROSTER_AUDIT_KEY`` (or ``--key``) names another
path. The public keys verify trusts are the JSON lines of ``<key file>.trusted`` (``{"key_id",
"public_key" (base64 of 32 raw bytes), "added_at"}``), also 0600: a database writer cannot add a key
there, and a key rotated out stays trusted for the checkpoints it signed.

Witnesses (:func:`witness`): ``file:PATH`` or a bare path appends one JSON line per checkpoint;
``http://...``/``https://...`` POSTs the checkpoint as JSON (httpx, 10 s timeout, any 2xx accepted);
``git:DIR`` appends the line to ``DIR/roster-checkpoints/<company>.jsonl`` in that git repository and
commits it. Each line is :meth:`Checkpoint.to_dict` plus ``public_key``. :func:`read_witness` reads a
file of such lines back (a file witness, or the git witness's file).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from roster.errors import UsageError
from roster.kernel.checkpoints import Checkpoint, key_id, public_bytes

KEY_ENV = "ROSTER_AUDIT_KEY"
WITNESS_ENV = "ROSTER_AUDIT_WITNESS"
DEFAULT_KEY_NAME = "audit-key"


def key_path(state_dir: Path, explicit: str | Path | None = None) -> Path:
    """The private key's path: ``explicit``, else ``$ROSTER_AUDIT_KEY``, else ``state_dir/audit-key``."""
    chosen = explicit or os.environ.get(KEY_ENV)
    return Path(chosen).expanduser() if chosen else state_dir / DEFAULT_KEY_NAME


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start (a temporary file renamed into place)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _append_line(path: Path, line: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class KeyRing:
    """The signing key at :attr:`path` and the trusted public keys at :attr:`trusted_path`."""

    path: Path

    @property
    def trusted_path(self) -> Path:
        return self.path.with_name(self.path.name + ".trusted")

    def exists(self) -> bool:
        return self.path.exists()

    def private_key(self, *, create: bool = True) -> Ed25519PrivateKey:
        """The signing key; with ``create``, a new one (0600, trusted at once) if there is none.
        Raises :class:`UsageError` if the file is unreadable or not an Ed25519 PEM key."""
        if not self.path.exists():
            if not create:
                raise UsageError(f"no audit signing key at {self.path}; run 'roster audit checkpoint' to "
                                 f"create one, or point {KEY_ENV} at yours")
            key = Ed25519PrivateKey.generate()
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._trust(key.public_key())
            _write_private(self.path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
            return key
        try:
            key = load_pem_private_key(self.path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read the audit signing key {self.path}: {exc}; restore it from your "
                             "backup, or rotate with 'roster audit rotate-key'") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise UsageError(f"{self.path} is not an Ed25519 key; roster signs checkpoints with Ed25519")
        return key

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """The trusted public keys, by key id (empty if the file does not exist). Raises
        :class:`UsageError` naming the line of a malformed entry."""
        keys: dict[str, Ed25519PublicKey] = {}
        if not self.trusted_path.exists():
            return keys
        for number, line in enumerate(self.trusted_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"], validate=True))
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{self.trusted_path} line {number} is not a trusted key entry ({exc}); "
                                 "each line is {\"key_id\", \"public_key\", \"added_at\"}") from None
            keys[key_id(key)] = key
        return keys

    def _trust(self, key: Ed25519PublicKey) -> None:
        entry = {"key_id": key_id(key), "public_key": base64.b64encode(public_bytes(key)).decode(),
                 "added_at": _now()}
        _append_line(self.trusted_path, json.dumps(entry, sort_keys=True))

    def rotate(self) -> tuple[str | None, str]:
        """A new signing key replaces the current one (whose public key stays trusted, so the checkpoints
        it signed still verify). Returns ``(old key id or None, new key id)``."""
        old = key_id(self.private_key(create=False).public_key()) if self.path.exists() else None
        key = Ed25519PrivateKey.generate()
        self._trust(key.public_key())
        _write_private(self.path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return old, key_id(key.public_key())


def witness_line(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> dict:
    """The JSON object a witness receives."""
    return {**checkpoint.to_dict(), "public_key": base64.b64encode(public_bytes(public_key)).decode()}


class Witness(Protocol):
    name: str

    def send(self, line: dict) -> None:
        """Record one checkpoint line; raises :class:`UsageError` saying what failed."""


@dataclass
class FileWitness:
    path: Path

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    def send(self, line: dict) -> None:
        try:
            _append_line(self.path, json.dumps(line, sort_keys=True), 0o644)
        except OSError as exc:
            raise UsageError(f"cannot append the checkpoint to {self.path}: {exc}") from None


@dataclass
class WebhookWitness:
    url: str
    timeout: float = 10.0

    @property
    def name(self) -> str:
        return self.url

    def send(self, line: dict) -> None:
        import httpx  # only a webhook witness needs it: every CLI command loads this module

        try:
            response = httpx.post(self.url, json=line, timeout=self.timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UsageError(f"cannot POST the checkpoint to {self.url}: {exc}") from None
        if not response.is_success:
            raise UsageError(f"the witness {self.url} answered {response.status_code} to the checkpoint")


@dataclass
class GitWitness:
    repo: Path

    @property
    def name(self) -> str:
        return f"git:{self.repo}"

    def send(self, line: dict) -> None:
        relative = Path("roster-checkpoints") / f"{line['company']}.jsonl"
        git = ["git", "-C", str(self.repo), "-c", "user.name=roster", "-c", "user.email=roster@localhost",
               "-c", "commit.gpgsign=false"]
        try:
            inside = subprocess.run([*git, "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False)
            if inside.returncode != 0 or inside.stdout.strip() != "true":
                raise UsageError(f"the git witness {self.repo} is not a git work tree; 'git init' it first")
            _append_line(self.repo / relative, json.dumps(line, sort_keys=True), 0o644)
            for args in (["add", "--", str(relative)],
                         ["commit", "-q", "-m", f"roster checkpoint {line['company']} seq {line['seq']}", "--",
                          str(relative)]):
                done = subprocess.run([*git, *args], capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise UsageError(f"git {args[0]} in the witness {self.repo} failed: "
                                     f"{(done.stderr or done.stdout).strip()}")
        except OSError as exc:
            raise UsageError(f"cannot write the checkpoint to the git witness {self.repo}: {exc}") from None


def witness(spec: str) -> Witness:
    """The witness ``spec`` names: ``file:PATH`` or a bare path, an ``http(s)://`` URL, or ``git:DIR``."""
    if spec.startswith(("http://", "https://")):
        return WebhookWitness(spec)
    if spec.startswith("git:"):
        return GitWitness(Path(spec[4:]).expanduser())
    path = spec.removeprefix("file:")
    if not path:
        raise UsageError("a witness is file:PATH, http(s)://URL or git:DIR; got an empty one")
    return FileWitness(Path(path).expanduser())


def configured_witnesses(extra: Iterable[str] = ()) -> list[Witness]:
    """The witnesses of ``$ROSTER_AUDIT_WITNESS`` (comma-separated specs) and ``extra``."""
    specs = [s.strip() for s in os.environ.get(WITNESS_ENV, "").split(",") if s.strip()]
    return [witness(s) for s in [*specs, *extra]]


def read_witness(path: Path) -> list[Checkpoint]:
    """The checkpoints in a witness file (JSON lines). Raises :class:`UsageError` naming a bad line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the witness file {path}: {exc}") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append(Checkpoint.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} line {number} is not a checkpoint ({exc})") from None
    return found
