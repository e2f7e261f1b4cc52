"""The grid runner: reuse of finished runs, a crash that loses nothing else, and its tables."""

import json
import os
import re

import pytest

from jaxdapt import trainer
from jaxdapt.errors import ConfigError
from jaxdapt.tools import grid
from jaxdapt.tools.main import run_tool


def _write_run(out, task, method, seed, evals, summary=True):
  d = os.path.join(out, "runs", task, method, f"seed_{seed}")
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for row in evals:
      f.write(json.dumps({"kind": "eval", **row}) + "\n")
  if summary:
    last = evals[-1]
    with open(os.path.join(d, "summary.json"), "w") as f:
      json.dump(
        {
          "method": method,
          "seed": seed,
          "target_acc_last": last["target_test_acc"],
          "target_acc_best_source_val": last["target_test_acc"],
          "target_acc_oracle": max(r["target_test_acc"] for r in evals),
        },
        f,
      )
  return d


def _fake_training(calls, fail=()):
  def fake(config, workdir):
    calls.append((config.method.name, config.seed))
    if config.method.name in fail:
      raise FloatingPointError("boom")
    acc = 0.5 + 0.01 * config.seed
    runs, task, method, _ = workdir.rsplit(os.sep, 3)
    _write_run(
      os.path.dirname(runs),
      task,
      method,
      config.seed,
      [{"step": 1, "target_test_acc": acc, "source_val_acc": 0.9, "target_test_im": 1.0}],
      summary=False,
    )
    return {
      "method": config.method.name,
      "seed": config.seed,
      "target_acc_last": acc,
      "target_acc_best_source_val": acc,
      "target_acc_oracle": acc,
    }

  return fake


def test_finished_runs_are_reused_and_a_crash_loses_nothing(tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "grid")
  _write_run(
    out, "uci2ucim", "source_only", 0, [{"step": 1, "target_test_acc": 0.25, "source_val_acc": 0.9}]
  )
  calls = []
  monkeypatch.setattr(trainer, "train_and_evaluate", _fake_training(calls, fail=("dan",)))
  assert (
    grid.main(
      ["--tasks", "uci2ucim", "--methods", "source_only,dan,dann", "--seeds", "0,1", "--out", out]
    )
    == 0
  )
  # source_only seed 0 had a summary: not retrained; dan crashed on both seeds, dann still ran.
  assert calls == [("source_only", 1), ("dan", 0), ("dan", 1), ("dann", 0), ("dann", 1)]
  results = json.load(open(os.path.join(out, "results.json")))["results"]
  errors = [(r["method"], r["seed"]) for r in results if "error" in r]
  assert errors == [("dan", 0), ("dan", 1)]
  assert os.path.exists(os.path.join(out, "runs", "uci2ucim", "dan", "seed_0", "error.txt"))
  md = open(os.path.join(out, "results.md")).read()
  assert "| uci2ucim | dan | 0 (2 failed) |" in md
  # source_only: seed 0 reused at 25 %, seed 1 trained at 51 % → 38.0 ± 13.0.
  assert "| uci2ucim | source_only | 2 | 38.0 ± 13.0 |" in md


def test_selection_table_reports_what_each_criterion_picks(tmp_path):
  out = str(tmp_path)
  evals = {
    0: [
      {"step": 10, "target_test_acc": 0.40, "source_val_acc": 0.95, "sel_snd": 1.0},
      {"step": 20, "target_test_acc": 0.60, "source_val_acc": 0.90, "sel_snd": 3.0},
      {"step": 30, "target_test_acc": 0.50, "source_val_acc": 0.92, "sel_snd": 2.0},
    ],
    1: [
      {"step": 10, "target_test_acc": 0.70, "source_val_acc": 0.80, "sel_snd": 5.0},
      {"step": 20, "target_test_acc": 0.30, "source_val_acc": 0.99, "sel_snd": 4.0},
    ],
  }
  results = []
  for seed, rows in evals.items():
    _write_run(out, "t", "dann", seed, rows)
    results.append({"task": "t", "method": "dann", "seed": seed})
  md, data = grid.selection_table(out, results, ["t"], ["dann"])
  picked = data["t/dann"]
  assert picked["last"] == [0.50, 0.30]
  assert picked["oracle"] == [0.60, 0.70]
  assert picked["source_val_acc"] == [0.40, 0.30]
  assert picked["sel_snd"] == [0.60, 0.70]
  assert picked["sel_neg_dev"] == []  # not logged by these runs: left out, not zero
  header = md.splitlines()[0]
  assert header.startswith("| task | method | last |") and header.endswith("| oracle |")
  row = md.splitlines()[2].split(" | ")
  assert row[header.split(" | ").index("sel_snd")] == "65.0 ± 5.0"
  # A criterion only one of the two runs logged says so.
  del evals[1][0]["sel_snd"], evals[1][1]["sel_snd"]
  _write_run(out, "t", "dann", 1, evals[1])
  md, _ = grid.selection_table(out, results, ["t"], ["dann"])
  row = md.splitlines()[2].split(" | ")
  assert row[header.split(" | ").index("sel_snd")] == "60.0 ± 0.0 (n=1)"
  assert row[header.split(" | ").index("source_val_acc")] == "35.0 ± 5.0"


