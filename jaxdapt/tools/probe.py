"""Linear probe and kNN on frozen features: transfer with no fine-tuning at all.

  jaxdapt probe --workdir RUN --dataset uci_digits            # a jaxdapt run
  jaxdapt probe --weights weights/r18 --model resnet18 --dataset uci_digits

Features of the dataset's train and test splits are extracted once with the
run's model (`features.extract`, jitted and data-parallel) into a store under
OUT (default RUN/features), then:
  * linear probe: multinomial logistic regression fitted in JAX with L-BFGS on
    standardised features, objective mean cross-entropy + l2/2·‖W‖² (bias not
    penalised; sklearn's C equals 1/(l2·n)); l2 chosen on a validation split
    carved from train (stratified), then refitted on all of train;
  * kNN: cosine similarity, majority vote of the k nearest training rows (ties
    go to the nearest neighbour's class).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclasses.dataclass(frozen=True)
class LinearProbe:
  weight: np.ndarray  # [D, C] on standardised features
  bias: np.ndarray  # [C]
  mean: np.ndarray  # [D] feature standardisation fitted on the training rows
  scale: np.ndarray  # [D]
  l2: float
  val_acc: float | None

  def logits(self, x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float32) - self.mean) / self.scale) @ self.weight + self.bias

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.logits(x).argmax(1)


def _solve(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, max_iter: int):
  """argmin_W,b mean CE(xW + b, y) + l2/2·‖W‖² by L-BFGS (convex: one optimum)."""
  w, b = _lbfgs(jnp.asarray(x), jnp.asarray(y), jnp.float32(l2), num_classes, max_iter)
  return np.asarray(w), np.asarray(b)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _lbfgs(x, y, l2, num_classes: int, max_iter: int):
  """Compiled once per (shapes, num_classes, max_iter); l2 is traced, so the whole grid
  of regularisation strengths shares one compilation."""

  def objective(params):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  params = {
    "w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
    "b": jnp.zeros((num_classes,), jnp.float32),
  }
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=objective)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=max_iter)
  return params["w"], params["b"]


def stratified_split(
  labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, validation indices): `fraction` of each class held out (≥ 1 per class
  with ≥ 2 rows), so every class is seen in both parts."""
  rng = np.random.default_rng(seed)
  train, val = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_val = int(round(fraction * len(idx))) if len(idx) > 1 else 0
    n_val = max(n_val, 1) if len(idx) > 1 else 0
    val.append(idx[:n_val])
    train.append(idx[n_val:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def fit_linear_probe(
  x: np.ndarray,
  y: np.ndarray,
  num_classes: int,
  *,
  l2_grid: Sequence[float] = L2_GRID,
  val_fraction: float = 0.2,
  max_iter: int = 300,
  seed: int = 0,
) -> LinearProbe:
  """Chooses l2 on a stratified validation split of (x, y), then refits on all of it."""
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int32)
  if x.ndim != 2 or len(x) != len(y):
    raise ValueError(
      f"fit_linear_probe: x must be [N, D] with N = len(y); got {x.shape}, {y.shape}"
    )
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(
      f"fit_linear_probe: labels must be in [0, {num_classes}); got [{y.min()}, {y.max()}]"
    )

  def standardise(rows):
    mean = x[rows].mean(0)
    scale = x[rows].std(0) + 1e-6
    return mean, scale

  val_acc = None
  l2 = float(l2_grid[0])
  if len(l2_grid) > 1:
    tr, va = stratified_split(y, val_fraction, seed)
    mean, scale = standardise(tr)
    scores = []
    for cand in l2_grid:
      w, b = _solve((x[tr] - mean) / scale, y[tr], num_classes, cand, max_iter)
      scores.append(float(((((x[va] - mean) / scale) @ w + b).argmax(1) == y[va]).mean()))
    # Ties go to the strongest regularisation (the simpler model).
    best = max(range(len(l2_grid)), key=lambda i: (scores[i], l2_grid[i]))
    l2, val_acc = float(l2_grid[best]), scores[best]
  rows = np.arange(len(y))
  mean, scale = standardise(rows)
  w, b = _solve((x - mean) / scale, y, num_classes, l2, max_iter)
  return LinearProbe(w, b, mean, scale, l2, val_acc)


def knn_predict(
  train_x: np.ndarray,
  train_y: np.ndarray,
  query_x: np.ndarray,
  *,
  k: int,
  num_classes: int,
  chunk: int = 1024,
) -> np.ndarray:
  """Cosine kNN majority vote; a tie between classes goes to the class of the nearest
  of the tied neighbours (so k=1 is plain nearest neighbour)."""
  train_x = np.asarray(train_x, np.float32)
  k = min(k, len(train_x))

  def normalise(a):
    return a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)

  t = jnp.asarray(normalise(train_x))
  ty = jnp.asarray(np.asarray(train_y, np.int32))

  @jax.jit
  def vote(q):
    sims, idx = jax.lax.top_k(q @ t.T, k)
    labels = ty[idx]  # [Q, k], nearest first
    counts = jax.nn.one_hot(labels, num_classes).sum(1)  # [Q, C]
    # Among the classes with the top count, the one whose first occurrence is earliest.
    rank = jnp.where(jax.nn.one_hot(labels, num_classes) > 0, jnp.arange(k)[None, :, None], k).min(
      1
    )  # [Q, C] first position
    score = counts * (k + 1) - rank
    return score.argmax(1)

  q = normalise(np.asarray(query_x, np.float32))
  return np.concatenate(
    [np.asarray(vote(jnp.asarray(q[i : i + chunk]))) for i in range(0, len(q), chunk)]
  )


