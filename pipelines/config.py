"""The one validated configuration that drives every stage.

A YAML file is read, `${VAR}` / `${VAR:-default}` references are expanded from the environment, and the result is
checked key by key. Every error names the offending key path and value, and says what was expected, so a typo in a
scheduled job fails at start-up with a message a person can act on, not half-way through a Spark job.

Relative local paths are resolved against the current working directory (as `spark-submit` and most CLIs do).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.filter.rules import DEFAULT_RULES, Rule, RuleError, resolve_rules

SOURCE_FORMATS = ("jsonl", "parquet", "text", "code")
DOCUMENT_KINDS = ("text", "code")
MIB = 1024 * 1024


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key, the value and what was expected."""


@dataclass(frozen=True)
class LakehouseConfig:
    """Where the Delta tables live: a local directory, or Unity Catalog `catalog.schema` when `catalog` is set."""

    root: str
    catalog: str | None = None
    schema: str | None = None

    @property
    def uses_unity_catalog(self) -> bool:
        return self.catalog is not None


@dataclass(frozen=True)
class SparkConfig:
    """Settings for the embedded local session; ignored when a session already exists (Databricks, spark-submit)."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    ui_enabled: bool = False
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str
    experiment: str = "dataprep"
    artifact_location: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    """One named input: a format, one or more paths or globs, and how to read a document out of it."""

    name: str
    format: str
    paths: tuple[str, ...]
    kind: str
    text_field: str = "text"
    id_field: str | None = None
    language_field: str | None = None
    metadata_fields: tuple[str, ...] | None = None
    max_doc_bytes: int = 32 * MIB


@dataclass(frozen=True)
class IngestConfig:
    # Plain JSONL files larger than this are read by several tasks, each a byte range (Hadoop's line-split rule).
    split_bytes: int = 64 * MIB
    # A compressed stream that inflates beyond ratio x its size (and beyond the floor) is a bomb: quarantined.
    max_inflation_ratio: int = 200
    inflation_floor_bytes: int = 64 * MIB
    excerpt_bytes: int = 1024


@dataclass(frozen=True)
class QualityModelConfig:
    """The fastText quality classifier: labels from whole sources, or from a metadata field of the documents."""

    positive_sources: tuple[str, ...] = ()
    negative_sources: tuple[str, ...] = ()
    label_field: str | None = None  # a bronze metadata key; documents whose value is positive_label are positives
    positive_label: str = "1"
    max_training_docs: int = 50_000
    epochs: int = 5
    learning_rate: float = 0.5
    word_ngrams: int = 2
    dim: int = 64
    seed: int = 0

    @property
    def has_labels(self) -> bool:
        return bool(self.label_field or (self.positive_sources and self.negative_sources))


@dataclass(frozen=True)
class FilterConfig:
    rules: tuple[Rule, ...] = DEFAULT_RULES
    languages: tuple[str, ...] | None = None  # prose languages to keep (lid.176 codes); None keeps every language
    quality: QualityModelConfig = field(default_factory=QualityModelConfig)


KEEP_ORDER_COLUMNS = ("quality_score", "n_chars", "doc_id")


@dataclass(frozen=True)
class DedupConfig:
    """MinHash near-deduplication of the documents the filter kept."""

    threshold: float = 0.8  # Jaccard similarity of shingle sets above which two documents are duplicates
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"  # datasketch's permutation scheme: affine32 (>= 2.0) or legacy (< 2.0)
    shingle_size: int = 5
    shingle_unit: str = "word"  # word or char
    # "fast": vectorised 64-bit polynomial hashes (no Python call per shingle); "sha1": datasketch's default hash, for
    # signatures that must equal an existing datasketch index's.
    shingle_hash: str = "fast"
    # Candidate pairs are kept when their exact ("exact": Jaccard of the shingle-hash sets) or estimated ("signature":
    # share of equal signature values) similarity reaches the threshold; "none" keeps every LSH candidate.
    verify: str = "exact"
    # Weight of LSH false positives against false negatives when choosing bands x rows (datasketch's default is 0.5).
    # Verification removes false positives, so the default leans toward recall; with verify: none, raise it.
    false_positive_weight: float = 0.3
    # "full": decide every kept document afresh; "incremental": only documents not yet in silver.dedup, against the
    # stored signature index (falls back to full, saying why, when the index cannot be reused).
    mode: str = "full"
    # Which document of a cluster is kept: first by these, then by the smallest doc_id.
    keep_order: tuple[str, ...] = ("quality_score desc", "n_chars desc")


@dataclass(frozen=True)
class TokenizeConfig:
    """cl100k_base tokenization of the documents the filter and dedup kept."""

    # Documents longer than this (in characters) are encoded in pieces cut at safe boundaries (same tokens, bounded
    # memory). Parallelism is Spark's: one task per core, each encoding its Arrow batches.
    chunk_chars: int = 1_000_000


@dataclass(frozen=True)
class MdsConfig:
    """Where the curriculum mixture is defined and where its MDS shards go."""

    mix: str | None = None  # path of a mixes/*.yaml file
    output: str | None = None  # default: <lakehouse root>/mds (must be a path every Spark worker can write)


@dataclass(frozen=True)
class TrainConfig:
    """The embedded MoE trainer (trainer/) on the curriculum of `mds.mix`: model, budget, optimisation, checkpoints."""

    model: str = "tiny"  # a preset of trainer.config.PRESETS
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  # ModelConfig fields changed from the preset
    stage_tokens: Mapping[str, int] = field(default_factory=dict)  # training budget per stage; default one pass
    batch_tokens: int = 65_536  # tokens per optimizer step, all ranks together
    micro_batch_tokens: int | None = None  # tokens per forward pass of one rank; default batch_tokens / ranks
    max_steps: int | None = None  # stop the curriculum early (the schedule then spans max_steps)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    device: str = "auto"  # auto: cuda when available
    compile: bool = False  # torch.compile each block
    activation_checkpointing: bool = False
    document_masking: bool = True  # attention stays inside each packed document
    seed: int = 17
    shuffle_block: int = 1 << 16  # samples shuffled together (trainer/data.py)
    checkpoint_dir: str | None = None  # default: <lakehouse root>/checkpoints
    checkpoint_every: int = 500  # steps; the last step is always saved
    keep_checkpoints: int = 2
    log_every: int = 10
    peak_tflops: float | None = None  # per device, for MFU; known GPUs are recognised


@dataclass(frozen=True)
class PipelineConfig:
    lakehouse: LakehouseConfig
    spark: SparkConfig
    mlflow: MlflowConfig
    sources: tuple[SourceConfig, ...]
    ingest: IngestConfig
    filter: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    mds: MdsConfig = field(default_factory=MdsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"sources: no source named {name!r}; configured: {[s.name for s in self.sources]}")


# ---------------------------------------------------------------------------------------------------------------
# Loading


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, extra: Mapping[str, str] | None = None) -> str:
    """Replaces `${VAR}` and `${VAR:-default}`; an unset variable without a default is an error."""
    names = {**os.environ, **(extra or {})}

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in names and names[name] != "":
            return names[name]
        if default is not None:
            return default
        raise ConfigError(f"${{{name}}} is used in the config but the environment variable {name} is not set")

    return _ENV_REFERENCE.sub(replace, text)


def load_config(path: str | os.PathLike[str], variables: Mapping[str, str] | None = None) -> PipelineConfig:
    """Reads, expands and validates a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(expand_env(path.read_text(encoding="utf-8"), variables))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return parse_config(raw)


