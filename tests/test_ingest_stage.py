"""The ingest stage on real local Spark + Delta: formats, quarantine, reconciliation, idempotent MERGE."""

import gzip
import os

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.runner import run_stage
from pipelines.lakehouse import Lakehouse
from pipelines.tables import BRONZE_DOCUMENTS, BRONZE_QUARANTINE


@pytest.fixture
def corpus(tmp_path, write_lines, write_file, make_config):
    """One source of every format, each with good records and some bad ones."""
    write_lines(
        f"{tmp_path}/web/part-0.jsonl",
        ['{"text": "first web page", "url": "a"}', '{"text": "second web page", "url": "b"}', "{broken", ""],
    )
    gz = b'{"text": "compressed page"}\n{"text": 5}\n'
    write_file(f"{tmp_path}/web/part-1.jsonl.gz", gzip.compress(gz))
    write_file(f"{tmp_path}/web/part-2.jsonl.gz", gzip.compress(gz * 2000)[:-8])  # its trailer cut off
    os.makedirs(f"{tmp_path}/pq")
    pq.write_table(pa.table({"text": ["row zero", "row one"], "id": ["r0", "r1"]}), f"{tmp_path}/pq/good.parquet")
    pq.write_table(pa.table({"content": ["wrong column"]}), f"{tmp_path}/pq/bad.parquet")
    write_file(f"{tmp_path}/notes/a.txt", "a note")
    write_file(f"{tmp_path}/notes/b.txt", b"nul \x00 inside")
    write_file(f"{tmp_path}/repo/main.py", "print('hello')\n")
    write_file(f"{tmp_path}/repo/lib/util.go", "package lib\n")
    write_file(f"{tmp_path}/repo/data.bin", b"\x00\x01\x02")
    sources = [
        {"name": "web", "format": "jsonl", "paths": [f"{tmp_path}/web/*.jsonl*"]},
        {"name": "tables", "format": "parquet", "paths": [f"{tmp_path}/pq"], "id_field": "id"},
        {"name": "notes", "format": "text", "paths": [f"{tmp_path}/notes"]},
        {"name": "repo", "format": "code", "paths": [f"{tmp_path}/repo"]},
    ]
    return make_config(str(tmp_path), sources)


def documents_of(spark, config):
    return Lakehouse(spark, config.lakehouse).table("bronze.documents").read()


def quarantine_of(spark, config):
    return Lakehouse(spark, config.lakehouse).table("bronze.quarantine").read()


def test_every_format_lands_in_bronze_and_reconciles_per_source(spark, corpus):
    summary = run_stage("ingest", spark, corpus)
    counts = {name: (c.read, c.new, c.quarantined) for name, c in summary.sources.items()}
    assert set(summary.sources["web"].quarantine_reasons) == {
        "malformed_json",
        "empty_record",
        "wrong_text_type",
        "corrupt_compressed_stream",
    }
    assert counts["tables"] == (3, 2, 1)
    assert counts["notes"] == (2, 1, 1)
    assert counts["repo"] == (3, 2, 1)
    assert summary.reconciles
    documents = documents_of(spark, corpus)
    assert documents.count() == sum(c.new for c in summary.sources.values()) == summary.documents_written
    assert documents.schema.fieldNames() == BRONZE_DOCUMENTS.column_names
    rows = {(r.source, r.locator): r for r in documents.collect()}
    assert rows[("tables", "id=r1")].text == "row one"
    assert rows[("repo", "lib/util.go")].language == "Go" and rows[("repo", "lib/util.go")].kind == "code"
    assert rows[("web", "part-0.jsonl@0")].metadata == {"url": "a"}
    assert {r.run_id for r in rows.values()} == {summary.run_id}


def test_quarantine_rows_carry_reason_detail_and_excerpt(spark, corpus):
    run_stage("ingest", spark, corpus)
    quarantine = quarantine_of(spark, corpus)
    assert quarantine.schema.fieldNames() == BRONZE_QUARANTINE.column_names
    rows = {(r.source, r.reason): r for r in quarantine.collect()}
    assert rows[("web", "malformed_json")].raw_excerpt == "{broken\n"
    assert rows[("web", "malformed_json")].locator.startswith("part-0.jsonl@")
    assert ("web", "corrupt_compressed_stream") in rows
    assert "no column 'text'" in rows[("tables", "schema_mismatch")].detail
    assert rows[("notes", "nul_byte")].raw_excerpt == "nul \\x00 inside"
    assert rows[("repo", "binary")].locator == "data.bin"


