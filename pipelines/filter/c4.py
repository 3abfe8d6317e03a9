"""C4 signals (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", section 2.2, as in datatrove's
C4QualityFilter): C4 keeps only lines ending in terminal punctuation with at least 3 words, drops lines mentioning
javascript or cookie/terms policies, and drops whole pages containing "lorem ipsum" or a curly brace, or left with
fewer than 5 sentences. We record each of these as a signal instead of editing the text.
"""

from __future__ import annotations

import re

END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
MAX_WORD_LENGTH = 1000
MIN_WORDS_PER_LINE = 3
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


def signals(text: str) -> dict[str, float]:
    """Line by line, in C4's order: a line must have no word over 1000 characters, end in terminal punctuation (not
    an ellipsis) and have 3+ words; only such lines are then checked for "lorem ipsum" (page drop), javascript (line
    drop), "{" (page drop) and policy phrases (line drop), in that order. Sentences are counted in the lines that
    survive, at least one per line.
    """
    lines = [line.strip() for line in text.splitlines()]
    total = max(sum(1 for line in lines if line), 1)
    lorem = curly = javascript = policy = terminal = 0
    sentences = 0
    for line in lines:
        words = line.split()
        if any(len(word) > MAX_WORD_LENGTH for word in words):
            continue
        line = _CITATION.sub("", line)
        ends_well = line.endswith(END_PUNCTUATION) and not line.endswith("...")
        terminal += ends_well
        if not ends_well or len(words) < MIN_WORDS_PER_LINE:
            continue
        lowered = line.lower()
        lorem += "lorem ipsum" in lowered
        if "javascript" in lowered:  # checked before the brace: such a line is dropped, not the page
            javascript += 1
            continue
        curly += "{" in line
        if any(phrase in lowered for phrase in POLICY_PHRASES):
            policy += 1
            continue
        sentences += max(len(_SENTENCE_END.findall(line)), 1)
    return {
        "c4_lorem_ipsum": float(lorem > 0),
        "c4_curly_brace": float(curly > 0),
        "c4_javascript_lines": javascript / total,
        "c4_policy_lines": policy / total,
        "c4_terminal_punct_lines": terminal / total,
        "c4_kept_sentences": float(sentences),
    }
