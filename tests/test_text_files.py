"""text_files/<domain>: the user's CSV/JSONL text as domains (jaxdapt/data/text_files.py)."""

import csv
import json
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdapt.data import sources
from jaxdapt.data import text_files as tf
from jaxdapt.data.features import OfflineBuilder
from jaxdapt.errors import ConfigError, DatasetNotPreparedError

REVIEWS = [  # (text, label, domain, split)
  ("the battery lasts two days", "good", "phones", ""),
  ("screen cracked after a week", "bad", "phones", ""),
  ("fast charging and a bright display", "good", "phones", "train"),
  ("it stopped working, refund requested", "bad", "phones", "test"),
  ("a gripping plot from start to end", "good", "books", ""),
  ("dull characters and a slow middle", "bad", "books", "validation"),
  ("could not put it down", "good", "books", "train"),
  ("the ending made no sense", "neutral", "books", "test"),
]


def _write(folder, rows=REVIEWS):
  """Phones as CSV, books as JSONL (split omitted where empty)."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "phones.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["text", "label", "domain", "split"])
    w.writerows(r for r in rows if r[2] == "phones")
  with open(os.path.join(folder, "books.jsonl"), "w") as f:
    for text, label, domain, split in (r for r in rows if r[2] == "books"):
      row = {"text": text, "label": label, "domain": domain}
      f.write(json.dumps({**row, **({"split": split} if split else {})}) + "\n")


@pytest.fixture
def folder(tmp_path, monkeypatch):
  path = tmp_path / "mytext"
  _write(str(path))
  monkeypatch.setenv("JAXDAPT_TEXT_FILES_DIR", str(path))
  return path


def _rows(name, data_dir):
  out = []
  builder = sources.builder_for(name, data_dir)
  for split in builder.split_names():  # the splits with rows
    src = builder.as_data_source(split=split)
    out += [(split, r["text"].decode(), np.asarray(r["image"]), int(r["label"])) for r in src]
  return out


def test_domains_share_labels_and_keep_given_splits(folder, packaged_tokenizer, tmp_path):
  data_dir = str(tmp_path / "tfds")
  for domain in ("phones", "books"):
    sources.get_source(f"text_files/{domain}", "train", data_dir)  # builds on first use
  names = ["bad", "good", "neutral"]  # sorted labels of every row, both domains
  assert sources.num_classes("text_files/phones", data_dir) == 3
  assert sources.image_shape("text_files/books", data_dir) == (tf.SEQ_LEN,)
  for domain in ("phones", "books"):
    rows = _rows(f"text_files/{domain}", data_dir)
    want = {r[0]: r for r in REVIEWS if r[2] == domain}
    assert {text for _, text, _, _ in rows} == set(want)
    for split, text, ids, label in rows:
      assert ids.dtype == np.int32 and ids.shape == (tf.SEQ_LEN,) and ids[0] != 0
      assert names[label] == want[text][1]
      assert split == (want[text][3] or tf.hashed_split(text))
  src = sources.get_source("text_files/books", "test", data_dir)
  assert src[0]["image"].dtype == np.int32  # token ids reach the pipeline unchanged


def test_hashed_split_is_deterministic_and_roughly_70_10_20():
  splits = [tf.hashed_split(f"row {i}") for i in range(4000)]
  assert splits == [tf.hashed_split(f"row {i}") for i in range(4000)]
  share = {s: splits.count(s) / len(splits) for s in tf.SPLITS}
  assert abs(share["train"] - 0.7) < 0.03 and abs(share["test"] - 0.2) < 0.03


@pytest.mark.parametrize(
  "line, message",
  [
    ('{"text": "x", "label": "good"}', "books.jsonl:2: missing field(s) domain"),
    ("not json", "books.jsonl:2: not JSON"),
    ('{"text": "x", "label": "a", "domain": "b", "split": "dev"}', "split 'dev'; allowed"),
    ('{"text": "x", "label": "a", "domain": "a b"}', "domain 'a b': use letters"),
    ('["text"]', "books.jsonl:2: expected an object"),
  ],
)
def test_a_bad_row_stops_naming_file_and_line(folder, tmp_path, line, message):
  path = folder / "books.jsonl"
  first = path.read_text().splitlines()[0]
  path.write_text(first + "\n" + line + "\n")
  with pytest.raises(DatasetNotPreparedError, match=re.escape(message)):
    sources.get_source("text_files/books", "train", str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds" / "text_files").exists()  # nothing written


def test_missing_folder_unknown_domain_and_bad_name(
  tmp_path, monkeypatch, folder, packaged_tokenizer
):
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(DatasetNotPreparedError, match="no row has domain 'films'.*books, phones"):
    sources.get_source("text_files/films", "train", data_dir)
  with pytest.raises(ConfigError, match="text_files/<domain>"):
    sources.builder_for("text_files", data_dir)
  monkeypatch.setenv("JAXDAPT_TEXT_FILES_DIR", str(tmp_path / "nowhere"))
  with pytest.raises(DatasetNotPreparedError, match="JAXDAPT_TEXT_FILES_DIR"):
    sources.get_source("text_files/books", "train", str(tmp_path / "other"))


def test_changed_files_are_refused_until_the_prepared_domain_is_deleted(
  folder, packaged_tokenizer, tmp_path
):
  data_dir = str(tmp_path / "tfds")
  sources.get_source("text_files/phones", "train", data_dir)
  rows = [*REVIEWS, ("a new phone review", "good", "phones", "train")]
  _write(str(folder), rows)
  with pytest.raises(DatasetNotPreparedError, match="prepared from other files.*delete"):
    sources.get_source("text_files/phones", "train", data_dir)


def test_a_text_files_run_trains_across_domains(folder, packaged_tokenizer, tmp_path):
  """Two DANN steps phones → books with BERT-Tiny's shape: the user's files plug into the
  paired-domain pipeline like any domain."""
  from jaxdapt import trainer
  from jaxdapt.configs import text_config
  from jaxdapt.tools import cli

  config = text_config("en2de", "dann")
  cli.apply_overrides(
    config,
    [
      "data.source=text_files/phones",
      "data.target=text_files/books",
      "data.source_val_split=train",
      f"data.data_dir={tmp_path / 'tfds'}",
      "model.name=bert_tiny",
      "model.init_from=",
      "data.batch_size=8",
      "train.steps=2",
      "train.log_every=1",
      "train.eval_every=2",
      "train.checkpoint_every=2",
      "train.progress_bar=false",
    ],
  )
  summary = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert (summary["source"], summary["target"]) == ("text_files/phones", "text_files/books")
  assert 0.0 <= summary["target_acc_last"] <= 1.0


def _prepare(builder_cls, data_dir: str) -> None:
  """Prepares a stand-in catalog builder as ArrayRecord, offline."""
  builder_cls(data_dir=data_dir, file_format="array_record").download_and_prepare(
    file_format="array_record",
    download_config=tfds.download.DownloadConfig(try_download_gcs=False),
  )


class TinyReviews(OfflineBuilder):
  """A stand-in for a TFDS catalog text dataset (imdb_reviews' features: text, label)."""

  name = "tiny_reviews_for_jaxdapt_tests"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "test"}

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, (text, _, _, _) in enumerate(REVIEWS):
      yield i, {"text": text, "label": i % 2}


