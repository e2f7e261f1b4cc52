"""BERT-family text encoder (BERT, MiniLM) in Flax Linen, laid out like Hugging Face's BertModel.

Input convention: the module is called as `model(tokens, train=...)` with `tokens` an int32
array [B, L] of WordPiece ids whose padding is `pad_id` (0, [PAD], in BERT vocabularies);
the attention mask is derived inside as `tokens != pad_id`, so a batch carries no separate
mask and padded positions never reach a real token's attention or the pooled features.
jaxdapt.data.text.Tokenizer produces such arrays ([CLS] ... [SEP] then padding). Token type
ids are all 0 (single sentences) and positions are 0..L-1.

Computation: embeddings (word + position + token type, summed in float32) -> LayerNorm ->
`layers` post-LN blocks: x = LN(x + Wo·attn(x)), x = LN(x + W2·gelu(W1·x)), GELU the
exact erf form that BERT uses, LayerNorm eps 1e-12. Attention logits, softmax and the
LayerNorm statistics are float32 whatever `dtype` (the bf16 policy: matmuls in `dtype`,
params float32). `remat` puts each block under nn.remat. `max_tokens` > 0 reads only the
first max_tokens ids of each row (model.max_tokens: a cheaper encoder at a fixed cost; a
row cut there loses its [SEP], as Hugging Face's truncation would not).

Output: `pooling` 'mean' (mean of the last hidden states over real tokens: what
sentence-transformers uses for all-MiniLM-L6-v2), 'cls' (the [CLS] position's hidden state)
-> features [B, H]; 'none' -> the last hidden states [B, L, H] (token-level heads, parity
checks). BERT's `pooler` (dense + tanh on [CLS]) is not part of it.

Parameter names (jaxdapt/weights/hf_text.py maps Hugging Face names onto them):
  embeddings/{word,position,token_type}_embeddings/embedding, embeddings/norm
  layer_{i}/attention/{query,key,value}, layer_{i}/attention_output, layer_{i}/attention_norm,
  layer_{i}/intermediate, layer_{i}/output, layer_{i}/output_norm
and, with `adapter_dim` > 0 (peft.method='adapter'; 0, the default, builds nothing), Houlsby
et al.'s two adapters per layer, on the attention output and the feed-forward output after
their dropout and before the residual LayerNorm, exactly where the paper puts them in BERT:
  layer_{i}/adapter_attn/{down,up}, layer_{i}/adapter_mlp/{down,up}
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdapt.errors import ConfigError
from jaxdapt.models.layers import dense, maybe_remat, resolve_norm
from jaxdapt.models.zoo import MODELS
from jaxdapt.peft.adapter import maybe_adapt

LN_EPSILON = 1e-12
POOLINGS = ("mean", "cls", "none")
# BERT's initialiser (initializer_range): pretrained weights replace it, a random init uses it.
_INIT = nn.initializers.normal(0.02)


def _layer_norm(epsilon: float, dtype: Any, name: str) -> nn.LayerNorm:
  # Two-pass variance as torch computes it: E[x²]-E[x]² loses digits on BERT's residual
  # stream, whose few outlier dimensions are large next to the rest.
  return nn.LayerNorm(
    epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name=name
  )


class SelfAttention(nn.Module):
  """Multi-head self-attention with separate query/key/value projections (BERT's layout);
  `bias` [B, L] is added to every query's logits (0 for real keys, very negative for
  padding)."""

  heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, bias: jnp.ndarray, train: bool) -> jnp.ndarray:
    b, l, d = x.shape
    hd = d // self.heads

    def project(name: str) -> jnp.ndarray:
      return dense(d, dtype=self.dtype, name=name)(x).reshape(b, l, self.heads, hd)

    q, k, v = project("query"), project("key"), project("value")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * hd**-0.5
    attn = nn.softmax(logits + bias[:, None, None, :], axis=-1)
    if self.dropout > 0:
      attn = nn.Dropout(self.dropout, deterministic=not train)(attn)
    return jnp.einsum("bhqk,bkhd->bqhd", attn.astype(self.dtype), v).reshape(b, l, d)


class BertLayer(nn.Module):
  """One post-LN transformer block of BERT (with adapters when adapter_dim > 0)."""

  heads: int
  intermediate: int
  layer_norm_eps: float = LN_EPSILON
  dropout: float = 0.0
  dtype: Any = jnp.float32
  adapter_dim: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray, bias: jnp.ndarray, train: bool) -> jnp.ndarray:
    d = x.shape[-1]
    drop = nn.Dropout(self.dropout, deterministic=not train) if self.dropout > 0 else None
    h = SelfAttention(self.heads, self.dropout, dtype=self.dtype, name="attention")(x, bias, train)
    h = dense(d, dtype=self.dtype, name="attention_output")(h)
    h = drop(h) if drop else h
    h = maybe_adapt(h, self.adapter_dim, "gelu", self.dtype, "adapter_attn")
    x = _layer_norm(self.layer_norm_eps, self.dtype, "attention_norm")(x + h)
    h = dense(self.intermediate, dtype=self.dtype, name="intermediate")(x)
    h = nn.gelu(h, approximate=False)
    h = dense(d, dtype=self.dtype, name="output")(h)
    h = drop(h) if drop else h
    h = maybe_adapt(h, self.adapter_dim, "gelu", self.dtype, "adapter_mlp")
    return _layer_norm(self.layer_norm_eps, self.dtype, "output_norm")(x + h)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, summed in float32, then LayerNorm."""

  vocab_size: int
  hidden: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float = LN_EPSILON
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
    def embed(n: int, name: str) -> nn.Embed:
      return nn.Embed(n, self.hidden, dtype=jnp.float32, embedding_init=_INIT, name=name)

    l = tokens.shape[1]
    x = embed(self.vocab_size, "word_embeddings")(tokens)
    x = x + embed(self.max_positions, "position_embeddings")(jnp.arange(l))[None]
    x = x + embed(self.type_vocab_size, "token_type_embeddings")(jnp.zeros((1, l), jnp.int32))
    return _layer_norm(self.layer_norm_eps, self.dtype, "norm")(x)


