"""FineWeb's own quality rules (Penedo et al. 2024, "The FineWeb Datasets", section 3.3; datatrove's
FineWebQualityFilter): share of lines ending in punctuation, share of short lines, characters in duplicated lines,
and newlines per word (list-like pages).
"""

from __future__ import annotations

from pipelines.filter.words import duplicated_elements

# Sentence-final punctuation across scripts (Latin, CJK, Devanagari, Arabic, ...); quotes and the ellipsis character
# are not in the set FineWeb uses.
TERMINAL_PUNCTUATION = tuple(".!?。！？｡︒﹒．।॥؟۔܀܁܂߹።፧፨᙮᠃᠉‼‽⁇⁈⁉⸮꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹖﹗")
SHORT_LINE_CHARS = 30


def signals(text: str, n_words: int) -> dict[str, float]:
    lines = [line for line in text.split("\n") if line.strip()]
    total = max(len(lines), 1)
    _, duplicate_chars = duplicated_elements(lines)
    return {
        "fineweb_line_punct_ratio": sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / total,
        "fineweb_short_line_ratio": sum(len(line) <= SHORT_LINE_CHARS for line in lines) / total,
        "fineweb_dup_line_char_ratio": duplicate_chars / max(len(text.replace("\n", "")), 1),
        "fineweb_newline_ratio": text.count("\n") / max(n_words, 1),
    }
