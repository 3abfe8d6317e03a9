"""Ingest: raw JSONL, Parquet, plain-text trees and code trees into bronze.documents and bronze.quarantine.

The stage is `pipelines.ingest.stage.run_ingest`. This package imports nothing eagerly, so that Spark's Python
workers, which import `pipelines.ingest.tasks`, do not pay for MLflow and Delta.
"""
