"""The benchmark: the PyTorch twins are the same networks, steps and feature extractor
(so the ratio is honest), and every CLI mode runs and prints its fields."""

import json
import os
import re

import jax
import numpy as np
import pytest

from jaxdapt import configs, methods, sharding, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.tools import bench
from jaxdapt.tools.main import run_tool

torch = pytest.importorskip("torch")
from jaxdapt.tools import torch_ref  # noqa: E402  (needs torch)

IMAGE_SHAPE, NUM_CLASSES = (32, 32, 3), 10


def _digits_dann(batch: int = 64, steps: int = 1000):
  c = configs.digits_config("uci2ucim")
  c.method.name = "dann"
  c.data.batch_size = batch
  c.train.steps = steps
  return c


def _resnet(
  method: str = "dann",
  name: str = "resnet18",
  batch: int = 8,
  steps: int = 4,
  small_input: bool = False,
  width: int = 8,
):
  """A thin torchvision-layout ResNet, as `bench throughput` builds it."""
  c = bench.throughput_config(name, method, batch, "float32", [f"model.width={width}"])
  c.model.small_input, c.train.steps = small_input, steps
  return c


def _jax_experiment(config, image_shape=IMAGE_SHAPE):
  mesh = sharding.make_mesh()
  return trainer.build_functions(
    config, mesh, methods.get_method(config.method), image_shape, NUM_CLASSES
  )


def _random_batch(batch: int, seed: int = 0, image_shape=IMAGE_SHAPE) -> dict:
  rng = np.random.default_rng(seed)
  return {
    d: {
      "image": rng.integers(0, 256, (batch, *image_shape), dtype=np.uint8),
      "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32),
    }
    for d in ("source", "target", "target_labeled")
  }


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_torch_network_has_the_flax_parameter_count(norm):
  c = _digits_dann()
  c.model.norm = norm
  exp = _jax_experiment(c)
  params = jax.eval_shape(exp.init, jax.random.key(0)).params
  net = torch_ref.build_network(c, IMAGE_SHAPE, NUM_CLASSES)
  assert sum(p.numel() for p in net.parameters()) == _count(params)


@pytest.mark.parametrize(
  "name,method,small,width",
  [
    ("resnet18", "dann", False, 8),
    ("resnet50", "source_only", True, 8),
    ("resnext50_32x4d", "dann", False, 16),
  ],
)
def test_torch_resnet_twin_has_the_flax_parameters_and_statistics(name, method, small, width):
  c = _resnet(method, name, small_input=small, width=width)
  state = jax.eval_shape(_jax_experiment(c).init, jax.random.key(0))
  net = torch_ref.build_network(c, IMAGE_SHAPE, NUM_CLASSES)
  assert sum(p.numel() for p in net.parameters()) == _count(state.params)
  stats = sum(b.numel() for k, b in net.named_buffers() if "num_batches" not in k)
  assert stats == _count(state.batch_stats)
  assert hasattr(net, "discriminator") == (method == "dann")


def _same_losses(c, image_shape, batch: int, rtol: float):
  """Three updates of the JAX step and its twin from the same weights: the losses and the
  weights after them agree (a wrong reversal sign or momentum barely moves 3 losses)."""
  exp = _jax_experiment(c, image_shape)
  state = exp.init(jax.random.key(0))
  torch.manual_seed(0)
  step = torch_ref.TorchStep(c, image_shape, NUM_CLASSES)
  torch_ref.load_jax_params(step.net, *jax.device_get((state.params, state.batch_stats)))
  jax_losses, torch_losses = [], []
  for i in range(3):
    local = _random_batch(batch, seed=i, image_shape=image_shape)
    state, metrics = exp.update(
      state, sharding.global_batch({d: local[d] for d in exp.method.domains}, exp.mesh)
    )
    jax_losses.append(float(metrics["loss"]))
    torch_losses.append(float(step(step.to_device(local))))
  np.testing.assert_allclose(torch_losses, jax_losses, rtol=rtol)
  assert len(set(jax_losses)) == 3  # the weights moved between the compared steps
  moved = torch_ref.build_network(c, image_shape, NUM_CLASSES)
  torch_ref.load_jax_params(moved, *jax.device_get((state.params, state.batch_stats)))
  for (name, want), got in zip(moved.named_parameters(), step.net.parameters()):
    np.testing.assert_allclose(
      got.detach().numpy(), want.detach().numpy(), rtol=1e-3, atol=1e-5, err_msg=name
    )
  # Running statistics: torch updates running_var with the unbiased batch variance, Flax
  # with the biased one (models/resnet.py), so only the means are compared.
  for (name, want), got in zip(moved.named_buffers(), step.net.buffers()):
    if name.endswith("running_mean"):
      np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


