"""experiments/protocols/: every config validates, carries its paper's recipe and published
numbers, and runs on generated stand-ins of its data through trainer.build (digits: train)."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from test_real_datasets import (  # noqa: F401  (a fixture)
  _clean_env,
  digit_rows,
  fake_catalog,
  fake_folder_dataset,
  write_mnist_m,
  write_usps_bz2,
)

from jaxdapt import config as config_lib
from jaxdapt import data, optim, step, trainer
from jaxdapt.data.office import Office31
from jaxdapt.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
  "protocols_table", os.path.join(ROOT, "experiments", "protocols", "table.py")
)
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)
MODULES = {name: table.load(name) for name in table.PROTOCOLS}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("name", table.PROTOCOLS)
def test_every_task_and_published_method_validates(name):
  module = MODULES[name]
  methods = sorted(module.PUBLISHED) or ["dann"]
  for task in module.TASKS:
    for method in methods:
      c = module.get_config(f"{task},{method}")
      trainer.validate(c)
      assert c.method.name == method
  assert module.get_config().method.name == "dann"
  with pytest.raises(ConfigError, match="allowed: "):
    module.get_config("nope")
  assert module.__doc__.count("Compare with:") == 1


@pytest.mark.parametrize("name", ["office31", "office_home", "domainnet"])
def test_published_numbers_match_their_average_column(name):
  """A transcription check: each row's tasks average to the page's own 'avg'."""
  for method, row in MODULES[name].PUBLISHED.items():
    tasks = [row[t] for t in MODULES[name].TASKS]
    assert abs(np.mean(tasks) - row["avg"]) < 0.051, method


def test_docs_table_is_generated_from_the_configs():
  with open(os.path.join(ROOT, "docs", "protocols.md")) as f:
    assert table.tables() in f.read()


def test_tllib_recipe_and_inv_schedule():
  c = MODULES["office31"].get_config("D2A,cdan")
  assert (c.data.source, c.data.target) == ("office31/dslr", "office31/amazon")
  assert (c.model.name, c.model.bottleneck_dim, tuple(c.model.head_hidden)) == ("resnet50", 256, ())
  assert (c.optim.preset, c.optim.nesterov, c.optim.weight_decay) == ("discriminative", True, 1e-3)
  assert (c.data.batch_size, c.train.steps, c.train.eval_every) == (32, 20_000, 1_000)
  assert c.data.augment == "imagenet"  # TLlib's random-resized crop + flip
  lr = optim.lr_schedule(c.optim, c.train.steps)
  for i in (0, 1, 999, 19_999):
    np.testing.assert_allclose(lr(i), 0.01 * (1 + 0.001 * i) ** -0.75, rtol=1e-12)
  d = config_lib.base_config().optim  # 'dann' is the same form on the progress i / steps
  for i in (0, 250, 999):
    np.testing.assert_allclose(optim.lr_schedule(d, 1000)(i), 0.01 * (1 + 10 * i / 1000) ** -0.75)
  dn = MODULES["domainnet"].get_config("s2r")
  assert (dn.model.name, dn.model.bottleneck_dim, dn.train.steps) == ("resnet101", 1024, 75_000)
  assert (dn.data.source_val_split, dn.data.target_test_split) == ("test", "test")


def _small(c, data_dir):
  c.data.data_dir = data_dir
  c.data.batch_size = c.data.eval_batch_size = 8
  c.data.prefetch = 0
  c.train.steps = c.train.eval_every = c.train.checkpoint_every = 2
  c.train.log_every = 1
  c.train.progress_bar = False
  c.train.selection_points = 0
  c.train.compilation_cache_dir = ""
  return c


def _first_batches(exp) -> tuple[dict, dict]:
  batch = next(trainer.train_iterators(exp))
  evals = next(data.eval_batches(exp.sources["target_test"], batch_size=8))
  return batch, evals


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
  """Fake mnist + svhn_cropped (TFDS catalog), USPS (LIBSVM files), MNIST-M (folder)."""
  root = tmp_path_factory.mktemp("digits")
  ddir = str(root / "tfds")
  fake_catalog(
    ddir, "mnist", {"train": digit_rows(16, (28, 28, 1)), "test": digit_rows(8, (28, 28, 1), 1)}
  )
  fake_catalog(
    ddir,
    "svhn_cropped",
    {"train": digit_rows(16, (32, 32, 3)), "test": digit_rows(8, (32, 32, 3), 1)},
  )
  (root / "usps").mkdir()
  write_usps_bz2(root / "usps")
  write_mnist_m(root / "mnist_m")
  return root, ddir


def _digit_env(monkeypatch, root):
  monkeypatch.setenv("JAXDAPT_USPS_DIR", str(root / "usps"))
  monkeypatch.setenv("JAXDAPT_MNIST_M_DIR", str(root / "mnist_m"))


def test_tllib_digits_trains_on_stand_ins(digits_data, monkeypatch, tmp_path):
  root, ddir = digits_data
  _digit_env(monkeypatch, root)
  c = _small(MODULES["digits_tllib"].get_config("usps2mnist"), ddir)
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["steps"] == 2 and 0 <= summary["target_acc_last"] <= 1
  assert summary["source"] == "usps@28x28x1" and summary["target"] == "mnist"


@pytest.mark.parametrize(
  "name,task,shape",
  [
    ("digits_tllib", "svhn2mnist", (32, 32, 3)),
    ("digits_tllib", "mnist2usps", (28, 28, 1)),
    ("digits_dann", "mnist2mnistm", (28, 28, 3)),
    ("digits_dann", "svhn2mnist", (32, 32, 3)),
  ],
)
def test_digit_protocols_build_and_read(digits_data, monkeypatch, name, task, shape):
  root, ddir = digits_data
  _digit_env(monkeypatch, root)
  exp = trainer.build(_small(MODULES[name].get_config(task), ddir))
  batch, evals = _first_batches(exp)
  assert batch["source"]["image"].shape == batch["target"]["image"].shape == (8, *shape)
  assert evals["image"].shape == (8, *shape)
  params = jax.eval_shape(exp.init, jax.random.key(0)).params
  assert "discriminator" in params["method"]


def test_office31_protocol_on_a_fake_folder(tmp_path, monkeypatch):
  root = tmp_path / "office31"
  fake_folder_dataset(root, Office31, "amazon")
  fake_folder_dataset(root, Office31, "webcam", tllib_list=True)
  monkeypatch.setenv("JAXDAPT_OFFICE31_DIR", str(root))
  weights = tmp_path / "resnet50_tv"  # an import's metadata: the inputs' mean/std
  weights.mkdir()
  (weights / "metadata.json").write_text(
    json.dumps({"arch": "resnet50", "mean": IMAGENET[0], "std": IMAGENET[1]})
  )
  c = _small(MODULES["office31"].get_config("A2W"), str(tmp_path / "tfds"))
  c.model.init_from = str(weights)
  assert step.input_mean_std(c) == IMAGENET
  exp = trainer.build(c)
  assert exp.num_classes == 31
  batch, evals = _first_batches(exp)
  assert batch["source"]["image"].shape == (8, 224, 224, 3)
  assert evals["image"].shape == (8, 224, 224, 3) and evals["mask"].all()


@pytest.mark.parametrize("name", ["office_home", "visda2017"])
def test_folder_protocols_read_their_domains(tmp_path, monkeypatch, name):
  c = MODULES[name].get_config()
  cls = data.DOMAINS.get(c.data.source.split("/")[0])
  for domain in (c.data.source, c.data.target):
    fake_folder_dataset(tmp_path / cls.name, cls, domain.split("/")[1])
  monkeypatch.setenv("JAXDAPT_MANUAL_DIR", str(tmp_path))
  for key in ("source", "target"):
    src = data.get_source(c.data[key], c.data[f"{key}_split"], str(tmp_path / "tfds"))
    assert len(src) == len(cls.CLASSES) and src[0]["image"].shape == (224, 224, 3)


def test_domainnet_protocol_builds_on_fake_catalog(tmp_path):
  ddir = str(tmp_path / "tfds")
  rows = [(np.full((24 + i, 30, 3), i, np.uint8), i) for i in range(8)]
  for domain in ("clipart", "painting"):
    fake_catalog(ddir, f"domainnet/{domain}", {"train": rows, "test": rows[:3]})
  c = _small(MODULES["domainnet"].get_config("c2p"), ddir)
  c.model.init_from = ""
  exp = trainer.build(c)
  assert exp.num_classes == 345
  batch, evals = _first_batches(exp)
  assert batch["target"]["image"].shape == (8, 224, 224, 3)
  assert int(evals["mask"].sum()) == 3
