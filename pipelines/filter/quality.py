"""A fastText quality classifier (the DCLM / FineWeb-Edu recipe, small): trained from labelled documents, logged to
MLflow as a pyfunc model (registered under a name when configured), and used to give every document a
`quality_score` = P(high quality).

Labels come from configured positive and negative sources, or from a metadata field. When neither is configured the
labels are bootstrapped from the heuristic decisions (kept = positive, dropped by a rule = negative); the run says so,
because such a model can only learn to imitate the rules.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines import storage
from pipelines.filter.decide import EXACT_DUPLICATE, SIGNAL_ERROR
from pipelines.filter.settings import QualityModelConfig
from pipelines.storage import Storage

POSITIVE, NEGATIVE = "__label__hq", "__label__lq"
_MAX_TRAINING_CHARS = 20_000
_WHITESPACE = re.compile(r"\s+")
_MODEL_NAME = "quality_model"  # the logged model's name in its run
_FASTTEXT_ARTIFACT = "fasttext"  # the key of the fastText file among the pyfunc model's artifacts


@dataclass(frozen=True)
class TrainedModel:
    version: str  # the MLflow run id that trained it (silver's quality_model)
    model_uri: str  # the MLflow model it was loaded from: models:/m-<id>, models:/<name>/<version>, ...
    path: str  # storage URI of its fastText file (content-addressed, under the lakehouse root): what executors read
    label_origin: str  # "sources", "label_field" or "bootstrapped from heuristic decisions"
    positives: int
    negatives: int


def labelled_documents(silver: DataFrame, bronze: DataFrame, config: QualityModelConfig) -> tuple[DataFrame, str]:
    """(doc_id, text, label) rows to train on, and where the labels came from."""
    if config.positive_sources:
        label = F.when(F.col("source").isin(list(config.positive_sources)), POSITIVE).when(
            F.col("source").isin(list(config.negative_sources)), NEGATIVE
        )
        origin = "sources"
    elif config.label_field:
        labels = bronze.select("doc_id", F.col("metadata")[config.label_field].alias("_label"))
        silver = silver.join(labels, "doc_id")
        label = F.when(F.col("_label") == config.positive_label, POSITIVE).when(F.col("_label").isNotNull(), NEGATIVE)
        origin = "label_field"
    else:
        rule_dropped = F.size(F.filter("drop_reasons", lambda r: ~r.isin(EXACT_DUPLICATE, SIGNAL_ERROR))) > 0
        label = F.when(F.col("keep"), POSITIVE).when(rule_dropped, NEGATIVE)
        origin = "bootstrapped from heuristic decisions"
    rows = silver.where(F.col("kind") == "text").select("doc_id", "text", label.alias("label"))
    return rows.where(F.col("label").isNotNull()), origin


def write_training_file(
    rows: DataFrame, config: QualityModelConfig, directory: str, store: Storage
) -> tuple[str, int, int]:
    """fastText's input format, one `__label__x text` line per document, balanced and capped per label, written by
    Spark under `directory` (a storage URI); returns the file's URI and the label counts.

    The sample is chosen by a hash of doc_id, so the same corpus gives the same training file on every run.
    """
    per_label = config.max_training_docs // 2
    ranked = rows.withColumn("_order", F.xxhash64("doc_id", F.lit(config.seed)))
    counts = {row["label"]: row["count"] for row in rows.groupBy("label").count().collect()}
    sampled = None
    for label in (POSITIVE, NEGATIVE):
        part = ranked.where(F.col("label") == label).orderBy("_order").limit(per_label)
        sampled = part if sampled is None else sampled.unionByName(part)
    text = F.regexp_replace(F.substring("text", 1, _MAX_TRAINING_CHARS), r"\s+", " ")
    lines = sampled.orderBy("_order", "doc_id").select(F.concat_ws(" ", "label", text).alias("value"))
    # One file, at most max_training_docs lines: bounded, and fastText trains from a single file anyway.
    lines.coalesce(1).write.mode("overwrite").text(storage.spark_path(directory))
    (part_file,) = [e.uri for e in store.list_files(directory) if storage.basename(e.uri).startswith("part-")]
    return part_file, min(counts.get(POSITIVE, 0), per_label), min(counts.get(NEGATIVE, 0), per_label)


def train(training_file: str, config: QualityModelConfig, model_path: str) -> None:
    """Trains on a local file into a local file (fastText reads and writes only local paths)."""
    import fasttext

    model = fasttext.train_supervised(
        input=training_file,
        epoch=config.epochs,
        lr=config.learning_rate,
        wordNgrams=config.word_ngrams,
        dim=config.dim,
        bucket=config.buckets,
        minCount=2,
        loss="softmax",
        thread=1,  # one thread: the same data and seed give the same model
        seed=config.seed,
        verbose=0,
    )
    model.save_model(model_path)


def log_model(local_model: str, origin: str, positives: int, negatives: int, registered_model: str | None):
    """Logs a trained fastText file to the active MLflow run as a pyfunc model, a DataFrame's `text` column in and
    `quality_score` out, scored by `predict_scores` as the stage scores; registers it when `registered_model` names
    a registered model. Returns MLflow's ModelInfo."""
    import cloudpickle
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from pipelines.tracking import muted

    signature = ModelSignature(Schema([ColSpec("string", "text")]), Schema([ColSpec("double", "quality_score")]))
    # The model class and the functions of this module it calls are pickled by value, not as references to this
    # package: the logged model then loads wherever fastText and MLflow are installed (a serving endpoint, a notebook).
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        # The model has an explicit signature and is pickled by value on purpose: MLflow's advice (an input
        # example, models-from-code) is noise here.
        with muted("mlflow.pyfunc", ".*input example"):
            return mlflow.pyfunc.log_model(
                name=_MODEL_NAME,
                python_model=_pyfunc_model(),
                artifacts={_FASTTEXT_ARTIFACT: local_model},
                signature=signature,
                pip_requirements=[f"{name}=={metadata.version(name)}" for name in ("fasttext-community", "pandas")],
                registered_model_name=registered_model,
                metadata={"label_origin": origin, "positives": positives, "negatives": negatives},
            )
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def _pyfunc_model():
    # Defined on use, not at import: executors import this module to score, and subclassing MLflow's class here would
    # make each of their Python workers import MLflow too (over a second).
    import mlflow.pyfunc

    class QualityClassifier(mlflow.pyfunc.PythonModel):
        def load_context(self, context) -> None:
            import fasttext

            self.model = fasttext.load_model(context.artifacts[_FASTTEXT_ARTIFACT])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return pd.DataFrame({"quality_score": predict_scores(self.model, model_input["text"].tolist())})

    return QualityClassifier()