@pytest.mark.parametrize(
  "bad, message",
  [
    (["--methods", "dann,nope"], "--methods: no config experiments/digits/nope.py"),
    (["--tasks", "uci2ucim,nope"], "task: unknown 'nope'"),
    (["--set", "train.stepz=5"], "--set train.stepz=5: unknown config field"),
    (["--seeds", "0,one"], "--seeds: '0,one' is not a comma-separated list of integers"),
    (["--experiments", "experiments/nope"], "--experiments: experiments/nope: no such directory"),
    (["--baseline", "dan"], "--baseline: 'dan' is not one of --methods"),
  ],
)
def test_a_typo_fails_before_any_run(tmp_path, monkeypatch, capsys, bad, message):
  calls = []
  monkeypatch.setattr(trainer, "train_and_evaluate", _fake_training(calls))
  argv = [
    "--tasks",
    "uci2ucim",
    "--methods",
    "dann",
    "--seeds",
    "0",
    "--out",
    str(tmp_path / "g"),
    *bad,
  ]
  with pytest.raises(ConfigError, match=re.escape(message)):
    grid.main(argv)
  assert run_tool("grid", argv) == 2
  captured = capsys.readouterr()
  assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
  assert message in captured.err and captured.out == ""
  assert calls == [] and not os.listdir(tmp_path)


def test_set_refuses_what_a_cast_would_silently_change():
  from jaxdapt import configs

  c = configs.digits_config("syn2uci")
  grid.apply_overrides(
    c,
    [
      "train.steps=7",
      "optim.lr=1",
      "model.conv_kernel=xla",
      "model.head_hidden=[5, 6]",
      "train.progress_bar=false",
    ],
  )
  assert (c.train.steps, c.model.conv_kernel, c.model.head_hidden) == (7, "xla", (5, 6))
  assert type(c.optim.lr) is float and c.optim.lr == 1.0 and c.train.progress_bar is False
  for bad, message in [
    ("train.steps=2.5", "the field holds int 7; got float 2.5"),
    ("train.steps=true", "holds int 7; got bool True"),
    ("optim.lr=true", "holds float 1.0; got bool True"),
    ("train.steps=abc", "'abc' is not JSON"),
    ("model.head_hidden=3", "holds tuple (5, 6); got int 3"),
    ("train.steps", "expected FIELD=VALUE"),
    ("train.stepz=3", "unknown config field; fields of train: "),
    ("trian.steps=3", "did you mean 'train'?"),
  ]:
    with pytest.raises(ConfigError) as e:
      grid.apply_overrides(c, [bad])
    assert str(e.value).startswith(f"--set {bad}: ") and message in str(e.value), e.value
  assert c.train.steps == 7 and c.optim.lr == 1.0  # a refused value changes nothing


