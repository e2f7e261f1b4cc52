"""jaxdapt's CPU convolution kernels (jaxdapt/kernels/cpu_conv.*) against XLA's
convolution, which they replace: values, both gradients, fallbacks, and how
config model.conv_kernel resolves."""

import logging
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdapt import config as config_lib
from jaxdapt import trainer
from jaxdapt.errors import ConfigError
from jaxdapt.kernels import cpu_conv
from jaxdapt.models import layers
from jaxdapt.models.digits import dann_digits

needs_compiler = pytest.mark.skipif(
  not cpu_conv.can_build(), reason="no C++ compiler to build the kernels"
)


def _xla(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _value_and_grads(conv, x, w, g):
  y, vjp = jax.vjp(conv, x, w)
  return (y, *vjp(g))


def _close(actual, expected, rtol=1e-5, what=""):
  """Equal up to float32 summation order: error relative to the array's largest value."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  np.testing.assert_allclose(
    actual, expected, rtol=0, atol=rtol * np.abs(expected).max(), err_msg=what
  )


# (batch, height, width, in channels, out channels, kernel): the digits nets' two convs,
# batches that leave partial chunks, outputs whose pixel count leaves a tail block,
# non-square images, 1x1 and image-sized kernels, each supported channel count.
SHAPES = [
  (3, 32, 32, 3, 32, 5),
  (5, 14, 14, 32, 48, 5),
  (9, 9, 11, 16, 16, 3),
  (2, 7, 7, 64, 64, 1),
  (4, 6, 6, 48, 32, 6),
  (1, 10, 8, 1, 48, 3),
  (11, 5, 5, 20, 64, 2),
]


@needs_compiler
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_xla_forward_and_both_gradients(shape):
  n, h, w, cin, cout, k = shape
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((k, k, cin, cout)) / k, jnp.float32)
  g = jnp.asarray(rng.standard_normal((n, h - k + 1, w - k + 1, cout)), jnp.float32)
  direct = jax.jit(lambda x, w, g: _value_and_grads(cpu_conv.conv_valid, x, w, g))(x, kernel, g)
  reference = _value_and_grads(_xla, x, kernel, g)
  for name, a, b in zip(("output", "input grad", "weight grad"), direct, reference):
    _close(a, b, what=name)


@needs_compiler
def test_deterministic_and_batch_independent():
  """Same inputs -> the same bits (fixed work split); each image's output depends on that
  image alone, bit for bit, and its input gradient up to summation order."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((17, 14, 14, 32)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((5, 5, 32, 48)) / 5, jnp.float32)
  g = jnp.asarray(rng.standard_normal((17, 10, 10, 48)), jnp.float32)
  run = jax.jit(lambda x, w, g: _value_and_grads(cpu_conv.conv_valid, x, w, g))
  first, again = run(x, w, g), run(x, w, g)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  y, dx, _ = run(x[5:6], w, g[5:6])
  np.testing.assert_array_equal(y, first[0][5:6])
  _close(dx, first[1][5:6], rtol=1e-6)  # its pixels fall into other blocks: other add order


def test_eligible_only_for_what_the_kernel_computes():
  x = jax.ShapeDtypeStruct((2, 14, 14, 32), jnp.float32)
  w = jax.ShapeDtypeStruct((5, 5, 32, 48), jnp.float32)
  nhwc = ("NHWC", "HWIO", "NHWC")
  ok = dict(window_strides=(1, 1), padding=((0, 0), (0, 0)), dimension_numbers=nhwc)
  assert cpu_conv.eligible(x, w, **ok)
  assert cpu_conv.eligible(x, w, **{**ok, "padding": "VALID"})
  assert not cpu_conv.eligible(x, w, **{**ok, "window_strides": (2, 2)})
  assert not cpu_conv.eligible(x, w, **{**ok, "padding": ((1, 1), (1, 1))})
  assert not cpu_conv.eligible(x, w, **{**ok, "padding": "SAME"})
  assert not cpu_conv.eligible(x, w, **ok, rhs_dilation=(2, 2))
  assert not cpu_conv.eligible(x, w, **ok, lhs_dilation=(2, 2))
  assert not cpu_conv.eligible(
    x, jax.ShapeDtypeStruct((5, 5, 16, 48), jnp.float32), **ok, feature_group_count=2
  )
  assert not cpu_conv.eligible(x, w, **{**ok, "dimension_numbers": None})  # NCHW
  for cout in (8, 20, 50, 80):
    assert not cpu_conv.eligible(x, jax.ShapeDtypeStruct((5, 5, 32, cout), jnp.float32), **ok)
  assert not cpu_conv.eligible(x, jax.ShapeDtypeStruct((5, 3, 32, 48), jnp.float32), **ok)
  bf16 = jax.ShapeDtypeStruct(x.shape, jnp.bfloat16)
  assert not cpu_conv.eligible(bf16, jax.ShapeDtypeStruct(w.shape, jnp.bfloat16), **ok)
  assert not cpu_conv.eligible(jax.ShapeDtypeStruct((2, 4, 4, 32), jnp.float32), w, **ok)


def test_other_convolutions_stay_xlas():
  """The nn.Conv hook hands what the kernel does not cover to lax unchanged (no FFI call
  in the program, same bits)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 9, 9, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 3, 20)), jnp.float32)
  nhwc = ("NHWC", "HWIO", "NHWC")
  args = (x, w, (2, 2), ((1, 1), (1, 1)))
  hooked = jax.jit(
    lambda x, w: cpu_conv.conv_general_dilated(x, w, *args[2:], dimension_numbers=nhwc)
  )
  assert "jaxdapt_conv" not in hooked.lower(x, w).as_text()
  np.testing.assert_array_equal(
    hooked(x, w), lax.conv_general_dilated(*args, dimension_numbers=nhwc)
  )


@needs_compiler
def test_dann_digits_direct_equals_xla():
  """The whole backbone (BatchNorm, pools) with the kernels: same features and parameter
  gradients as with XLA's convolutions; the program calls the kernels."""
  backbone = dann_digits(norm="batch")
  x = jnp.asarray(np.random.default_rng(2).standard_normal((6, 32, 32, 3)), jnp.float32)
  variables = backbone.init(jax.random.key(0), x, train=False)

  def loss(params, kernel):
    with layers.conv_kernel(kernel):
      f, _ = backbone.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(f)), f

  results = {}
  for kernel in ("xla", "direct"):
    fn = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    assert ("jaxdapt_conv" in fn.lower(variables["params"], kernel).as_text()) == (
      kernel == "direct"
    )
    results[kernel] = fn(variables["params"], kernel)
  (g_direct, f_direct), (g_xla, f_xla) = results["direct"], results["xla"]
  _close(f_direct, f_xla)
  # Relative to the largest gradient: the conv biases before BatchNorm get gradients
  # that are zero but for rounding (~1e-6), so their own scale is noise.
  scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(g_xla))
  for a, b in zip(jax.tree.leaves(g_direct), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


def test_resolve_by_devices_and_name():
  assert cpu_conv.resolve("xla", "cpu", 1) == "xla"
  assert cpu_conv.resolve("auto", "cpu", 8) == "xla"
  assert cpu_conv.resolve("auto", "gpu", 1) == "xla"
  with pytest.raises(ConfigError, match="one CPU device; this run has 8 cpu"):
    cpu_conv.resolve("direct", "cpu", 8)
  with pytest.raises(ConfigError, match="one CPU device; this run has 1 gpu"):
    cpu_conv.resolve("direct", "gpu", 1)
  with pytest.raises(ConfigError, match="model.conv_kernel: must be one of auto, xla, direct"):
    cpu_conv.resolve("fast", "cpu", 1)


@needs_compiler
def test_resolve_direct_on_one_cpu_device():
  assert cpu_conv.resolve("auto", "cpu", 1) == "direct"
  assert cpu_conv.resolve("direct", "cpu", 1) == "direct"


def test_without_a_compiler_auto_falls_back_and_direct_says_why(monkeypatch, tmp_path, caplog):
  monkeypatch.setattr(cpu_conv, "_status", {})  # as in a fresh process
  monkeypatch.setenv("JAXDAPT_KERNEL_CACHE", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-jaxdapt")
  with caplog.at_level(logging.WARNING, logger=cpu_conv.__name__):
    assert cpu_conv.resolve("auto", "cpu", 1) == "xla"
  assert "no C++ compiler 'no-such-compiler-jaxdapt'" in caplog.text
  with pytest.raises(ConfigError, match="needs the CPU kernel, which did not build.*no C"):
    cpu_conv.resolve("direct", "cpu", 1)
  assert list(tmp_path.iterdir()) == []


@needs_compiler
def test_build_caches_by_source_and_reports_compiler_errors(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXDAPT_KERNEL_CACHE", str(tmp_path))
  broken = tmp_path / "broken.cc"
  broken.write_text("this is not C++\n")
  with pytest.raises(cpu_conv.KernelBuildError, match="failed on broken.cc"):
    cpu_conv.build(broken)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.cc"]  # no partial library
  tiny = tmp_path / "tiny.cc"
  tiny.write_text('extern "C" int jaxdapt_tiny() { return 7; }\n')
  built = cpu_conv.build(tiny)
  mtime = built.stat().st_mtime_ns
  assert cpu_conv.build(tiny) == built and built.stat().st_mtime_ns == mtime  # cached
  tiny.write_text('extern "C" int jaxdapt_tiny() { return 8; }\n')
  assert cpu_conv.build(tiny) != built


@needs_compiler
def test_a_cache_others_can_write_is_refused(monkeypatch, tmp_path):
  """Loading a library runs it: a cache folder or file writable by group/others (or, as
  root, owned by someone else) is refused, and nothing is loaded or compiled there."""
  monkeypatch.setenv("JAXDAPT_KERNEL_CACHE", str(tmp_path / "cache"))
  tiny = tmp_path / "tiny.cc"
  tiny.write_text('extern "C" int jaxdapt_tiny() { return 7; }\n')
  built = cpu_conv.build(tiny)
  assert stat.S_IMODE(built.parent.stat().st_mode) == 0o700  # made private
  built.chmod(0o666)
  with pytest.raises(
    cpu_conv.KernelBuildError, match=r"cpu_conv-\w+\.so is writable by group or others \(mode 666\)"
  ):
    cpu_conv.build(tiny)
  built.chmod(0o755)
  assert cpu_conv.build(tiny) == built
  built.parent.chmod(0o777)
  built.unlink()
  with pytest.raises(cpu_conv.KernelBuildError, match=r"cache is writable by group or others"):
    cpu_conv.build(tiny)
  assert list(built.parent.iterdir()) == []  # not compiled there either
  if os.getuid() == 0:
    built.parent.chmod(0o700)
    os.chown(built.parent, 12345, -1)
    with pytest.raises(cpu_conv.KernelBuildError, match=r"belongs to uid 12345"):
      cpu_conv.build(tiny)


def test_config_field_is_checked():
  c = config_lib.base_config()
  c.model.conv_kernel = "fast"
  with pytest.raises(ConfigError, match="model.conv_kernel: 'fast' is not allowed"):
    trainer.validate(c)
