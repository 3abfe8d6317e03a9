"""Gopher quality and repetition signals (Rae et al. 2021, "Scaling Language Models", arXiv 2112.11446, App. A).

Computed once per document and stored; the thresholds live in rules.py, so they can be re-tuned without recomputing.
"""

from __future__ import annotations

from pipelines.filter.words import (
    duplicated_elements,
    duplicated_ngram_characters,
    is_symbol,
    split_lines,
    split_paragraphs,
    split_words,
    top_ngram_characters,
)

# Gopher's "required words": a document must use at least two of them (Rae et al. 2021, A.1.1).
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-")
ELLIPSES = ("...", "…")
TOP_NGRAM_SIZES = (2, 3, 4)
DUPLICATE_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)


def quality_signals(text: str, words: list[str] | None = None) -> dict[str, float]:
    """Gopher quality filter inputs (Rae et al. 2021, Table A1 and A.1.1):

    word count and mean word length over non-symbol words; '#' and ellipsis counts per word; fractions of lines that
    start with a bullet or end with an ellipsis; fraction of words with an alphabetic character; distinct stop words.
    """
    words = split_words(text) if words is None else words
    n_words = len(words)
    real_words = [word for word in words if not is_symbol(word)]
    lines = text.splitlines() or [""]
    per_word = max(n_words, 1)
    return {
        "gopher_words": float(len(real_words)),
        "gopher_mean_word_length": sum(map(len, real_words)) / len(real_words) if real_words else 0.0,
        "gopher_hash_ratio": text.count("#") / per_word,
        "gopher_ellipsis_ratio": (text.count("...") + text.count("…")) / per_word,
        "gopher_bullet_lines": sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines),
        "gopher_ellipsis_lines": sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines),
        "gopher_alpha_words": sum(any(c.isalpha() for c in word) for word in words) / per_word,
        # Case-sensitive, as in datatrove: "The" at a sentence start does not count.
        "gopher_stop_words": float(len(STOP_WORDS.intersection(words))),
    }


def repetition_signals(text: str, words: list[str] | None = None) -> dict[str, float]:
    """Gopher repetition filter inputs (Rae et al. 2021, Table A1):

    fractions of duplicated lines and paragraphs (by count and by characters), the character share of the most
    frequent 2/3/4-gram, and the character share of duplicated 5..10-grams.
    """
    words = split_words(text) if words is None else words
    size = max(len(text), 1)
    lines, paragraphs = split_lines(text), split_paragraphs(text)
    duplicate_lines, duplicate_line_chars = duplicated_elements(lines)
    duplicate_paragraphs, duplicate_paragraph_chars = duplicated_elements(paragraphs)
    signals = {
        "gopher_dup_line_fraction": duplicate_lines / max(len(lines), 1),
        "gopher_dup_para_fraction": duplicate_paragraphs / max(len(paragraphs), 1),
        "gopher_dup_line_char_fraction": duplicate_line_chars / size,
        "gopher_dup_para_char_fraction": duplicate_paragraph_chars / size,
    }
    for n in TOP_NGRAM_SIZES:
        signals[f"gopher_top_{n}gram_char_fraction"] = top_ngram_characters(words, n) / size
    for n, characters in duplicated_ngram_characters(words, DUPLICATE_NGRAM_SIZES).items():
        signals[f"gopher_dup_{n}gram_char_fraction"] = characters / size
    return signals