def test_rerun_on_the_same_input_adds_and_changes_nothing(spark, corpus):
    first = run_stage("ingest", spark, corpus)
    second = run_stage("ingest", spark, corpus)
    assert second.reconciles
    assert all(c.new == c.updated == 0 for c in second.sources.values())
    assert {n: c.unchanged for n, c in second.sources.items()} == {n: c.new for n, c in first.sources.items()}
    assert (second.documents_version, second.quarantine_version) == (first.documents_version, first.quarantine_version)
    assert documents_of(spark, corpus).count() == sum(c.new for c in first.sources.values())


def test_a_changed_file_updates_its_row_and_a_new_file_is_inserted(spark, corpus, tmp_path, write_file):
    run_stage("ingest", spark, corpus)
    before = {r.locator: r.doc_id for r in documents_of(spark, corpus).where("source = 'notes'").collect()}
    write_file(f"{tmp_path}/notes/a.txt", "a note, edited")
    write_file(f"{tmp_path}/notes/c.txt", "a new note")
    summary = run_stage("ingest", spark, corpus, only=["notes"])
    assert (summary.sources["notes"].updated, summary.sources["notes"].new) == (1, 1)
    assert summary.documents_written == 2 and summary.reconciles
    after = {r.locator: (r.doc_id, r.text) for r in documents_of(spark, corpus).where("source = 'notes'").collect()}
    assert after["a.txt"][1] == "a note, edited" and after["a.txt"][0] != before["a.txt"]
    assert set(after) == {"a.txt", "c.txt"}


def test_repeated_ids_keep_the_first_occurrence_and_quarantine_the_rest(spark, tmp_path, write_lines, make_config):
    write_lines(f"{tmp_path}/a.jsonl", ['{"id": "k", "text": "first"}', '{"id": "k", "text": "second"}'])
    write_lines(f"{tmp_path}/b.jsonl", ['{"id": "k", "text": "third"}'])
    source = {"name": "s", "format": "jsonl", "paths": [f"{tmp_path}/*.jsonl"], "id_field": "id"}
    config = make_config(str(tmp_path), [source])
    summary = run_stage("ingest", spark, config)
    assert (summary.sources["s"].new, summary.sources["s"].quarantine_reasons) == (1, {"duplicate_locator": 2})
    assert [r.text for r in documents_of(spark, config).collect()] == ["first"]


def test_ids_and_rows_do_not_depend_on_splitting_or_partitioning(spark, tmp_path, write_lines, make_config):
    lines = [f'{{"text": "document number {i} {"w" * (i % 50)}"}}' for i in range(4000)]
    write_lines(f"{tmp_path}/in/big.jsonl", lines)
    results = []
    for index, split in enumerate((1 << 26, 20_000)):
        config = make_config(
            f"{tmp_path}/run{index}",
            [{"name": "s", "format": "jsonl", "paths": [f"{tmp_path}/in/big.jsonl"]}],
            ingest={"split_bytes": split},
        )
        run_stage("ingest", spark, config)
        results.append(sorted((r.doc_id, r.locator, r.text) for r in documents_of(spark, config).collect()))
    assert len(results[0]) == 4000
    assert results[0] == results[1]


def test_tables_are_standard_delta_readable_by_delta_rs(spark, corpus):
    from deltalake import DeltaTable

    run_stage("ingest", spark, corpus)
    table = DeltaTable(os.path.join(corpus.lakehouse.root, "bronze", "documents"))
    arrow = pa.table(table.scan())  # scan() applies deletion vectors; to_pyarrow_table() refuses them
    assert arrow.num_rows == documents_of(spark, corpus).count()
    assert sorted(arrow.column("doc_id").to_pylist()) == sorted(r.doc_id for r in documents_of(spark, corpus).collect())
    quarantine = pa.table(DeltaTable(os.path.join(corpus.lakehouse.root, "bronze", "quarantine")).scan())
    assert quarantine.num_rows == quarantine_of(spark, corpus).count()


def test_the_run_is_logged_to_mlflow_with_parameters_and_counts(spark, corpus):
    summary = run_stage("ingest", spark, corpus)
    mlflow.set_tracking_uri(corpus.mlflow.tracking_uri)
    run = mlflow.get_run(summary.run_id)
    assert run.data.tags["dataprep.stage"] == "ingest"
    assert run.data.tags["dataprep.reconciles"] == "true"
    assert run.data.params["source.tables"].startswith("parquet")
    assert run.data.metrics["source.tables.read"] == 3
    assert run.data.metrics["source.tables.quarantined.schema_mismatch"] == 1
    assert run.data.metrics["total.new"] == sum(c.new for c in summary.sources.values())
    assert corpus.mlflow.tracking_uri.startswith("sqlite:////")
