"""Curriculum mixtures into MDS on Spark + Delta: mix validation, exact accounting, packing, determinism, resume."""

import hashlib
import json
import os
import random

import numpy as np
import pytest

from dataprep.runner import run_stage
from pipelines.lakehouse import Lakehouse
from pipelines.mds.format import iter_samples, read_index
from pipelines.mds.mixes import load_mix, parse_mix
from pipelines.mds.tasks import sidecar_path
from pipelines.mds.verify import verify
from pipelines.settings import ConfigError
from pipelines.tokenize.tokenizer import EOS_ID, PAD_ID

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mix(**overrides):
    raw = {
        "name": "t",
        "seq_len": 64,
        "seed": 3,
        "shards": {"size_limit": 4096, "compression": "zstd"},
        "stages": [
            {
                "name": "s1",
                "tokens": 20_000,
                "components": [
                    {"name": "web", "source": "web", "weight": 3},
                    {"name": "code", "where": "kind = 'code' AND quality_score > 0.2", "weight": 1, "max_epochs": 1.5},
                ],
            }
        ],
    }
    return parse_mix({**raw, **overrides})


@pytest.fixture(scope="module")
def corpus(spark, tmp_path_factory, make_config):
    """A gold.tokens of 150 web and 50 code documents with random tokens (never EOS), and their silver rows."""
    root = str(tmp_path_factory.mktemp("mds"))
    config = make_config(root, [{"name": "web", "format": "text", "paths": [root]}])
    rng = random.Random(1)
    documents = {}
    rows = []
    for i in range(200):
        source = "web" if i % 4 else "code"
        tokens = [rng.randrange(100_000) for _ in range(rng.randint(1, 300))]
        documents[f"d{i:04d}"] = (source, tokens)
        kind = "text" if source == "web" else "code"
        rows.append((f"d{i:04d}", source, kind, "en", tokens, len(tokens), 4 * len(tokens)))
    lakehouse = Lakehouse(spark, config.lakehouse)
    schema = "doc_id string, source string, kind string, lang string, tokens array<int>, n_tokens long, n_bytes long"
    lakehouse.table("gold.tokens").overwrite(spark.createDataFrame(rows, schema).repartition(3))
    silver = [(doc_id, 0.5, 0.9, 10, {}) for doc_id in documents]
    schema = "doc_id string, quality_score double, language_score double, n_chars long, signals map<string,double>"
    lakehouse.table("silver.documents").overwrite(spark.createDataFrame(silver, schema))
    return config, documents


def stream_of(directory):
    return np.concatenate([sample for sample in iter_samples(directory)])


def test_mixes_are_validated_with_clear_errors():
    with pytest.raises(ConfigError, match="exactly one of 'source' or 'where'"):
        mix(stages=[{"name": "s", "tokens": 10, "components": [{"name": "c", "weight": 1}]}])
    with pytest.raises(ConfigError, match=r"stages\[0\].components\[0\].weight: -1.0 must be positive"):
        mix(stages=[{"name": "s", "tokens": 10, "components": [{"name": "c", "source": "a", "weight": -1}]}])
    with pytest.raises(ConfigError, match="names must be unique"):
        mix(stages=[{"name": "s", "tokens": 1, "components": [{"name": "c", "source": "a", "weight": 1}]}] * 2)
    with pytest.raises(ConfigError, match="unknown key"):
        mix(epochs=3)
    with pytest.raises(ConfigError, match="compression"):
        mix(shards={"compression": "gzip"})
    with pytest.raises(ConfigError, match="names files"):
        mix(name="../escape")
    with pytest.raises(ConfigError, match="tokens: 0 is below the minimum 1"):
        mix(stages=[{"name": "s", "tokens": 0, "components": [{"name": "c", "source": "a", "weight": 1}]}])
    for path in ("mixes/demo.yaml", "mixes/dbrx_like.yaml"):
        shipped = load_mix(os.path.join(REPO, path))
        for stage in shipped.stages:
            assert sum(stage.targets().values()) == stage.tokens


