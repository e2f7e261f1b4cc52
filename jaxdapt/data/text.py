"""Text -> fixed-shape int32 token ids for jaxdapt's text encoders (models/text_encoder.py).

`Tokenizer(path)` wraps a Hugging Face `tokenizers` tokenizer read from tokenizer.json (the
`tokenizers` package is imported only here, when one is built, so installs without text
need not have it). A batch is padded to the smallest length bucket that holds its longest
row (default 32, 64, 128, 256) and rows longer than the largest bucket are truncated to
it, keeping [CLS] ... [SEP]: a jitted step then compiles at most once per bucket instead
of once per batch length. Padding uses the tokenizer's [PAD] id (0 in BERT vocabularies),
which is what BertEncoder reads as "not a token".

The padding and truncation settings stored in tokenizer.json (all-MiniLM-L6-v2's pads
every row to 128) are replaced by the bucket rule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.errors import ConfigError

BUCKETS = (32, 64, 128, 256)
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
  """Callable: list of strings -> (ids int32 [B, L], mask bool [B, L]), L a bucket.

  `path` is a tokenizer.json or a model folder holding one. `pad_token` names the padding
  token whose id fills the padding (`pad_id`).
  """

  def __init__(
    self,
    path: str | os.PathLike,
    buckets: Sequence[int] = BUCKETS,
    *,
    pad_token: str = "[PAD]",
  ):
    buckets = tuple(buckets)
    if not buckets or any(not isinstance(b, int) or b < 2 for b in buckets):
      raise ConfigError(f"tokenizer buckets: need ints >= 2 (room for [CLS] [SEP]), got {buckets}")
    if list(buckets) != sorted(set(buckets)):
      raise ConfigError(f"tokenizer buckets: must be strictly increasing, got {buckets}")
    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(path):
      raise ConfigError(f"tokenizer: {path} does not exist")
    try:
      from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
      raise ConfigError(
        "tokenizer: reading tokenizer.json needs Hugging Face tokenizers: pip install tokenizers"
      ) from None
    try:
      tok = HFTokenizer.from_file(path)
    except Exception as e:  # the Rust side raises plain Exceptions for malformed files
      raise ConfigError(f"tokenizer: {path} is not a readable tokenizer.json ({e})") from None
    pad_id = tok.token_to_id(pad_token)
    if pad_id is None:
      raise ConfigError(f"tokenizer: {path} has no padding token {pad_token!r}")
    tok.no_padding()
    tok.enable_truncation(max_length=buckets[-1])
    self._tok: Any = tok
    self.path = path
    self.buckets = buckets
    self.pad_id = int(pad_id)
    self.unk_id = tok.token_to_id("[UNK]")

  @property
  def vocab_size(self) -> int:
    return int(self._tok.get_vocab_size())

  def bucket(self, length: int) -> int:
    """The smallest bucket >= `length` (the largest when none is)."""
    return next((b for b in self.buckets if b >= length), self.buckets[-1])

  def pieces(self, text: str) -> list[str]:
    """The tokens of `text` as strings, [CLS] and [SEP] included (to inspect a vocabulary)."""
    return list(self._tok.encode(text).tokens)

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
      raise TypeError("Tokenizer: expects a sequence of strings (one per row)")
    rows = [e.ids for e in self._tok.encode_batch(list(texts))]
    length = self.bucket(max((len(r) for r in rows), default=0))
    ids = np.full((len(rows), length), self.pad_id, np.int32)
    for i, r in enumerate(rows):
      ids[i, : len(r)] = r
    # The mask BertEncoder derives (ids != pad_id): a literal "[PAD]" in a text, which the
    # tokenizer maps to the padding id, counts as padding on both sides.
    return ids, ids != self.pad_id
