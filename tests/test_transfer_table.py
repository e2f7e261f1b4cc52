"""The transfer table (jaxdapt/tools/transfer_table.py): a tiny end-to-end table, reuse, shards,
the negative-transfer flag, name checks, and the probes' k examples."""

import functools
import json
import os

import jax
import pytest

from jaxdapt import config as config_lib
from jaxdapt import trainer
from jaxdapt.errors import ConfigError
from jaxdapt.methods.fewshot import LABELED
from jaxdapt.tools import grid
from jaxdapt.tools import transfer_table as tt
from jaxdapt.tools.main import run_tool
from jaxdapt.trainer import loop as trainer_loop

SOURCE = "tiny"


def _tiny_pretrain_config(source, overrides=()):
  """LeNet with BatchNorm pretrained 2 steps on uci_digits_m: the table's plumbing, not
  its numbers (its conv1/bn1 are the frozen first stage, conv<i>/bn<i> LLRD's depths)."""
  if source != SOURCE:
    raise ValueError(f"tiny pretrain: source {source!r}; allowed: {SOURCE}")
  c = config_lib.base_config()
  c.data.source, c.data.source_val_split, c.data.target = "uci_digits_m", "test", "uci_digits"
  c.model.name, c.model.norm, c.model.head_hidden = "lenet", "batch", ()
  c.train.steps = c.train.log_every = c.train.eval_every = c.train.checkpoint_every = 2
  c.train.selection_points = 0
  c = grid.apply_overrides(c, overrides)
  c.seed = tt.PRETRAIN_SEED
  return c


@pytest.fixture
def xla_cache(tmp_path, monkeypatch):
  """A fresh persistent compilation cache holding even the tiny programs (each strategy
  compiles once, as in a real table), and the session's cache settings back afterwards."""
  from jax.experimental.compilation_cache import compilation_cache

  from jaxdapt.runtime import compile_cache

  monkeypatch.setattr(
    compile_cache, "enable", functools.partial(compile_cache.enable, min_compile_time_s=0)
  )
  names = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
  )
  saved = {n: getattr(jax.config, n) for n in names}
  compilation_cache.reset_cache()  # earlier tests compiled without one
  yield str(tmp_path / "xla_cache")
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


@pytest.fixture
def tiny(monkeypatch, data_dir, xla_cache):  # noqa: F811
  """--set arguments of a tiny table, on one device (half the compile time); k examples
  are drawn from the first 200 uci_digits train images, accuracy is on 64 test images."""
  monkeypatch.setattr(tt, "pretrain_config", _tiny_pretrain_config)
  build = trainer.build
  one = lambda config, devices=None: build(config, jax.devices()[:1])
  monkeypatch.setattr(trainer, "build", one)
  monkeypatch.setattr(trainer_loop, "build", one)  # the training loop's own reference
  sets = [
    f"data.data_dir={data_dir}",
    "train.steps=2",
    "data.batch_size=8",
    "data.eval_batch_size=64",
    "data.target_split=train[:200]",
    "data.target_test_split=test[:64]",
    f"train.compilation_cache_dir={xla_cache}",
  ]
  return [a for s in sets for a in ("--set", s)]


def _summary(monkeypatch, argv):
  """tt.main(argv) (its exit status 0) and the summary its run_table returned."""
  run_table, summaries = tt.run_table, []

  def recording(*args):
    summaries.append(run_table(*args))
    return summaries[-1]

  monkeypatch.setattr(tt, "run_table", recording)
  assert tt.main(argv) == 0
  monkeypatch.setattr(tt, "run_table", run_table)
  assert len(summaries) == 1
  return summaries[0]


