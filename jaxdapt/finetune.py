"""Fine-tuning policies that compile to the one per-parameter rule list of optim.py.

A preset names a rule list; layer-wise learning-rate decay (LLRD) refines a
rule list by backbone depth. Neither is a second mechanism: `compile_rules`
returns the plain (regex, multiplier | None) tuple that `optim` applies, so
`jaxdapt optim --config ...` shows exactly what will train.

This module works on parameter names only ('/'-joined paths such as
'model/backbone/layer1_0/conv1/kernel') and imports nothing from the trainer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jaxdapt.errors import ConfigError

Rule = tuple[str, Any]  # (regex, lr multiplier | None = frozen)

# optim.preset → rules; the preset replaces optim.rules (setting both is a ConfigError).
PRESETS: dict[str, tuple[Rule, ...]] = {
  # Pretrained backbone at a tenth of the lr of the new layers (bottleneck, head, method).
  "discriminative": (("model/backbone/.*", 0.1), (".*", 1.0)),
  # Linear probe (LP-FT stage 1): only the head and the method's parameters train.
  "linear_probe": (("model/(backbone|bottleneck)/.*", None), (".*", 1.0)),
}

BACKBONE = "model/backbone/"

# First name under model/backbone/ → sort key of its block; blocks at one key share a
# depth. Keys of one family sort in forward order; None puts a module with the head.
_BLOCKS: tuple[tuple[str, Callable[[re.Match], tuple[int, ...] | None]], ...] = (
  (r"(?:conv|bn)(\d+)", lambda m: (0, int(m[1]))),  # ResNet stem; digits nets
  (r"patch_embed|cls_token|pos_embed", lambda m: (0, 0)),  # ViT embedding
  (r"embeddings", lambda m: (0, 0)),  # BERT-family text encoder: token embeddings
  (r"layer(\d+)_(\d+)", lambda m: (1, int(m[1]), int(m[2]))),  # ResNet stage i, block j
  (r"blocks_(\d+)", lambda m: (1, int(m[1]))),  # ViT block i
  (r"layer_(\d+)", lambda m: (1, int(m[1]))),  # text encoder layer i
  (r"features_(\d+)", lambda m: (1, int(m[1]))),  # VGG conv (BN merged)
  (r"classifier_(\d+)", lambda m: (2, int(m[1]))),  # VGG fc6 / fc7
  (r"norm", lambda m: None),  # ViT final LayerNorm
)


def _block_key(module: str, modules: set[str]) -> tuple[int, ...] | None:
  for pattern, key in _BLOCKS:
    m = re.fullmatch(pattern, module)
    if m is None:
      continue
    if pattern.startswith("features") and f"features_{int(m[1]) - 1}" in modules:
      return (1, int(m[1]) - 1)  # vgg*_bn: the BatchNorm right after its conv
    return key(m)
  raise ConfigError(
    f"optim.llrd: no depth for backbone module {BACKBONE}{module}; known blocks: "
    f"conv<i>/bn<i>, layer<i>_<j>, patch_embed, cls_token, pos_embed, blocks_<i>, "
    f"embeddings, layer_<i>, features_<i>, classifier_<i>, norm"
  )


def backbone_depths(names: Iterable[str]) -> tuple[dict[str, int], int]:
  """{backbone module: depth 0..D-1} and D, the depth of the head (full lr).

  Depth is the rank of the module's block in forward order: ResNet stem 0,
  then one depth per residual block; ViT patch embedding 0, block i at i+1,
  final norm with the head; text encoder embeddings 0, layer i at i+1; VGG one per conv
  (its BatchNorm with it), fc6, fc7.
  """
  modules = {n[len(BACKBONE) :].split("/", 1)[0] for n in names if n.startswith(BACKBONE)}
  keys = {m: _block_key(m, modules) for m in modules}
  ranks = {k: i for i, k in enumerate(sorted({k for k in keys.values() if k is not None}))}
  depth_max = len(ranks)
  return {m: depth_max if k is None else ranks[k] for m, k in keys.items()}, depth_max


def llrd_rules(names: Iterable[str], decay: float) -> list[Rule]:
  """One rule per backbone depth d < D with multiplier decay^(D − d)."""
  depths, depth_max = backbone_depths(names)
  by_depth: dict[int, list[str]] = {}
  for module, d in depths.items():
    by_depth.setdefault(d, []).append(module)
  return [
    (
      f"{re.escape(BACKBONE)}(?:{'|'.join(map(re.escape, sorted(mods)))})(?:/.*)?",
      decay ** (depth_max - d),
    )
    for d, mods in sorted(by_depth.items())
    if d < depth_max
  ]


def refine(rules: Sequence[Rule], finer: Sequence[Rule]) -> tuple[Rule, ...]:
  """Each rule (p, m) split by `finer` into (p ∧ q, m·f) for every (q, f), then (p, m).

  First-match order is kept, so a parameter still gets its first matching rule
  of `rules` (a frozen one stays frozen), with the factor of its `finer` group.
  """
  out: list[Rule] = []
  for pattern, mult in rules:
    if mult is not None:
      out += [(f"(?=(?:{q})\\Z)(?:{pattern})", mult * f) for q, f in finer]
    out.append((pattern, mult))
  return tuple(out)


def compile_rules(config, names: Iterable[str]) -> tuple[Rule, ...]:
  """config.optim (preset or rules, then llrd) → the rule list that optim applies."""
  rules = PRESETS[config.preset] if config.preset else tuple(map(tuple, config.rules))
  if config.llrd and config.llrd != 1:
    rules = refine(rules, llrd_rules(names, float(config.llrd)))
  return rules


def block_of(name: str) -> str:
  """'model/backbone/layer1_0/conv1/kernel' → 'model/backbone/layer1_0' (for summaries)."""
  parts = name.split("/")
  return "/".join(parts[:3] if parts[:2] == ["model", "backbone"] else parts[:2])
