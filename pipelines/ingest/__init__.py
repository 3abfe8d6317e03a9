"""Ingest: raw JSONL, Parquet, plain-text trees and code trees into bronze.documents and bronze.quarantine."""

from pipelines.ingest.stage import IngestSummary, SourceCounts, run_ingest

__all__ = ["IngestSummary", "SourceCounts", "run_ingest"]