def test_torch_and_jax_steps_give_the_same_losses_from_the_same_weights():
  """DANN on the digits net: forward, gradients (reversal included: the schedule ramps λ
  from step 1 of 4) and SGD-momentum updates agree."""
  _same_losses(_digits_dann(batch=16, steps=4), IMAGE_SHAPE, 16, rtol=2e-4)


@pytest.mark.parametrize("method", ["dann", "source_only", "target_only"])
def test_torch_and_jax_resnet_steps_give_the_same_losses(method):
  """The torchvision-layout ResNet-18 (stem, max-pool, downsampling shortcuts) under
  both steps of `bench throughput`, and target_only's (transfer-table --bench)."""
  _same_losses(_resnet(method), (48, 48, 3), 8, rtol=1e-3)


def test_torch_and_jax_feature_extractors_give_the_same_features():
  """Eval mode: both normalise with the running statistics (made non-trivial here)."""
  from jaxdapt import features

  c = _resnet("source_only", "resnet50")
  exp = _jax_experiment(c, (40, 40, 3))
  state = exp.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  stats = jax.tree.map(
    lambda x: np.asarray(x) + rng.uniform(0.1, 0.5, x.shape).astype(np.float32),
    jax.device_get(state.batch_stats),
  )
  images = _random_batch(8, image_shape=(40, 40, 3))["source"]["image"]
  want, _ = features.forward_fn(exp)(state.params, stats, sharding.global_batch(images, exp.mesh))
  extract = torch_ref.TorchFeatures(c, (40, 40, 3))
  params = jax.device_get(state.params)["model"]
  from jaxdapt.tools import torch_models

  torch_models.load_flax(extract.backbone, params["backbone"], stats["backbone"])
  got = extract(torch.from_numpy(images))
  np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_load_flax_names_every_tensor_that_does_not_fit():
  c = _resnet("dann")
  state = jax.device_get(jax.eval_shape(_jax_experiment(c).init, jax.random.key(0)))
  params = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), state.params)
  stats = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), state.batch_stats)
  wider = _resnet("dann")
  wider.model.head_hidden = (100, 50)
  with pytest.raises(ValueError) as e:
    torch_ref.load_jax_params(
      torch_ref.build_network(wider, IMAGE_SHAPE, NUM_CLASSES), params, stats
    )
  assert "head.hidden.1.weight: Flax (100, 100), torch (50, 100)" in str(e.value)
  del stats["backbone"]["bn1"]
  with pytest.raises(ValueError, match="bn1.running_mean: no Flax value"):
    torch_ref.load_jax_params(torch_ref.build_network(c, IMAGE_SHAPE, NUM_CLASSES), params, stats)


def test_unsupported_configs_are_named():
  c = _digits_dann()
  assert torch_ref.unsupported(c) is None
  c.method.name, c.optim.name = "dan", "adam"
  assert torch_ref.unsupported(c) == "no PyTorch reference for method.name 'dan', optim.name 'adam'"
  c = _resnet("source_only")
  assert torch_ref.unsupported(c) is None
  c.model.name, c.model.remat = "vit_s16", True
  assert torch_ref.unsupported(c) == "no PyTorch reference for model.name 'vit_s16', model.remat"
  # The twin trains every parameter from the step's lr: not a PEFT step, nor a warmup.
  c = _resnet("source_only")
  c.peft.method, c.optim.warmup_steps = "bitfit", 5
  assert torch_ref.unsupported(c) == "no PyTorch reference for peft.method, optim.warmup_steps"


def _bench(capsys, argv):
  """bench.main(argv) (exit status 0): (its stdout, the JSON of its last line)."""
  assert bench.main(argv) == 0
  out = capsys.readouterr().out
  return out, json.loads(out.splitlines()[-1])


def test_throughput_mode_prints_its_fields(capsys):
  out, result = _bench(
    capsys,
    [
      "throughput",
      "--model",
      "dann_digits",
      "--method",
      "dann",
      "--batch",
      "8",
      "--steps",
      "2",
      "--warmup",
      "1",
      "--no-torch",
    ],
  )
  # 8 fake devices: XLA's convs (jaxdapt's CPU kernels run on one device only)
  assert "dann step, dann_digits (float32, xla convs), batch 8×2 (synthetic input)" in out
  assert "img/s" in out and "ms/step" in out and "compile" in out and "MFU n/a" in out
  assert result["image_size"] == 32 and result["num_classes"] == 10
  assert result["flops_per_device_step"] > 0 and result["mfu"] is None
  assert result["images_per_s"] > 0 and result["conv_kernel"] == "xla"