class BertEncoder(nn.Module):
  """BERT-family encoder: int32 tokens [B, L] (pad_id = padding) -> features [B, H]
  (pooling 'mean' or 'cls') or hidden states [B, L, H] (pooling 'none'); see the module
  docstring for the conventions. Dropout (> 0, training only) needs rngs={'dropout': key}."""

  vocab_size: int = 30522
  hidden: int = 384
  layers: int = 6
  heads: int = 12
  intermediate: int = 1536
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = LN_EPSILON
  pad_id: int = 0
  pooling: str = "mean"
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  adapter_dim: int = 0
  max_tokens: int = 0

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool) -> jnp.ndarray:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ConfigError(
        f"text model input: expects integer token ids [B, L], got {tokens.dtype} "
        f"{tuple(tokens.shape)}"
      )
    if self.max_tokens:  # the first max_tokens ids of each row: a shape, so no recompiles
      tokens = tokens[:, : self.max_tokens]
    if tokens.shape[1] > self.max_positions:
      raise ConfigError(
        f"text model input: {tokens.shape[1]} tokens per row, the position embedding has "
        f"{self.max_positions}; tokenize with a smaller largest bucket"
      )
    if self.pooling not in POOLINGS:
      raise ConfigError(f"model.pooling: {self.pooling!r}; allowed: {', '.join(POOLINGS)}")
    mask = tokens != self.pad_id
    # float32 logits: finfo.min on padded keys gives them exactly zero weight after softmax.
    bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    x = BertEmbeddings(
      self.vocab_size,
      self.hidden,
      self.max_positions,
      self.type_vocab_size,
      self.layer_norm_eps,
      dtype=self.dtype,
      name="embeddings",
    )(tokens)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = x.astype(self.dtype)
    layer = maybe_remat(BertLayer, self.remat, static_argnums=(3,))
    for i in range(self.layers):
      x = layer(
        self.heads,
        self.intermediate,
        self.layer_norm_eps,
        self.dropout,
        dtype=self.dtype,
        adapter_dim=self.adapter_dim,
        name=f"layer_{i}",
      )(x, bias, train)
    if self.pooling == "none":
      return x
    if self.pooling == "cls":
      return x[:, 0]
    weights = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(x.astype(jnp.float32) * weights, axis=1)
    count = jnp.maximum(jnp.sum(weights, axis=1), 1e-9)  # sentence-transformers' clamp
    return (total / count).astype(self.dtype)


