"""Vision Transformer (ViT-S/16, ViT-B/16; vit_digits for 32 px) in timm's VisionTransformer layout.

Patch conv -> [class token; patches] + position embedding -> pre-norm blocks
-> final LayerNorm; the backbone's features are the class token after the
final norm (timm's `global_pool='token'`). timm's `head` is not part of it.

Submodules carry timm's names, so conversion is by name (see jaxdapt/weights):
  cls_token, pos_embed                    -> params/cls_token, params/pos_embed
  patch_embed.proj.{weight,bias}          -> params/patch_embed/proj/{kernel,bias} (OIHW->HWIO)
  blocks.{i}.norm1 / norm2 / norm         -> params/blocks_{i}/norm1 ... (weight -> scale)
  blocks.{i}.attn.qkv / attn.proj         -> params/blocks_{i}/attn/qkv ... (Linear: w.T)
  blocks.{i}.mlp.fc1 / mlp.fc2            -> params/blocks_{i}/mlp/fc1 ...
LayerNorm eps is 1e-6 and GELU is the exact (erf) one, as in timm.

The position embedding is a parameter for the `img_size // patch_size` grid
(14x14 at 224 px). Inputs of another size resample its grid part on the fly
(bilinear or bicubic with torch's align_corners=False arithmetic, the class
token's entry untouched), which is what timm does with dynamic_img_size; the
converter does the same once when importing for another `img_size`.

Parameter-efficient options (jaxdapt/peft/adapter.py; 0, the default, builds nothing):
`adapter_dim` puts a Houlsby adapter on the output of each block's attention and MLP
sublayers, before its residual sum (`blocks_{i}/adapter_attn`, `adapter_mlp`);
`prompt_tokens` n > 0 adds VPT prompts (Jia et al., ECCV 2022): n learnable tokens
inserted after the class token at the input (`prompt_mode` 'shallow', `blocks_0/prompts`)
or, 'deep', also replacing the previous block's outputs at those positions before every
later block (`blocks_{i}/prompts`). The features stay the class token after the final norm,
so the head never reads a prompt.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.models.layers import dense, maybe_remat, resolve_norm
from jaxdapt.models.zoo import MODELS
from jaxdapt.peft.adapter import PROMPTS, maybe_adapt, prompt_init

LN_EPSILON = 1e-6
INTERPOLATIONS = ("bilinear", "bicubic")
PROMPT_MODES = ("shallow", "deep")


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
  """torch's cubic convolution kernel (A = -0.75) at distances x >= 0."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def interpolation_matrix(n_in: int, n_out: int, mode: str = "bilinear") -> np.ndarray:
  """[n_out, n_in] weights of torch F.interpolate(size=n_out, align_corners=False).

  Separable, so a 2-D resize is one matrix per axis; borders clamp as torch
  does (antialias=False).
  """
  if mode not in INTERPOLATIONS:
    raise ConfigError(f"pos_interpolation: {mode!r} is not one of {', '.join(INTERPOLATIONS)}")
  m = np.zeros((n_out, n_in), np.float64)
  scale = n_in / n_out
  for i in range(n_out):
    src = (i + 0.5) * scale - 0.5
    if mode == "bilinear":
      src = max(src, 0.0)
      i0 = min(int(np.floor(src)), n_in - 1)
      i1 = min(i0 + 1, n_in - 1)
      frac = src - i0
      m[i, i0] += 1 - frac
      m[i, i1] += frac
    else:
      i0 = int(np.floor(src))
      t = src - i0
      for k, w in zip(range(i0 - 1, i0 + 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]))):
        m[i, min(max(k, 0), n_in - 1)] += w
  return m.astype(np.float32)


