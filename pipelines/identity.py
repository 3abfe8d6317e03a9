"""Stable document identity: the same (source, locator, content) gets the same id on every run and every machine."""

from __future__ import annotations

import hashlib

_DOMAIN = b"dataprep.doc.v1"


def document_id(source: str, locator: str, content: bytes) -> str:
    """32 hex characters (128 bits of SHA-256); fields are length-prefixed so no two inputs can run together."""
    digest = hashlib.sha256(_DOMAIN)
    for part in (source.encode("utf-8"), locator.encode("utf-8", "surrogatepass"), content):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:32]