def parse_config(raw: Any) -> PipelineConfig:
    """Validates an already-parsed mapping (what tests and notebooks build in code)."""
    top = Section(raw, "config")
    lakehouse = _parse_lakehouse(top.section("lakehouse"))
    config = PipelineConfig(
        lakehouse=lakehouse,
        spark=_parse_spark(top.section("spark")),
        mlflow=_parse_mlflow(top.section("mlflow"), lakehouse),
        sources=_parse_sources(top.take("sources", list, required=True), top.path),
        ingest=_parse_ingest(top.section("ingest")),
        filter=_parse_filter(top.section("filter")),
        dedup=_parse_dedup(top.section("dedup")),
        tokenize=_parse_tokenize(top.section("tokenize")),
        mds=_parse_mds(top.section("mds"), lakehouse),
        train=_parse_train(top.section("train"), lakehouse),
    )
    top.reject_unknown()
    names = {source.name for source in config.sources}
    quality = config.filter.quality
    unknown = sorted(set(quality.positive_sources + quality.negative_sources) - names)
    if unknown:
        raise ConfigError(f"filter.quality: sources {unknown} are not configured; configured: {sorted(names)}")
    return config


def _parse_lakehouse(section: Section) -> LakehouseConfig:
    root = section.take("root", str, default="./lakehouse")
    catalog = section.take("catalog", str)
    schema = section.take("schema", str)
    section.reject_unknown()
    if (catalog is None) != (schema is None):
        raise ConfigError(
            f"lakehouse: 'catalog' and 'schema' go together (Unity Catalog catalog.schema); got catalog={catalog!r}, "
            f"schema={schema!r}"
        )
    for key, value in (("catalog", catalog), ("schema", schema)):
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ConfigError(f"lakehouse.{key}: {value!r} is not a plain identifier (letters, digits, underscore)")
    return LakehouseConfig(root=_absolute(root), catalog=catalog, schema=schema)