def test_table_only_trains_nothing_and_marks_clear_gains(tmp_path, monkeypatch):
  out = str(tmp_path)
  accs = {"source_only": (0.40, 0.42, 0.41), "dann": (0.50, 0.52, 0.51), "dan": (0.42, 0.50)}
  for method, values in accs.items():
    for seed, acc in enumerate(values):
      _write_run(out, "uci2ucim", method, seed, [{"step": 1, "target_test_acc": acc}])
  calls = []
  monkeypatch.setattr(trainer, "train_and_evaluate", _fake_training(calls))
  assert (
    grid.main(
      [
        "--tasks",
        "uci2ucim",
        "--methods",
        "source_only,dann,dan",
        "--seeds",
        "0,1,2",
        "--out",
        out,
        "--table-only",
      ]
    )
    == 0
  )
  assert calls == []
  md = open(os.path.join(out, "results.md")).read()
  # dann: +10.0 with stds of 0.8 → clear; dan: +5.0 but std 4.0 → not clear; seed 2 not run.
  assert "| uci2ucim | dann | 3 | 51.0 ± 0.8 (+10.0, > 2 std) |" in md
  assert "| uci2ucim | dan | 2 (1 not run) | 46.0 ± 4.0 (+5.0) |" in md
  # --baseline dann: source_only's −10.0 is beyond noise too (either sign is marked).
  grid.main(
    ["--tasks", "uci2ucim", "--methods", "source_only,dann", "--seeds", "0,1,2"]
    + ["--out", out, "--table-only", "--baseline", "dann"]
  )
  md = open(os.path.join(out, "results.md")).read()
  assert "| uci2ucim | source_only | 3 | 41.0 ± 0.8 (-10.0, > 2 std) |" in md
  assert "| uci2ucim | dann | 3 | 51.0 ± 0.8 |" in md


def test_two_stage_methods_start_from_their_stage1_run(tmp_path, monkeypatch):
  """ADDA/DANN+BSP/TENT/SHOT name their stage 1 (STAGE1): the grid trains it once per task and seed,
  passes its workdir as model.init_from, and a grid-wide override skips GRID_PINNED fields."""
  out = str(tmp_path / "grid")
  seen = []
  fake = _fake_training([])

  def recording(config, workdir):
    seen.append((config.method.name, config.seed, config.model.init_from, config.train.steps))
    return fake(config, workdir)

  monkeypatch.setattr(trainer, "train_and_evaluate", recording)
  assert (
    grid.main(
      [
        "--tasks",
        "uci2ucim",
        "--methods",
        "adda,dann_bsp,tent",
        "--seeds",
        "0",
        "--out",
        out,
        "--set",
        "train.steps=7",
      ]
    )
    == 0
  )
  so_dir = os.path.abspath(os.path.join(out, "runs", "uci2ucim", "source_only", "seed_0"))
  tent_steps = grid.load_config("tent", "uci2ucim", "experiments/digits").train.steps
  assert tent_steps != 7
  # source_only once (reused by tent), both stage-2 runs from its workdir; TENT keeps its
  # one pass over the test stream.
  assert seen == [
    ("source_only", 0, "", 7),
    ("adda", 0, so_dir, 7),
    ("dann", 0, so_dir, 7),
    ("tent", 0, so_dir, tent_steps),
  ]


