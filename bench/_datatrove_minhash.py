"""Runs inside the datatrove peer environment (see minhash.py): datatrove's MinhashDedupSignature over a JSONL
corpus, one process, 16 buckets x 8 hashes = 128 permutations. Prints the seconds as JSON."""

import json
import sys
import tempfile
import time

from datatrove.data import Document
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig


def main() -> None:
    texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8")]
    config = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8, seed=1)
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as out:
        documents = [Document(text="A short warm-up text for the tokenizer, five words at least.", id="w")]
        MinhashDedupSignature(output_folder=warm, config=config).run(iter(documents))
        started = time.perf_counter()
        step = MinhashDedupSignature(output_folder=out, config=config)
        step.run(Document(text=text, id=str(i)) for i, text in enumerate(texts))
        print(json.dumps({"seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
