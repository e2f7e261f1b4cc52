"""Weight files: safe reading, strict conversion, the CLI, merge_into, and convert -> fine-tune."""

from __future__ import annotations

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from test_weights_torch_refs import build, numpy_state_dict, randomize

from jaxdapt.models import get_model
from jaxdapt.tools.main import run_tool
from jaxdapt.tools.weights import main
from jaxdapt.weights import (
  PretrainedWeights,
  WeightsError,
  convert,
  guess_arch,
  load_pretrained,
  merge_into,
  read_tensors,
)


@pytest.fixture(scope="module")
def resnet18_sd() -> dict:
  return numpy_state_dict(randomize(build("resnet18"), seed=1))


# ---------------------------------------------------------------- formats
def test_safetensors_and_torch_files_read_the_same(tmp_path, resnet18_sd):
  save_file(resnet18_sd, str(tmp_path / "w.safetensors"))
  torch.save({k: torch.from_numpy(v) for k, v in resnet18_sd.items()}, tmp_path / "w.pth")
  nested = {
    "state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in resnet18_sd.items()},
    "epoch": 3,
  }
  torch.save(nested, tmp_path / "ckpt.bin")
  for name in ("w.safetensors", "w.pth", "ckpt.bin"):
    got = read_tensors(tmp_path / name)
    assert set(got) == set(resnet18_sd), name
    np.testing.assert_array_equal(
      got["layer1.0.conv1.weight"], resnet18_sd["layer1.0.conv1.weight"]
    )
    assert got["bn1.num_batches_tracked"].dtype == np.int64