def test_tiny_table_shards_reuse_and_same_k_examples(tiny, tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "out")
  args = ["--out", out, "--seeds", "1", "--k", "1,2", "--sources", SOURCE, *tiny]
  shards = [_summary(monkeypatch, args + ["--shard", f"{i}/2"]) for i in range(2)]
  assert not os.path.exists(os.path.join(out, "transfer_table.md"))  # shards only train
  # 2 scratch + 8 strategies x 2 k cells + the pretraining, split between the shards
  # (shard 1 waits for the pretraining that shard 0 owns: here it is already done).
  assert sum(s["trained_now"] for s in shards) == 2 + 8 * 2 + 1
  assert all(s["trained_now"] > 0 for s in shards)

  calls = []
  monkeypatch.setattr(trainer, "train_and_evaluate", lambda *a, **k: calls.append(a))
  monkeypatch.setattr(tt, "probe_accuracy", lambda *a, **k: calls.append(a))
  summary = _summary(monkeypatch, args + ["--table-only"])  # renders both shards' runs
  again = _summary(monkeypatch, args)  # a whole invocation over finished runs trains nothing
  assert calls == [] and again["trained_now"] == 0 and not again["failed"]
  assert summary["table"] == again["table"]

  md = open(os.path.join(out, "transfer_table.md")).read()
  assert md in capsys.readouterr().out
  saved = json.load(open(os.path.join(out, "transfer_table.json")))
  assert saved["table"] == again["table"] and saved["trained_now"] == 0
  assert "| source | strategy | k=1 | k=2 |" in md
  for strategy in tt.STRATEGIES:
    source = "–" if strategy == "scratch" else SOURCE
    row = next(line for line in md.splitlines() if line.startswith(f"| {source} | {strategy} |"))
    assert row.count(" ± ") >= 2 and "–" not in row[len(f"| {source} |") :], row
  assert set(saved["table"]) == {
    f"{'none' if s == 'scratch' else SOURCE}/{s}/k={k}" for s in tt.STRATEGIES for k in ("1", "2")
  }
  assert all("verdict" in v for k, v in saved["table"].items() if "/scratch/" not in k)

  # The probes saw exactly the examples the fine-tuning runs trained on.
  sets = tiny[1::2]
  model = tt.check_configs([SOURCE], sets)
  for k in (1, 2):
    config = tt.stage_config(
      tt.TRAINED["finetune"][0], k, 1, model, tt.pretrain_dir(out, SOURCE), sets
    )
    trained_on = trainer.build(config).sources[LABELED].indices.tolist()
    assert len(trained_on) == 10 * k
    for strategy in tt.PROBES:
      run = json.load(
        open(os.path.join(tt.cell_dir(out, tt.Cell(SOURCE, strategy, k, 1)), "summary.json"))
      )
      assert run["labeled_indices"] == trained_on


def _results(accuracies):
  """{Cell: summary} from {(source, strategy): per-seed accuracies} at k = 5."""
  return {
    tt.Cell(src, st, 5, seed): {"target_acc_last": a}
    for (src, st), accs in accuracies.items()
    for seed, a in enumerate(accs)
  }


def test_negative_transfer_flag_exactly_when_losing_beyond_noise():
  results = _results(
    {
      ("", "scratch"): [0.60, 0.62, 0.64],
      ("a", "finetune"): [0.50, 0.51, 0.55],  # −10 ± 0.8: flagged
      ("a", "knn"): [0.62, 0.60, 0.63],  # −0.3 ± 1.7: noise
      ("a", "l2sp"): [0.70, 0.72, 0.74],
    }
  )  # +10: helps
  md, data = tt.tabulate(results, ["a"], ["scratch", "finetune", "knn", "l2sp"], [5], 3)
  lines = {line.split(" | ")[1]: line for line in md.splitlines()[2:]}
  assert "**NEG** (−10.0 ± 0.8)" in lines["finetune"]
  assert data["a/finetune/k=5"]["negative_transfer"] is True
  assert data["a/finetune/k=5"]["verdict"] == (
    "NEGATIVE TRANSFER: transfer loses by 10.0 ± 0.8 points"
  )
  assert "NEG" not in lines["knn"] and "(−0.3 ± 1.7, noise)" in lines["knn"]
  assert data["a/knn/k=5"]["negative_transfer"] is False
  assert "NEG" not in lines["l2sp"] and "−" not in lines["l2sp"]
  assert "NEG" not in lines["scratch"] and "difference" not in data["none/scratch/k=5"]
  assert "62.0 ± 1.6" in lines["scratch"]


