"""The BatchNorm fast path (layers.normalize_by_batch, a custom VJP) against autodiff
of the plain formula and against flax's nn.BatchNorm, which it replaces in training."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdapt.models import layers

EPS = layers.BN_EPSILON


def _plain(x, scale, bias):
  """Batch statistics over all axes but the last, written out; autodiff does the rest."""
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  var = ((x - mean) ** 2).mean(axes)
  return (x - mean) / jnp.sqrt(var + EPS) * scale + bias, mean, var


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  c = shape[-1]
  x = rng.normal(2.0, 3.0, shape).astype(np.float32)
  return (
    jnp.asarray(x),
    jnp.asarray(rng.uniform(0.5, 2.0, c).astype(np.float32)),
    jnp.asarray(rng.normal(size=c).astype(np.float32)),
  )


@pytest.mark.parametrize("shape", [(16, 5, 5, 3), (32, 7)])
def test_values_and_gradients_match_autodiff_of_the_formula(shape):
  x, scale, bias = _inputs(shape)
  rng = np.random.default_rng(1)
  # A cotangent for each output: the mean and var ones are usually zero (they only
  # feed the running statistics), here they are not, so their terms are checked too.
  cots = tuple(
    jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in (shape, shape[-1:], shape[-1:])
  )
  out, vjp = jax.vjp(lambda *a: layers.normalize_by_batch(*a, EPS), x, scale, bias)
  ref, vjp_ref = jax.vjp(_plain, x, scale, bias)
  for a, b in zip(out, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.jit(vjp)(cots), vjp_ref(cots)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_matches_flax_batch_norm_in_training(dtype):
  """Same output, running statistics and gradients as nn.BatchNorm with the same
  settings; the output has the compute dtype."""
  x, _, _ = _inputs((8, 6, 6, 4))
  x = x.astype(dtype)
  kw = dict(
    use_running_average=False,
    momentum=layers.BN_MOMENTUM,
    epsilon=EPS,
    dtype=dtype,
    param_dtype=jnp.float32,
  )
  ours, ref = layers.BatchNorm(**kw), nn.BatchNorm(**kw)
  variables = ref.init(jax.random.key(0), x)
  variables = {
    "params": {"scale": jnp.arange(1.0, 5.0), "bias": jnp.arange(4.0)},
    "batch_stats": variables["batch_stats"],
  }
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(variables)
  assert _takes_fast_path(ours, variables, x)

  def run(module, params, x):
    y, new = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
    weights = jnp.linspace(-1, 1, y.size).reshape(y.shape)
    return jnp.sum(y.astype(jnp.float32) * weights), (y, new)

  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  (l1, (y1, s1)), g1 = jax.value_and_grad(run, argnums=(1, 2), has_aux=True)(
    ours, variables["params"], x
  )
  (l2, (y2, s2)), g2 = jax.value_and_grad(run, argnums=(1, 2), has_aux=True)(
    ref, variables["params"], x
  )
  assert y1.dtype == y2.dtype == dtype
  np.testing.assert_allclose(np.float32(y1), np.float32(y2), rtol=tol, atol=tol)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol)


def _takes_fast_path(bn, variables, x, **kw) -> bool:
  jaxpr = jax.make_jaxpr(lambda x: bn.apply(variables, x, mutable=["batch_stats"], **kw))(x)
  return "custom_vjp_call" in str(jaxpr)


def test_eval_and_masked_statistics_take_flax_path():
  """Running averages (eval) and row masks are nn.BatchNorm's own code path."""
  x, _, _ = _inputs((8, 3, 3, 2))
  bn = layers.BatchNorm(momentum=0.9, epsilon=EPS)
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  y_eval = bn.apply(variables, x, use_running_average=True)
  np.testing.assert_allclose(y_eval, x / np.sqrt(1 + EPS), rtol=1e-6)
  assert _takes_fast_path(bn, variables, x, use_running_average=False)
  assert not _takes_fast_path(bn, variables, x, use_running_average=True)
  mask = jnp.arange(8) < 4
  with layers.batch_norm_override(mask=mask):
    assert not _takes_fast_path(bn, variables, x, use_running_average=False)
    _, new = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * x[:4].mean((0, 1, 2)), rtol=1e-5)
