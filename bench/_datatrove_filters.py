"""Runs inside the datatrove peer environment (see filters.py): per-rule verdicts and throughput of datatrove's
Gopher, C4 and FineWeb filters on a JSONL corpus. Prints one JSON object."""

import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

GOPHER_OFF = dict(
    min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
    max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
    max_non_alpha_words_ratio=None, min_stop_words=None,
)  # fmt: skip
REPETITION_OFF = dict(
    dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None, top_n_grams=(),
    dup_n_grams=(),
)  # fmt: skip
C4_OFF = dict(filter_lorem_ipsum=False, filter_curly_bracket=False, min_num_sentences=-1)
FINEWEB_OFF = dict(line_punct_thr=0.0, short_line_thr=2.0, char_duplicates_ratio=2.0, new_line_ratio=1e18)

# One datatrove filter per rule of ours, every other check of that filter switched off.
SINGLE_RULE_FILTERS = {
    "gopher_word_count": GopherQualityFilter(**{**GOPHER_OFF, "min_doc_words": 50, "max_doc_words": 100_000}),
    "gopher_mean_word_length": GopherQualityFilter(
        **{**GOPHER_OFF, "min_avg_word_length": 3, "max_avg_word_length": 10}
    ),
    "gopher_symbol_ratio": GopherQualityFilter(**{**GOPHER_OFF, "max_symbol_word_ratio": 0.1}),
    "gopher_bullet_lines": GopherQualityFilter(**{**GOPHER_OFF, "max_bullet_lines_ratio": 0.9}),
    "gopher_ellipsis_lines": GopherQualityFilter(**{**GOPHER_OFF, "max_ellipsis_lines_ratio": 0.3}),
    "gopher_alpha_words": GopherQualityFilter(**{**GOPHER_OFF, "max_non_alpha_words_ratio": 0.8}),
    "gopher_stop_words": GopherQualityFilter(**{**GOPHER_OFF, "min_stop_words": 2}),
    "gopher_dup_line_fraction": GopherRepetitionFilter(**{**REPETITION_OFF, "dup_line_frac": 0.3}),
    "gopher_dup_para_fraction": GopherRepetitionFilter(**{**REPETITION_OFF, "dup_para_frac": 0.3}),
    "gopher_dup_line_char_fraction": GopherRepetitionFilter(**{**REPETITION_OFF, "dup_line_char_frac": 0.2}),
    "gopher_dup_para_char_fraction": GopherRepetitionFilter(**{**REPETITION_OFF, "dup_para_char_frac": 0.2}),
    **{
        f"gopher_top_{n}gram": GopherRepetitionFilter(**{**REPETITION_OFF, "top_n_grams": ((n, t),)})
        for n, t in ((2, 0.2), (3, 0.18), (4, 0.16))
    },
    **{
        f"gopher_dup_{n}gram": GopherRepetitionFilter(**{**REPETITION_OFF, "dup_n_grams": ((n, t),)})
        for n, t in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    },
    "c4_lorem_ipsum": C4QualityFilter(**{**C4_OFF, "filter_lorem_ipsum": True}),
    "c4_curly_brace": C4QualityFilter(**{**C4_OFF, "filter_curly_bracket": True}),
    "c4_min_sentences": C4QualityFilter(**{**C4_OFF, "min_num_sentences": 5}),
    "fineweb_line_punct": FineWebQualityFilter(**{**FINEWEB_OFF, "line_punct_thr": 0.12}),
    "fineweb_short_lines": FineWebQualityFilter(**{**FINEWEB_OFF, "short_line_thr": 0.67}),
    "fineweb_dup_line_chars": FineWebQualityFilter(**{**FINEWEB_OFF, "char_duplicates_ratio": 0.01}),
    "fineweb_list_ratio": FineWebQualityFilter(**{**FINEWEB_OFF, "new_line_ratio": 0.3}),
}
DEFAULT_FILTERS = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]


def keeps(result) -> bool:
    return result is True or (isinstance(result, tuple) and result[0] is True)


def main() -> None:
    texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8")]
    for f in DEFAULT_FILTERS:  # spaCy's first call builds its pipeline: not part of the timing
        f.filter(Document(text="Warm up the tokenizer with a sentence.", id="warm"))
    started = time.perf_counter()
    for i, text in enumerate(texts):
        for f in DEFAULT_FILTERS:
            f.filter(Document(text=text, id=str(i)))
    seconds = time.perf_counter() - started
    # Documents outside, rules inside: datatrove caches the words of the last few texts, so each is split once.
    verdicts = {rule: [] for rule in SINGLE_RULE_FILTERS}
    for i, text in enumerate(texts):
        for rule, f in SINGLE_RULE_FILTERS.items():
            verdicts[rule].append(keeps(f.filter(Document(text=text, id=str(i)))))
    print(json.dumps({"seconds": seconds, "verdicts": verdicts}))


if __name__ == "__main__":
    main()