def _parse_spark(section: Section) -> SparkConfig:
    spark = SparkConfig(
        master=section.take("master", str, default="local[*]"),
        driver_memory=section.take("driver_memory", str, default="4g"),
        shuffle_partitions=section.take("shuffle_partitions", int, default=8, minimum=1),
        ui_enabled=section.take("ui_enabled", bool, default=False),
        conf={str(k): str(v) for k, v in section.take("conf", dict, default={}).items()},
    )
    section.reject_unknown()
    if not re.fullmatch(r"\d+[kmgt]?", spark.driver_memory.lower()):
        raise ConfigError(f"spark.driver_memory: {spark.driver_memory!r} is not a JVM memory size such as '4g'")
    return spark


def _parse_mlflow(section: Section, lakehouse: LakehouseConfig) -> MlflowConfig:
    default_uri = "sqlite:///" + os.path.join(lakehouse.root, "mlflow.db")
    mlflow = MlflowConfig(
        tracking_uri=section.take("tracking_uri", str, default=default_uri),
        experiment=section.take("experiment", str, default="dataprep"),
        artifact_location=section.take("artifact_location", str),
    )
    section.reject_unknown()
    if mlflow.tracking_uri.startswith("sqlite:///") and not mlflow.tracking_uri.startswith("sqlite:////"):
        raise ConfigError(
            f"mlflow.tracking_uri: {mlflow.tracking_uri!r} is a relative sqlite path; use sqlite:////absolute/path.db "
            "so every process (driver, workers, CI) opens the same store"
        )
    if mlflow.artifact_location is None and mlflow.tracking_uri.startswith("sqlite:"):
        mlflow = MlflowConfig(mlflow.tracking_uri, mlflow.experiment, os.path.join(lakehouse.root, "mlflow-artifacts"))
    return mlflow


def _parse_sources(items: list[Any], parent: str) -> tuple[SourceConfig, ...]:
    if not items:
        raise ConfigError(f"{parent}.sources: at least one source is required")
    sources = []
    for index, item in enumerate(items):
        section = Section(item, f"sources[{index}]")
        name = section.take("name", str, required=True)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"{section.path}.name: {name!r} may hold only letters, digits, '_', '-' and '.'")
        section.path = f"sources[{index}] ({name})"
        source_format = section.take("format", str, required=True, choices=SOURCE_FORMATS)
        paths = section.take("paths", (list, str), required=True)
        paths = [paths] if isinstance(paths, str) else paths
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"{section.path}.paths: expected a path or a list of paths, got {paths!r}")
        default_kind = "code" if source_format == "code" else "text"
        metadata_fields = section.take("metadata_fields", list)
        source = SourceConfig(
            name=name,
            format=source_format,
            paths=tuple(_absolute(p) for p in paths),
            kind=section.take("kind", str, default=default_kind, choices=DOCUMENT_KINDS),
            text_field=section.take("text_field", str, default="text"),
            id_field=section.take("id_field", str),
            language_field=section.take("language_field", str),
            metadata_fields=None if metadata_fields is None else tuple(str(f) for f in metadata_fields),
            max_doc_bytes=section.take(
                "max_doc_bytes", int, default=MIB if source_format == "code" else 32 * MIB, minimum=1
            ),
        )
        section.reject_unknown()
        if source_format in ("text", "code") and (source.id_field or source.language_field):
            raise ConfigError(
                f"{section.path}: id_field/language_field apply to jsonl and parquet sources, not {source_format!r}"
            )
        sources.append(source)
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"sources: names must be unique; repeated: {duplicates}")
    return tuple(sources)


def _parse_ingest(section: Section) -> IngestConfig:
    ingest = IngestConfig(
        split_bytes=section.take("split_bytes", int, default=IngestConfig.split_bytes, minimum=1024),
        max_inflation_ratio=section.take(
            "max_inflation_ratio", int, default=IngestConfig.max_inflation_ratio, minimum=2
        ),
        inflation_floor_bytes=section.take(
            "inflation_floor_bytes", int, default=IngestConfig.inflation_floor_bytes, minimum=1
        ),
        excerpt_bytes=section.take("excerpt_bytes", int, default=IngestConfig.excerpt_bytes, minimum=16),
    )
    section.reject_unknown()
    return ingest


