"""The transferability ranking command (jaxdapt/tools/rank.py) on tiny runs: end to end, reuse,
RUN@STEP and bad candidate specs."""

import json

import jax
import numpy as np
import pytest
from test_train import tiny_config

from jaxdapt import checkpoint, features, trainer
from jaxdapt.errors import CheckpointError, ConfigError
from jaxdapt.tools import rank
from jaxdapt.tools.main import run_tool
from jaxdapt.trainer import loop as trainer_loop

ONE_DEVICE = jax.devices()[:1]  # half the compile time of 8 fake devices


def _one_device(monkeypatch):
  """trainer.build on ONE_DEVICE, for the scoring and the fine-tuning runs (the training
  loop's own reference to build included); the original build."""
  build = trainer.build
  one = lambda config, devices=None: build(config, ONE_DEVICE)
  monkeypatch.setattr(trainer, "build", one)
  monkeypatch.setattr(trainer_loop, "build", one)
  return build


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """Two tiny source_only runs (checkpoints at steps 2 and 4)."""
  out = []
  for seed in (0, 1):
    config = tiny_config(data_dir, "source_only", steps=4, eval_every=4, checkpoint_every=2)
    config.seed = seed
    config.data.target = "uci_digits"  # spares generating uci_digits_m
    workdir = str(tmp_path_factory.mktemp(f"run{seed}"))
    trainer.train_and_evaluate(config, workdir, devices=ONE_DEVICE)
    out.append(workdir)
  return out


def _argv(data_dir, out, candidates):
  return [
    "--candidates",
    candidates,
    "--dataset",
    "uci_digits",
    "--out",
    str(out),
    "--finetune-steps",
    "2",
    "--seeds",
    "0",
    "--max-rows",
    "128",
    "--data-dir",
    data_dir,
    "--set",
    "data.batch_size=16",
    "--set",
    "data.eval_batch_size=256",
    "--set",
    "train.compilation_cache_dir=",
  ]  # no persistent cache in the test process


def _fail(*args, **kwargs):
  raise AssertionError("nothing should be recomputed")


def test_ranks_candidates_end_to_end_then_reuses_everything(
  data_dir, runs, tmp_path, monkeypatch, capsys
):
  _one_device(monkeypatch)  # scoring and fine-tuning on one device: half the compile time
  argv = _argv(data_dir, tmp_path, f"early={runs[0]}@2,late={runs[1]},scratch=random:dann_digits")
  assert rank.main(argv) == 0
  printed = capsys.readouterr().out
  md = (tmp_path / "results.md").read_text()
  assert md in printed
  saved = json.loads((tmp_path / "results.json").read_text())
  rows = {r["name"]: r for r in saved["candidates"]}
  assert list(rows) == ["early", "late", "scratch"]
  assert (rows["early"]["step"], rows["late"]["step"]) == (2, 4)  # late: the latest checkpoint
  for name, r in rows.items():
    assert f"| {name} |" in md
    assert set(r["scores"]) == {k for k, _ in rank.SCORES}
    # 128 rows of 1200-dim features: H-score is C − 1 whatever the model, so left out.
    others = {k: v for k, v in r["scores"].items() if k != "h_score"}
    assert r["scores"]["h_score"] is None and all(np.isfinite(list(others.values())))
    assert r["n_rows"] == 128 and r["failed"] == 0
    assert 0.0 <= r["accuracy_mean"] <= 1.0
    assert (tmp_path / "runs" / name / "seed_0" / "summary.json").exists()
  # Trained candidates start from their checkpoint; the random one from scratch.
  configs = {
    n: json.loads((tmp_path / "runs" / n / "seed_0" / "config.json").read_text()) for n in rows
  }
  assert configs["early"]["model"]["init_from"] == f"{runs[0]}@2"
  assert configs["scratch"]["model"]["init_from"] == ""
  assert configs["late"]["train"]["steps"] == 2
  for key, label in rank.SCORES:
    assert any(line.startswith(f"| {label} | ") for line in md.splitlines())
    if key == "h_score":
      assert "| H-score | – |" in md and "H-score –: degenerate" in md
      continue
    assert {"kendall_tau", "weighted_tau"} <= set(saved["ranking"][key])
    assert saved["ranking"][key]["n_models"] == 3

  # A second invocation trains nothing and extracts nothing: same table.
  monkeypatch.setattr(trainer, "train_and_evaluate", _fail)
  monkeypatch.setattr(features, "extract", _fail)
  assert rank.main(argv) == 0
  again = json.loads((tmp_path / "results.json").read_text())
  assert [r["scores"] for r in again["candidates"]] == [r["scores"] for r in saved["candidates"]]
  assert [r["accuracies"] for r in again["candidates"]] == [r["accuracies"] for r in rows.values()]
  assert all(run["reused"] for r in again["candidates"] for run in r["runs"])
  assert (tmp_path / "results.md").read_text() == md


