"""Hostile input, generated here: the ingest completes, quarantines what it cannot take with a reason, loses
nothing, and stays within bounded memory: a 2 GiB driver heap and Python workers capped at 1 GiB of address space
(spark.executor.pyspark.memory), in their own process so that the caps are real."""

import gzip
import json
import os
import subprocess
import sys

import pytest
import yaml

MIB = 1024 * 1024
TINY = 1_000_000
ODD_NAMES = ("new\nline.txt", "ünïcödé 😀 名前.txt", "\u202eevil.txt", "tab\there.txt", " leading space.txt")


@pytest.fixture
def hostile_corpus(tmp_path, write_lines, write_file) -> list[dict]:
    """Writes the hostile corpus under `tmp_path` (a million tiny lines, deep nesting, a 40 MB line, a gzip bomb, a
    100 MB file, odd file names, symlink loops) and returns its sources."""
    root = str(tmp_path)
    lines = [json.dumps({"text": f"tiny {i}"}) for i in range(TINY)]
    lines.append('{"text": "deep", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}")
    lines.append(json.dumps({"text": "x" * (40 * MIB)}))  # one 40 MB line, over the 32 MiB document cap
    write_lines(f"{root}/jsonl/many.jsonl", lines)
    with gzip.open(f"{root}/jsonl/bomb.jsonl.gz", "wb", compresslevel=9) as handle:
        for _ in range(1024):  # 1 GiB of one repeated line, about 1 MB compressed
            handle.write(b'{"text": "' + b"a" * MIB + b'"}\n')
    os.makedirs(f"{root}/tree/sub")
    with open(f"{root}/tree/huge.txt", "wb") as handle:
        handle.write(b"word " * (20 * MIB))  # one 100 MB document
    for name in ODD_NAMES:
        write_file(os.path.join(f"{root}/tree", name), f"A document called {name!r}.")
    with open(os.path.join(os.fsencode(f"{root}/tree"), b"latin1-\xe9.txt"), "wb") as handle:
        handle.write(b"a name that is not UTF-8")
    os.symlink(f"{root}/tree", f"{root}/tree/sub/loop")  # a loop through a directory link
    os.symlink(f"{root}/tree/sub/self", f"{root}/tree/sub/self")  # a link to itself
    return [
        {"name": "jsonl", "format": "jsonl", "paths": [f"{root}/jsonl"]},
        {"name": "tree", "format": "text", "paths": [f"{root}/tree"]},
    ]


def test_hostile_input_is_ingested_or_quarantined_with_reasons_in_bounded_memory(spark, tmp_path, hostile_corpus):
    root = str(tmp_path)
    config = {
        "lakehouse": {"root": f"{root}/lakehouse"},
        "spark": {
            "master": "local[2]",
            "driver_memory": "2g",
            "shuffle_partitions": 4,
            "conf": {"spark.executor.pyspark.memory": "1g"},
        },  # fmt: skip
        "sources": hostile_corpus,
    }
    path = f"{root}/hostile.yaml"
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run([sys.executable, "-m", "dataprep", "ingest", "--config", path], env=environment,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    documents = spark.read.format("delta").load(f"{root}/lakehouse/bronze/documents")
    quarantine = {(row.source, row.locator): row.reason for row in
                  spark.read.format("delta").load(f"{root}/lakehouse/bronze/quarantine").collect()}  # fmt: skip
    # The bomb's lines look genuine until the stream has inflated past its limit (ingest.max_inflation_ratio x the
    # compressed size, at least inflation_floor_bytes): those are documents, the rest of the file one quarantine row.
    bomb = documents.where("locator LIKE 'bomb.jsonl.gz%'").count()
    assert 0 < bomb < 1024
    by_source = {row.source: row["count"] for row in documents.groupBy("source").count().collect()}
    assert by_source == {"jsonl": TINY + bomb, "tree": len(ODD_NAMES)}
    locators = {row.locator for row in documents.where("source = 'tree'").select("locator").collect()}
    assert locators == set(ODD_NAMES)
    reasons = sorted(quarantine.values())
    assert reasons.count("decompression_bomb") == 1 and reasons.count("malformed_json") == 1, reasons
    assert reasons.count("too_large") == 2, reasons  # the 40 MB line and the 100 MB file
    assert quarantine[("tree", "latin1-\\xe9.txt")] == "undecodable_file_name"
    assert quarantine[("tree", "sub/loop")] == "symlink_directory_not_followed"
    assert quarantine[("tree", "sub/self")] == "broken_symlink"
    # every input record is accounted for: the summary reconciled (exit 0) and says so per source
    assert "MISMATCH" not in result.stdout