def resample_pos_embed(
  pos: jnp.ndarray | np.ndarray, grid: tuple[int, int], mode: str = "bilinear", num_prefix: int = 1
) -> Any:
  """[1, prefix + g*g, D] -> [1, prefix + gh*gw, D]; prefix (class) tokens are kept.

  Works on numpy (converter) and jax (traced model) arrays alike.
  """
  xp = np if isinstance(pos, np.ndarray) else jnp
  prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
  g = int(round(patches.shape[1] ** 0.5))
  if g * g != patches.shape[1]:
    raise ConfigError(f"pos_embed: {patches.shape[1]} patch positions are not a square grid")
  if (g, g) == tuple(grid):
    return pos
  mh = interpolation_matrix(g, grid[0], mode)
  mw = interpolation_matrix(g, grid[1], mode)
  patches = patches.reshape(1, g, g, -1)
  patches = xp.einsum("ih,bhwd->biwd", xp.asarray(mh, patches.dtype), patches)
  patches = xp.einsum("jw,biwd->bijd", xp.asarray(mw, patches.dtype), patches)
  return xp.concatenate([prefix, patches.reshape(1, grid[0] * grid[1], -1)], axis=1)


def _layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LN_EPSILON, dtype=dtype, param_dtype=jnp.float32, name=name)


class PatchEmbed(nn.Module):
  """Non-overlapping patch conv (timm `patch_embed.proj`): [B,H,W,C] -> [B,gh,gw,D]."""

  patch_size: int
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    p = self.patch_size
    return nn.Conv(
      self.embed_dim,
      (p, p),
      strides=(p, p),
      padding="VALID",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="proj",
    )(x)


class Attention(nn.Module):
  """Multi-head self-attention with timm's fused `qkv` and `proj` Linears."""

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, n, d = x.shape
    hd = d // self.num_heads
    # timm: qkv.reshape(B, N, 3, heads, head_dim) -- the [3D] axis is (q|k|v, head, dim).
    qkv = dense(3 * d, dtype=self.dtype, name="qkv")(x).reshape(b, n, 3, self.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * hd**-0.5, k).astype(jnp.float32)
    attn = nn.softmax(logits, axis=-1).astype(self.dtype)
    y = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, n, d)
    return dense(d, dtype=self.dtype, name="proj")(y)


class Mlp(nn.Module):
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    d = x.shape[-1]
    x = nn.gelu(dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
    return dense(d, dtype=self.dtype, name="fc2")(x)


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

  adapter_dim > 0: each sublayer's output goes through an adapter before its residual sum.
  prompt_tokens n > 0: the block first puts its own n prompts right after the class token,
  inserted (`insert_prompts`, the first prompted block) or replacing the n tokens there
  (VPT-deep's later blocks); `patch_size` sets their initialisation (prompt_init)."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  adapter_dim: int = 0
  prompt_tokens: int = 0
  insert_prompts: bool = True
  patch_size: int = 16

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.prompt_tokens:
      b, _, d = x.shape
      n = self.prompt_tokens
      p = self.param(PROMPTS, prompt_init(self.patch_size), (1, n, d), jnp.float32)
      p = jnp.broadcast_to(p, (b, n, d)).astype(x.dtype)
      rest = x[:, 1:] if self.insert_prompts else x[:, 1 + n :]
      x = jnp.concatenate([x[:, :1], p, rest], axis=1)
    h = Attention(self.num_heads, dtype=self.dtype, name="attn")(
      _layer_norm(self.dtype, "norm1")(x)
    )
    x = x + maybe_adapt(h, self.adapter_dim, "gelu", self.dtype, "adapter_attn")
    hidden = int(x.shape[-1] * self.mlp_ratio)
    h = Mlp(hidden, dtype=self.dtype, name="mlp")(_layer_norm(self.dtype, "norm2")(x))
    return x + maybe_adapt(h, self.adapter_dim, "gelu", self.dtype, "adapter_mlp")


class ViT(nn.Module):
  """timm VisionTransformer (class token, learned absolute position embedding); remat: each
  block under nn.remat (activations recomputed in the backward pass); adapter_dim,
  prompt_tokens, prompt_mode: the parameter-efficient options (module docstring)."""

  patch_size: int = 16
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  img_size: int = 224
  pos_interpolation: str = "bilinear"
  dtype: Any = jnp.float32
  remat: bool = False
  adapter_dim: int = 0
  prompt_tokens: int = 0
  prompt_mode: str = "shallow"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    del train  # no dropout / BatchNorm; kept for the backbone interface
    d = self.embed_dim
    x = PatchEmbed(self.patch_size, d, dtype=self.dtype, name="patch_embed")(x)
    b, gh, gw, _ = x.shape
    x = x.reshape(b, gh * gw, d)
    g = self.img_size // self.patch_size
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d), jnp.float32)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, 1 + g * g, d), jnp.float32)
    pos = resample_pos_embed(pos, (gh, gw), self.pos_interpolation)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
    x = x + pos.astype(x.dtype)
    block = maybe_remat(Block, self.remat)
    deep = self.prompt_mode == "deep"
    for i in range(self.depth):
      x = block(
        self.num_heads,
        self.mlp_ratio,
        dtype=self.dtype,
        adapter_dim=self.adapter_dim,
        prompt_tokens=self.prompt_tokens if i == 0 or deep else 0,
        insert_prompts=i == 0,
        patch_size=self.patch_size,
        name=f"blocks_{i}",
      )(x)
    x = _layer_norm(self.dtype, "norm")(x)
    return x[:, 0]


