"""fashion_mnist / fashion_mnist_m builders on small generated idx.gz stand-ins (never the real
files)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from test_data import fake_catalog

import jaxdapt.data as D
from jaxdapt import configs
from jaxdapt.data import fashion_mnist as fm
from jaxdapt.data import sources
from jaxdapt.data.mnist_m import blend, to_uint8
from jaxdapt.errors import DatasetNotPreparedError

NUM_TRAIN, NUM_TEST = 60, 20  # source half 30 = train 28 + validation 2


def write_idx(path, array: np.ndarray) -> None:
  header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(
    d.to_bytes(4, "big") for d in array.shape
  )
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(seed)
  return {
    split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
    for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST))
  }


def write_fake(folder, raw) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for split, (image_file, label_file) in fm.FILES.items():
    write_idx(folder / image_file, raw[split][0])
    write_idx(folder / label_file, raw[split][1])


@pytest.fixture(scope="module")
def raw():
  return fake_fashion()


@pytest.fixture(scope="module")
def idx_env(tmp_path_factory, raw):
  folder = tmp_path_factory.mktemp("fashion_idx")
  write_fake(folder, raw)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(fm.ENV_VAR, str(folder))
    yield folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, idx_env):
  return str(tmp_path_factory.mktemp("tfds"))


def examples(name: str, split: str, data_dir: str) -> list[tuple[bytes, int]]:
  """(image bytes, label) of a split, sorted: comparable whatever order TFDS stored."""
  src = D.get_source(name, split, data_dir)
  for i in range(len(src)):
    assert src[i]["image"].shape == (32, 32, 3) and src[i]["image"].dtype == np.uint8
  return sorted((src[i]["image"].tobytes(), src[i]["label"]) for i in range(len(src)))


def padded_rgb(image: np.ndarray) -> np.ndarray:
  out = np.zeros((32, 32, 3), np.uint8)
  out[2:30, 2:30] = image[..., None]
  return out


def test_source_round_trip(raw, data_dir):
  got = {s: examples("fashion_mnist", s, data_dir) for s in ("train", "validation", "test")}
  assert [len(got[s]) for s in got] == [28, 2, 20]
  as_padded = lambda split: sorted((padded_rgb(x).tobytes(), int(y)) for x, y in zip(*raw[split]))
  assert got["test"] == as_padded("test")
  train = as_padded("train")
  source = got["train"] + got["validation"]
  assert len(set(source)) == 30 and set(source) <= set(train)
  assert D.num_classes("fashion_mnist", data_dir) == 10
  names = sources.builder_for("fashion_mnist", data_dir).info.features["label"].names
  assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"


def test_target_is_blend_of_other_half(raw, data_dir):
  source = {
    img
    for img, _ in examples("fashion_mnist", "train", data_dir)
    + examples("fashion_mnist", "validation", data_dir)
  }
  loaded = fm.load(fm.idx_dir(), data_dir)
  ids = fm.split_ids(NUM_TRAIN, NUM_TEST)
  assert not set(ids["target"]) & (set(ids["source"]) | set(ids["validation"]))
  expected = lambda part: sorted(
    (
      to_uint8(blend(fm.pad(loaded.images[i]) / np.float32(255), int(i))).tobytes(),
      int(loaded.labels[i]),
    )
    for i in ids[part]
  )
  target = examples("fashion_mnist_m", "train", data_dir)
  assert len(target) == 30 and target == expected("target")
  assert examples("fashion_mnist_m", "test", data_dir) == expected("test")
  target_plain = {padded_rgb(loaded.images[i]).tobytes() for i in ids["target"]}
  assert not target_plain & source  # disjoint from the labeled source
  img = D.get_source("fashion_mnist_m", "train", data_dir)[0]["image"]
  assert not np.array_equal(img[..., 0], img[..., 1])  # colour from the photos


def test_same_bytes_twice(tmp_path, data_dir):
  for name, split in (("fashion_mnist", "train"), ("fashion_mnist_m", "test")):
    assert examples(name, split, str(tmp_path)) == examples(name, split, data_dir)


def test_catalog_input_gives_same_bytes(tmp_path, monkeypatch, raw, data_dir):
  monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "no_idx_here"))
  order = {s: np.random.default_rng(3).permutation(len(y)) for s, (_, y) in raw.items()}
  fake_catalog(
    tmp_path,
    "fashion_mnist",
    "3.0.1",
    {  # TFDS reorders rows anyway; shuffle more
      s: [(x[i], int(y[i])) for i in order[s]] for s, (x, y) in raw.items()
    },
  )
  for name, split in (("fashion_mnist", "validation"), ("fashion_mnist_m", "train")):
    assert examples(name, split, str(tmp_path)) == examples(name, split, data_dir)


@pytest.mark.parametrize(
  "damage,why",
  [
    (lambda b: b[:-100], "bytes of data, the header says"),
    (lambda b: b"\x00\x00\x08\x01" + b[4:], "magic number 0x00000801, expected 0x00000803"),
    (lambda b: b[:10], "shorter than the 16-byte header"),
  ],
  ids=["truncated", "magic", "header"],
)
def test_corrupt_idx_is_a_clear_error(tmp_path, monkeypatch, raw, damage, why):
  write_fake(tmp_path / "idx", raw)
  path = tmp_path / "idx" / fm.FILES["train"][0]
  with gzip.open(path) as f:
    data = f.read()
  with gzip.open(path, "wb") as f:
    f.write(damage(data))
  monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "idx"))
  with pytest.raises(DatasetNotPreparedError, match="not a valid idx file") as err:
    D.get_source("fashion_mnist", "train", str(tmp_path / "tfds"))
  assert str(path) in str(err.value) and why in str(err.value)
  assert not (tmp_path / "tfds" / "fashion_mnist_local").exists()  # stopped before writing


def test_broken_gzip_is_a_clear_error(tmp_path):
  path = tmp_path / "x.gz"
  path.write_bytes(b"not gzip at all")
  with pytest.raises(DatasetNotPreparedError, match="cannot be decompressed"):
    fm.read_idx(str(path), 3)


@pytest.mark.parametrize("name", ["fashion_mnist", "fashion_mnist_m"])
def test_not_prepared_message(tmp_path, monkeypatch, name):
  monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "empty"))
  with pytest.raises(DatasetNotPreparedError) as err:
    D.get_source(name, "test", str(tmp_path))
  msg = str(err.value)
  assert "apt-get install dataset-fashion-mnist" in msg and fm.ENV_VAR in msg
  assert str(tmp_path / "empty") in msg and "t10k-labels-idx1-ubyte.gz" in msg
  assert f"tfds.builder('fashion_mnist', data_dir='{tmp_path}')" in msg
  assert "file_format='array_record'" in msg
  assert not any(tmp_path.rglob("*.array_record*"))


def test_task_config():
  c = configs.digits_config("fashion2fashionm")
  assert (c.data.source, c.data.source_val_split) == ("fashion_mnist", "validation")
  assert (c.data.target, c.data.target_split, c.data.target_test_split) == (
    "fashion_mnist_m",
    "train",
    "test",
  )
  assert c.train.steps == 3000 and c.model.norm == "batch"
  assert configs.digits_config("uci2ucim").train.steps == 2000