def test_catalog_text_dataset_is_read_as_token_ids(packaged_tokenizer, tmp_path):
  from jaxdapt.data.text import Tokenizer

  data_dir = str(tmp_path / "tfds")
  _prepare(TinyReviews, data_dir)
  name = TinyReviews.name
  assert sources.image_shape(name, data_dir) == (128,) and sources.num_classes(name, data_dir) == 2
  src = sources.get_source(name, "train", data_dir)
  want, _ = Tokenizer(packaged_tokenizer, buckets=(128,))([t for t, *_ in REVIEWS])
  rows = [src[i] for i in range(len(src))]  # TFDS stores rows in its own (hashed) order
  assert all(r["image"].dtype == np.int32 and r["image"].shape == (128,) for r in rows)
  got = {(tuple(r["image"]), r["label"]) for r in rows}
  assert got == {(tuple(ids), i % 2) for i, ids in enumerate(want)}


class TinyAmazon(OfflineBuilder):
  """amazon_us_reviews' layout: nested data/review_body and data/star_rating (1-5)."""

  name = "tiny_amazon_for_jaxdapt_tests"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "test"}

  def _info(self):
    data = {"review_body": tfds.features.Text(), "star_rating": np.int32}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"data": data}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, (text, *_) in enumerate(REVIEWS):
      yield i, {"data": {"review_body": text, "star_rating": 1 + i % 5}}


def test_nested_catalog_layout_reads_stars_as_classes(packaged_tokenizer, tmp_path):
  data_dir = str(tmp_path / "tfds")
  _prepare(TinyAmazon, data_dir)
  name = TinyAmazon.name
  assert sources.num_classes(name, data_dir) == 5  # stars 1-5 -> classes 0-4
  src = sources.get_source(name, "train", data_dir)
  rows = [src[i] for i in range(len(src))]
  assert sorted(r["label"] for r in rows) == sorted(i % 5 for i in range(len(REVIEWS)))
  assert all(r["image"].shape == (128,) and r["image"][0] == 101 for r in rows)  # [CLS]