VIT_CONFIGS = {  # name -> (embed_dim, depth, num_heads, patch_size, mlp_ratio, img_size)
  "vit_s16": (384, 12, 6, 16, 4.0, 224),
  "vit_b16": (768, 12, 12, 16, 4.0, 224),
  # Sized for 32x32 images on a CPU (ViT-Lite's shape, Hassani et al. 2021, at half its
  # width): 8x8 patches of 4 px, 6 blocks of width 128, MLP ratio 2; ~0.8M parameters.
  # No pretrained weights exist for it: the PEFT study pretrains it on syn_digits.
  "vit_digits": (128, 6, 4, 4, 2.0, 32),
}
TIMM_NAMES = {"vit_s16": "vit_small_patch16_224", "vit_b16": "vit_base_patch16_224"}


def _register(
  name: str, embed_dim: int, depth: int, heads: int, patch: int, mlp_ratio: float, size: int
) -> None:
  def build(
    *,
    norm: str = "default",
    dtype: Any = jnp.float32,
    img_size: int = size,
    pos_interpolation: str = "bilinear",
    remat: bool = False,
    adapter_dim: int = 0,
    prompt_tokens: int = 0,
    prompt_mode: str = "shallow",
  ) -> nn.Module:
    resolve_norm(name, norm, ("layer",), "layer")
    for field, value in (("adapter_dim", adapter_dim), ("prompt_tokens", prompt_tokens)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"peft.{field}: must be an integer >= 0 (0: none), got {value!r}")
    if prompt_mode not in PROMPT_MODES:
      raise ConfigError(f"prompt_mode: {prompt_mode!r}; allowed: {', '.join(PROMPT_MODES)}")
    if not isinstance(img_size, int) or img_size < patch or img_size % patch:
      raise ConfigError(f"model.img_size: must be a positive multiple of {patch}, got {img_size!r}")
    if pos_interpolation not in INTERPOLATIONS:
      raise ConfigError(
        f"model.pos_interpolation: {pos_interpolation!r}; allowed: {', '.join(INTERPOLATIONS)}"
      )
    return ViT(
      patch,
      embed_dim,
      depth,
      heads,
      mlp_ratio,
      img_size,
      pos_interpolation,
      dtype=dtype,
      remat=remat,
      adapter_dim=adapter_dim,
      prompt_tokens=prompt_tokens,
      prompt_mode=prompt_mode,
    )

  build.__name__ = name
  build.__doc__ = (
    f"timm {TIMM_NAMES[name]} backbone; img_size sets the position-embedding grid."
    if name in TIMM_NAMES
    else f"ViT, patch {patch}, {depth} blocks of width {embed_dim}, {heads} heads, MLP ratio "
    f"{mlp_ratio:g}, {size} px (no pretrained weights: train it, as the PEFT study does)."
  )
  MODELS.register(name)(build)


for _name, _sizes in VIT_CONFIGS.items():
  _register(_name, *_sizes)
