"""Flax ViT: torch-exact position-embedding resampling, other resolutions, registry options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_weights_parity import TOL, _flax_run, _torch_run, _x
from test_weights_torch_refs import numpy_state_dict, randomize, timm_vit

from jaxdapt.errors import ConfigError
from jaxdapt.models import get_model
from jaxdapt.models.vit import interpolation_matrix, resample_pos_embed
from jaxdapt.weights import convert


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("n_in,n_out", [(14, 24), (14, 6), (14, 4), (7, 7), (3, 10)])
def test_interpolation_matrix_is_torch_interpolate(mode, n_in, n_out):
  grid = np.random.default_rng(0).normal(size=(1, 5, n_in, n_in)).astype(np.float32)
  ref = F.interpolate(
    torch.from_numpy(grid), size=(n_out, n_out), mode=mode, align_corners=False, antialias=False
  ).numpy()
  m = interpolation_matrix(n_in, n_out, mode)
  got = np.einsum("ih,jw,bchw->bcij", m, m, grid)
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_resample_keeps_class_token_and_works_in_numpy_and_jax():
  pos = np.random.default_rng(1).normal(size=(1, 1 + 14 * 14, 8)).astype(np.float32)
  a = resample_pos_embed(pos, (6, 4))
  b = resample_pos_embed(jnp.asarray(pos), (6, 4))
  assert a.shape == (1, 25, 8) and isinstance(a, np.ndarray)
  np.testing.assert_allclose(np.asarray(b), a, atol=1e-6)
  np.testing.assert_array_equal(a[:, 0], pos[:, 0])
  assert resample_pos_embed(pos, (14, 14)) is pos


def _blocks():
  return (
    [f"blocks.{i}" for i in range(12)] + ["norm"],
    [f"blocks_{i}" for i in range(12)] + ["norm"],
  )


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_other_resolution_on_the_fly_and_at_import_match_timm(mode):
  """224-px weights used at 96 px: resampled in the forward pass, or once by the converter."""
  ref = randomize(timm_vit("vit_s16", interpolation=mode), seed=3)
  sd = numpy_state_dict(ref)
  x = _x(96, batch=1)
  names, paths = _blocks()
  t_out, t_logits = _torch_run(ref, x, names)
  on_the_fly = convert(sd, "vit_s16", "timm", keep_head=True)  # 14x14 pos_embed
  at_import = convert(sd, "vit_s16", "timm", keep_head=True, img_size=96, pos_interpolation=mode)
  assert at_import.params["backbone"]["pos_embed"].shape == (1, 1 + 36, 384)
  for conv, options in ((on_the_fly, {"pos_interpolation": mode}), (at_import, {"img_size": 96})):
    out, inter = _flax_run("vit_s16", conv, x, **options)
    for tn, fp in zip(names, paths):
      np.testing.assert_allclose(np.asarray(inter[fp]["__call__"][0]), t_out[tn], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out["logits"]), t_logits, atol=TOL, rtol=0)


def test_vit_features_shapes_dtypes_and_options():
  model = get_model("vit_s16", num_classes=7, bottleneck_dim=32)
  out, v = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=True)
  )
  assert out["features"].shape == (2, 32) and out["logits"].shape == (2, 7)
  assert v["params"]["backbone"]["pos_embed"].shape == (1, 197, 384)
  assert "batch_stats" not in v or set(v["batch_stats"]) == {"bottleneck"}
  out, v = jax.eval_shape(
    lambda: get_model("vit_b16", num_classes=3, dtype="bfloat16", img_size=384).init_with_output(
      jax.random.key(0), jnp.zeros((1, 384, 384, 3)), train=False
    )
  )
  assert out["logits"].dtype == jnp.float32 and out["features"].shape == (1, 768)
  assert v["params"]["backbone"]["pos_embed"].shape == (1, 577, 768)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
  with pytest.raises(ConfigError, match="img_size"):
    get_model("vit_s16", num_classes=3, img_size=100)
  with pytest.raises(ConfigError, match="pos_interpolation"):
    get_model("vit_s16", num_classes=3, pos_interpolation="nearest")
  with pytest.raises(ConfigError, match="norm"):
    get_model("vit_s16", num_classes=3, norm="batch")


def test_vit_digits_is_the_small_patch4_vit_for_32px():
  """vit_digits: 8x8 patches of 4 px (64 + the class token), 6 blocks of width 128, MLP
  ratio 2; the parameter count is computed here from those shapes, not read back."""
  model = get_model("vit_digits", num_classes=10, head_hidden=())
  out, v = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
  )
  p = v["params"]["backbone"]
  assert p["pos_embed"].shape == (1, 65, 128) and p["patch_embed"]["proj"]["kernel"].shape == (
    4,
    4,
    3,
    128,
  )
  d, hidden = 128, 256
  block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
  expected = 4 * 4 * 3 * d + d + d + 65 * d + 6 * block + 2 * d
  assert sum(x.size for x in jax.tree.leaves(p)) == expected
  assert out["features"].shape == (2, 128)
  with pytest.raises(ConfigError, match="multiple of 4"):
    get_model("vit_digits", num_classes=3, img_size=30)