def test_labeled_per_class_scores_and_fine_tunes_on_each_seeds_k_shot_rows(
  data_dir, runs, tmp_path, monkeypatch
):
  """--labeled-per-class k: seed s is scored on, and fine-tunes (target_only) on, the k rows
  per class that seed s draws; the table's score is the mean over seeds."""
  from jaxdapt.data.labeled import select_per_class

  build = _one_device(monkeypatch)
  argv = _argv(data_dir, tmp_path, f"early={runs[0]}@2,late={runs[1]}")
  argv[argv.index("--seeds") + 1] = "0,1"
  assert rank.main(argv + ["--labeled-per-class", "2"]) == 0
  saved = json.loads((tmp_path / "results.json").read_text())
  row = saved["candidates"][0]
  assert row["n_rows"] == 20 and saved["labeled_per_class"] == 2
  exp = build(
    rank.score_config(rank.parse_candidate(f"early={runs[0]}@2"), _args(data_dir, tmp_path)),
    ONE_DEVICE,
  )
  labels = np.array([exp.sources["target"][i]["label"] for i in range(len(exp.sources["target"]))])
  per_seed = []
  for seed in (0, 1):
    config = json.loads((tmp_path / "runs" / "early" / f"seed_{seed}" / "config.json").read_text())
    assert config["method"]["name"] == "target_only"
    assert config["data"]["target_labeled_per_class"] == 2
    arrays = features.load_store(str(tmp_path / "features" / "early" / f"seed_{seed}"))
    assert np.array_equal(arrays["labels"], labels[select_per_class(labels, 2, seed)])
    per_seed.append(rank.scores(arrays))
  assert per_seed[0]["logme"] != per_seed[1]["logme"]  # two draws, two scores
  assert row["scores"]["logme"] == pytest.approx((per_seed[0]["logme"] + per_seed[1]["logme"]) / 2)
  assert (
    "20 rows, the 2 labeled uci_digits train rows per class"
    in (tmp_path / "results.md").read_text()
  )


def _args(data_dir, out):
  import argparse

  return argparse.Namespace(
    dataset="uci_digits",
    data_dir=data_dir,
    out=str(out),
    labeled_per_class=2,
    max_rows=128,
    finetune_steps=2,
    set=[],
  )


def test_run_at_step_loads_that_checkpoint(data_dir, runs):
  run = runs[0]
  config = tiny_config(data_dir, "source_only", steps=4)
  config.model.dont_load = ()
  exp = trainer.build(config, ONE_DEVICE)
  state = exp.init(jax.random.key(3))
  ckpt = checkpoint.Checkpointer(run, 2)
  try:
    saved = {
      s: jax.device_get(ckpt.restore(checkpoint.abstract_like(state), step=s)[0].params)
      for s in (2, 4)
    }
  finally:
    ckpt.close()
  flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
  assert not np.allclose(flat(saved[2]["model"]), flat(saved[4]["model"]))
  for init_from, at in ((f"{run}@2", 2), (run, 4)):
    config.model.init_from = init_from
    loaded = trainer.load_init_from(exp, state)
    np.testing.assert_array_equal(
      flat(jax.device_get(loaded.params["model"])), flat(saved[at]["model"])
    )
  with pytest.raises(CheckpointError, match="no checkpoint at step 3 .*steps on disk: 2, 4"):
    checkpoint.load_model_variables(run, 3)


@pytest.mark.parametrize(
  "bad", ["oops", "x=random:no_such_model", "x=/no/such/run", "RUN@3", "r=random:dann_digits"]
)
def test_a_bad_candidate_is_a_one_line_error_naming_it(
  data_dir, runs, tmp_path, monkeypatch, capsys, bad
):
  monkeypatch.setattr(trainer, "train_and_evaluate", _fail)
  monkeypatch.setattr(features, "extract", _fail)
  bad = bad.replace("RUN", f"x={runs[0]}")
  argv = _argv(data_dir, tmp_path, f"r=random:dann_digits,{bad}")
  with pytest.raises(ConfigError, match="^--candidates"):
    rank.main(argv)
  assert run_tool("rank", argv) == 2
  captured = capsys.readouterr()
  err = captured.err
  assert err.count("\n") == 1 and err.startswith("error: --candidates")
  assert (bad in err) or ("repeated: r" in err)
  assert captured.out == "" and not list(tmp_path.iterdir())
