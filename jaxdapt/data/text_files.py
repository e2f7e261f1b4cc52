"""`text_files/<domain>`: the user's own labelled text, from CSV or JSONL files, as a domain.

Why: text domain adaptation on one's own data (reviews of two products, tickets of two
teams, one corpus in two languages) should take a file, not a new builder. The folder is
found like the image folders (folder_builders.candidate_dirs): $JAXDAPT_TEXT_FILES_DIR,
$JAXDAPT_MANUAL_DIR/text_files or <data_dir>/downloads/manual/text_files. It holds

  *.csv   a header row naming the fields, then one example per row (Python's csv dialect)
  *.jsonl one JSON object per line

with the fields `text`, `label` and `domain`, and optionally `split` (train | validation |
test; rows without one get a split from sha256 of their text, 70/10/20, so one text is
never in two splits and adding rows moves no other). Each `domain` value is a domain
`text_files/<value>`, usable as data.source or data.target; every domain shares one label
space, the sorted set of labels of all rows (so class i means the same in each).

Built on first use, like the generated domains: ArrayRecord of {'image': int32[SEQ_LEN]
token ids (0 = [PAD]), 'label', 'text'}, tokenized with the packaged all-MiniLM-L6-v2
tokenizer (debian_text.tokenizer_path) into one bucket of SEQ_LEN tokens. The prepared
domain records the files' sha256; when they change, using it stops with one line naming
the folder to delete (no silent reuse of stale text).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxdapt.data import folder_builders
from jaxdapt.data.debian_text import (
  SEQ_LEN,
  TOKENIZE_BATCH,
  hash_split,
  tokenizer_path,
)
from jaxdapt.data.features import OfflineBuilder
from jaxdapt.errors import DatasetNotPreparedError
from jaxdapt.weights.formats import file_sha256

NAME = "text_files"
TITLE = "text_files (your CSV/JSONL text)"
FIELDS = ("text", "label", "domain")
SPLITS = ("train", "validation", "test")
EXTENSIONS = (".csv", ".jsonl")
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
LAYOUT = (
  "  <folder>/*.csv (header row) or *.jsonl (one JSON object per line), each row with\n"
  "    text    the example's text\n"
  "    label   its class (any string; classes are the sorted labels of all rows)\n"
  "    domain  its domain: text_files/<domain> in data.source / data.target\n"
  "    split   optional: train | validation | test (default: 70/10/20 by sha256 of the text)"
)


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  label: str
  domain: str
  split: str


def root(data_dir: str) -> str:
  return folder_builders.find_root(TITLE, NAME, data_dir, LAYOUT)


def files(folder: str) -> list[str]:
  """The CSV/JSONL files of `folder`, sorted by name (DatasetNotPreparedError if none)."""
  out = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS))
  if not out:
    raise folder_builders.incomplete(TITLE, folder, "no .csv or .jsonl file", LAYOUT)
  return [os.path.join(folder, f) for f in out]


def hashed_split(text: str) -> str:
  """A row's split when it names none: from sha256 of its text (debian_text's rule)."""
  return hash_split(text)


def _example(row: Any, where: str) -> Example:
  if not isinstance(row, dict):
    raise DatasetNotPreparedError(f"{where}: expected an object with fields {', '.join(FIELDS)}")
  missing = [f for f in FIELDS if row.get(f) in (None, "")]
  if missing:
    raise DatasetNotPreparedError(f"{where}: missing field(s) {', '.join(missing)}")
  domain, split = str(row["domain"]), str(row.get("split") or "")
  if not DOMAIN_NAME.fullmatch(domain):
    raise DatasetNotPreparedError(
      f"{where}: domain {domain!r}: use letters, digits and _ . - (it becomes a dataset name)"
    )
  if split and split not in SPLITS:
    raise DatasetNotPreparedError(f"{where}: split {split!r}; allowed: {', '.join(SPLITS)}")
  text = str(row["text"])
  return Example(text, str(row["label"]), domain, split or hashed_split(text))


def _rows(path: str) -> Iterator[tuple[Any, str]]:
  name = os.path.basename(path)
  with open(path, newline="", encoding="utf-8") as f:
    if path.lower().endswith(".csv"):
      reader = csv.DictReader(f)
      for row in reader:
        yield row, f"{name}:{reader.line_num}"
      return
    for i, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line), f"{name}:{i}"
        except json.JSONDecodeError as e:
          raise DatasetNotPreparedError(f"{name}:{i}: not JSON: {e.msg}") from None


def read_examples(folder: str) -> list[Example]:
  """Every row of every file in `folder`; a malformed row stops with file:line."""
  out = []
  for path in files(folder):
    try:
      out += [_example(row, where) for row, where in _rows(path)]
    except UnicodeDecodeError:
      raise DatasetNotPreparedError(f"{os.path.basename(path)}: not UTF-8 text") from None
    except csv.Error as e:
      raise DatasetNotPreparedError(f"{os.path.basename(path)}: {e}") from None
  return out


def fingerprint(folder: str) -> dict[str, str]:
  return {os.path.basename(p): file_sha256(p) for p in files(folder)}


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  """One domain of the user's files (name = the rows' `domain` value)."""


class TextFiles(OfflineBuilder):
  """The user's labelled text as domains; configs are made from the files' domain values
  (data.sources builds one per name), so BUILDER_CONFIGS is empty."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPLITS = SPLITS

  def __init__(self, *, data_dir: str, **kwargs):
    self._root_data_dir = data_dir  # where the folder's default place is (downloads/manual)
    self._rows: list[Example] | None = None
    super().__init__(data_dir=data_dir, **kwargs)

  def _examples(self) -> list[Example]:
    """The folder's rows, read once per builder (labels, checks and generation share them)."""
    if self._rows is None:
      self._rows = read_examples(self._folder())
    return self._rows

  def _folder(self) -> str:
    return root(self._root_data_dir)

  def split_names(self) -> tuple[str, ...]:
    """SPLITS before preparing; afterwards the splits that have rows."""
    if self._prepared():
      return tuple(s for s in SPLITS if s in self.info.splits)
    return SPLITS

  def _prepared(self) -> bool:
    return os.path.exists(os.path.join(self.data_dir, "dataset_info.json"))

  def check_inputs(self) -> None:
    examples = self._examples()
    domains = sorted({e.domain for e in examples})
    if self.builder_config.name not in domains:
      raise DatasetNotPreparedError(
        f"text_files/{self.builder_config.name}: no row has domain "
        f"{self.builder_config.name!r}; domains in {self._folder()}: {', '.join(domains)}"
      )
    tokenizer_path()

  def is_prepared(self) -> bool:
    """Prepared and made from the files the folder holds now (else one line: delete it)."""
    if not super().is_prepared():
      return False
    stored = dict(self.info.metadata.get("files", {}))
    try:
      now = fingerprint(self._folder())
    except DatasetNotPreparedError:
      return True  # the files are gone: the prepared domain is all there is
    if stored != now:
      raise DatasetNotPreparedError(
        f"text_files/{self.builder_config.name} was prepared from other files than "
        f"{self._folder()} holds now; delete {self.data_dir} to rebuild it"
      )
    return True

  def _labels(self) -> list[str] | None:
    if self._prepared():
      return None  # restored from the prepared folder
    return sorted({e.label for e in self._examples()})

  def _info(self) -> tfds.core.DatasetInfo:
    labels = self._labels()
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(SEQ_LEN,), dtype=np.int32),
          "label": tfds.features.ClassLabel(names=labels) if labels else tfds.features.ClassLabel(),
          "text": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    from jaxdapt.data.text import Tokenizer

    folder = self._folder()
    examples = self._examples()
    labels = {name: i for i, name in enumerate(sorted({e.label for e in examples}))}
    mine = [e for e in examples if e.domain == self.builder_config.name]
    path = tokenizer_path()
    self.info.metadata.update(
      {
        "files": fingerprint(folder),
        "seq_len": SEQ_LEN,
        "tokenizer": {
          "model": os.path.basename(os.path.dirname(path)),
          "sha256": file_sha256(path),
        },
        "counts": {s: sum(e.split == s for e in mine) for s in SPLITS},
      }
    )
    tokenizer = Tokenizer(path, buckets=(SEQ_LEN,))
    by_split = {s: [e for e in mine if e.split == s] for s in SPLITS}
    return {  # TFDS writes no empty split; split_names() then lists the others
      s: self._generate_examples(rows, labels, tokenizer) for s, rows in by_split.items() if rows
    }

  def _generate_examples(self, rows: list[Example], labels: dict[str, int], tokenizer):
    for start in range(0, len(rows), TOKENIZE_BATCH):
      chunk = rows[start : start + TOKENIZE_BATCH]
      ids, _ = tokenizer([e.text for e in chunk])
      for i, (e, row) in enumerate(zip(chunk, ids, strict=True)):
        yield start + i, {"image": row, "label": labels[e.label], "text": e.text}
