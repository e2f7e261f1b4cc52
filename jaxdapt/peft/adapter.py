"""Bottleneck adapters (Houlsby et al., ICML 2019) and visual prompts (Jia et al., ECCV 2022)
as model options: the modules and names the backbones use, and the rules over their names.

Unlike LoRA (a delta on an existing kernel, folded away by `lora.merged`), an adapter adds
computation, h ↦ h + up(act(down(h))), and a prompt adds tokens, so neither can be a
transform of the parameter tree: the backbones build them when asked (`adapter_dim` > 0,
`prompt_tokens` > 0 on ResNet, ViT, BertEncoder), and with the defaults (0) they build
nothing, so a plain model's parameter paths, and every checkpoint, are unchanged.

Names (the freeze rule of presets.py and init_from match them):
  ResNet       layer{i}_{j}/adapter/{down,up}/{kernel,bias}      after the block's output
  ViT, BERT    blocks_{i}/adapter_{attn,mlp}/...  (ViT), layer_{i}/adapter_{attn,mlp}/...
               (BERT): on each sublayer's output, before its residual sum (Houlsby)
  ViT prompts  blocks_{i}/prompts [1, n, d]: read by the block they are named after
               (shallow: blocks_0 only; deep: every block)
A prompt lives in the block that first sees it, so optim.llrd gives it that block's depth.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ADAPTER = "adapter"  # module name; ViT/BERT: adapter_attn, adapter_mlp
PROMPTS = "prompts"  # ViT parameter name, one per block that reads prompts
ACTIVATIONS = ("gelu", "relu")
# Over '/'-joined paths (with or without the 'model/' prefix): every adapter leaf, every
# prompt leaf (what trains under peft.method='adapter' / 'vpt_*', and what model.init_from
# treats as new when the weights have none).
ADAPTER_LEAF = r"(?:.*/)?adapter(?:_attn|_mlp)?/(?:down|up)/(?:kernel|bias)"
PROMPT_LEAF = r"(?:.*/)?blocks_\d+/prompts"
VPT_MODES = {"vpt_shallow": "shallow", "vpt_deep": "deep"}

# The down projection draws like LoRA's A (PEFT's kaiming-uniform, ±1/sqrt(fan_in)), so the
# bottleneck activations are O(1) and the zero up projection gets a useful first gradient.
_DOWN_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class Adapter(nn.Module):
  """h + up(act(down(h))) over the last (channel) axis: a 1x1 conv on NHWC maps, a
  per-token MLP on [B, L, D]. `up` is zero-initialised (kernel and bias), so the adapter is
  the identity, bitwise, until it trains. Computes in `dtype`, parameters float32."""

  dim: int
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    z = nn.Dense(
      self.dim, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_DOWN_INIT, name="down"
    )(h)
    z = nn.relu(z) if self.activation == "relu" else nn.gelu(z, approximate=False)
    z = nn.Dense(
      h.shape[-1],
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=nn.initializers.zeros,
      name="up",
    )(z)
    return h + z.astype(h.dtype)


def maybe_adapt(
  h: jnp.ndarray, dim: int, activation: str, dtype: Any, name: str = ADAPTER
) -> jnp.ndarray:
  """`h` through an Adapter named `name` when `dim` > 0; `h` itself (no module, no
  parameter) when 0. Call inside a compact module's __call__."""
  if not dim:
    return h
  return Adapter(dim, activation, dtype=dtype, name=name)(h)


def prompt_init(patch_size: int, channels: int = 3):
  """VPT's initialiser: uniform ±sqrt(6 / (fan_in + fan_out)) with fan_in the patch's
  pixels (3·p·p) and fan_out the width, i.e. xavier-uniform as if the prompts were patch
  embeddings (KMnP/vpt, src/models/vit_prompt/vit.py: `prompt_embeddings`)."""

  def init(key, shape, dtype=jnp.float32):
    bound = math.sqrt(6.0 / float(channels * patch_size * patch_size + shape[-1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init
