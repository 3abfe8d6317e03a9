"""Reading files into documents and rejections, one bad-input class at a time (no Spark needed)."""

import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipelines.ingest.planning import MissingInputError, plan_source
from pipelines.ingest.readers import READERS, Document, Rejected, read_unit
from pipelines.ingest.settings import SOURCE_FORMATS, IngestConfig
from pipelines.storage import Storage


@pytest.fixture
def read_all(tmp_path, make_config):
    """`read_all(source, ingest=None)`: every record the readers make of one source, planned and read as ingest does."""

    def read(source: dict, ingest: dict | None = None):
        config = make_config(str(tmp_path), [source], ingest=ingest or {})
        plan = plan_source(config.sources[0], config.ingest, Storage())
        source, store = config.sources[0], Storage()
        return [record for unit in plan.units for record in read_unit(unit, source, config.ingest, store)]

    return read


def reasons(records):
    return [r.reason for r in records if isinstance(r, Rejected)]


def texts(records):
    return [r.text for r in records if isinstance(r, Document)]


def jsonl_source(path, **options):
    return {"name": "web", "format": "jsonl", "paths": [str(path)], **options}


def test_every_configurable_source_format_has_a_reader():
    assert set(READERS) == set(SOURCE_FORMATS)


def test_good_jsonl_lines_become_documents_with_metadata_and_byte_offset_locators(tmp_path, write_lines, read_all):
    path = write_lines(f"{tmp_path}/in/a.jsonl", ['{"text": "hello", "url": "u1", "score": 3}', '{"text": "world"}'])
    first, second = read_all(jsonl_source(path))
    assert (first.text, first.locator, first.metadata) == ("hello", "a.jsonl@0", {"url": "u1", "score": "3"})
    assert second.locator == f"a.jsonl@{len(open(path, 'rb').readline())}"


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"text": "unterminated', "malformed_json"),
        (b'{"text": "caf\xe9"}', "invalid_utf8"),
        (b'{"text": "a\\u0000b"}', "nul_byte"),
        (b'{"text": "   "}', "empty_text"),
        (b'{"text": ""}', "empty_text"),
        (b"   ", "empty_record"),
        (b'{"text": 42}', "wrong_text_type"),
        (b'{"text": ["a", "b"]}', "wrong_text_type"),
        (b'{"body": "no text field"}', "missing_text"),
        (b'{"text": null}', "missing_text"),
        (b'["a", "list"]', "not_an_object"),
        (b'{"text": "\\ud800 lone surrogate"}', "malformed_json"),
        (b"[" * 5000 + b"]" * 5000, "malformed_json"),
    ],
)
def test_each_bad_jsonl_line_is_rejected_with_its_reason_and_the_rest_is_kept(
    tmp_path, write_lines, read_all, line, reason
):
    path = write_lines(f"{tmp_path}/a.jsonl", [b'{"text": "before"}', line, b'{"text": "after"}'])
    records = read_all(jsonl_source(path))
    assert texts(records) == ["before", "after"]
    assert reasons(records) == [reason]
    rejected = records[1]
    assert rejected.excerpt == (line + b"\n")[:1024]
    assert rejected.detail


def test_nested_text_and_id_fields_and_id_locators(tmp_path, write_lines, read_all):
    path = write_lines(f"{tmp_path}/a.jsonl", ['{"doc": {"body": "x"}, "meta": {"id": 7}}', '{"doc": {"body": "y"}}'])
    records = read_all(jsonl_source(path, text_field="doc.body", id_field="meta.id"))
    assert records[0].locator == "id=7"
    assert reasons(records) == ["invalid_id"]


def test_oversized_line_is_rejected_without_reading_it_whole(tmp_path, write_lines, read_all):
    path = write_lines(f"{tmp_path}/a.jsonl", ['{"text": "ok"}', '{"text": "' + "x" * 50_000 + '"}', '{"text": "end"}'])
    records = read_all(jsonl_source(path, max_doc_bytes=1000))
    assert texts(records) == ["ok", "end"]
    assert reasons(records) == ["too_large"]
    assert len(records[1].excerpt) <= 1024


def test_document_over_the_cap_after_decoding_is_too_large(tmp_path, write_lines, read_all):
    path = write_lines(f"{tmp_path}/a.jsonl", ['{"text": "' + "\\u00e9" * 600 + '"}'])  # 3.6 kB line, 1.2 kB text
    assert reasons(read_all(jsonl_source(path, max_doc_bytes=1000))) == ["too_large"]


