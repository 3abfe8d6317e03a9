"""The storage layer on a local disk and on a real S3 server (moto, started by the test): the same calls, the same
answers, and the errors a user sees for a bad path."""

import os

import pytest
from cluster_harness import s3_server

from pipelines import storage
from pipelines.storage import Storage, UnsupportedPath


@pytest.fixture(scope="module")
def s3():
    """The server, and its credentials in this process's environment: where every AWS client looks for them."""
    with s3_server() as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        server.create_bucket("bucket")
        yield server


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path, s3):
    """A fresh, empty root on each store, with the Storage that reaches it."""
    if request.param == "local":
        return Storage(), str(tmp_path / "root")
    return Storage(s3_endpoint=s3.endpoint), f"s3a://bucket/{request.node.name.replace('[', '-').rstrip(']')}"


def test_whole_files_listing_globs_and_deletes_answer_alike_on_both_stores(place):
    store, root = place
    for name in ["a/1.jsonl", "a/2.jsonl", "a/sub/3.jsonl", "a/x.txt", "b/4.jsonl"]:
        store.write_text(storage.join(root, name), name * 3)
    assert store.size(storage.join(root, "a/1.jsonl")) == len("a/1.jsonl") * 3
    assert store.size(storage.join(root, "missing")) is None and not store.exists(storage.join(root, "missing"))
    assert store.is_directory(storage.join(root, "a")) and not store.is_directory(storage.join(root, "a/1.jsonl"))
    listed = [storage.relative(e.uri, root) for e in store.list_files(root)]
    assert listed == ["a/1.jsonl", "a/2.jsonl", "a/sub/3.jsonl", "a/x.txt", "b/4.jsonl"]
    assert [storage.relative(e.uri, root) for e in store.glob(storage.join(root, "a/*.jsonl"))] == [
        "a/1.jsonl",
        "a/2.jsonl",
    ]
    assert [storage.relative(e.uri, root) for e in store.glob(storage.join(root, "**/*.jsonl"))] == [
        "a/1.jsonl",
        "a/2.jsonl",
        "a/sub/3.jsonl",
        "b/4.jsonl",
    ]
    assert store.children(root) == ["a", "b"]
    walked = store.walk(storage.join(root, "a"), keep_directory=lambda name: name != "sub")
    assert [storage.relative(e.uri, root) for e in walked] == ["a/1.jsonl", "a/2.jsonl", "a/x.txt"]
    with store.open_read(storage.join(root, "a/2.jsonl")) as handle:  # readers seek to their byte range
        handle.seek(4)
        assert handle.read(5) == b"jsonl"
    store.write_bytes(storage.join(root, "a/1.jsonl"), b"replaced")  # a whole new file, never a mix
    assert store.read_bytes(storage.join(root, "a/1.jsonl")) == b"replaced"
    store.delete(storage.join(root, "a/1.jsonl"))
    store.delete(storage.join(root, "a/1.jsonl"))  # again: not an error
    store.delete_tree(storage.join(root, "a"))
    store.delete_tree(storage.join(root, "never"))
    assert [storage.relative(e.uri, root) for e in store.list_files(root)] == ["b/4.jsonl"]


def test_compressed_files_are_stored_as_the_bytes_they_are(place):
    """pyarrow compresses and decompresses by extension unless told not to: a .gz or .zstd file must keep its bytes,
    size and hashes, whichever way it is read."""
    import gzip

    store, root = place
    payload = gzip.compress(os.urandom(5000), mtime=0)
    for name in ("a.jsonl.gz", "shard.00000.mds.zstd", "b.zst"):
        uri = storage.join(root, name)
        store.write_bytes(uri, payload)
        assert store.size(uri) == len(payload) == store.list_files(root)[0].size
        assert store.read_bytes(uri) == payload
        with store.open_read(uri) as handle:
            assert handle.read() == payload
        store.delete(uri)


def test_uploads_downloads_and_the_executor_cache(place, tmp_path):
    store, root = place
    local = tmp_path / "model.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024))
    uri = storage.join(root, "models/model.bin")
    store.upload(str(local), uri)
    copy = store.local_copy(uri)
    assert open(copy, "rb").read() == local.read_bytes()
    assert store.local_copy(uri) == copy  # fetched once per machine
    with storage.local_scratch() as scratch:
        assert open(store.fetched(uri, scratch), "rb").read() == local.read_bytes()


def test_s3_and_s3a_name_the_same_objects_and_a_missing_bucket_is_a_clear_error(s3):
    store = Storage(s3_endpoint=s3.endpoint)
    store.write_text("s3a://bucket/same/x.txt", "one store")
    assert store.read_text("s3://bucket/same/x.txt") == "one store"
    store.check_reachable("lakehouse.root", "s3a://bucket/anything/below")
    with pytest.raises(UnsupportedPath, match=r"lakehouse.root: 's3a://no-such-bucket/lh': bucket 'no-such-bucket'"):
        store.check_reachable("lakehouse.root", "s3a://no-such-bucket/lh")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("s3://bucket/same/missing.txt")


def test_uris_are_checked_joined_and_handed_to_spark_meaning_the_same_place(tmp_path):
    assert storage.normalized("s3a://bucket/a/") == "s3a://bucket/a"
    assert storage.normalized(f"file://{tmp_path}/x") == f"{tmp_path}/x"
    assert storage.normalized("relative/dir") == os.path.abspath("relative/dir")
    for bad, message in [("hdfs://nn/x", "the hdfs: scheme is not served"), ("s3://", "names no bucket")]:
        with pytest.raises(UnsupportedPath, match=message):
            storage.normalized(bad)
    assert storage.join("s3://b/root", "mds", "c/main") == "s3://b/root/mds/c/main"
    assert storage.relative("s3://b/root/mds/x", "s3://b/root") == "mds/x"
    assert storage.common_directory(["s3://b/in/a", "s3://b/in/b/c"]) == "s3://b/in"
    with pytest.raises(UnsupportedPath, match="not in one store"):
        storage.common_directory(["s3://b/in/a", "/local/in"])
    # Spark would resolve a bare path against its default filesystem (DBFS on Databricks): it gets an explicit one.
    assert storage.spark_path("/data/x") == "file:///data/x"
    assert storage.spark_path("/Volumes/main/raw/v/x") == "/Volumes/main/raw/v/x"
    assert storage.spark_path("/dbfs/tmp/x") == "dbfs:/tmp/x"
    assert storage.spark_path("s3a://b/x") == "s3a://b/x"
    assert Storage().resolve("dbfs:/tmp/x")[1] == "/dbfs/tmp/x"
    conf = {"spark.hadoop.fs.s3a.endpoint": "127.0.0.1:9000", "spark.hadoop.fs.s3a.connection.ssl.enabled": "false"}
    assert Storage.from_mapping(conf) == Storage(s3_endpoint="127.0.0.1:9000", s3_scheme="http")


def test_a_missing_bucket_stops_a_run_before_anything_is_read(s3, spark, tmp_path, capsys):
    import yaml

    from dataprep.cli import main

    (tmp_path / "web.jsonl").write_text('{"text": "x"}\n')
    config = {
        "lakehouse": {"root": "s3a://no-such-bucket/lakehouse"},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "sources": [{"name": "web", "format": "jsonl", "paths": [str(tmp_path / "web.jsonl")]}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["ingest", "--config", str(tmp_path / "config.yaml")]) == 2
    error = capsys.readouterr().err
    assert "lakehouse.root: 's3a://no-such-bucket/lakehouse': bucket 'no-such-bucket' does not exist" in error
