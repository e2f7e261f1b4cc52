"""The step benchmark: the PyTorch twin is the same network and step (so the ratio is
honest), and both CLI modes run and print their fields."""
import jax
import numpy as np
import pytest

from jaxdapt import bench, config as config_lib, methods, sharding, train

torch = pytest.importorskip("torch")
from jaxdapt import torch_ref  # noqa: E402  (needs torch)

IMAGE_SHAPE, NUM_CLASSES = (32, 32, 3), 10


def _digits_dann(batch: int = 64, steps: int = 1000):
  c = config_lib.digits_config("uci2ucim")
  c.method.name = "dann"
  c.data.batch_size = batch
  c.train.steps = steps
  return c


def _jax_experiment(config):
  mesh = sharding.make_mesh()
  return train.build_functions(config, mesh, methods.get_method(config.method), IMAGE_SHAPE,
                               NUM_CLASSES)


def _random_batch(batch: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {d: {"image": rng.integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8),
              "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32)}
          for d in ("source", "target")}


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_torch_network_has_the_flax_parameter_count(norm):
  c = _digits_dann()
  c.model.norm = norm
  exp = _jax_experiment(c)
  params = jax.eval_shape(exp.init, jax.random.key(0)).params
  flax_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  net = torch_ref.build_network(c, IMAGE_SHAPE, NUM_CLASSES)
  assert sum(p.numel() for p in net.parameters()) == flax_count


def test_torch_and_jax_steps_give_the_same_losses_from_the_same_weights():
  """Three updates: the losses agree, so forward, gradients (reversal included:
  the schedule ramps λ from step 1 of 4) and SGD-momentum updates agree."""
  c = _digits_dann(batch=16, steps=4)
  exp = _jax_experiment(c)
  state = exp.init(jax.random.key(0))
  torch.manual_seed(0)
  step = torch_ref.TorchStep(c, IMAGE_SHAPE, NUM_CLASSES)
  torch_ref.load_jax_params(step.net, jax.device_get(state.params))
  jax_losses, torch_losses = [], []
  for i in range(3):
    local = _random_batch(16, seed=i)
    state, metrics = exp.update(state, sharding.global_batch(local, exp.mesh))
    jax_losses.append(float(metrics["loss"]))
    torch_losses.append(float(step(step.to_device(local))))
  np.testing.assert_allclose(torch_losses, jax_losses, rtol=2e-4)
  assert len(set(jax_losses)) == 3  # the weights moved between the compared steps
  # The weights themselves: a wrong reversal sign or momentum barely moves 3 losses.
  moved = torch_ref.build_network(c, IMAGE_SHAPE, NUM_CLASSES)
  torch_ref.load_jax_params(moved, jax.device_get(state.params))
  for (name, want), got in zip(moved.named_parameters(), step.net.parameters()):
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-3,
                               atol=1e-5, err_msg=name)


def test_unsupported_configs_are_named():
  c = _digits_dann()
  assert torch_ref.unsupported(c) is None
  c.method.name, c.optim.name = "dan", "adam"
  assert torch_ref.unsupported(c) == "no PyTorch reference for method.name 'dan', optim.name 'adam'"


def test_throughput_mode_prints_its_fields(capsys):
  result = bench.main(["throughput", "--model", "dann_digits", "--method", "dann",
                       "--batch", "8", "--steps", "2", "--warmup", "1"])
  out = capsys.readouterr().out
  # 8 fake devices: XLA's convs (jaxdapt's CPU kernels run on one device only)
  assert "dann step, dann_digits (float32, xla convs), batch 8×2 (synthetic input)" in out
  assert "img/s" in out and "ms/step" in out and "compile" in out and "MFU n/a" in out
  assert result["image_size"] == 32 and result["num_classes"] == 10
  assert result["flops_per_device_step"] > 0 and result["mfu"] is None
  assert result["images_per_s"] > 0 and result["conv_kernel"] == "xla"


def test_config_mode_times_jax_and_torch(capsys, tmp_path):
  result = bench.main(["--config", "experiments/digits/dann.py", "--task", "uci2ucim",
                       "--set", f"data.data_dir={tmp_path}", "--set", "data.batch_size=16",
                       "--steps", "2", "--warmup", "1", "--torch"])
  out = capsys.readouterr().out
  assert "jax:" in out and "torch:" in out and "jax/torch images/s:" in out
  assert result["torch_images_per_s"] > 0 and result["compile_s"] > 0
  assert np.isfinite(result["torch_final_loss"])
  result = bench.main(["--config", "experiments/digits/dann.py", "--task", "uci2ucim",
                       "--set", f"data.data_dir={tmp_path}", "--set", "data.batch_size=16",
                       "--steps", "2", "--warmup", "0", "--pipeline", "--no-torch"])
  assert result["input"] == "pipeline" and "torch_images_per_s" not in result


def test_mfu_peak_table():
  class Device:
    def __init__(self, platform, kind):
      self.platform, self.device_kind = platform, kind
  assert bench.peak_flops(Device("gpu", "NVIDIA H100 80GB HBM3")) == 989e12
  assert bench.peak_flops(Device("gpu", "NVIDIA H100 PCIe")) == 756e12
  assert bench.peak_flops(Device("gpu", "NVIDIA A100-SXM4-40GB")) == 312e12
  assert bench.peak_flops(Device("cpu", "cpu")) is None
  assert bench.peak_flops(Device("gpu", "NVIDIA GeForce GTX 1080")) is None
