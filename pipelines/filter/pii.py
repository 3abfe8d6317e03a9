"""Redaction of personal data and secrets, with counts per kind.

Placeholders follow the BigCode/StarCoder convention (`<EMAIL>`, `<IP_ADDRESS>`, `<KEY>`), so a model learns the
shape of the text without the values. E-mail and public IP addresses are redacted everywhere; phone numbers only in
prose (in code, long digit groups are mostly constants); private keys and well-known API-key formats everywhere.
Private, loopback and documentation-range IP addresses are kept: they identify nobody and are common in docs and code.
"""

from __future__ import annotations

import ipaddress
import re

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])")
# At least 9 digits in groups joined by space, dot or hyphen, optionally with a +country code or (area code).
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w-])")
PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.DOTALL
)
API_KEY = re.compile(
    r"\b(?:"
    r"AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{60,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|sk_live_[0-9A-Za-z]{24,}|rk_live_[0-9A-Za-z]{24,}"  # Stripe
    r"|sk-(?:proj-)?[A-Za-z0-9_-]{32,}"  # OpenAI-style secret keys
    r"|glpat-[A-Za-z0-9_-]{20}"  # GitLab
    r")\b"
)
# `password = "..."`, `api_key: '...'`: the value is replaced, the name stays.
ASSIGNED_SECRET = re.compile(
    r"""(?i)\b((?:api[_-]?key|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token|password|passwd)"""
    r"""["']?\s*[:=]\s*["'])([^"'\s]{12,})(["'])"""
)

PLACEHOLDERS = {
    "private_key": "<KEY>",
    "api_key": "<KEY>",
    "secret": "<KEY>",
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}


def _is_public_ip(text: str) -> bool:
    address = ipaddress.ip_address(text)
    return address.is_global and not address.is_multicast


def redact(text: str, kind: str) -> tuple[str, dict[str, int]]:
    """Returns the redacted text and how many of each kind were replaced (kinds with zero are left out)."""
    counts: dict[str, int] = {}

    def replace(pattern: re.Pattern[str], name: str, text: str, keep=None) -> str:
        def substitute(match: re.Match[str]) -> str:
            if keep is not None and keep(match):
                return match.group(0)
            counts[name] = counts.get(name, 0) + 1
            return PLACEHOLDERS[name]

        return pattern.sub(substitute, text)

    text = replace(PRIVATE_KEY, "private_key", text)
    text = replace(API_KEY, "api_key", text)
    text = ASSIGNED_SECRET.sub(lambda m: _count_secret(m, counts), text)
    text = replace(EMAIL, "email", text)
    text = replace(IPV4, "ip_address", text, keep=lambda m: not _is_public_ip(m.group(0)))
    if kind != "code":
        text = replace(PHONE, "phone", text, keep=lambda m: sum(c.isdigit() for c in m.group(0)) < 9)
    return text, counts


def _count_secret(match: re.Match[str], counts: dict[str, int]) -> str:
    if match.group(2).startswith("<"):  # already a placeholder
        return match.group(0)
    counts["secret"] = counts.get("secret", 0) + 1
    return f"{match.group(1)}{PLACEHOLDERS['secret']}{match.group(3)}"