def test_unreadable_files_raise_weights_error(tmp_path):
  with pytest.raises(WeightsError, match="does not exist"):
    read_tensors(tmp_path / "nope.pth")
  (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
  with pytest.raises(WeightsError, match="safetensors"):
    read_tensors(tmp_path / "junk.safetensors")
  (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
  with pytest.raises(WeightsError, match="refused to load: not a state_dict"):
    read_tensors(tmp_path / "junk.pth")
  torch.save([torch.zeros(2)], tmp_path / "list.pt")
  with pytest.raises(WeightsError, match="not a state_dict"):
    read_tensors(tmp_path / "list.pt")


class _Exploit:
  """Unpickling this would call os.system and create a marker file."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path, how):
  marker = tmp_path / "pwned"
  payload = {"conv1.weight": torch.zeros(1), "evil": _Exploit(str(marker))}
  path = tmp_path / "evil.pth"
  if how == "torch.save":
    torch.save(payload, path)
  else:
    path.write_bytes(pickle.dumps(payload))
  expected = (
    "would execute code on load .it calls posix.system"
    if how == "torch.save"
    else "refused to load: not a state_dict"
  )  # protocol-4 opcodes are refused first
  with pytest.raises(WeightsError, match=expected):
    read_tensors(path)
  assert not marker.exists()
  with pytest.raises(WeightsError, match=expected):
    main(["inspect", str(path)])
  assert run_tool("weights", ["inspect", str(path)]) == 2 and not marker.exists()


# ---------------------------------------------------------------- strict conversion
def test_missing_extra_and_misshaped_tensors_are_each_named(resnet18_sd):
  sd = dict(resnet18_sd)
  del sd["layer2.0.bn1.running_var"], sd["layer4.1.conv2.weight"]
  sd["layer5.0.conv1.weight"] = np.zeros((3, 3), np.float32)
  sd["layer3.0.conv1.weight"] = np.zeros((256, 128, 1, 1), np.float32)
  with pytest.raises(WeightsError) as e:
    convert(sd, "resnet18", "torchvision")
  msg = str(e.value)
  for name in (
    "2 missing",
    "layer2.0.bn1.running_var",
    "layer4.1.conv2.weight",
    "1 unexpected",
    "layer5.0.conv1.weight",
    "1 mis-shaped",
    "layer3.0.conv1.weight: file [256, 128, 1, 1], resnet18 expects [256, 128, 3, 3]",
  ):
    assert name in msg
  with pytest.raises(WeightsError, match="resnet50 weights come from torchvision, timm"):
    convert(resnet18_sd, "resnet50", "keras")
  with pytest.raises(WeightsError, match="missing.*layer1.0.conv3.weight"):
    convert(resnet18_sd, "resnet50", "torchvision")


def test_head_is_skipped_unless_kept_and_counters_ignored(resnet18_sd):
  conv = convert(resnet18_sd, "resnet18", "torchvision")
  assert set(conv.params) == {"backbone"} and conv.num_classes == 1000
  targets = {k: t for k, _, t in conv.rows}
  assert targets["fc.weight"] == "skipped (head)"
  assert targets["bn1.num_batches_tracked"].startswith("ignored")
  assert targets["layer2.0.downsample.0.weight"] == (
    "params/backbone/layer2_0/downsample_conv/kernel (OIHW->HWIO)"
  )
  assert targets["layer2.0.downsample.1.running_mean"] == (
    "batch_stats/backbone/layer2_0/downsample_bn/mean"
  )
  np.testing.assert_array_equal(
    conv.batch_stats["backbone"]["bn1"]["var"], resnet18_sd["bn1.running_var"]
  )
  kept = convert(resnet18_sd, "resnet18", "torchvision", keep_head=True)
  np.testing.assert_array_equal(kept.params["head"]["out"]["kernel"], resnet18_sd["fc.weight"].T)
  no_head = {k: v for k, v in resnet18_sd.items() if not k.startswith("fc.")}
  assert convert(no_head, "resnet18", "torchvision").num_classes is None
  with pytest.raises(WeightsError, match="fc.weight/.bias"):
    convert(no_head, "resnet18", "torchvision", keep_head=True)


def _shapes_only(name: str, source: str = "torchvision") -> dict:
  with torch.device("meta"):
    sd = build(name, source).state_dict()
  return {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in sd.items()}


@pytest.mark.parametrize(
  "name",
  [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "vgg11",
    "vgg13_bn",
    "vgg16",
    "vgg19_bn",
    "vit_s16",
    "vit_b16",
  ],
)
def test_guess_arch(name):
  assert guess_arch(_shapes_only(name)) == name


# ---------------------------------------------------------------- merge_into
def _pretrained(params, batch_stats=None, arch="toy") -> PretrainedWeights:
  return PretrainedWeights(params, batch_stats or {}, {"arch": arch})


def test_merge_into_is_strict_and_honours_dont_load():
  init = {
    "backbone": {"conv": {"kernel": jnp.zeros((3, 3, 1, 4)), "bias": jnp.zeros(4)}},
    "head": {"out": {"kernel": jnp.zeros((4, 10)), "bias": jnp.zeros(10)}},
  }
  stats = {"backbone": {"bn": {"mean": jnp.zeros(4), "var": jnp.ones(4)}}}
  pre = {
    "backbone": {"conv": {"kernel": np.ones((3, 3, 1, 4)), "bias": np.ones(4)}},
    "head": {"out": {"kernel": np.ones((4, 1000)), "bias": np.ones(1000)}},
  }
  pre_stats = {"backbone": {"bn": {"mean": np.full(4, 2.0), "var": np.full(4, 3.0)}}}
  params, bs, report = merge_into(init, stats, _pretrained(pre, pre_stats), dont_load=("head/.*",))
  assert float(params["backbone"]["conv"]["kernel"][0, 0, 0, 0]) == 1.0
  assert params["backbone"]["conv"]["kernel"].dtype == jnp.float32
  assert float(bs["backbone"]["bn"]["var"][0]) == 3.0
  assert float(params["head"]["out"]["kernel"][0, 0]) == 0.0  # kept at init
  assert set(report.kept_init) == {"head/out/kernel", "head/out/bias"}
  assert "backbone/bn/mean" in report.loaded and "loaded 4" in report.summary()
  with pytest.raises(WeightsError) as e:  # head shapes differ and nothing excuses them
    merge_into(init, stats, _pretrained(pre, pre_stats))
  assert "2 mis-shaped" in str(
    e.value
  ) and "params:head/out/kernel: pretrained [4, 1000], model [4, 10]" in str(e.value)
  extra = {**pre, "bottleneck": {"dense": {"kernel": np.ones((2, 2))}}}
  missing_stats = {"backbone": {"bn": {"mean": np.zeros(4)}}}
  with pytest.raises(WeightsError) as e:
    merge_into(init, stats, _pretrained(extra, missing_stats), dont_load=("head/.*",))
  msg = str(e.value)
  assert "1 missing from the weights: batch_stats:backbone/bn/var [4]" in msg
  assert "1 in the weights but not in the model: params:bottleneck/dense/kernel [2, 2]" in msg
  _, _, report = merge_into(
    init, stats, _pretrained(extra, pre_stats), dont_load=("head/.*", "bottleneck/.*")
  )
  assert report.unused == ("bottleneck/dense/kernel",)
  with pytest.raises(WeightsError, match="dont_load: invalid regex"):
    merge_into(init, stats, _pretrained(pre, pre_stats), dont_load=("head/(",))


# ---------------------------------------------------------------- CLI and end to end
def test_cli_inspect_lists_targets(tmp_path, resnet18_sd, capsys):
  save_file(resnet18_sd, str(tmp_path / "r18.safetensors"))
  assert main(["inspect", str(tmp_path / "r18.safetensors")]) == 0
  out = capsys.readouterr().out
  assert "fits resnet18 (torchvision)" in out
  assert "params/backbone/layer1_0/conv1/kernel (OIHW->HWIO)" in out
  assert "skipped (head)" in out
  bad = {k: v for k, v in resnet18_sd.items() if k != "bn1.bias"}
  save_file(bad, str(tmp_path / "bad.safetensors"))
  # A file that does not fit: the listing still prints, the exit status says so.
  assert run_tool("weights", ["inspect", str(tmp_path / "bad.safetensors")]) == 1
  out = capsys.readouterr().out
  assert "does NOT fit resnet18" in out and "bn1.bias" in out and "  conv1.weight " in out
  assert (
    run_tool("weights", ["inspect", str(tmp_path / "bad.safetensors"), "--arch", "resnet34"]) == 1
  )
  assert "does NOT fit resnet34" in capsys.readouterr().out


def test_cli_inspect_a_missing_file_is_one_line(tmp_path, capsys):
  assert run_tool("weights", ["inspect", str(tmp_path / "nope.safetensors")]) == 2
  captured = capsys.readouterr()
  assert captured.out == "" and captured.err == (
    f"error: weights file {str(tmp_path / 'nope.safetensors')!r} does not exist\n"
  )


def test_cli_import_errors_are_clear(tmp_path, resnet18_sd, capsys):
  save_file(resnet18_sd, str(tmp_path / "r18.safetensors"))
  args = [
    "import",
    "--arch",
    "resnet34",
    "--source",
    "torchvision",
    "--file",
    str(tmp_path / "r18.safetensors"),
    "--out",
    str(tmp_path / "out"),
  ]
  with pytest.raises(WeightsError, match="do not fit resnet34"):
    main(args)
  assert run_tool("weights", args) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "do not fit resnet34" in err and "missing:" in err
  assert "layer1.2.conv1.weight [64, 64, 3, 3]" in err
  assert not (tmp_path / "out").exists()
  args[2] = "resnet18"
  assert run_tool("weights", args) == 0 and run_tool("weights", args) == 2
  assert "--force" in capsys.readouterr().err
  assert run_tool("weights", args + ["--force"]) == 0
  with pytest.raises(WeightsError, match="holds resnet18 weights, but the model is resnet50"):
    load_pretrained(tmp_path / "out", arch="resnet50")
  with pytest.raises(WeightsError, match="not an imported-weights directory"):
    load_pretrained(tmp_path)


@pytest.fixture(scope="module")
def digits_resnet18(data_dir):
  """(model, images, labels, init variables): a 10-class resnet18 and a uci_digits batch.

  Normalised with torchvision's ImageNet mean/std, as metadata.json records them.
  """
  from jaxdapt.data import get_source

  src = get_source("uci_digits", "train", data_dir=data_dir)
  batch = [src[i] for i in range(16)]
  mean, std = (
    np.asarray([0.485, 0.456, 0.406], np.float32),
    np.asarray([0.229, 0.224, 0.225], np.float32),
  )
  x = (np.stack([b["image"] for b in batch]).astype(np.float32) / 255.0 - mean) / std
  y = np.asarray([b["label"] for b in batch])
  model = get_model("resnet18", num_classes=10)
  # jit: eager init compiles every initializer apart; rbg keys compile ~3x faster than threefry.
  init = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0, impl="rbg"))
  return model, x, y, init


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_convert_init_from_and_fine_tune_on_digits(
  tmp_path, resnet18_sd, digits_resnet18, fmt, data_dir
):
  path = tmp_path / f"resnet18.{fmt}"
  if fmt == "pth":
    torch.save({k: torch.from_numpy(v) for k, v in resnet18_sd.items()}, path)
  else:
    save_file(resnet18_sd, str(path))
  out = tmp_path / "imported"
  assert (
    main(
      [
        "import",
        "--arch",
        "resnet18",
        "--source",
        "torchvision",
        "--file",
        str(path),
        "--out",
        str(out),
      ]
    )
    == 0
  )
  meta = json.loads((out / "metadata.json").read_text())
  assert meta["arch"] == "resnet18" and meta["source"] == "torchvision"
  assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
  assert meta["resolution"] == 224 and meta["num_classes"] == 1000
  assert sorted(meta["skipped"]) == ["fc.bias", "fc.weight"]

  pre = load_pretrained(out, arch="resnet18")
  model, x, y, init = digits_resnet18
  params, batch_stats, report = merge_into(
    init["params"], init["batch_stats"], pre, dont_load=("head/.*",)
  )
  assert set(report.kept_init) == {"head/out/kernel", "head/out/bias"}
  np.testing.assert_array_equal(
    params["backbone"]["conv1"]["kernel"], resnet18_sd["conv1.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
    batch_stats["backbone"]["layer3_1"]["bn2"]["mean"], resnet18_sd["layer3.1.bn2.running_mean"]
  )
  np.testing.assert_array_equal(
    params["head"]["out"]["bias"], init["params"]["head"]["out"]["bias"]
  )
  if fmt == "safetensors":
    return  # both formats load identically; fine-tune once (the compile dominates CI time)

  # The trainer's own path: config.model.init_from → strict merge → fine-tune with a new head.
  from jaxdapt import config as config_lib
  from jaxdapt import configs, trainer

  c = configs.with_task(config_lib.base_config(), "uci2ucim")
  c.data.data_dir = data_dir
  c.data.batch_size = 16
  c.data.eval_batch_size = 256
  c.model.name = "resnet18"
  c.model.head_hidden = ()
  c.model.init_from = str(out)
  c.method.name = "source_only"
  c.optim.lr = 0.05
  c.train.steps = 6
  c.train.log_every = 3
  c.train.eval_every = 6
  c.train.checkpoint_every = 6
  c.train.progress_bar = False
  c.train.selection_points = 0  # evaluation beyond accuracy is not under test here
  c.data.source_val_split = f"{c.data.source_val_split}[:64]"
  c.data.target_test_split = f"{c.data.target_test_split}[:64]"
  exp = trainer.build(c)
  state = trainer.load_init_from(exp, exp.init(jax.random.key(0)))
  np.testing.assert_array_equal(
    jax.device_get(state.params["model"]["backbone"]["conv1"]["kernel"]),
    resnet18_sd["conv1.weight"].transpose(2, 3, 1, 0),
  )
  summary = trainer.train_and_evaluate(c, str(tmp_path / "run"))
  rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if r["kind"] == "train"]
  assert len(losses) == 2 and np.all(np.isfinite(losses)), losses
  assert summary["steps"] == 6
  # Fine-tuned, not frozen: the backbone moved away from the imported values, and the
  # 10-way head is the new one (shape of the digits task, not the file's 1000-way fc).
  from jaxdapt import checkpoint

  tuned, _, step = checkpoint.load_model_variables(str(tmp_path / "run"))
  assert step == 6
  assert not np.array_equal(
    tuned["backbone"]["conv1"]["kernel"], resnet18_sd["conv1.weight"].transpose(2, 3, 1, 0)
  )
  assert tuned["head"]["out"]["kernel"].shape == (512, 10)
