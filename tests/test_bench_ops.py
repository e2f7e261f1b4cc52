"""`jaxdapt bench-ops` times JAX and PyTorch on the same computation, piece by piece."""

import numpy as np
import pytest

from jaxdapt.errors import ConfigError
from jaxdapt.kernels import cpu_conv
from jaxdapt.tools import bench_ops

# Pieces with a jaxdapt-kernel version: the convs' forward and wgrad, conv2's dgrad.
DIRECT = 5 if cpu_conv.can_build() else 0


def test_each_piece_computes_the_same_array_in_jax_and_torch():
  pieces = bench_ops.pieces(batch=3)
  assert len(pieces) == 10
  assert sum(direct is not None for *_, direct in pieces) == DIRECT
  for name, _, jax_fn, args, torch_fn, direct_fn in pieces:
    # NCHW activations -> NHWC; OIHW weight gradients -> HWIO
    expected = torch_fn().detach().permute((2, 3, 1, 0) if "wgrad" in name else (0, 2, 3, 1))
    for fn in (jax_fn, direct_fn or jax_fn):
      np.testing.assert_allclose(
        np.asarray(fn(*args)), expected.numpy(), rtol=2e-4, atol=2e-4, err_msg=name
      )


def test_command_prints_a_row_per_piece(capsys, monkeypatch):
  measure, measured = bench_ops.measure, []

  def recording(*args):  # the rows main printed
    measured.append(measure(*args))
    return measured[-1]

  monkeypatch.setattr(bench_ops, "measure", recording)
  assert bench_ops.main(["--batch", "2", "--repeats", "1"]) == 0
  (rows,) = measured
  out = capsys.readouterr().out
  assert len(rows) == 10 and all(r["jax_ms"] > 0 and r["torch_ms"] > 0 for r in rows)
  assert sum(r["direct_ms"] is not None for r in rows) == DIRECT
  assert out.count("\n|") == 12  # header, rule, 10 rows
  assert "\n| conv1 wgrad | 0.01 |" in out  # 2·2·28²·5²·3·32 FLOP
  assert "\n| conv1 dgrad | 0.01 | " in out and "\n| block1 BN-pool-ReLU forward |  | " in out


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--repeats", "-1"]])
def test_bad_sizes_are_refused_before_measuring(monkeypatch, argv):
  monkeypatch.setattr(bench_ops, "measure", lambda *a: pytest.fail("measured"))
  with pytest.raises(ConfigError, match="both must be >= 1"):
    bench_ops.main(argv)
