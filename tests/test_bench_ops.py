"""jaxdapt.bench_ops times JAX and PyTorch on the same computation, piece by piece."""
import numpy as np

from jaxdapt import bench_ops


def test_each_piece_computes_the_same_array_in_jax_and_torch():
  pieces = bench_ops.pieces(batch=3)
  assert len(pieces) == 10
  for name, _, jax_fn, args, torch_fn in pieces:
    # NCHW activations -> NHWC; OIHW weight gradients -> HWIO
    expected = torch_fn().detach().permute((2, 3, 1, 0) if "wgrad" in name else (0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(jax_fn(*args)), expected.numpy(), rtol=2e-4, atol=2e-4,
                               err_msg=name)


def test_command_prints_a_row_per_piece(capsys):
  rows = bench_ops.main(["--batch", "2", "--repeats", "1"])
  out = capsys.readouterr().out
  assert len(rows) == 10 and all(r["jax_ms"] > 0 and r["torch_ms"] > 0 for r in rows)
  assert out.count("\n|") == 12  # header, rule, 10 rows
  assert "\n| conv1 wgrad | 0.01 |" in out  # 2·2·28²·5²·3·32 FLOP