def _check(name: str, **dims: int) -> None:
  for field, value in dims.items():
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ConfigError(f"model.{field}: {name} needs a positive int, got {value!r}")
  if dims["hidden"] % dims["heads"]:
    raise ConfigError(
      f"model.hidden: {name}: {dims['hidden']} is not divisible by heads={dims['heads']}"
    )


def _options(
  name: str, norm: str, pooling: str, dropout: float, adapter_dim: int = 0, max_tokens: int = 0
) -> None:
  resolve_norm(name, norm, ("layer",), "layer")
  if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
    raise ConfigError(
      f"model.max_tokens: must be an integer >= 0 (0: every token), got {max_tokens!r}"
    )
  if isinstance(adapter_dim, bool) or not isinstance(adapter_dim, int) or adapter_dim < 0:
    raise ConfigError(
      f"peft.adapter_dim: must be an integer >= 0 (0: no adapters), got {adapter_dim!r}"
    )
  if pooling not in POOLINGS:
    raise ConfigError(f"model.pooling: {pooling!r}; allowed: {', '.join(POOLINGS)}")
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f"model.dropout: {name} needs a value in [0, 1), got {dropout!r}")


@MODELS.register("bert")
def bert(
  *,
  norm: str = "default",
  dtype: Any = jnp.float32,
  layers: int = 12,
  hidden: int = 768,
  heads: int = 12,
  intermediate: int = 3072,
  vocab: int = 30522,
  max_positions: int = 512,
  pooling: str = "mean",
  dropout: float = 0.0,
  remat: bool = False,
  adapter_dim: int = 0,
  max_tokens: int = 0,
) -> nn.Module:
  """A BERT encoder of any size (defaults: BERT-base); input int32 tokens [B, L], 0 = [PAD]."""
  _check(
    "bert",
    layers=layers,
    hidden=hidden,
    heads=heads,
    intermediate=intermediate,
    vocab=vocab,
    max_positions=max_positions,
  )
  _options("bert", norm, pooling, dropout, adapter_dim, max_tokens)
  return BertEncoder(
    vocab_size=vocab,
    hidden=hidden,
    layers=layers,
    heads=heads,
    intermediate=intermediate,
    max_positions=max_positions,
    pooling=pooling,
    dropout=dropout,
    dtype=dtype,
    remat=remat,
    adapter_dim=adapter_dim,
    max_tokens=max_tokens,
  )


@MODELS.register("minilm_l6")
def minilm_l6(
  *,
  norm: str = "default",
  dtype: Any = jnp.float32,
  pooling: str = "mean",
  dropout: float = 0.0,
  remat: bool = False,
  adapter_dim: int = 0,
  max_tokens: int = 0,
) -> nn.Module:
  """sentence-transformers/all-MiniLM-L6-v2's encoder (6 layers, hidden 384, 12 heads,
  intermediate 1536, uncased English WordPiece vocabulary of 30522); weights from
  jaxdapt.weights.hf_text.packaged_minilm."""
  _options("minilm_l6", norm, pooling, dropout, adapter_dim, max_tokens)
  return BertEncoder(
    pooling=pooling,
    dropout=dropout,
    dtype=dtype,
    remat=remat,
    adapter_dim=adapter_dim,
    max_tokens=max_tokens,
  )


@MODELS.register("bert_tiny")
def bert_tiny(
  *,
  norm: str = "default",
  dtype: Any = jnp.float32,
  pooling: str = "mean",
  dropout: float = 0.0,
  remat: bool = False,
  adapter_dim: int = 0,
  max_tokens: int = 0,
) -> nn.Module:
  """BERT-Tiny's shape (Turc et al., 2019: 2 layers, hidden 128, 2 heads, intermediate 512)
  over BERT's uncased vocabulary of 30522: a text encoder small enough for CPU tests and
  quick runs from random initialisation."""
  return bert(
    norm=norm,
    dtype=dtype,
    layers=2,
    hidden=128,
    heads=2,
    intermediate=512,
    pooling=pooling,
    dropout=dropout,
    remat=remat,
    adapter_dim=adapter_dim,
    max_tokens=max_tokens,
  )
