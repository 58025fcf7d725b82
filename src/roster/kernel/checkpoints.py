"""Signed checkpoints of the audit chain: what is signed, how, and how a signature is checked.

A checkpoint says "company C's chain had head hash H at seq S at time T", signed with Ed25519 by the key
K. The signed message is the RFC 8785 JSON of::

    {"v": 1, "kind": "roster-audit-checkpoint", "company": C, "seq": S, "head": H, "ts": T, "key_id": K}

``key_id`` is the first 16 hex digits of SHA-256 over the raw 32-byte public key; the signature is
base64 (standard alphabet) of the 64-byte Ed25519 signature. Whoever holds the private key (outside the
database) can sign; whoever trusts the public key can check, and a chain recomputed from the events must
then have hash H at seq S: a consistent rewrite or a truncation before S cannot pass.

Pure: no I/O. Keys are ``cryptography`` objects; :mod:`roster.store.witness` keeps them in files.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KIND = "roster-audit-checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """One signed chain head. ``ts`` is ISO 8601 UTC; ``signature`` base64 of 64 bytes."""

    company: str
    seq: int
    head: str
    ts: str
    key_id: str
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Checkpoint:
        """Raises ``KeyError``/``TypeError``/``ValueError`` for a value that is not a checkpoint."""
        seq = value["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError(f"seq must be an integer, not {seq!r}")
        fields = {name: value[name] for name in ("company", "head", "ts", "key_id", "signature")}
        for name, item in fields.items():
            if not isinstance(item, str):
                raise TypeError(f"{name} must be a string, not {item!r}")
        return cls(seq=seq, **fields)


def public_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of ``key``."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """16 hex digits naming ``key``: the start of SHA-256 over its raw bytes."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def message(*, company: str, seq: int, head: str, ts: str, key_id: str) -> bytes:
    """The bytes a checkpoint's signature covers (see the module's docstring)."""
    return rfc8785.dumps({"v": 1, "kind": KIND, "company": company, "seq": seq, "head": head, "ts": ts,
                          "key_id": key_id})


def sign(key: Ed25519PrivateKey, *, company: str, seq: int, head: str, ts: str) -> Checkpoint:
    """A checkpoint of ``company``'s head ``head`` at ``seq``, signed by ``key``."""
    kid = key_id(key.public_key())
    signature = key.sign(message(company=company, seq=seq, head=head, ts=ts, key_id=kid))
    return Checkpoint(company, seq, head, ts, kid, base64.b64encode(signature).decode())


def check(checkpoint: Checkpoint, trusted: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why ``checkpoint``'s signature does not hold against the ``trusted`` keys (by key id), or ``None``."""
    key = trusted.get(checkpoint.key_id)
    if key is None:
        return f"signed by key {checkpoint.key_id}, which is not a trusted key"
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        key.verify(signature, message(company=checkpoint.company, seq=checkpoint.seq, head=checkpoint.head,
                                      ts=checkpoint.ts, key_id=checkpoint.key_id))
    except (InvalidSignature, ValueError):
        return f"the signature does not verify with key {checkpoint.key_id} (the checkpoint was forged or edited)"
    return None


def compare(checkpoint: Checkpoint, chain_end: int, hash_at: Mapping[int, str]) -> str | None:
    """Why the recomputed chain disagrees with a (valid) checkpoint, or ``None``.

    ``chain_end`` is the last seq of the chain as verified; ``hash_at`` maps seqs (at least the
    checkpoint's, if reached) to the recomputed hash there."""
    if checkpoint.seq > chain_end:
        return (f"the chain ends at seq {chain_end} but checkpoint {checkpoint.seq} (signed {checkpoint.ts} by "
                f"key {checkpoint.key_id}) saw it reach seq {checkpoint.seq}: events were deleted from the end "
                "(truncation)")
    if checkpoint.seq > 0 and hash_at.get(checkpoint.seq) != checkpoint.head:
        return (f"the hash at seq {checkpoint.seq} is not the one checkpoint {checkpoint.seq} signed "
                f"({checkpoint.ts}, key {checkpoint.key_id}): the chain was rewritten at or before seq "
                f"{checkpoint.seq}")
    return None
