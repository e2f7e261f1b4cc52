"""Real-dataset builders, TFDS catalog access and the 224² pipeline on tiny generated stand-ins.

Every dataset is read through `jaxdapt.data.get_source`, the path the trainer takes:
fake folders laid out like the releases (a few generated images per class), fake TFDS
catalog datasets written by the catalog's own builder classes in ArrayRecord.
"""

from __future__ import annotations

import bz2
import io
import os

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import jaxdapt.data as D
from jaxdapt.data import catalog, throughput, views
from jaxdapt.data import imagenet_pipeline as ip
from jaxdapt.data.office import Office31, OfficeHome, Pacs, VisDA2017
from jaxdapt.errors import ConfigError, DatasetNotPreparedError

ENV_VARS = (
  "JAXDAPT_MANUAL_DIR",
  "JAXDAPT_OFFICE31_DIR",
  "JAXDAPT_OFFICE_HOME_DIR",
  "JAXDAPT_VISDA2017_DIR",
  "JAXDAPT_PACS_DIR",
  "JAXDAPT_USPS_DIR",
  "JAXDAPT_MNIST_M_DIR",
  "JAXDAPT_SYN_NUMBERS_DIR",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
  for var in ENV_VARS:
    monkeypatch.delenv(var, raising=False)


# --- generated stand-ins (also used by tests/test_protocols.py) ----------------------------


def encoded(image: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  if mode:
    pil = pil.convert(mode)
  buf = io.BytesIO()
  pil.save(buf, format=fmt)
  return buf.getvalue()


def fill(label: int, shape=(20, 26, 3)) -> np.ndarray:
  """A flat image whose value encodes its label (PNG keeps it exactly)."""
  return np.full(shape, 7 * label % 256, np.uint8)


def fake_folder_dataset(
  root,
  cls,
  domain: str,
  per_class: int = 1,
  *,
  tllib_list: bool = False,
  folder: str | None = None,
  skip: tuple[str, ...] = (),
) -> None:
  """`cls`'s `domain` under root: <folder>/<class>/<i>.png, or TLlib's list layout."""
  spec = next(d for d in cls.DOMAINS if d.name == domain)
  folder = folder or spec.folders[0]
  lines = []
  for label, name in enumerate(cls.CLASSES):
    if name in skip:
      continue
    os.makedirs(os.path.join(root, folder, name), exist_ok=True)
    for i in range(per_class):
      rel = f"{folder}/{name}/{i}.png"
      with open(os.path.join(root, rel), "wb") as f:
        f.write(encoded(fill(label, (20 + i, 26, 3))))
      lines.append(f"{rel} {(label * 5) % len(cls.CLASSES)}")  # ids in another order
  if tllib_list:
    os.makedirs(os.path.join(root, "image_list"), exist_ok=True)
    with open(os.path.join(root, spec.image_list), "w") as f:
      f.write("\n".join(lines) + "\n")


def fake_catalog(data_dir, name: str, splits: dict[str, list[tuple[np.ndarray, int]]]) -> None:
  """A prepared stand-in for TFDS catalog dataset `name` (config included), written by a
  subclass of the catalog's own builder: same name, version, features and files."""
  base, _, config = name.partition("/")
  real = type(tfds.builder(name, data_dir=str(data_dir)))
  with tfds.core.registered.skip_registration():

    class Fake(real):
      def _split_generators(self, dl_manager):
        return {split: self._rows(rows) for split, rows in splits.items()}

      def _rows(self, rows):
        for i, (image, label) in enumerate(rows):
          ex = {"image": encoded(image), "label": label}
          for key in self.info.features:  # ids and file names
            ex.setdefault(key, f"fake_{i}")
          yield i, ex

  Fake.name = base
  Fake(
    data_dir=str(data_dir), config=config or None, file_format="array_record"
  ).download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def digit_rows(n: int, shape: tuple[int, int, int], seed: int = 0):
  rng = np.random.default_rng(seed)
  return [(rng.integers(0, 256, shape, dtype=np.uint8), i % 10) for i in range(n)]


def write_usps_bz2(root, n_train: int = 12, n_test: int = 5) -> None:
  for fname, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
    lines = [
      f"{i % 10 + 1} " + " ".join(f"{j + 1}:{(-1 + 2 * ((i + j) % 5) / 4):.4f}" for j in range(256))
      for i in range(n)
    ]
    with bz2.open(os.path.join(root, fname), "wt") as f:
      f.write("\n".join(lines) + "\n")


def write_mnist_m(root, n_train: int = 10, n_test: int = 4) -> None:
  for split, n in (("train", n_train), ("test", n_test)):
    os.makedirs(os.path.join(root, f"mnist_m_{split}"), exist_ok=True)
    lines = []
    for i in range(n):
      name = f"{i:08d}.png"
      with open(os.path.join(root, f"mnist_m_{split}", name), "wb") as f:
        f.write(encoded(fill(i % 10, (28, 28, 3))))
      lines.append(f"{name} {i % 10}")
    with open(os.path.join(root, f"mnist_m_{split}_labels.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")


def message(excinfo) -> str:
  return str(excinfo.value)


# --- TFDS catalog ------------------------------------------------------------------------


@pytest.mark.parametrize("name", catalog.NAMES)
def test_catalog_names_resolve_and_name_the_prepare_command(tmp_path, name):
  with pytest.raises(DatasetNotPreparedError) as e:
    D.get_source(name, "train", str(tmp_path))
  msg = message(e)
  assert f"tfds.builder('{name}', data_dir='{tmp_path}')" in msg
  assert "download_and_prepare(file_format='array_record')" in msg
  manual = name.startswith("imagenet2012")
  assert ("ILSVRC2012_img_train.tar" in msg) == manual
  if manual:
    assert catalog.manual_dir(str(tmp_path)) in msg
  assert not list(tmp_path.rglob("*.array_record*"))  # nothing written


def test_catalog_config_name_with_variable_size_images(tmp_path):
  rows = [(np.full((30 + 7 * i, 41, 3), 30 * i, np.uint8), i) for i in range(5)]
  fake_catalog(tmp_path, "domainnet/real", {"train": rows, "test": rows[:2]})
  assert D.image_shape("domainnet/real", str(tmp_path)) == (224, 224, 3)
  assert D.num_classes("domainnet/real", str(tmp_path)) == 345
  src = D.get_source("domainnet/real", "train", str(tmp_path))
  assert isinstance(src, ip.EvalView) and len(src) == 5
  row = src[0]
  full, label = row["full"], row["label"]
  assert row["image"].shape == (224, 224, 3) and row["image"].dtype == np.uint8
  assert full.shape[1] == 41 and full.shape[0] == 30 + 7 * label
  np.testing.assert_array_equal(row["image"], np.full((224, 224, 3), 30 * label, np.uint8))
  batch = next(D.train_iterator(src, global_batch_size=4, seed=0, augment="none"))
  assert batch["image"].shape == (4, 224, 224, 3)


def test_catalog_views_resize_and_convert(tmp_path):
  fake_catalog(
    tmp_path, "mnist", {"train": digit_rows(6, (28, 28, 1)), "test": digit_rows(3, (28, 28, 1))}
  )
  plain = D.get_source("mnist", "test", str(tmp_path))
  rgb32 = D.get_source("mnist@32x32x3", "test", str(tmp_path))
  assert D.image_shape("mnist@32x32x3", str(tmp_path)) == (32, 32, 3)
  img = rgb32[1]["image"]
  assert img.shape == (32, 32, 3) and (img[..., 0] == img[..., 2]).all()
  assert rgb32[1]["label"] == plain[1]["label"]
  same = D.get_source("mnist@28x28x1", "test", str(tmp_path))[2]["image"]
  np.testing.assert_array_equal(same, plain[2]["image"])  # same size: untouched
  for bad in ("mnist@32x32", "mnist@32x32x2", "mnist@0x4x1"):
    with pytest.raises(ConfigError, match="HxWxC"):
      D.get_source(bad, "test", str(tmp_path))


# --- folder builders -----------------------------------------------------------------------


def test_office31_both_layouts_same_labels(tmp_path, monkeypatch):
  root = tmp_path / "office31"
  fake_folder_dataset(root, Office31, "amazon")
  fake_folder_dataset(root, Office31, "webcam", tllib_list=True)
  # A grey JPEG and an RGBA PNG are stored as RGB.
  Image.new("L", (30, 20), 90).save(root / "amazon/images/bike/grey.jpg")
  Image.new("RGBA", (16, 12), (7, 7, 7, 0)).save(root / "amazon/images/bike/alpha.png")
  monkeypatch.setenv("JAXDAPT_OFFICE31_DIR", str(root))
  ddir = str(tmp_path / "tfds")
  amazon = D.get_source("office31/amazon", "train", ddir)
  webcam = D.get_source("office31/webcam", "train", ddir)
  assert (len(amazon), len(webcam)) == (33, 31)
  for src in (amazon, webcam):
    for i in range(len(src)):
      row = src[i]
      assert row["full"].ndim == 3 and row["full"].shape[-1] == 3
      if row["full"].shape[:2] == (20, 26):  # a generated image: its value is its label
        assert row["full"][0, 0, 0] == 7 * row["label"]
  assert D.num_classes("office31/amazon", ddir) == 31
  assert D.image_shape("office31/webcam", ddir) == (224, 224, 3)


@pytest.mark.parametrize(
  "cls,domain,folder",
  [
    (OfficeHome, "real_world", "Real World"),  # the original archive's name, with a space
    (VisDA2017, "synthetic", None),
    (Pacs, "sketch", None),
  ],
)
def test_folder_builders_read_their_layout(tmp_path, monkeypatch, cls, domain, folder):
  root = tmp_path / cls.name
  fake_folder_dataset(root, cls, domain, folder=folder)
  monkeypatch.setenv("JAXDAPT_MANUAL_DIR", str(tmp_path))
  src = D.get_source(f"{cls.name}/{domain}", "train", str(tmp_path / "tfds"))
  assert len(src) == len(cls.CLASSES)
  assert sorted(src[i]["label"] for i in range(len(src))) == list(range(len(cls.CLASSES)))
  assert src[0]["image"].shape == (224, 224, 3)


def test_folder_not_found_names_env_var_and_layout(tmp_path):
  with pytest.raises(DatasetNotPreparedError) as e:
    D.get_source("office_home/art", "train", str(tmp_path))
  msg = message(e)
  assert "export JAXDAPT_OFFICE_HOME_DIR=" in msg and "jaxdapt never downloads" in msg
  assert "<dir>/Art/<class>/*.jpg" in msg and "image_list/Art.txt" in msg
  assert str(tmp_path / "downloads" / "manual" / "office_home") in msg
  assert "Alarm_Clock" in msg


def test_folder_incomplete_names_what_is_missing(tmp_path, monkeypatch):
  root = tmp_path / "office31"
  monkeypatch.setenv("JAXDAPT_OFFICE31_DIR", str(root))
  ddir = str(tmp_path / "tfds")
  fake_folder_dataset(root, Office31, "dslr", skip=("mug", "ruler"))
  with pytest.raises(DatasetNotPreparedError, match=r"lacks 2 of 31 class folders: mug, ruler"):
    D.get_source("office31/dslr", "train", ddir)
  os.makedirs(root / "dslr/images/mug")
  fake_folder_dataset(root, Office31, "dslr", skip=("mug",))
  with pytest.raises(DatasetNotPreparedError, match=r"no image .* in dslr/images/: mug"):
    D.get_source("office31/dslr", "train", ddir)
  fake_folder_dataset(root, Office31, "webcam", tllib_list=True)
  os.remove(root / "webcam/images/pen/0.png")
  with pytest.raises(DatasetNotPreparedError) as e:
    D.get_source("office31/webcam", "train", ddir)
  assert (
    "image_list/webcam.txt lists 1 image(s) that are not there: "
    "webcam/images/pen/0.png" in message(e)
  )
  with pytest.raises(
    DatasetNotPreparedError, match="none of amazon/images/, image_list/amazon.txt is there"
  ):
    D.get_source("office31/amazon", "train", ddir)
  assert not list((tmp_path / "tfds").rglob("*.array_record*"))  # nothing half-written


# --- digit releases ------------------------------------------------------------------------


def test_usps_libsvm_release(tmp_path, monkeypatch):
  write_usps_bz2(tmp_path)
  monkeypatch.setenv("JAXDAPT_USPS_DIR", str(tmp_path))
  ddir = str(tmp_path / "tfds")
  train, test = (D.get_source("usps", s, ddir) for s in ("train", "test"))
  assert (len(train), len(test)) == (12, 5)
  assert train[0]["image"].shape == (16, 16, 1)
  labels = sorted(train[i]["label"] for i in range(12))
  assert labels == sorted(i % 10 for i in range(12))
  pixels = np.unique(np.concatenate([train[i]["image"].ravel() for i in range(12)]))
  assert set(pixels) == {0, 63, 127, 191, 255}  # floor((v + 1) / 2 * 255), v in [-1, 1]
  assert D.get_source("usps@28x28x1", "test", ddir)[0]["image"].shape == (28, 28, 1)


def test_usps_tllib_list_and_h5(tmp_path, monkeypatch):
  root = tmp_path / "tll"
  os.makedirs(root / "image_list")
  os.makedirs(root / "usps_image")
  for split, n in (("train", 6), ("test", 3)):
    lines = []
    for i in range(n):
      rel = f"usps_image/{split}_{i}.png"
      (root / rel).write_bytes(encoded(fill(i % 10, (16, 16, 1))))
      lines.append(f"{rel} {i % 10}")
    (root / f"image_list/usps_{split}.txt").write_text("\n".join(lines))
  monkeypatch.setenv("JAXDAPT_USPS_DIR", str(root))
  src = D.get_source("usps", "train", str(tmp_path / "tfds1"))
  assert len(src) == 6 and all(src[i]["image"][0, 0, 0] == 7 * src[i]["label"] for i in range(6))
  h5py = pytest.importorskip("h5py")
  with h5py.File(tmp_path / "usps.h5", "w") as f:
    for split, n in (("train", 7), ("test", 2)):
      f.create_group(split)
      f[split]["data"] = np.linspace(0, 1, n * 256).reshape(n, 256)
      f[split]["target"] = np.arange(n) % 10
  monkeypatch.setenv("JAXDAPT_USPS_DIR", str(tmp_path))
  src = D.get_source("usps", "train", str(tmp_path / "tfds2"))
  assert len(src) == 7 and src[0]["image"].shape == (16, 16, 1)


def test_usps_missing_names_every_release(tmp_path, monkeypatch):
  with pytest.raises(DatasetNotPreparedError) as e:
    D.get_source("usps", "train", str(tmp_path))
  msg = message(e)
  assert all(
    s in msg
    for s in (
      "JAXDAPT_USPS_DIR",
      "usps.h5",
      "usps.bz2 + <dir>/usps.t.bz2",
      "image_list/usps_train.txt",
    )
  )
  root = tmp_path / "usps"
  root.mkdir()
  write_usps_bz2(root)
  os.remove(root / "usps.t.bz2")
  monkeypatch.setenv("JAXDAPT_USPS_DIR", str(root))
  with pytest.raises(
    DatasetNotPreparedError,
    match=r"no complete release found \(present: "
    r"usps.bz2\)",
  ):
    D.get_source("usps", "train", str(tmp_path))


def test_mnist_m_original_folder(tmp_path, monkeypatch):
  write_mnist_m(tmp_path / "mnist_m")
  monkeypatch.setenv("JAXDAPT_MNIST_M_DIR", str(tmp_path))  # the folder above mnist_m/ works
  src = D.get_source("mnist_m", "test", str(tmp_path / "tfds"))
  assert len(src) == 4 and src[0]["image"].shape == (28, 28, 3)
  assert all(src[i]["image"][5, 5, 1] == 7 * src[i]["label"] for i in range(4))
  os.remove(tmp_path / "mnist_m/mnist_m_train/00000003.png")
  with pytest.raises(DatasetNotPreparedError, match="mnist_m_train_labels.txt lists 1 image"):
    D.get_source("mnist_m", "train", str(tmp_path / "tfds2"))


def test_syn_numbers_mat(tmp_path, monkeypatch):
  from scipy.io import savemat

  monkeypatch.setenv("JAXDAPT_SYN_NUMBERS_DIR", str(tmp_path))
  with pytest.raises(
    DatasetNotPreparedError, match="missing synth_train_32x32.mat, synth_test_32x32.mat"
  ):
    D.get_source("syn_numbers", "train", str(tmp_path / "tfds"))
  for split, n in (("train", 6), ("test", 3)):
    x = np.stack([fill(i % 10, (32, 32, 3)) for i in range(n)], axis=-1)
    y = np.array([[10 if i % 10 == 0 else i % 10] for i in range(n)], np.uint8)  # SVHN style
    savemat(tmp_path / f"synth_{split}_32x32.mat", {"X": x, "y": y})
  src = D.get_source("syn_numbers", "train", str(tmp_path / "tfds"))
  assert len(src) == 6 and src[0]["image"].shape == (32, 32, 3)
  assert all(src[i]["image"][0, 0, 0] == 7 * src[i]["label"] for i in range(6))


# --- the 224² pipeline ---------------------------------------------------------------------


def test_random_resized_box_bounds():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = ip.random_resized_box(rng)
    assert 0 <= top and top + h <= 256 and 0 <= left and left + w <= 256
    assert 0.08 * 256 * 256 * 0.9 <= h * w <= 256 * 256
  # Impossible scale: falls back to the central crop clamped to the ratio range.
  assert ip.random_resized_box(rng, 100, 300, scale=(5.0, 6.0)) == (0, 83, 100, 133)


def test_crops_shapes_flip_and_determinism():
  ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (100, 1, 3))
  out = ip.eval_crop(ramp)
  assert out.shape == (224, 224, 3)
  assert out[0, 0, 0] < out[0, -1, 0]  # no flip in eval; 16/256 of the width cut each side
  a = ip.train_crop(encoded(ramp), np.random.default_rng(3))
  b = ip.train_crop(ramp, np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)  # encoded bytes and pixels give the same crop
  flips = {
    bool(
      ip.train_crop(ramp, np.random.default_rng(s))[0, 0, 0]
      > ip.train_crop(ramp, np.random.default_rng(s))[0, -1, 0]
    )
    for s in range(20)
  }
  assert flips == {True, False}
  grey = ip.eval_crop(np.zeros((10, 12), np.uint8))
  assert grey.shape == (224, 224, 3)


def test_train_augment_as_grain_op():
  rows = [{"image": encoded(fill(i, (40 + i, 50, 3)), "JPEG"), "label": i} for i in range(4)]
  view = ip.EvalView(rows)
  assert {view[i]["image"].shape for i in range(4)} == {(224, 224, 3)}
  ds = grain.MapDataset.source(view).seed(7).shuffle().random_map(ip.train_augment)
  ds = ds.batch(2, batch_fn=lambda xs: np.stack([x["image"] for x in xs]))
  assert ds[0].shape == (2, 224, 224, 3) and ds[0].dtype == np.uint8
  np.testing.assert_array_equal(ds[1], ds[1])  # deterministic per position
  x = ip.normalize(
    np.full((1, 2, 2, 3), 255, np.uint8), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  )
  np.testing.assert_allclose(
    x[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-6
  )


def test_throughput_cli(tmp_path, capsys):
  r = throughput.throughput(throughput.synthetic_jpegs(3, size=(60, 80)), n=3)
  assert r["images"] == 3 and r["images_per_s_per_core"] > 0
  throughput.main(["--domain", "synthetic", "-n", "2"])
  assert "synthetic: train crop, 2 images" in capsys.readouterr().out
  rows = [(np.full((30, 40, 3), i, np.uint8), i) for i in range(3)]
  fake_catalog(tmp_path, "imagenet_r", {"test": rows})
  throughput.main(
    ["--domain", "imagenet_r", "--split", "test", "--data_dir", str(tmp_path), "--eval"]
  )
  assert "imagenet_r: eval crop, 3 images" in capsys.readouterr().out


def test_views_helpers():
  assert views.split_name("domainnet/real@64x48x3") == ("domainnet/real", (64, 48, 3))
  assert views.shown_shape((None, None, 3), None) == (224, 224, 3)
  assert views.shown_shape((28, 28, 1), (32, 32, 3)) == (32, 32, 3)
  grey = views.resized(np.full((4, 4, 3), (255, 0, 0), np.uint8), (4, 4, 1))
  assert grey.shape == (4, 4, 1) and grey[0, 0, 0] == 76  # PIL's luma of pure red