def _parse_filter(section: Section) -> FilterConfig:
    try:
        rules = resolve_rules(section.take("rules", list, default=[]))
    except RuleError as error:
        raise ConfigError(str(error)) from error
    languages = section.take("languages", list)
    quality_section = section.section("quality")
    quality = QualityModelConfig(
        positive_sources=tuple(quality_section.take("positive_sources", list, default=[])),
        negative_sources=tuple(quality_section.take("negative_sources", list, default=[])),
        label_field=quality_section.take("label_field", str),
        positive_label=str(quality_section.take("positive_label", (str, int), default="1")),
        max_training_docs=quality_section.take("max_training_docs", int, default=50_000, minimum=10),
        epochs=quality_section.take("epochs", int, default=5, minimum=1),
        learning_rate=float(quality_section.take("learning_rate", (int, float), default=0.5)),
        word_ngrams=quality_section.take("word_ngrams", int, default=2, minimum=1),
        dim=quality_section.take("dim", int, default=64, minimum=2),
        seed=quality_section.take("seed", int, default=0),
    )
    quality_section.reject_unknown()
    section.reject_unknown()
    if bool(quality.positive_sources) != bool(quality.negative_sources):
        raise ConfigError(
            "filter.quality: positive_sources and negative_sources go together; got "
            f"{list(quality.positive_sources)} and {list(quality.negative_sources)}"
        )
    return FilterConfig(
        rules=rules,
        languages=None if languages is None else tuple(str(language) for language in languages),
        quality=quality,
    )


def _parse_dedup(section: Section) -> DedupConfig:
    defaults = DedupConfig()
    dedup = DedupConfig(
        threshold=float(section.take("threshold", (int, float), default=defaults.threshold)),
        num_perm=section.take("num_perm", int, default=defaults.num_perm, minimum=2),
        seed=section.take("seed", int, default=defaults.seed),
        scheme=section.take("scheme", str, default=defaults.scheme, choices=("affine32", "legacy")),
        shingle_size=section.take("shingle_size", int, default=defaults.shingle_size, minimum=1),
        shingle_unit=section.take("shingle_unit", str, default=defaults.shingle_unit, choices=("word", "char")),
        shingle_hash=section.take("shingle_hash", str, default=defaults.shingle_hash, choices=("fast", "sha1")),
        mode=section.take("mode", str, default=defaults.mode, choices=("full", "incremental")),
        verify=section.take("verify", str, default=defaults.verify, choices=("signature", "exact", "none")),
        false_positive_weight=float(
            section.take("false_positive_weight", (int, float), default=defaults.false_positive_weight)
        ),
        keep_order=tuple(section.take("keep_order", list, default=list(defaults.keep_order))),
    )
    section.reject_unknown()
    if not 0.0 < dedup.threshold < 1.0:
        raise ConfigError(f"dedup.threshold: {dedup.threshold} must be between 0 and 1")
    if not 0.0 < dedup.false_positive_weight < 1.0:
        raise ConfigError(f"dedup.false_positive_weight: {dedup.false_positive_weight} must be between 0 and 1")
    for item in dedup.keep_order:
        column, _, direction = str(item).partition(" ")
        if column not in KEEP_ORDER_COLUMNS or direction not in ("asc", "desc"):
            raise ConfigError(
                f"dedup.keep_order: {item!r} should be '<column> asc|desc' with a column of {KEEP_ORDER_COLUMNS}"
            )
    return dedup


def _parse_tokenize(section: Section) -> TokenizeConfig:
    defaults = TokenizeConfig()
    tokenize = TokenizeConfig(
        chunk_chars=section.take("chunk_chars", int, default=defaults.chunk_chars, minimum=1024),
    )
    section.reject_unknown()
    return tokenize


def _parse_mds(section: Section, lakehouse: LakehouseConfig) -> MdsConfig:
    mix = section.take("mix", str)
    output = section.take("output", str, default=os.path.join(lakehouse.root, "mds"))
    section.reject_unknown()
    return MdsConfig(mix=_absolute(mix) if mix else None, output=_absolute(output))