def fetch_model(model_uri: str, models_dir: str, store: Storage) -> TrainedModel:
    """The MLflow model at `model_uri`, downloaded on the driver; its fastText file is placed once, named by its
    SHA-256, under `models_dir`, where every executor reads it through the storage layer (MLflow's artifact store
    may be a directory on the driver, or Unity Catalog storage that executors hold no credentials for)."""
    import mlflow
    from mlflow.models import Model

    with storage.local_scratch() as scratch:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch)
        logged = Model.load(local)
        artifacts = logged.flavors.get("python_function", {}).get("artifacts") or {}
        if _FASTTEXT_ARTIFACT not in artifacts:
            raise ValueError(f"{model_uri} is not a quality model of this pipeline: it holds no fastText file")
        local_file = os.path.join(local, artifacts[_FASTTEXT_ARTIFACT]["path"])
        sha256 = hashlib.sha256()
        with open(local_file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha256.update(block)
        digest = sha256.hexdigest()
        path = storage.join(models_dir, f"{digest}.bin")
        if not store.exists(path):
            store.upload(local_file, path)
    recorded = logged.metadata or {}
    return TrainedModel(
        version=logged.run_id or digest,
        model_uri=model_uri,
        path=path,
        label_origin=str(recorded.get("label_origin", "unknown")),
        positives=int(recorded.get("positives", 0)),
        negatives=int(recorded.get("negatives", 0)),
    )


@functools.lru_cache(maxsize=2)
def _load(path: str):
    import fasttext

    return fasttext.load_model(path)


def score_texts(model_path: str, texts: list[str]) -> list[float]:
    """P(high quality) for each text."""
    return predict_scores(_load(model_path), texts)


def predict_scores(model, texts: list[str]) -> list[float]:
    """P(high quality) for each text, by a loaded fastText model."""
    lines = [_WHITESPACE.sub(" ", text[:_MAX_TRAINING_CHARS]).strip() for text in texts]
    labels, probabilities = model.predict(lines, k=2)
    scores = []
    for label_row, probability_row in zip(labels, probabilities, strict=True):
        by_label = dict(zip(label_row, probability_row, strict=True))
        scores.append(min(float(by_label.get(POSITIVE, 0.0)), 1.0))
    return scores


SCORE_ARROW_SCHEMA = pa.schema([("doc_id", pa.string()), ("quality_score", pa.float64())])


def score_partition(batches: Iterator[pa.RecordBatch], model_uri: str, store: Storage) -> Iterator[pa.RecordBatch]:
    """mapInArrow function: (doc_id, text) -> (doc_id, quality_score), the model fetched from storage into this
    machine's cache and loaded once per worker."""
    model_path = store.local_copy(model_uri)
    for batch in batches:
        doc_ids = batch.column("doc_id").to_pylist()
        scores = score_texts(model_path, batch.column("text").to_pylist())
        yield pa.RecordBatch.from_pydict({"doc_id": doc_ids, "quality_score": scores}, schema=SCORE_ARROW_SCHEMA)
