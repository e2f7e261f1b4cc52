"""`jaxdapt negative-transfer` (jaxdapt/tools/negative_transfer.py): verdicts, reuse, a real
tiny run."""

import functools
import json
import os
import re

import jax
import pytest

from jaxdapt import trainer
from jaxdapt.errors import ConfigError
from jaxdapt.tools import grid
from jaxdapt.tools import negative_transfer as nt
from jaxdapt.tools.main import run_tool

RECIPE = "experiments/transfer/fewshot_joint.py"


def _fake_runs(monkeypatch, accuracy):
  """grid.run_one returning accuracy(role, seed) without training."""
  calls = []

  def run_one(method, task, seed, out, experiments_dir, overrides):
    config = grid.load_config(method, task, experiments_dir, overrides)
    role = "baseline" if config.method.name == "target_only" else "transfer"
    assert config.model.init_from == "" or role == "transfer"
    calls.append((role, seed, config.data.target_labeled_per_class))
    return {"target_acc_last": accuracy(role, seed)}

  monkeypatch.setattr(grid, "run_one", run_one)
  return calls


@pytest.mark.parametrize(
  "transfer_acc, expected",
  [
    (0.50, "NEGATIVE TRANSFER: transfer loses by 11.0 ± 1.0 points"),
    (0.75, "transfer helps by 14.0 ± 1.0 points"),
  ],
)
def test_verdict_reports_both_outcomes(monkeypatch, tmp_path, capsys, transfer_acc, expected):
  # Seed 0: baseline 0.60; seed 1: baseline 0.62. Transfer is flat, so the paired
  # difference is ±1 point around its mean.
  calls = _fake_runs(
    monkeypatch, lambda role, seed: 0.60 + 0.02 * seed if role == "baseline" else transfer_acc
  )
  assert nt.main(["--config", RECIPE, "--seeds", "0,1", "--k", "3", "--out", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert out.splitlines()[-1] == expected
  assert sorted(calls) == [
    ("baseline", 0, 3),
    ("baseline", 1, 3),
    ("transfer", 0, 3),
    ("transfer", 1, 3),
  ]
  saved = json.load(open(tmp_path / "negative_transfer.json"))
  assert saved["verdict"] == expected and saved["k"] == 3
  assert saved["negative_transfer"] == (transfer_acc < 0.6)


def test_verdict_flags_a_difference_within_seed_noise():
  line = nt.verdict({"per_seed": [-3.0, 2.0], "mean": -0.5, "std": 2.5})
  assert line == "NEGATIVE TRANSFER: transfer loses by 0.5 ± 2.5 points (within seed noise)"


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--config", RECIPE, "--k", "0"], "data.target_labeled_per_class: "),  # no labeled target
    (
      ["--config", "experiments/transfer/fewshot_finetune.py"],  # nothing to transfer from
      "model.init_from: this recipe trains on the labeled target alone",
    ),
    (
      ["--config", "experiments/transfer/nope.py"],
      "--config: experiments/transfer/nope.py: no such file",
    ),
    (["--config", f"{RECIPE}:nope"], f"--config: {RECIPE}:nope: "),
    (["--config", RECIPE, "--seeds", "0,x"], "--seeds: '0,x' is not a comma-separated"),
  ],
)
def test_a_check_without_a_comparison_is_an_error(tmp_path, monkeypatch, capsys, argv, message):
  calls = _fake_runs(monkeypatch, lambda role, seed: 0.5)
  argv = argv + ["--out", str(tmp_path / "out")]
  with pytest.raises(ConfigError, match=re.escape(message)):
    nt.main(argv)
  assert run_tool("negative-transfer", argv) == 2
  captured = capsys.readouterr()
  assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
  assert captured.out == "" and calls == [] and not os.listdir(tmp_path)


def test_failed_runs_are_listed_with_exit_status_1(monkeypatch, tmp_path, capsys):
  def run_one(method, task, seed, out, experiments_dir, overrides):
    role = "baseline" if "method.name=target_only" in overrides else "transfer"
    return {"error": "FloatingPointError: boom"} if role == "transfer" else {"target_acc_last": 0.5}

  monkeypatch.setattr(grid, "run_one", run_one)
  argv = ["--config", RECIPE, "--seeds", "0", "--k", "3", "--out", str(tmp_path)]
  assert run_tool("negative-transfer", argv) == 1
  err = capsys.readouterr().err
  assert err == (
    "error: runs failed (see their error.txt):\n  seed 0 transfer: FloatingPointError: boom\n"
  )
  assert not (tmp_path / "negative_transfer.json").exists()


def _tiny_recipe(tmp_path, data_dir):
  path = tmp_path / "tiny_joint.py"
  path.write_text(
    "import sys\n"
    f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
    "from test_train import tiny_config\n\n\n"
    "def get_config(task='uci2ucim'):\n"
    f"  c = tiny_config({data_dir!r}, 'source_only', steps=2, eval_every=2)\n"
    "  c.data.target_labeled_per_class = 1\n"
    "  return c\n"
  )
  return str(path)


def test_real_tiny_runs_are_paired_reused_and_guarded(data_dir, tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(
    trainer,
    "train_and_evaluate",  # one device: half the compile time
    functools.partial(trainer.train_and_evaluate, devices=jax.devices()[:1]),
  )
  recipe, out = _tiny_recipe(tmp_path, data_dir), str(tmp_path / "out")
  assert nt.main(["--config", recipe, "--seeds", "0", "--out", out]) == 0
  first = json.load(open(os.path.join(out, "negative_transfer.json")))
  printed = capsys.readouterr().out.splitlines()
  assert printed[-1] == first["verdict"] and printed[-1].startswith(
    ("NEGATIVE TRANSFER: transfer loses by ", "transfer helps by ")
  )
  print("\n".join(printed[-5:]))
  for role, method in (("baseline", "target_only"), ("transfer", "source_only")):
    run = os.path.join(out, role, "runs", "uci2ucim", "tiny_joint", "seed_0")
    assert json.load(open(os.path.join(run, "summary.json")))["method"] == method
    assert (
      json.load(open(os.path.join(run, "config.json")))["data"]["target_labeled_per_class"] == 1
    )
  # Rerun: both runs reused, same numbers; another config over them is refused.
  monkeypatch.setattr(trainer, "train_and_evaluate", _no_training)
  assert nt.main(["--config", recipe, "--seeds", "0", "--out", out]) == 0
  assert json.load(open(os.path.join(out, "negative_transfer.json"))) == first
  with pytest.raises(ConfigError, match="data"):
    nt.main(["--config", recipe, "--seeds", "0", "--out", out, "--k", "2"])


def _no_training(*args, **kwargs):
  raise AssertionError("a finished run was trained again")