def test_a_failed_stage1_is_reported_on_the_stage2_run(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(trainer, "train_and_evaluate", _fake_training(calls, fail=("source_only",)))
  out = str(tmp_path / "grid")
  assert (
    grid.main(["--tasks", "uci2ucim", "--methods", "adda,dann", "--seeds", "0", "--out", out]) == 0
  )
  assert calls == [("source_only", 0), ("dann", 0)]  # adda not attempted; dann still ran
  results = json.load(open(os.path.join(out, "results.json")))["results"]
  assert results[0]["error"].startswith("stage 1 (source_only) failed: FloatingPointError")


def test_methods_all_trains_every_experiment_once(tmp_path, monkeypatch):
  trained = []
  fake = _fake_training([])
  monkeypatch.setattr(
    trainer,
    "train_and_evaluate",
    lambda config, workdir: (trained.append(workdir.split(os.sep)[-2]), fake(config, workdir))[1],
  )
  out = str(tmp_path / "grid")
  assert grid.main(["--tasks", "uci2ucim", "--methods", "all", "--seeds", "0", "--out", out]) == 0
  files = sorted(
    f[:-3] for f in os.listdir("experiments/digits") if f.endswith(".py") and f != "default.py"
  )
  # Stage-1 runs (source_only, shot_source) are trained once although three methods need them.
  assert sorted(trained) == files
  rows = [
    line.split(" | ")[1]
    for line in open(os.path.join(out, "results.md"))
    if line.startswith("| uci2ucim |")
  ]
  assert rows[0] == "source_only" and rows[-1] == "target_oracle" and len(rows) == 2 * len(files)


def test_a_sigterm_stops_the_grid_without_marking_the_run_finished(tmp_path, monkeypatch, capsys):
  """The trainer answers SIGTERM with a checkpoint and {'stopped_at': step}; the grid must
  stop there and not write that run's summary.json, or a rerun would reuse a partial run."""
  out = str(tmp_path / "grid")
  calls = []
  fake = _fake_training(calls)
  monkeypatch.setattr(
    trainer,
    "train_and_evaluate",
    lambda config, workdir: (
      {"stopped_at": 3} if config.method.name == "dan" else fake(config, workdir)
    ),
  )
  args = ["--tasks", "uci2ucim", "--methods", "dann,dan,deep_coral", "--seeds", "0", "--out", out]
  with pytest.raises(SystemExit) as e:
    grid.main(args)
  assert e.value.code == 75 and "stopped at step 3" in capsys.readouterr().out
  assert calls == [("dann", 0)]  # deep_coral not started
  assert not os.path.exists(os.path.join(out, "runs", "uci2ucim", "dan", "seed_0", "summary.json"))
  monkeypatch.setattr(trainer, "train_and_evaluate", fake)
  assert grid.main(args) == 0  # the rerun trains dan and deep_coral, reuses dann
  assert calls == [("dann", 0), ("dan", 0), ("deep_coral", 0)]


def test_rows_are_experiments_not_trainer_method_names(tmp_path, monkeypatch):
  """dann_bsp and dsbn train method 'dann'; each keeps its own row (dann_bsp after its
  stage 1, source_only)."""
  calls = []
  monkeypatch.setattr(trainer, "train_and_evaluate", _fake_training(calls))
  out = str(tmp_path / "grid")
  assert (
    grid.main(
      ["--tasks", "uci2ucim", "--methods", "dann,dann_bsp,dsbn", "--seeds", "0", "--out", out]
    )
    == 0
  )
  assert [m for m, _ in calls] == ["dann", "source_only", "dann", "dann"]
  md = open(os.path.join(out, "results.md")).read()
  for name in ("dann", "dann_bsp", "dsbn"):
    assert f"| uci2ucim | {name} | 1 |" in md


def test_costs_table_reports_what_each_method_trains_and_stores(tmp_path, monkeypatch):
  """--costs: trainable parameters and optimizer state as `jaxdapt optim` counts them, the
  newest checkpoint's bytes and ms/step from each run's files (mean over seeds)."""
  out = str(tmp_path / "grid")
  fake = _fake_training([])

  def with_files(config, workdir):
    summary = fake(config, workdir)
    step = os.path.join(workdir, "checkpoints", "4")
    os.makedirs(step)
    with open(os.path.join(step, "state"), "wb") as f:
      f.write(b"x" * (1000 + config.seed))
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"kind": "train", "step": 4, "images_per_s": 640.0}) + "\n")
    return summary

  monkeypatch.setattr(trainer, "train_and_evaluate", with_files)
  args = ["--tasks", "uci2ucim", "--methods", "source_only,dann", "--seeds", "0,1"]
  assert grid.main([*args, "--out", out, "--costs"]) == 0
  with open(os.path.join(out, "results.json")) as f:
    costs = json.load(f)["costs"]
  so, dann = costs["uci2ucim/source_only"], costs["uci2ucim/dann"]
  assert so["trainable"] == so["parameters"] and dann["trainable"] > so["trainable"]  # + disc
  assert so["checkpoint_bytes"] == [1000, 1001]
  # source_only reads 64 images a step, DANN 128: 0.1 s and 0.2 s at 640 images/s.
  assert so["step_s"] == pytest.approx([0.1, 0.1]) and dann["step_s"] == pytest.approx([0.2] * 2)
  md = open(os.path.join(out, "results.md")).read()
  assert re.search(
    r"\| uci2ucim \| dann \| [\d,]+ \(100\.00 %\) \| [\d.]+ \| 0\.0 \| 200 ± 0 \|", md
  )