def test_throughput_mode_times_the_torch_resnet_twin(capsys, monkeypatch):
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "")  # restored after the test
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION")
  out, result = _bench(
    capsys,
    [
      "throughput",
      "--model",
      "resnet18",
      "--method",
      "dann",
      "--batch",
      "8",
      "--image-size",
      "32",
      "--set",
      "model.width=8",
      "--steps",
      "2",
      "--warmup",
      "1",
      "--torch",
    ],
  )
  assert "dann step, resnet18 (float32, xla convs), batch 8×2 (synthetic input)" in out
  assert "torch:" in out and "jax/torch images/s:" in out
  assert result["num_classes"] == 31 and result["torch_images_per_s"] > 0
  assert np.isfinite(result["torch_final_loss"]) and result["torch_amp_bf16"] is False
  # the twin shares the device: JAX's GPU allocator would otherwise take 75% of it
  assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == bench.TORCH_TWIN_JAX_MEM_FRACTION


def test_features_mode_times_the_eval_forward_and_its_twin(capsys):
  out, result = _bench(
    capsys,
    [
      "features",
      "--model",
      "resnet18",
      "--batch",
      "16",
      "--image-size",
      "32",
      "--set",
      "model.width=8",
      "--steps",
      "2",
      "--warmup",
      "1",
      "--torch",
    ],
  )
  assert "feature extraction (eval forward), resnet18 (float32, xla convs), batch 16×1" in out
  assert "jax/torch images/s:" in out
  assert result["method"] == "features" and result["domains"] == 1
  assert result["flops_per_device_step"] > 0 and result["torch_images_per_s"] > 0
  assert "torch_final_loss" not in result


def test_config_mode_times_jax_and_torch(capsys, tmp_path):
  out, result = _bench(
    capsys,
    [
      "--config",
      "experiments/digits/dann.py",
      "--task",
      "uci2ucim",
      "--set",
      f"data.data_dir={tmp_path}",
      "--set",
      "data.batch_size=16",
      "--steps",
      "2",
      "--warmup",
      "1",
      "--torch",
    ],
  )
  assert "jax:" in out and "torch:" in out and "jax/torch images/s:" in out
  assert result["torch_images_per_s"] > 0 and result["compile_s"] > 0
  assert np.isfinite(result["torch_final_loss"])
  # FILE:TASK is the same as --task TASK.
  _, result = _bench(
    capsys,
    [
      "--config",
      "experiments/digits/dann.py:uci2ucim",
      "--set",
      f"data.data_dir={tmp_path}",
      "--set",
      "data.batch_size=16",
      "--steps",
      "2",
      "--warmup",
      "0",
      "--pipeline",
      "--no-torch",
    ],
  )
  assert result["input"] == "pipeline" and "torch_images_per_s" not in result
  assert result["batch_per_domain"] == 16 and result["method"] == "dann"


def test_an_explicit_jax_memory_fraction_is_kept(capsys, monkeypatch):
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")
  _bench(
    capsys,
    [
      "throughput",
      "--model",
      "dann_digits",
      "--method",
      "source_only",
      "--batch",
      "8",
      "--steps",
      "1",
      "--warmup",
      "0",
      "--torch",
    ],
  )
  assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.3"


def test_mfu_peak_table():
  class Device:
    def __init__(self, platform, kind):
      self.platform, self.device_kind = platform, kind

  assert bench.peak_flops(Device("gpu", "NVIDIA H100 80GB HBM3")) == 989e12
  assert bench.peak_flops(Device("gpu", "NVIDIA H100 PCIe")) == 756e12
  assert bench.peak_flops(Device("gpu", "NVIDIA A100-SXM4-40GB")) == 312e12
  assert bench.peak_flops(Device("cpu", "cpu")) is None
  assert bench.peak_flops(Device("gpu", "NVIDIA GeForce GTX 1080")) is None


@pytest.mark.parametrize(
  "argv, message, also",
  [
    (
      ["throughput", "--model", "resnet18", "--set", "train.stepz=3"],
      "--set train.stepz=3: unknown config field",
      "'steps'",
    ),
    (
      ["throughput", "--model", "resnet_18", "--batch", "8"],
      "model.name: unknown model 'resnet_18'",
      "resnet18",
    ),
    (
      ["--config", "experiments/digits/nope.py"],
      "--config: experiments/digits/nope.py: no such",
      "",
    ),
    (
      ["--config", "experiments/digits/dann.py:uci2ucim", "--task", "syn2uci"],
      "--config experiments/digits/dann.py:uci2ucim names its ARG and --task syn2uci another",
      "",
    ),
    (
      ["--task", "nope"],
      "--config: experiments/digits/dann.py:nope: task: unknown 'nope'",
      "uci2ucim",
    ),
    (["features", "--model", "resnet18", "--steps", "0"], "--steps 0 --warmup 10: steps must", ""),
  ],
)
def test_cli_reports_bad_input_in_one_line(monkeypatch, capsys, argv, message, also):
  """Before anything is built or timed: one line `error: ...`, exit status 2."""
  monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured"))
  with pytest.raises(ConfigError, match=re.escape(message)):
    bench.main([*argv, "--no-torch"])
  assert run_tool("bench", [*argv, "--no-torch"]) == 2
  captured = capsys.readouterr()
  assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
  assert also in captured.err and captured.out == ""