def test_stage_realises_exact_budgets_reports_shortfall_and_packs_whole_documents(spark, corpus, tmp_path):
    config, documents = corpus
    tight = mix(
        stages=[
            {
                "name": "s1",
                "tokens": 30_000,
                "components": [
                    {"name": "web", "source": "web", "weight": 3},
                    {"name": "code", "where": "kind = 'code'", "weight": 2, "max_epochs": 1.5},
                ],
            }
        ]
    )
    summary = run_stage("mds", spark, config, mix=tight, output=str(tmp_path))
    assert summary.reconciles, summary.format()
    (stage,) = summary.stages
    web, code = stage.components
    assert (web.requested, web.realised, web.shortfall) == (18_000, 18_000, 0)
    code_supply = sum(len(t) + 1 for s, t in documents.values() if s == "code")
    assert code.requested == 12_000 and code.realised == int(code_supply * 1.5) < 12_000
    assert code.shortfall == 12_000 - code.realised and code.full_epochs == 1

    directory = os.path.join(str(tmp_path), "t", "s1")
    samples = list(iter_samples(directory))
    assert all(len(s) == 64 for s in samples) and len(samples) == (web.realised + code.realised) // 64
    stream = stream_of(directory)
    # Split at EOS: every piece but the dropped tail is the start of one document (cut documents keep their EOS).
    pieces = np.split(stream, np.flatnonzero(stream == EOS_ID) + 1)
    by_start = {}
    for source, tokens in documents.values():
        by_start.setdefault(tuple(tokens[:3]), []).append((source, tokens))
    realised = {"web": 0, "code": 0}
    for piece in pieces[:-1]:
        body = list(piece[:-1])
        matches = [(s, t) for s, t in by_start.get(tuple(body[:3]), []) if t[: len(body)] == body]
        assert len(matches) == 1, body[:5]
        realised[matches[0][0]] += len(piece)
    tail = len(pieces[-1])
    assert realised["web"] + realised["code"] + tail == len(stream)
    assert realised["web"] + realised["code"] + tail + stage.remainder_dropped == web.realised + code.realised
    assert verify(directory).ok

    manifest = json.load(open(os.path.join(directory, "manifest.json")))
    lakehouse = Lakehouse(spark, config.lakehouse)
    # The version the rows come from: the overwrite's, not the layout commit after it (an upkeep commit)
    tokens = lakehouse.table("gold.tokens")
    assert manifest["delta_versions"]["gold.tokens"] == tokens.data_version() == tokens.version() - 1
    assert [c["realised"] for c in manifest["components"]] == [web.realised, code.realised]
    assert [s["basename"] for s in manifest["shards"]] == [e["zip_data"]["basename"] for e in read_index(directory)]


def test_same_input_and_mix_give_identical_bytes_whatever_the_partitioning(spark, corpus, tmp_path):
    config, _ = corpus
    digests = []
    for partitions in ("1", "7"):
        spark.conf.set("spark.sql.shuffle.partitions", partitions)
        out = tmp_path / partitions
        run_stage("mds", spark, config, mix=mix(remainder="pad"), output=str(out))
        directory = out / "t" / "s1"
        digests.append(
            {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in os.listdir(directory)}
        )
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    assert digests[0] == digests[1] and len(digests[0]) > 3
    samples = list(iter_samples(str(tmp_path / "1" / "t" / "s1")))
    assert samples[-1][-1] == PAD_ID and len(samples[-1]) == 64


def test_rerun_is_a_no_op_and_an_interrupted_run_resumes_without_rewriting_finished_shards(spark, corpus, tmp_path):
    config, _ = corpus
    first = run_stage("mds", spark, config, mix=mix(), output=str(tmp_path))
    directory = os.path.join(str(tmp_path), "t", "s1")
    original = {name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)}
    assert run_stage("mds", spark, config, mix=mix(), output=str(tmp_path)).stages[0].status == "up to date"

    # Rebuild what a crash leaves: no index.json yet, some shards stored (file + sidecar), others not yet.
    key = json.loads(original["manifest.json"])["key"]
    progress = os.path.join(str(tmp_path), "t", f".s1.progress-{key}")
    os.makedirs(progress)
    entries = read_index(directory)
    for path in ("index.json", "manifest.json"):
        os.remove(os.path.join(directory, path))
    for number, entry in enumerate(entries):
        if number % 3 == 0:
            os.remove(os.path.join(directory, entry["zip_data"]["basename"]))
        else:
            json.dump(entry, open(sidecar_path(progress, number), "w"))
    finished = {e["zip_data"]["basename"]: os.stat(os.path.join(directory, e["zip_data"]["basename"])).st_mtime_ns
                for n, e in enumerate(entries) if n % 3}  # fmt: skip

    resumed = run_stage("mds", spark, config, mix=mix(), output=str(tmp_path)).stages[0]
    assert resumed.status == "resumed" and resumed.reused_shards == len(finished) > 0
    assert not os.path.exists(progress)
    assert {name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)} == original
    for name, mtime in finished.items():
        assert os.stat(os.path.join(directory, name)).st_mtime_ns == mtime
    assert first.stages[0].samples == resumed.samples


def test_document_packing_and_bad_predicates(spark, corpus, tmp_path):
    config, documents = corpus
    summary = run_stage("mds", spark, config, mix=mix(packing="document"), output=str(tmp_path))
    directory = os.path.join(str(tmp_path), "t", "s1")
    samples = list(iter_samples(directory))
    assert all(s[-1] == EOS_ID for s in samples) and sum(map(len, samples)) == 20_000
    starts = {tuple(tokens[:3]) for _, tokens in documents.values()}
    assert all(tuple(s[:3]) in starts or len(s) < 4 for s in samples) and summary.reconciles
    bad = mix(
        stages=[{"name": "s", "tokens": 10, "components": [{"name": "c", "where": "no_such_column > 1", "weight": 1}]}]
    )
    with pytest.raises(ConfigError, match="stage s, component c: invalid predicate"):
        run_stage("mds", spark, config, mix=bad, output=str(tmp_path))
