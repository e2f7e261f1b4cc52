"""Tests for jaxdapt.data: offline builders, sources, grain pipelines (CPU, small data)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import jaxdapt.data as D
from jaxdapt.data import render, sources
from jaxdapt.data.syn_digits import V1, V3, SynDigits, SynDigitsConfig, render_split
from jaxdapt.data.uci_digits import split_indices, uci_images
from jaxdapt.errors import ConfigError, DatasetNotPreparedError

TINY_SPLITS = (("train", 60, 0), ("validation", 20, 1), ("test", 20, 2))


def tiny_syn(data_dir, params=V3, name="tiny") -> SynDigits:
  cfg = SynDigitsConfig(name=name, params=params, splits=TINY_SPLITS)
  builder = SynDigits(data_dir=str(data_dir), config=cfg, file_format="array_record")
  sources.ensure_prepared(builder)
  return builder


def syn_source(builder, split="train") -> sources.DomainSource:
  return sources.DomainSource(builder.as_data_source(split=split), "syn_tiny", split)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def syn(data_dir):
  return syn_source(tiny_syn(data_dir))


# --- rendering and builders -------------------------------------------------------------


@pytest.mark.parametrize("params", [V1, V3], ids=["v1", "v3"])
def test_render_deterministic_and_order_independent(params):
  a = render.render_range(params, 7, 0, 12)
  b = np.stack([render.render(params, 7, i, i % 10) for i in reversed(range(12))])[::-1]
  np.testing.assert_array_equal(a, b)
  assert a.shape == (12, 32, 32, 3) and a.dtype == np.uint8
  assert not np.array_equal(a, render.render_range(params, 8, 0, 12))


def test_grey_config_is_light_ink_on_dark():
  imgs = render.render_range(V3, 0, 0, 20).astype(int)
  assert (imgs[..., 0] == imgs[..., 1]).all() and (imgs[..., 1] == imgs[..., 2]).all()
  centre = imgs[:, 8:24, 8:24, 0].max(axis=(1, 2))
  border = np.median(np.concatenate([imgs[:, 0, :, 0], imgs[:, -1, :, 0]], 1), axis=1)
  assert (centre > border + 60).all()


def test_parallel_render_matches_serial(monkeypatch):
  monkeypatch.setattr("jaxdapt.data.syn_digits.MIN_PER_WORKER", 10)
  monkeypatch.setenv("JAXDAPT_DATA_WORKERS", "2")
  par = dict(render_split(V3, 3, 30))
  assert sorted(par) == list(range(30))
  np.testing.assert_array_equal(
    np.stack([par[i] for i in range(30)]), render.render_range(V3, 3, 0, 30)
  )


def test_syn_builder_splits_shapes_labels(syn, data_dir):
  assert len(syn) == 60
  ex = syn[0]
  assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
  assert isinstance(ex["label"], int)
  labels = sorted(syn[i]["label"] for i in range(len(syn)))
  assert labels == sorted(list(range(10)) * 6)  # balanced
  builder = tiny_syn(data_dir)  # already prepared: reuses the files
  assert builder.info.splits["validation"].num_examples == 20


def test_syn_builder_same_seed_same_bytes(tmp_path, syn):
  other = syn_source(tiny_syn(tmp_path / "again"))
  by_image = lambda s: sorted(s[i]["image"].tobytes() for i in range(len(s)))
  assert by_image(other) == by_image(syn)
  test_split = syn_source(tiny_syn(tmp_path / "again"), "test")  # seed 2 != seed 0
  assert not set(by_image(test_split)[:20]) & set(by_image(syn))


def test_uci_split_sizes_stratified(data_dir):
  train = D.get_source("uci_digits", "train", str(data_dir))
  test = D.get_source("uci_digits", "test", str(data_dir))
  assert (len(train), len(test)) == (1078, 719)
  _, labels = uci_images()
  idx = split_indices()
  assert not set(idx["train"]) & set(idx["test"])
  frac = np.bincount(labels[idx["test"]], minlength=10) / np.bincount(labels, minlength=10)
  assert np.allclose(frac, 0.4, atol=0.02)
  img = test[0]["image"]
  assert img.shape == (32, 32, 3) and img.dtype == np.uint8
  assert img[0, 0].max() == 0 and img.max() > 200  # white ink on black


def test_uci_m_same_labels_different_pixels(data_dir):
  uci = D.get_source("uci_digits", "test", str(data_dir))
  uci_m = D.get_source("uci_digits_m", "test", str(data_dir))
  assert len(uci) == len(uci_m)
  assert [uci[i]["label"] for i in range(50)] == [uci_m[i]["label"] for i in range(50)]
  a, b = uci[0]["image"], uci_m[0]["image"]
  assert not np.array_equal(a, b)
  assert not np.array_equal(b[..., 0], b[..., 1])  # colour from the photos


def test_info_without_data(tmp_path):
  assert D.num_classes("syn_digits", str(tmp_path)) == 10
  assert D.image_shape("syn_digits/color", str(tmp_path)) == (32, 32, 3)
  assert D.image_shape("mnist", str(tmp_path)) == (28, 28, 1)
  assert not (tmp_path / "syn_digits" / "grey" / "1.0.0" / "dataset_info.json").exists()
  assert {"syn_digits", "syn_digits/grey", "uci_digits", "uci_digits_m"} <= set(D.domain_names())
  assert sources.builder_for("syn_digits", str(tmp_path)).builder_config.name == "grey"


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXDAPT_DATA_DIR", str(tmp_path))
  assert D.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("JAXDAPT_DATA_DIR")
  assert D.default_data_dir().endswith(".cache/jaxdapt/tensorflow_datasets")


# --- errors ------------------------------------------------------------------------------


def test_unknown_split_and_names(tmp_path):
  with pytest.raises(ConfigError, match="allowed: train, validation, test"):
    D.get_source("syn_digits", "valid", str(tmp_path))
  with pytest.raises(ConfigError, match="allowed: grey, color, clean"):
    D.get_source("syn_digits/gray", "train", str(tmp_path))
  with pytest.raises(ConfigError, match="uci_digits_m"):
    D.get_source("no_such_dataset", "train", str(tmp_path))
  assert not (tmp_path / "syn_digits").exists() or not any(
    (tmp_path / "syn_digits").rglob("*.array_record*")
  )


def test_catalog_not_prepared_message(tmp_path):
  with pytest.raises(DatasetNotPreparedError) as err:
    D.get_source("mnist", "train", str(tmp_path))
  msg = str(err.value)
  assert "'mnist'" in msg and str(tmp_path) in msg
  assert (
    "pip install tensorflow" in msg and "download_and_prepare(file_format='array_record')" in msg
  )
  assert f"tfds.builder('mnist', data_dir='{tmp_path}')" in msg


def fake_catalog(
  data_dir, name: str, version: str, splits: dict[str, list[tuple[np.ndarray, int]]]
) -> None:
  """Writes a tiny stand-in for a catalog dataset (same name, version; grey PNG + 10 classes)."""
  with tfds.core.registered.skip_registration():

    class Fake(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version(version)

      def _info(self):
        shape = next(iter(splits.values()))[0][0].shape
        return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict(
            {
              "image": tfds.features.Image(shape=(*shape, 1)),
              "label": tfds.features.ClassLabel(num_classes=10),
            }
          ),
        )

      def _split_generators(self, dl_manager):
        return {split: self._generate_examples(rows) for split, rows in splits.items()}

      def _generate_examples(self, rows):
        for i, (image, label) in enumerate(rows):
          buf = io.BytesIO()  # PNG via PIL: TFDS's own encoder would need TF
          Image.fromarray(image).save(buf, format="PNG")
          yield i, {"image": buf.getvalue(), "label": label}

    Fake.name = name
  Fake(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def _fake_mnist(data_dir) -> None:
  rows = lambda n: [(np.full((28, 28), 20 * i, np.uint8), i % 10) for i in range(n)]
  fake_catalog(data_dir, "mnist", "3.0.1", {"train": rows(12), "test": rows(5)})


def test_catalog_prepared_loads(tmp_path):
  _fake_mnist(tmp_path)
  src = D.get_source("mnist", "train", str(tmp_path))
  assert len(src) == 12
  ex = src[3]
  assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
  assert 0 <= ex["label"] < 10 and set(ex) == {"image", "label"}
  assert D.num_classes("mnist", str(tmp_path)) == 10
  with pytest.raises(ConfigError, match="allowed: "):
    D.get_source("mnist", "validation", str(tmp_path))
  batch = next(D.train_iterator(src, global_batch_size=4, seed=0))
  assert batch["image"].shape == (4, 28, 28, 1)


# --- pipeline ----------------------------------------------------------------------------


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_train_iterator_shapes_and_epochs(syn):
  it = D.train_iterator(syn, global_batch_size=20, seed=0)
  batches = _take(it, 6)  # two epochs of 60
  b = batches[0]
  assert b["image"].shape == (20, 32, 32, 3) and b["image"].dtype == np.uint8
  assert b["label"].dtype == np.int32 and ((b["label"] >= 0) & (b["label"] < 10)).all()
  epoch1 = np.concatenate([x["label"] for x in batches[:3]])
  assert sorted(epoch1) == sorted(syn[i]["label"] for i in range(60))
  assert not np.array_equal(epoch1, np.concatenate([x["label"] for x in batches[3:]]))


def test_train_iterator_augment_none_is_identity(syn):
  pixels = {syn[i]["image"].tobytes() for i in range(len(syn))}
  batch = next(D.train_iterator(syn, global_batch_size=10, seed=1, augment="none"))
  assert all(img.tobytes() in pixels for img in batch["image"])
  with pytest.raises(ConfigError, match="augment"):
    D.train_iterator(syn, global_batch_size=10, seed=1, augment="flip")


@pytest.mark.parametrize("prefetch", [0, 2])
def test_train_iterator_resume(syn, prefetch):
  ref = _take(D.train_iterator(syn, global_batch_size=8, seed=3, prefetch=prefetch), 12)
  it = D.train_iterator(syn, global_batch_size=8, seed=3, prefetch=prefetch)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))
  fresh = D.train_iterator(syn, global_batch_size=8, seed=3, prefetch=prefetch)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 7), ref[5:])


def test_paired_iterator_resume(syn, data_dir):
  target = D.get_source("uci_digits", "train", str(data_dir))
  make = lambda: D.PairedIterator(
    D.train_iterator(syn, global_batch_size=8, seed=0),
    D.train_iterator(target, global_batch_size=8, seed=1),
  )
  ref = _take(make(), 6)
  it = make()
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  resumed = make()
  resumed.set_state(state)
  got = _take(resumed, 4)
  for x, y in zip(got, ref[2:]):
    _assert_batches_equal([x["source"], x["target"]], [y["source"], y["target"]])


def test_process_sharding_disjoint_union(syn):
  whole = _take(D.train_iterator(syn, global_batch_size=12, seed=5), 4)
  parts = [
    _take(D.train_iterator(syn, global_batch_size=12, seed=5, process_index=p, process_count=3), 4)
    for p in range(3)
  ]
  for step in range(4):
    local = [parts[p][step] for p in range(3)]
    assert all(b["image"].shape[0] == 4 for b in local)
    keys = [img.tobytes() for b in local for img in b["image"]]
    assert len(set(keys)) == 12  # disjoint
    assert sorted(keys) == sorted(img.tobytes() for img in whole[step]["image"])  # union
  with pytest.raises(ConfigError, match="process_count"):
    D.train_iterator(syn, global_batch_size=10, seed=0, process_count=3)


def test_eval_batches_padding_and_mask(syn):
  batches = list(D.eval_batches(syn, batch_size=16))  # 60 = 16 + 16 + 16 + 12
  assert len(batches) == 4
  assert all(b["image"].shape == (16, 32, 32, 3) for b in batches)
  assert [int(b["mask"].sum()) for b in batches] == [16, 16, 16, 12]
  assert not batches[-1]["image"][12:].any()
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert labels.tolist() == [syn[i]["label"] for i in range(60)]
  shards = [
    list(D.eval_batches(syn, batch_size=8, process_index=p, process_count=4)) for p in range(4)
  ]
  assert len({len(s) for s in shards}) == 1  # same number of steps on every process
  assert sum(int(b["mask"].sum()) for s in shards for b in s) == 60


# --- splits held in RAM (data/in_memory.py) and the shift augmentation --------------------


def test_held_split_serves_the_same_rows_and_batches(syn):
  from jaxdapt.data import in_memory

  held = in_memory.hold(syn, max_bytes=1 << 30)
  assert isinstance(held, in_memory.ArraySource) and len(held) == len(syn)
  for i in (0, 17, len(syn) - 1, -1):
    np.testing.assert_array_equal(held[i]["image"], syn[i]["image"])
    assert held[i]["label"] == syn[i]["label"] and isinstance(held[i]["label"], int)
  with pytest.raises(IndexError):
    held[len(syn)]
  with pytest.raises(ValueError, match="read-only"):
    held[0]["image"][0, 0, 0] = 1  # rows are views of the held array
  kw = dict(global_batch_size=8, seed=5, augment="shift")
  _assert_batches_equal(
    _take(D.train_iterator(held, **kw), 10), _take(D.train_iterator(syn, **kw), 10)
  )
  _assert_batches_equal(
    list(D.eval_batches(held, batch_size=16)), list(D.eval_batches(syn, batch_size=16))
  )


def test_hold_leaves_large_and_lazy_sources_as_they_are(syn):
  from jaxdapt.data import in_memory

  nbytes = syn[0]["image"].nbytes * len(syn)
  assert in_memory.hold(syn, max_bytes=nbytes - 1) is syn
  assert in_memory.hold(syn, max_bytes=0) is syn
  assert isinstance(in_memory.hold(syn, max_bytes=nbytes), in_memory.ArraySource)
  # Rows that carry more than image + label (EvalView's decoded original) stay lazy.
  extra = [{"image": np.zeros((4, 4, 3), np.uint8), "label": 0, "full": b""}] * 3
  assert in_memory.hold(extra, 1 << 20) is extra
  mixed = [
    {"image": np.zeros((4, 4, 3), np.uint8), "label": 0},
    {"image": np.zeros((5, 4, 3), np.uint8), "label": 1},
  ]
  assert in_memory.hold(mixed, 1 << 20) is mixed


def test_shift_is_edge_pad_then_crop():
  from jaxdapt.data import pipeline

  img = np.random.default_rng(0).integers(0, 256, (9, 7, 3), np.uint8)
  p = pipeline.SHIFT_PX
  padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="edge")
  seen = set()
  for seed in range(60):
    rng = np.random.default_rng(seed)
    dy, dx = np.random.default_rng(seed).integers(-p, p + 1, size=2)
    out = pipeline._shift({"image": img, "label": 3}, rng)["image"]
    np.testing.assert_array_equal(out, padded[p + dy : p + dy + 9, p + dx : p + dx + 7])
    seen.add((int(dy), int(dx)))
  assert len(seen) > 15  # most of the 25 shifts were exercised


def test_a_domain_generated_by_a_concurrent_run_is_taken_not_a_traceback(tmp_path, monkeypatch):
  """Two runs starting together both generate a domain; TFDS's final rename fails with
  FileExistsError in the one that loses. That run reads the winner's copy (generated
  here for real, then the race replayed by an is_prepared that still says no); a
  FileExistsError with no complete copy in place is still raised."""
  winner = tiny_syn(tmp_path, name="raced")
  cfg = SynDigitsConfig(name="raced", params=V3, splits=TINY_SPLITS)
  loser = SynDigits(data_dir=str(tmp_path), config=cfg, file_format="array_record")
  monkeypatch.setattr(loser, "is_prepared", lambda: False)

  def rename_lost(**kwargs):
    raise FileExistsError(f"Destination {loser.data_dir} already exists.")

  monkeypatch.setattr(loser, "download_and_prepare", rename_lost)
  sources.ensure_prepared(loser)
  got = syn_source(loser)
  assert len(got) == len(syn_source(winner)) == 60
  empty = SynDigits(data_dir=str(tmp_path / "none"), config=cfg, file_format="array_record")
  monkeypatch.setattr(empty, "is_prepared", lambda: False)
  monkeypatch.setattr(empty, "download_and_prepare", rename_lost)
  monkeypatch.setattr(empty, "check_inputs", lambda: None)
  with pytest.raises(FileExistsError):
    sources.ensure_prepared(empty)