def _parse_train(section: Section, lakehouse: LakehouseConfig) -> TrainConfig:
    from trainer.config import PRESETS, model_config

    d = TrainConfig()
    number = (int, float)
    train = TrainConfig(
        model=section.take("model", str, default=d.model, choices=tuple(PRESETS)),
        model_overrides=section.take("model_overrides", dict, default={}),
        stage_tokens=section.take("stage_tokens", dict, default={}),
        batch_tokens=section.take("batch_tokens", int, default=d.batch_tokens, minimum=2),
        micro_batch_tokens=section.take("micro_batch_tokens", int, minimum=2),
        max_steps=section.take("max_steps", int, minimum=1),
        lr=float(section.take("lr", number, default=d.lr)),
        betas=tuple(float(b) for b in section.take("betas", list, default=list(d.betas))),
        eps=float(section.take("eps", number, default=d.eps)),
        weight_decay=float(section.take("weight_decay", number, default=d.weight_decay)),
        warmup_steps=section.take("warmup_steps", int, default=d.warmup_steps, minimum=0),
        min_lr_ratio=float(section.take("min_lr_ratio", number, default=d.min_lr_ratio)),
        grad_clip=float(section.take("grad_clip", number, default=d.grad_clip)),
        precision=section.take("precision", str, default=d.precision, choices=("auto", "fp32", "bf16")),
        device=section.take("device", str, default=d.device, choices=("auto", "cpu", "cuda")),
        compile=section.take("compile", bool, default=d.compile),
        activation_checkpointing=section.take("activation_checkpointing", bool, default=d.activation_checkpointing),
        document_masking=section.take("document_masking", bool, default=d.document_masking),
        seed=section.take("seed", int, default=d.seed),
        shuffle_block=section.take("shuffle_block", int, default=d.shuffle_block, minimum=1),
        checkpoint_dir=_absolute(
            section.take("checkpoint_dir", str, default=os.path.join(lakehouse.root, "checkpoints"))
        ),
        checkpoint_every=section.take("checkpoint_every", int, default=d.checkpoint_every, minimum=1),
        keep_checkpoints=section.take("keep_checkpoints", int, default=d.keep_checkpoints, minimum=1),
        log_every=section.take("log_every", int, default=d.log_every, minimum=1),
        peak_tflops=_optional_float(section.take("peak_tflops", number)),
    )
    section.reject_unknown()
    where = section.path
    if len(train.betas) != 2 or not all(0 <= b < 1 for b in train.betas):
        raise ConfigError(f"{where}.betas: expected two numbers in [0, 1), got {list(train.betas)}")
    if train.lr <= 0 or not 0 <= train.min_lr_ratio <= 1 or train.weight_decay < 0 or train.eps <= 0:
        raise ConfigError(f"{where}: lr and eps must be positive, min_lr_ratio in [0, 1], weight_decay >= 0")
    if train.grad_clip < 0:
        raise ConfigError(f"{where}.grad_clip: {train.grad_clip} must be >= 0 (0 turns clipping off)")
    for stage, tokens in train.stage_tokens.items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ConfigError(f"{where}.stage_tokens.{stage}: expected a positive number of tokens, got {tokens!r}")
    try:
        model_config(train.model, train.model_overrides)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.model_overrides: {error}") from error
    return train


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _absolute(path: str) -> str:
    """Local paths become absolute; URIs (dbfs:/, s3://, ...) are kept as they are."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", path):
        return path
    return os.path.abspath(os.path.expanduser(path))


_NO_DEFAULT = object()


class Section:
    """A mapping being validated: `take` pops a key with its type checked; `reject_unknown` flags what is left."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(raw).__name__} {raw!r}")
        self.remaining = dict(raw)
        self.known: list[str] = []
        self.path = path

    def section(self, key: str) -> Section:
        return Section(self.take(key, dict, default={}), key if self.path == "config" else f"{self.path}.{key}")

    def take(
        self,
        key: str,
        expected: type | tuple[type, ...],
        *,
        default: Any = None,
        required: bool = False,
        choices: tuple[str, ...] | None = None,
        minimum: int | None = None,
    ) -> Any:
        self.known.append(key)
        where = key if self.path == "config" else f"{self.path}.{key}"
        if key not in self.remaining or self.remaining[key] is None:
            self.remaining.pop(key, None)
            if required:
                raise ConfigError(f"{where}: required key is missing")
            return default
        value = self.remaining.pop(key)
        expected_types = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int in Python; a YAML `true` where a number belongs is still a mistake.
        wrong_bool = isinstance(value, bool) and bool not in expected_types
        if wrong_bool or not isinstance(value, expected_types):
            names = " or ".join(t.__name__ for t in expected_types)
            raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{where}: {value!r} is below the minimum {minimum}")
        return value

    def reject_unknown(self) -> None:
        if self.remaining:
            unknown = ", ".join(repr(k) for k in self.remaining)
            raise ConfigError(f"{self.path}: unknown key(s) {unknown}; expected some of: {', '.join(self.known)}")