# ---------------------------------------------------------------------------- command line


def _experiment_from_args(args):
  """(exp, state, store tag) for --workdir RUN or --weights DIR --model NAME."""
  from jaxdapt import checkpoint, trainer
  from jaxdapt import config as config_lib
  from jaxdapt.tools.analyze import load_run_config

  if args.workdir:
    config = load_run_config(args.workdir)
  else:
    config = config_lib.base_config()
    config.model.name = args.model
    config.model.head_hidden = ()
    config.model.init_from = args.weights
  d = config.data
  d.source = d.target = args.dataset
  d.source_split = d.target_split = args.train_split
  d.source_val_split = d.target_test_split = args.test_split
  exp = trainer.build(config)
  state = exp.init(jax.random.key(config.seed))
  if args.workdir:
    ckpt = checkpoint.Checkpointer(args.workdir, config.train.keep_checkpoints)
    try:
      state, _ = ckpt.restore(checkpoint.abstract_like(state))
    finally:
      ckpt.close()
    tag = f"step{int(jax.device_get(state.step))}"
  else:
    state = trainer.load_init_from(exp, state)
    tag = "weights"
  # The probed dataset plays the target: a DSBN run's target branch, AdaBN if configured.
  return exp, trainer.eval_states(exp, state)["target"], tag


def main(argv: Sequence[str] | None = None) -> int:
  p = cli.parser("probe", __doc__)
  p.formatter_class = argparse.RawDescriptionHelpFormatter
  p.epilog = __doc__.split("\n\n", 1)[1]
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a jaxdapt run: its latest checkpoint's backbone")
  src.add_argument("--weights", help="a directory written by `jaxdapt weights import`")
  p.add_argument("--model", help="architecture of --weights (e.g. resnet18)")
  p.add_argument("--dataset", required=True, help="domain to probe (e.g. uci_digits)")
  p.add_argument("--train-split", default="train")
  p.add_argument("--test-split", default="test")
  p.add_argument("--k", type=int, default=20, help="neighbours for kNN")
  p.add_argument("--out", help="feature store directory (default RUN/features or WEIGHTS/features)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if args.weights and not args.model:
    p.error("--weights needs --model")
  if args.k < 1:
    raise ConfigError(f"--k: {args.k}; kNN needs at least 1 neighbour")
  # Before any data loads or anything is written: the run or the import directory exists.
  if args.workdir:
    from jaxdapt.tools.analyze import check_run

    check_run(args.workdir)
  elif not os.path.isdir(args.weights):
    raise ConfigError(
      f"--weights {args.weights}: no such directory (write one with `jaxdapt weights import`)"
    )
  from jaxdapt import features

  exp, state, tag = _experiment_from_args(args)
  out = args.out or os.path.join(args.workdir or args.weights, "features")
  forward = features.forward_fn(exp)
  arrays = {}
  for split, source in (("train", exp.sources["source"]), ("test", exp.sources["target_test"])):
    meta = {"dataset": args.dataset, "split": getattr(args, f"{split}_split"), "model": tag}
    path = os.path.join(out, f"{args.dataset}_{meta['split']}_{tag}")
    stored = features.load_store(path, meta)
    if stored is None:
      stored = features.extract(exp, forward, state, source)
      features.save_store(path, stored, meta)
    arrays[split] = stored
  tr, te = arrays["train"], arrays["test"]
  probe = fit_linear_probe(tr["features"], tr["labels"], exp.num_classes, seed=args.seed)
  probe_acc = float((probe.predict(te["features"]) == te["labels"]).mean())
  knn = knn_predict(
    tr["features"], tr["labels"], te["features"], k=args.k, num_classes=exp.num_classes
  )
  knn_acc = float((knn == te["labels"]).mean())
  result = {
    "dataset": args.dataset,
    "model": tag,
    "n_train": len(tr["labels"]),
    "n_test": len(te["labels"]),
    "feature_dim": int(tr["features"].shape[1]),
    "linear_probe_acc": probe_acc,
    "l2": probe.l2,
    "probe_val_acc": probe.val_acc,
    "knn_acc": knn_acc,
    "k": args.k,
  }
  print(json.dumps(result, indent=2))
  with open(os.path.join(out, f"probe_{args.dataset}_{tag}.json"), "w") as f:
    json.dump(result, f, indent=2)
  return 0