@pytest.mark.parametrize(
  "flag, value, allowed",
  [
    ("--strategies", "finetune,fintune", "allowed: scratch, linear_probe, knn, finetune"),
    ("--sources", "fashion,fashon", "allowed: fashion, syn_digits"),
  ],
)
def test_a_typo_in_names_lists_the_allowed_ones(tmp_path, capsys, flag, value, allowed):
  argv = ["--out", str(tmp_path), flag, value]
  with pytest.raises(ConfigError, match=f"^{flag}: "):
    tt.main(argv)
  assert run_tool("transfer-table", argv) == 2
  captured = capsys.readouterr()
  err = captured.err
  assert err.startswith(f"error: {flag}: ") and err.count("\n") == 1
  assert value.split(",")[1] in err and allowed in err, err
  assert captured.out == "" and not os.listdir(tmp_path)


# ------------------------------------------------------------------------------ PEFT


def _flat(config, prefix=""):
  """{'group.field': value} of a ConfigDict (the fields a strategy's overrides change)."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def test_peft_strategies_are_finetune_plus_peft_overrides_and_not_in_all():
  model = _tiny_pretrain_config(SOURCE).model
  full = _flat(tt.stage_config(tt.TRAINED["finetune"][0], 4, 1, model, "pre"))
  expected = {
    "bitfit": {"peft.method": "bitfit"},
    "lora_r4": {"peft.method": "lora", "peft.lora_rank": 4, "peft.lora_alpha": 8},
    "lora_r16": {"peft.method": "lora", "peft.lora_rank": 16, "peft.lora_alpha": 8},
    "head_only": {"peft.method": "head_only"},
  }
  for strategy, fields in expected.items():
    (stage,) = tt.TRAINED[strategy]
    config = tt.stage_config(stage, 4, 1, model, "pre")
    trainer.validate(config)
    changed = {k: v for k, v in _flat(config).items() if full.get(k) != v}
    assert changed == {k: v for k, v in fields.items() if full[k] != v}, strategy
    assert all(k.startswith("peft.") for k in changed) and changed
  # --strategies all keeps the transfer table's strategies; PEFT ones are named.
  assert tt._names("all", tt.ALLOWED, "--strategies", tt.STRATEGIES) == list(tt.STRATEGIES)
  assert not set(tt.PEFT) & set(tt.STRATEGIES)
  assert tt._names("lora_r4,bitfit", tt.ALLOWED, "--strategies") == ["lora_r4", "bitfit"]


def test_checkpoint_bytes_and_step_time_from_a_fake_workdir(tmp_path):
  run = tmp_path / "run"
  for step, sizes in ((50, (7,)), (100, (10, 20, 3))):
    top = run / "checkpoints" / str(step) / "state"
    top.mkdir(parents=True)
    for i, n in enumerate(sizes):
      (top / f"f{i}").write_bytes(b"x" * n)
  (run / "checkpoints" / "tmp.orbax").mkdir()  # not a step
  rows = [
    {"step": 50, "kind": "train", "images_per_s": 10.0},  # holds the compile
    {"step": 100, "kind": "train", "images_per_s": 160.0},
    {"step": 100, "kind": "eval", "target_test_acc": 0.5},
  ]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert tt.checkpoint_bytes(str(run)) == 33  # the newest step only
  assert tt.step_seconds(str(run), 32) == pytest.approx(0.2)
  assert tt.checkpoint_bytes(str(tmp_path)) is None
  assert tt.step_seconds(str(tmp_path), 32) is None


def test_tiny_peft_cell_has_its_costs_and_verdicts(tiny, tmp_path, monkeypatch):
  """One LoRA cell end to end: the cost table's columns come out, and LoRA trains and
  keeps optimizer state for fewer parameters than full training."""
  out = str(tmp_path / "out")
  args = ["--out", out, "--seeds", "1", "--k", "1", "--sources", SOURCE, "--strategies"]
  summary = _summary(monkeypatch, [*args, "lora_r4", *tiny])
  assert not summary["failed"] and summary["trained_now"] == 3  # pretrain, scratch, lora
  costs = summary["costs"][SOURCE]
  assert list(costs) == ["scratch", "lora_r4"]
  full, lora = costs["scratch"], costs["lora_r4"]
  assert lora["peft"] == "lora r=4 α=8" and full["peft"] == "–"
  assert full["trainable"] == full["parameters"] and full["trainable_pct_of_full"] == 100
  assert 0 < lora["trainable"] < full["trainable"] < lora["parameters"]
  assert 0 < lora["optimizer_state_bytes"] < full["optimizer_state_bytes"]
  for row in (full, lora):
    assert row["checkpoint_bytes"]["mean"] > row["parameter_bytes"]
    assert row["step_ms"]["n"] == 1 and row["step_ms"]["mean"] > 0
  assert "verdict" in lora["accuracy"]["1"] and "vs_finetune" not in lora
  md = open(os.path.join(out, "transfer_table.md")).read()
  head = "| strategy | peft | trainable params | optimizer state | checkpoint | ms/step | k=1 |"
  assert head in md
  row = next(line for line in md.splitlines() if line.startswith("| lora_r4 | lora r=4 α=8 |"))
  assert f"{lora['trainable']:,} (" in row and " B (" in row and " ± " in row


def test_vpt_cells_need_a_vit_and_the_vit_pretraining_is_adamw_with_warmup():
  """syn_digits_vit pretrains vit_digits (AdamW, warmup 10 %); the VPT strategies are
  finetune + peft.method on it, and on a convolutional backbone a one-line ConfigError."""
  pre = tt.pretrain_config("syn_digits_vit")
  assert pre.model.name == "vit_digits" and pre.model.width == 0
  assert (pre.optim.name, pre.optim.warmup_steps) == ("adamw", pre.train.steps // 10)
  assert tt.pretrain_config("syn_digits").model.name == "resnet18"
  full = _flat(tt.stage_config(tt.TRAINED["finetune"][0], 4, 1, pre.model, "pre"))
  for mode in ("vpt_shallow", "vpt_deep"):
    config = tt.stage_config(tt.TRAINED[mode][0], 4, 1, pre.model, "pre")
    trainer.validate(config)
    changed = {k: v for k, v in _flat(config).items() if full.get(k) != v}
    assert changed == {"peft.method": mode}
    assert config.model.name == "vit_digits" and config.optim.name == "sgd"
  with pytest.raises(ConfigError, match="^--strategies vpt_deep: "):
    tt.check_configs(["syn_digits"], [], ["vpt_deep"])


def test_bench_times_each_strategy_without_training(tiny, tmp_path, capsys):
  """--bench N: a row per trained strategy (not the probe), no run written, the table's
  times are the bench results' (positive), finetune's row the 1.00 reference."""
  out = tmp_path / "out"
  argv = ["--out", str(out), "--sources", SOURCE, "--k", "1", "--seeds", "1", *tiny]
  assert tt.main([*argv, "--strategies", "linear_probe,finetune,bitfit", "--bench", "2"]) == 0
  data = json.loads((out / "step_times.json").read_text())
  assert list(data["rows"]) == ["scratch", "finetune", "bitfit"] and data["steps"] == 2
  for r in data["rows"].values():  # 2 steps in 5 rounds: 2 rounds of one step, the median
    assert r["rounds"] == 2 and r["step_ms"] == pytest.approx(sum(r["round_ms"]) / 2)
  assert data["rows"]["bitfit"]["peft"] == "bitfit"
  md = (out / "step_times.md").read_text()
  finetune = data["rows"]["finetune"]["step_ms"]
  assert f"| finetune | – | {finetune:.1f} | 1.00 |" in md
  assert not (out / "runs").exists() and not (out / "pretrain").exists()
  with pytest.raises(ConfigError, match="--bench -1"):
    tt.main([*argv, "--bench", "-1"])
