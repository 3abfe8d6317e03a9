"""Text normalisation shared by every stage that compares or scores text.

Prose: Unicode NFC, control characters removed, runs of horizontal whitespace folded to one space, trailing spaces
dropped, three or more newlines folded to two (paragraph breaks survive). Code: NFC and control characters removed,
indentation and line structure kept exactly (only trailing whitespace and a final run of blank lines go), because
whitespace is syntax in Python, Makefiles and YAML.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# C0/C1 controls except tab and newline; also the BOM, zero-width no-break space and the line/paragraph separators
# that make line counts disagree between tools.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u2028\u2029]")
_CARRIAGE_RETURN = re.compile(r"\r\n?")
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_prose(text: str) -> str:
    text = unicodedata.normalize("NFC", _CARRIAGE_RETURN.sub("\n", text))
    text = _CONTROL.sub("", text)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def normalize_code(text: str) -> str:
    text = unicodedata.normalize("NFC", _CARRIAGE_RETURN.sub("\n", text))
    text = _CONTROL.sub("", text)
    return _TRAILING_SPACE.sub("", text).rstrip("\n") + "\n"


def normalize(text: str, kind: str) -> str:
    return normalize_code(text) if kind == "code" else normalize_prose(text)


def content_hash(normalized: str) -> str:
    """Identity of normalised content, for exact-duplicate detection across sources (32 hex chars)."""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:32]
