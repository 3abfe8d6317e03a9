"""Every default rule, just inside and just outside its bounds, through the Spark SQL decision and its Python twin."""

from pyspark.sql import types as T

from pipelines.filter.decide import with_decisions, with_exact_duplicates
from pipelines.filter.rules import DEFAULT_RULES
from pipelines.filter.settings import FilterConfig

SCHEMA = T.StructType(
    [
        T.StructField("doc_id", T.StringType()),
        T.StructField("kind", T.StringType()),
        T.StructField("language", T.StringType()),
        T.StructField("content_hash", T.StringType()),
        T.StructField("signal_error", T.StringType()),
        T.StructField("signals", T.MapType(T.StringType(), T.DoubleType())),
    ]
)


def cases():
    """(doc_id, kind, language, signals, rule expected to drop or None) for each bound of each enabled rule."""
    rows = []
    for rule in DEFAULT_RULES:
        if not rule.enabled:
            continue
        kind = rule.kinds[0]
        language = rule.languages[0] if rule.languages else "en"
        for bound, inside, outside in ((rule.min, 1e-9, -1e-6), (rule.max, -1e-9, 1e-6)):
            if bound is None:
                continue
            for label, delta, expected in (("in", inside, None), ("out", outside, rule.name)):
                value = float(bound) + delta * max(1.0, abs(float(bound)))
                rows.append((f"{rule.name}-{bound}-{label}", kind, language, {rule.signal: value}, expected))
    return rows


def test_each_rule_keeps_just_inside_and_drops_just_outside_in_sql_and_python(spark):
    rows = cases()
    frame = spark.createDataFrame(
        [(doc_id, kind, lang, doc_id, None, signals) for doc_id, kind, lang, signals, _ in rows], SCHEMA
    )
    decided = {r.doc_id: r for r in with_decisions(with_exact_duplicates(frame), FilterConfig()).collect()}
    rules = {rule.name: rule for rule in DEFAULT_RULES}
    assert len(rows) >= 2 * sum(rule.enabled for rule in DEFAULT_RULES)
    for doc_id, kind, language, signals, expected in rows:
        reasons = decided[doc_id].drop_reasons
        assert reasons == ([expected] if expected else []), doc_id
        assert decided[doc_id].keep == (expected is None)
        for rule in rules.values():
            assert rule.drops(signals, kind, language) == (rule.name in reasons), (doc_id, rule.name)


def test_missing_signals_never_drop_and_signal_errors_always_do(spark):
    frame = spark.createDataFrame(
        [("a", "text", "en", "h1", None, {}), ("b", "text", "en", "h2", "ValueError: x", {})], SCHEMA
    )
    decided = {r.doc_id: r for r in with_decisions(with_exact_duplicates(frame), FilterConfig()).collect()}
    assert decided["a"].keep and decided["a"].drop_reasons == []
    assert decided["b"].drop_reasons == ["signal_error"]


def test_language_allow_list_applies_to_prose_only(spark):
    frame = spark.createDataFrame(
        [("a", "text", "fr", "h1", None, {}), ("b", "code", "Python", "h2", None, {})], SCHEMA
    )
    english_only = FilterConfig(languages=("en",))
    decided = {r.doc_id: r for r in with_decisions(with_exact_duplicates(frame), english_only).collect()}
    assert decided["a"].drop_reasons == ["language_not_allowed"] and decided["b"].keep
