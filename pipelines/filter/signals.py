"""Every stored signal of one document, by kind: one entry point for the Spark task, the benchmark and the tests."""

from __future__ import annotations

from pipelines.filter import c4, code_signals, fineweb, gopher
from pipelines.filter.words import split_words


def document_signals(text: str, kind: str) -> dict[str, float]:
    """Signal name -> value. Prose gets the Gopher, C4 and FineWeb signals, code the code-file signals."""
    signals = {"n_chars": float(len(text))}
    if kind == "code":
        signals.update(code_signals.signals(text))
        return signals
    words = split_words(text)
    signals.update(gopher.quality_signals(text, words))
    signals.update(gopher.repetition_signals(text, words))
    signals.update(c4.signals(text))
    signals.update(fineweb.signals(text, len(words)))
    return signals