def test_gzip_and_zstd_jsonl_are_read(tmp_path, write_file, read_all):
    payload = b'{"text": "one"}\n{"text": "two"}\n'
    write_file(f"{tmp_path}/in/a.jsonl.gz", gzip.compress(payload))
    write_file(f"{tmp_path}/in/b.jsonl.zst", zstandard.ZstdCompressor().compress(payload))
    records = read_all(jsonl_source(f"{tmp_path}/in/*"))
    assert [(r.locator, r.text) for r in records] == [
        ("a.jsonl.gz@0", "one"),
        ("a.jsonl.gz@16", "two"),
        ("b.jsonl.zst@0", "one"),
        ("b.jsonl.zst@16", "two"),
    ]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_compressed_file_keeps_what_was_readable_and_quarantines_the_rest(
    tmp_path, write_file, read_all, suffix
):
    payload = b"".join(b'{"text": "document %d, %x"}\n' % (i, i * 2654435761 % 2**32) for i in range(50_000))
    compress = gzip.compress if suffix == ".gz" else zstandard.ZstdCompressor().compress
    data = compress(payload)
    write_file(f"{tmp_path}/a.jsonl{suffix}", data[: len(data) // 2])
    records = read_all(jsonl_source(f"{tmp_path}/a.jsonl{suffix}"))
    assert 0 < len(texts(records)) < 50_000
    assert reasons(records)[-1] == "corrupt_compressed_stream"
    assert all(isinstance(r, Document) for r in records[:-2])


def test_gzip_bomb_is_stopped_and_quarantined(tmp_path, write_file, read_all):
    write_file(f"{tmp_path}/bomb.jsonl.gz", gzip.compress(b"0" * 50_000_000))  # about 50 kB on disk
    ingest = {"max_inflation_ratio": 10, "inflation_floor_bytes": 1_000_000}
    records = read_all(jsonl_source(f"{tmp_path}/bomb.jsonl.gz"), ingest)
    assert reasons(records) == ["decompression_bomb"]


def test_split_ranges_read_every_line_exactly_once(tmp_path, make_config, write_lines, read_all):
    lines = [f'{{"text": "line {i} {"x" * (i % 97)}"}}' for i in range(3000)]
    path = write_lines(f"{tmp_path}/big.jsonl", lines)
    whole = read_all(jsonl_source(path))
    for split in (1024, 4099, 65536):
        config = make_config(str(tmp_path), [jsonl_source(path)], ingest={"split_bytes": split})
        plan = plan_source(config.sources[0], config.ingest, Storage())
        assert len(plan.units) == -(-os.path.getsize(path) // split)
        records = [r for unit in plan.units for r in read_unit(unit, config.sources[0], config.ingest, Storage())]
        assert [(r.locator, r.text) for r in records] == [(r.locator, r.text) for r in whole]
    assert len(whole) == 3000


def test_parquet_rows_become_documents_and_null_text_is_rejected(tmp_path, read_all):
    table = pa.table({"text": ["a", None, "c"], "id": ["x", "y", "z"], "lang": ["en", "fr", "de"]})
    pq.write_table(table, f"{tmp_path}/p.parquet", row_group_size=2)
    records = read_all(
        {"name": "pq", "format": "parquet", "paths": [f"{tmp_path}/p.parquet"], "language_field": "lang"}
    )
    assert [(r.locator, r.text, r.language, r.metadata) for r in records if isinstance(r, Document)] == [
        ("p.parquet#0", "a", "en", {"id": "x"}),
        ("p.parquet#2", "c", "de", {"id": "z"}),
    ]
    assert reasons(records) == ["missing_text"]


@pytest.mark.parametrize(
    "table, detail",
    [
        (pa.table({"body": ["a"]}), "no column 'text'"),
        (pa.table({"text": [1, 2]}), "column 'text' has type int64, expected string"),
    ],
)
def test_parquet_file_of_the_wrong_schema_is_one_quarantine_row(tmp_path, read_all, table, detail):
    pq.write_table(table, f"{tmp_path}/p.parquet")
    (record,) = read_all({"name": "pq", "format": "parquet", "paths": [f"{tmp_path}/p.parquet"]})
    assert record.reason == "schema_mismatch" and detail in record.detail


def test_a_file_that_is_not_parquet_is_quarantined(tmp_path, write_file, read_all):
    write_file(f"{tmp_path}/p.parquet", b"this is not parquet at all")
    (record,) = read_all({"name": "pq", "format": "parquet", "paths": [f"{tmp_path}/p.parquet"]})
    assert record.reason == "unreadable_parquet"


def test_text_tree_one_file_one_document(tmp_path, write_file, read_all):
    write_file(f"{tmp_path}/docs/a.txt", "alpha")
    write_file(f"{tmp_path}/docs/sub/b.md", "\ufeffbeta")  # the BOM is not part of the text
    write_file(f"{tmp_path}/docs/sub/bad.txt", b"caf\xe9")
    write_file(f"{tmp_path}/docs/empty.txt", "")
    write_file(f"{tmp_path}/docs/_SUCCESS", "")
    records = read_all({"name": "notes", "format": "text", "paths": [f"{tmp_path}/docs"]})
    documents = [(r.locator, r.text) for r in records if isinstance(r, Document)]
    assert documents == [("a.txt", "alpha"), ("sub/b.md", "beta")]
    assert sorted((r.locator, r.reason) for r in records if isinstance(r, Rejected)) == [
        ("empty.txt", "empty_text"),
        ("sub/bad.txt", "invalid_utf8"),
    ]


def test_code_tree_languages_skips_and_quarantine(tmp_path, write_file, read_all):
    repo = f"{tmp_path}/myrepo"
    write_file(f"{repo}/src/main.py", "print('hi')\n")
    write_file(f"{repo}/src/lib.rs", "fn main() {}\n")
    write_file(f"{repo}/Makefile", "all:\n\ttrue\n")
    write_file(f"{repo}/bin/run", "#!/usr/bin/env python3\nprint(1)\n")
    write_file(f"{repo}/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    write_file(f"{repo}/notes.xyz", "plain words")
    write_file(f"{repo}/big.py", "x = 1\n" * 400_000)
    write_file(f"{repo}/latin1.py", b"# caf\xe9\n")
    write_file(f"{repo}/node_modules/dep/index.js", "module.exports = 1\n")
    write_file(f"{repo}/.git/HEAD", "ref: refs/heads/main\n")
    write_file(f"{repo}/build/gen.c", "int x;\n")
    records = read_all({"name": "code", "format": "code", "paths": [repo]})
    documents = {r.locator: r for r in records if isinstance(r, Document)}
    assert {loc: d.language for loc, d in documents.items()} == {
        "Makefile": "Makefile",
        "bin/run": "Python",
        "src/lib.rs": "Rust",
        "src/main.py": "Python",
    }
    assert documents["src/main.py"].metadata == {"path": "src/main.py", "size_bytes": "12", "repository": "myrepo"}
    assert sorted((r.locator, r.reason) for r in records if isinstance(r, Rejected)) == [
        ("big.py", "too_large"),
        ("latin1.py", "invalid_utf8"),
        ("logo.png", "binary"),
        ("notes.xyz", "unsupported_file_type"),
    ]


def test_symlinks_never_lead_out_of_the_root_and_loops_are_not_followed(tmp_path, write_file, read_all):
    repo = f"{tmp_path}/repo"
    write_file(f"{repo}/a.py", "a = 1\n")
    write_file(f"{tmp_path}/outside/secret.py", "key = 'x'\n")
    os.symlink(f"{tmp_path}/outside/secret.py", f"{repo}/leak.py")
    os.symlink(f"{repo}/a.py", f"{repo}/alias.py")
    os.symlink(repo, f"{repo}/loop")
    os.symlink(f"{repo}/missing.py", f"{repo}/dangling.py")
    records = read_all({"name": "code", "format": "code", "paths": [repo]})
    assert sorted(r.locator for r in records if isinstance(r, Document)) == ["a.py", "alias.py"]
    assert sorted((r.locator, r.reason) for r in records if isinstance(r, Rejected)) == [
        ("dangling.py", "broken_symlink"),
        ("leak.py", "symlink_outside_root"),
        ("loop", "symlink_directory_not_followed"),
    ]


def test_missing_paths_are_a_clear_error_before_anything_is_read(tmp_path, read_all):
    with pytest.raises(MissingInputError, match=r"source 'web': path '.*/nope.jsonl' does not exist"):
        read_all(jsonl_source(f"{tmp_path}/nope.jsonl"))
    with pytest.raises(MissingInputError, match="matches no file"):
        read_all(jsonl_source(f"{tmp_path}/*.jsonl"))


def test_locators_stay_unique_across_several_globs_of_one_source(tmp_path, write_lines, read_all):
    write_lines(f"{tmp_path}/d/2024/a.jsonl", ['{"text": "old"}'])
    write_lines(f"{tmp_path}/d/2025/a.jsonl", ['{"text": "new"}'])
    source = {"name": "web", "format": "jsonl", "paths": [f"{tmp_path}/d/2024/*.jsonl", f"{tmp_path}/d/2025/*.jsonl"]}
    assert [r.locator for r in read_all(source)] == ["2024/a.jsonl@0", "2025/a.jsonl@0"]


def test_default_ingest_settings_are_sane():
    assert IngestConfig().split_bytes == 64 * 1024 * 1024


def test_an_empty_directory_is_a_clear_error(tmp_path, read_all):
    os.makedirs(f"{tmp_path}/empty")
    with pytest.raises(MissingInputError, match="holds no files"):
        read_all({"name": "notes", "format": "text", "paths": [f"{tmp_path}/empty"]})
