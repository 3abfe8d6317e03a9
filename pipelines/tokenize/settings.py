"""The tokenize stage's config section (`tokenize:`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import Section


@dataclass(frozen=True)
class TokenizeConfig:
    """cl100k_base tokenization of the documents the filter and dedup kept."""

    # Documents longer than this (in characters) are encoded in pieces cut at safe boundaries (same tokens, bounded
    # memory). Parallelism is Spark's: one task per core, each encoding its Arrow batches.
    chunk_chars: int = 1_000_000


def parse_tokenize(section: Section) -> TokenizeConfig:
    defaults = TokenizeConfig()
    tokenize = TokenizeConfig(chunk_chars=section.take("chunk_chars", int, default=defaults.chunk_chars, minimum=1024))
    section.reject_unknown()
    return tokenize
