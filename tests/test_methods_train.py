"""Tiny CPU integration runs (4 steps, batch 16) of the methods in jaxdapt/methods.

Each experiments/digits config is loaded, shrunk, and trained end to end
(train_and_evaluate: steps, eval, checkpoint) with BatchNorm, alternating the
two-domain BN policies (joint / separate) across methods to keep CI short.
"""

import functools
import json

import jax
import numpy as np
import pytest

from jaxdapt import sharding, trainer
from jaxdapt.tools import grid

NEW_METHODS = ["cdan", "cdan_e", "mcc", "entropy_min", "jan", "afn", "mdd", "dann_bsp", "mcd"]


def tiny(data_dir, experiment, norm="none", bn="joint"):
  """experiments/digits/<experiment>.py on uci2ucim, shrunk to 4 steps of batch 16."""
  c = grid.load_config(experiment, "uci2ucim", "experiments/digits")
  c.data.data_dir = data_dir
  c.data.batch_size = 16
  c.data.eval_batch_size = 256
  c.model.head_hidden = (32,)
  c.model.norm = norm
  c.method.bn = bn
  c.method.aux_head_hidden = (32,)
  c.train.steps = 4
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 4
  c.train.progress_bar = False
  c.train.selection_points = 0  # SND/DEV cost seconds per eval; tests/test_train.py covers them
  return c


def train_tiny(c, workdir) -> tuple[dict, list[dict]]:
  """Trains a `tiny` config in workdir (a pathlib.Path), checks the logged losses are
  finite; returns the summary and the train rows of metrics.jsonl."""
  summary = trainer.train_and_evaluate(c, str(workdir))
  assert summary["method"] == c.method.name
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train_rows = [r for r in rows if r["kind"] == "train"]
  assert [r["step"] for r in train_rows] == [2, 4]
  for r in train_rows:
    assert np.isfinite(r["loss"]) and np.isfinite(r["transfer_loss"]), r
  assert 0.0 <= summary["target_acc_last"] <= 1.0
  return summary, train_rows


@pytest.mark.parametrize(
  "experiment,bn", [(m, ("joint", "separate")[i % 2]) for i, m in enumerate(NEW_METHODS)]
)
def test_method_trains_end_to_end(data_dir, tmp_path, experiment, bn):
  train_tiny(tiny(data_dir, experiment, norm="batch", bn=bn), tmp_path)


def _named(tree):
  from jaxdapt.tree import named_leaves

  return dict(named_leaves(jax.device_get(tree)))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mcd_substeps_update_only_their_parameters(data_dir, optimizer):
  from jaxdapt.methods import mcd

  c = tiny(data_dir, "mcd", norm="batch", bn="joint")
  c.optim.name = optimizer
  exp = trainer.build(c)
  state = exp.init(jax.random.key(0))
  its = trainer.train_iterators(exp)
  batch = sharding.global_batch(next(its), exp.mesh)
  kw = dict(model=exp.model, method=exp.method, tx=exp.tx, bn="joint", dtype=np.float32)
  # Compiled, as the trainer runs them (op-by-op dispatch on 8 devices is far slower).
  substep = lambda kind, *args: jax.jit(functools.partial(mcd.mcd_substep, kind, **kw))(*args)
  # One A step first, so momentum / Adam moments are non-zero for every parameter.
  params, opt, stats, _ = substep(
    "A", state.params, state.opt_state, state.batch_stats, batch, jax.random.key(1)
  )
  before_p, before_o = _named(params), _named(opt)
  for kind in ("B", "C"):
    p2, o2, _, m = substep(kind, params, opt, stats, batch, jax.random.key(2))
    assert np.isfinite(m["loss"]) and np.isfinite(m["discrepancy"])
    after_p, after_o = _named(p2), _named(o2)
    for name, old in before_p.items():
      moved = not np.array_equal(old, after_p[name])
      assert moved == (mcd.is_generator(name) == (kind == "C")), (kind, name)
    for name, old in before_o.items():  # optimizer state of the fixed part untouched too
      pname = next((name[name.index(k) :] for k in ("model/", "method/") if k in name), None)
      if pname is None:  # step counts advance only in sub-step A
        np.testing.assert_array_equal(old, after_o[name])
      elif (mcd.is_generator(pname) == (kind == "C")) is False:
        np.testing.assert_array_equal(old, after_o[name], err_msg=f"{kind} {name}")


def test_mcd_eight_device_step_equals_one_device_step(data_dir):
  """The custom update is data-parallel like the shared one (norm none, bn separate)."""
  c = tiny(data_dir, "mcd", norm="none", bn="separate")
  results = []
  for devs in (jax.devices()[:1], jax.devices()):
    exp = trainer.build(c, devs)
    state = exp.init(jax.random.key(0))
    its = trainer.train_iterators(exp)
    for _ in range(2):
      state, metrics = exp.update(state, sharding.global_batch(next(its), exp.mesh))
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (p1, m1), (p8, m8) = results
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p8)
  np.testing.assert_allclose(m1["transfer_loss"], m8["transfer_loss"], rtol=1e-4, atol=1e-6)
