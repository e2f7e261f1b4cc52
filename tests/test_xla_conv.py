"""kernels/xla_conv: the im2col route for inputs smaller than the kernel computes XLA's
convolution (values and gradients), and only those calls take it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdapt.kernels import xla_conv
from jaxdapt.models import layers

DN = ("NHWC", "HWIO", "NHWC")


def _reference(x, w, strides, padding):
  return lax.conv_general_dilated(
    x, w, strides, padding, dimension_numbers=DN, precision=lax.Precision.HIGHEST
  )


@pytest.mark.parametrize(
  "hw,k,strides,padding",
  [
    ((2, 2), 3, (1, 1), ((1, 1), (1, 1))),  # ResNet layer4 at 64 px
    ((2, 3), 3, (2, 2), ((1, 1), (1, 1))),  # strided, non-square map
    ((1, 4), 3, (1, 2), ((1, 0), (2, 1))),  # asymmetric padding and strides
    ((3, 3), 5, (1, 1), ((2, 2), (2, 2))),
  ],
)
def test_patches_conv_matches_xla_values_and_gradients(hw, k, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, *hw, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 5, 7)), jnp.float32)
  assert xla_conv.needs_patches(x, w, strides, padding, dimension_numbers=DN)
  got = xla_conv.patches_conv(x, w, strides, padding, precision=lax.Precision.HIGHEST)
  want = _reference(x, w, strides, padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  cot = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
  grad = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * cot), argnums=(0, 1))(x, w)
  for g, r in zip(
    grad(
      lambda x, w: xla_conv.patches_conv(x, w, strides, padding, precision=lax.Precision.HIGHEST)
    ),
    grad(lambda x, w: _reference(x, w, strides, padding)),
  ):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_only_inputs_smaller_than_the_kernel_take_the_patches_route():
  x, w = jnp.zeros((2, 2, 2, 4)), jnp.zeros((3, 3, 4, 8))
  pad = ((1, 1), (1, 1))
  assert xla_conv.needs_patches(x, w, (1, 1), pad, dimension_numbers=DN)
  assert not xla_conv.needs_patches(jnp.zeros((2, 3, 3, 4)), w, (1, 1), pad, dimension_numbers=DN)
  assert not xla_conv.needs_patches(x, w, (1, 1), "SAME", dimension_numbers=DN)
  assert not xla_conv.needs_patches(x, w, (1, 1), pad, rhs_dilation=(2, 2), dimension_numbers=DN)
  assert not xla_conv.needs_patches(
    x, jnp.zeros((3, 3, 2, 8)), (1, 1), pad, dimension_numbers=DN, feature_group_count=2
  )
  assert not xla_conv.needs_patches(
    jnp.zeros((2, 4, 2, 2)),
    jnp.zeros((8, 4, 3, 3)),
    (1, 1),
    pad,
    dimension_numbers=("NCHW", "OIHW", "NCHW"),
  )


def test_model_convs_on_small_maps_compile_without_a_convolution():
  """layers.conv (every ResNet/VGG conv) routes through the hook on CPU: a 3x3 conv over
  a 2x2 map is a dot in the compiled program, with XLA's values."""
  module = layers.conv(8, 3, 1, 1, use_bias=False)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 2, 2, 4)), jnp.float32)
  variables = module.init(jax.random.key(0), x)
  apply = jax.jit(module.apply)
  assert "convolution(" not in apply.lower(variables, x).compile().as_text()
  want = _reference(x, variables["params"]["kernel"], (1, 1), ((1, 1), (1, 1)))
  np.testing.assert_allclose(apply(variables, x), want, rtol=1e-5, atol=1e-5)
  big = jnp.zeros((2, 4, 4, 4))
  assert "convolution(" in apply.lower(variables, big).compile().as_text()
