"""Parameter-efficient transfer (jaxdapt/peft): LoRA as a parameter transform, the
lora / bitfit / head_only optimizer presets, merging, loading into and out of LoRA, PEFT
checkpoints (`jaxdapt peft export | merge`), and LoRA with accumulation, remat, bfloat16
and resume. Adapters and prompts: tests/test_peft_adapters.py."""

import functools
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import tiny_config

from jaxdapt import checkpoint, methods, models, optim, peft, sharding, step, trainer
from jaxdapt import config as config_lib
from jaxdapt.errors import CheckpointError, ConfigError
from jaxdapt.init_from import load_init_from
from jaxdapt.models.vit import ViT
from jaxdapt.peft import delta, lora
from jaxdapt.tools.main import run_tool
from jaxdapt.tree import named_leaves

PRESETS = ("lora", "bitfit", "head_only")


def _config(data_dir, method="dann", peft_method="", **model):
  c = tiny_config(data_dir, method, steps=2, log_every=2, eval_every=2, checkpoint_every=2)
  c.model.bottleneck_dim = 16  # so head_only has a bottleneck to train under SHOT
  c.peft.method = peft_method
  for k, v in model.items():
    c.model[k] = v
  return c


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (4, *shape), np.uint8))


def _outputs(model, params, batch_stats, images):
  """The model's eval-mode outputs through step.apply_model (jitted: eager op-by-op
  dispatch of a ResNet costs tens of seconds on 2 cores)."""

  @jax.jit
  def forward(params, batch_stats, images):
    out, _ = step.apply_model(
      model, params, batch_stats, step.normalize(images, jnp.float32), train=False
    )
    return out

  return forward(params, batch_stats, images)


def _base(params):
  """The tree without its LoRA leaves (the base model's parameters, untouched)."""
  if not isinstance(params, dict):
    return params
  return {k: _base(v) for k, v in params.items() if k not in lora.LEAVES}


def _assert_trees_equal(a, b):
  a, b = dict(named_leaves(a)), dict(named_leaves(b))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def _perturbed(params, seed=1, scale=0.3):
  """Every LoRA B set to random values (A stays at its init): a nonzero delta."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
    lambda p, x: (
      jnp.asarray(rng.normal(0, scale, x.shape), x.dtype) if str(p[-1].key) == lora.B else x
    ),
    params,
  )


# --- an unmerged reference: the LoRA path computed beside each layer ------------------------


def _unmerged_apply(model, lora_params, batch_stats, images):
  """Outputs of the base model with, at every adapted Dense/Conv, s·B(A(x)) added to its
  output: A as a kh×kw conv to r channels (same strides and padding), B as a 1×1 conv.
  Independent of lora.merged: the reference the merged kernel must reproduce."""
  factors = {}
  for name, leaf in named_leaves(lora_params):
    parent, _, leaf_name = name.rpartition("/")
    if leaf_name in lora.LEAVES:
      factors.setdefault(parent, {})[leaf_name] = leaf

  def intercept(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    path = "/".join(module.path)
    if context.method_name != "__call__" or path not in factors:
      return out
    f, x = factors[path], args[0].astype(jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    if isinstance(module, nn.Conv):
      pad = module.padding
      pad = pad if isinstance(pad, str) else tuple(tuple(p) for p in pad)
      h = jax.lax.conv_general_dilated(
        x,
        f[lora.A],
        module.strides,
        pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=hi,
      )
    else:
      h = jnp.matmul(x, f[lora.A], precision=hi)
    return out + (f[lora.SCALE] * jnp.matmul(h, f[lora.B], precision=hi)).astype(out.dtype)

  @jax.jit
  def forward(params, batch_stats, images):
    with nn.intercept_methods(intercept):
      out, _ = step.apply_model(
        model, params, batch_stats, step.normalize(images, jnp.float32), train=False
      )
    return out

  return forward(_base(lora_params), batch_stats, images)


# --- pure transform: init is the base model, merged == unmerged ---------------------------


def _small_models():
  return {
    "resnet18_w8": (
      models.get_model("resnet18", num_classes=5, bottleneck_dim=8, small_input=True, width=8),
      (32, 32, 3),
    ),
    "vit_tiny": (
      models.Classifier(backbone=ViT(16, 32, 2, 2, 2.0, img_size=32), num_classes=3),
      (32, 32, 3),
    ),
  }


def _random_variables(model, shape):
  """(params, batch_stats) of `model`, drawn in NumPy from its abstract init (a jitted
  model.init of a ResNet-18 compiles for ~20 s on 2 shared cores)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), False))
  rng = np.random.default_rng(0)

  def draw(path, s):
    leaf = str(path[-1].key)
    if leaf in ("var", "scale"):  # norm layers near their init: no blow-up to compare in
      return np.ones(s.shape, s.dtype)
    if len(s.shape) < 2:  # biases, BN means
      return rng.normal(0, 0.01, s.shape).astype(s.dtype)
    return rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape).astype(s.dtype)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  return variables["params"], variables.get("batch_stats", {})


@pytest.mark.parametrize("name", ["resnet18_w8", "vit_tiny"])
def test_lora_on_resnet_and_vit_starts_as_the_base_and_merges_exactly(name):
  model, shape = _small_models()[name]
  params, stats = _random_variables(model, shape)
  with_lora = jax.jit(
    lambda p: lora.add(p, ("backbone/.*kernel",), 4, 8.0, jax.random.key(1), prefix="")
  )(params)
  names = [n for n, _ in named_leaves(with_lora) if n.endswith(lora.A)]
  if name == "vit_tiny":  # patch conv, fused qkv, attention output, both MLP layers
    assert {n.split("/", 2)[-1] for n in names if "blocks_0" in n} == {
      "attn/qkv/kernel_lora_a",
      "attn/proj/kernel_lora_a",
      "mlp/fc1/kernel_lora_a",
      "mlp/fc2/kernel_lora_a",
    }
    assert "backbone/patch_embed/proj/kernel_lora_a" in names
  else:
    assert "backbone/conv1/kernel_lora_a" in names
  # At init the effective parameters are the base's, bitwise; the outputs then agree to
  # float32 rounding only: XLA:CPU fuses the two programs differently (YNNPACK elementwise
  # fusions), ~1 ulp. The dann_digits test below compares the outputs bitwise.
  _assert_trees_equal(lora.merged(with_lora), params)
  images = _images(shape)
  base = _outputs(model, params, stats, images)
  at_init = _outputs(model, with_lora, stats, images)
  for k in ("logits", "features"):
    np.testing.assert_allclose(at_init[k], base[k], atol=1e-6, rtol=1e-6)
  moved = _perturbed(with_lora, scale=0.05)
  merged = _outputs(model, lora.merge_checkpoint_params(moved), stats, images)
  reference = _unmerged_apply(model, moved, stats, images)
  assert np.abs(np.asarray(merged["logits"] - base["logits"])).max() > 1e-3  # a real delta
  np.testing.assert_allclose(merged["logits"], reference["logits"], atol=1e-6, rtol=1e-6)


def test_merged_without_lora_is_the_same_object():
  params = {"backbone": {"conv1": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.zeros(2)}}}
  assert lora.merged(params) is params
  variables = {"params": params, "batch_stats": {}}
  assert lora.merged_variables(variables) is variables


def test_lora_model_at_init_is_the_base_model_and_merges_within_1e6(data_dir):
  plain = trainer.build(_config(data_dir))
  lora_exp = trainer.build(_config(data_dir, peft_method="lora"))
  s0 = plain.init(jax.random.key(0))
  s1 = lora_exp.init(jax.random.key(0))
  assert lora.has_lora(s1.params) and not lora.has_lora(s0.params)
  _assert_trees_equal(_base(s1.params), s0.params)  # the base init is unchanged
  images = _images((32, 32, 3))
  out0 = _outputs(plain.model, s0.params["model"], s0.batch_stats, images)
  out1 = _outputs(lora_exp.model, s1.params["model"], s1.batch_stats, images)
  for k in ("logits", "features"):
    np.testing.assert_array_equal(np.asarray(out1[k]), np.asarray(out0[k]))
  moved = _perturbed(jax.device_get(s1.params["model"]))
  merged = lora.merge_checkpoint_params(moved)
  assert not lora.has_lora(merged) and jax.tree.structure(merged) == jax.tree.structure(
    jax.device_get(s0.params["model"])
  )
  via_merge = _outputs(plain.model, merged, s1.batch_stats, images)
  unmerged = _unmerged_apply(lora_exp.model, moved, s1.batch_stats, images)
  assert np.abs(np.asarray(via_merge["logits"] - out0["logits"])).max() > 1e-3  # a real delta
  in_step = _outputs(lora_exp.model, moved, s1.batch_stats, images)  # merged inside the jit
  for k in ("logits", "features"):
    np.testing.assert_allclose(via_merge[k], unmerged[k], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(in_step[k], via_merge[k], atol=1e-6, rtol=1e-6)


# --- what trains, and what holds optimizer state ---------------------------------------------


def _state_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _float_state_bytes(tree) -> int:
  """Optimizer-state bytes of the per-parameter (float) leaves: no step counters."""
  return sum(
    x.size * x.dtype.itemsize
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(x.dtype, jnp.floating)
  )


def _trainable_size(exp, params) -> int:
  flags = dict(named_leaves(exp.tx.trainable(params)))
  return sum(int(x.size) for n, x in named_leaves(params) if flags[n])


def test_lora_steps_move_only_the_factors_and_frozen_leaves_hold_no_state(data_dir):
  exps = {m: trainer.build(_config(data_dir, peft_method=m)) for m in ("",) + PRESETS}
  report = []
  for m, exp in exps.items():
    shapes = jax.eval_shape(exp.init, jax.random.key(0))
    trainable = _trainable_size(exp, shapes.params)
    total = sum(int(x.size) for x in jax.tree.leaves(shapes.params))
    # SGD with momentum: one float32 trace per trainable parameter, nothing for the rest.
    assert _float_state_bytes(shapes.opt_state) == 4 * trainable, m
    report.append(
      f"{m or 'full':>9}: {trainable:>7,} of {total:,} trainable, "
      f"opt state {_state_bytes(shapes.opt_state):>8,} B"
    )
  print("\ndann_digits (tiny head, bottleneck 16):\n" + "\n".join(report))
  for m, exp in exps.items():  # and one state tensor per trainable tensor, none per frozen
    shapes = jax.eval_shape(exp.init, jax.random.key(0))
    floats = [x for x in jax.tree.leaves(shapes.opt_state) if x.dtype == jnp.float32]
    assert len(floats) == sum(jax.tree.leaves(exp.tx.trainable(shapes.params))), m

  exp = exps["lora"]
  state = exp.init(jax.random.key(0))
  trainable = dict(named_leaves(exp.tx.trainable(state.params)))
  assert {n for n, t in trainable.items() if t and n.startswith("model/backbone/")} == {
    n for n in trainable if n.startswith("model/backbone/") and n.endswith(("_lora_a", "_lora_b"))
  }
  before = jax.device_get(state.params)
  its = trainer.train_iterators(exp)
  for _ in range(3):
    state, metrics = exp.update(state, sharding.global_batch(next(its), exp.mesh))
  assert np.isfinite(float(metrics["loss"]))
  after = jax.device_get(state.params)
  for name, old in named_leaves(before):
    new = dict(named_leaves(after))[name]
    if name.endswith(lora.B) or name.startswith(("model/head/", "model/bottleneck/", "method/")):
      assert not np.array_equal(old, new), name  # B leaves zero; everything new trains
    elif not name.endswith(lora.A):
      np.testing.assert_array_equal(old, new, err_msg=name)  # base kernels, biases, norms
  # A moves from step 2 on (its gradient is 0 while B is 0).
  assert any(
    not np.array_equal(old, dict(named_leaves(after))[n])
    for n, old in named_leaves(before)
    if n.endswith(lora.A)
  )


class _OneDense(nn.Module):
  """x -> Dense(5) (x): the smallest model apply_model can take LoRA dropout on."""

  lora_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train):
    return {"logits": nn.Dense(5, name="fc")(x)}


class _RawKernel(nn.Module):
  """A 2-D 'kernel' outside nn.Dense: LoRA merges it, but its path cannot take dropout."""

  lora_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train):
    return {"logits": x @ self.param("kernel", nn.initializers.lecun_normal(), (5, 5))}


def _lora_identity(model):
  """`model`'s params with rank-5 LoRA on its kernel, A = B = identity, scale 2 (alpha 10):
  the LoRA path's output is 2·(its input), so dropout's mask can be read off it."""
  params = model.init(jax.random.key(0), jnp.ones((4, 5)), False)["params"]
  params = lora.add(params, (".*kernel",), 5, 10.0, jax.random.key(1), prefix="")
  eye = jnp.eye(5)
  return jax.tree_util.tree_map_with_path(
    lambda p, x: eye if str(p[-1].key) in (lora.A, lora.B) else x, params
  )


def test_lora_dropout_masks_the_lora_path_input_and_evaluation_merges():
  model = _OneDense(lora_dropout=0.5)
  params = _lora_identity(model)
  x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (4, 5)), jnp.float32)
  base = x @ params["fc"]["kernel"] + params["fc"]["bias"]

  def train(rng):
    return step.apply_model(model, params, {}, x, train=True, rng=rng)[0]["logits"]

  # LoRA path: scale 2 · dropout_0.5(x) = 2 · m · x / 0.5, m in {0, 1} per element.
  masks = [np.asarray((train(jax.random.key(i)) - base) / (4 * x)) for i in range(3)]
  for m in masks:
    np.testing.assert_allclose(m, np.round(m), atol=1e-5)
    assert set(np.round(m).ravel()) == {0.0, 1.0}
  assert not np.array_equal(np.round(masks[0]), np.round(masks[1]))  # a mask per rng
  # Evaluation: no dropout, the merged kernel W + 2·I.
  evaluated = step.apply_model(model, params, {}, x, train=False)[0]["logits"]
  np.testing.assert_allclose(evaluated, base + 2 * x, rtol=1e-6)
  # Rate 0 is the merged path in training too.
  plain = step.apply_model(_OneDense(), params, {}, x, train=True, rng=jax.random.key(0))[0]
  np.testing.assert_allclose(plain["logits"], base + 2 * x, rtol=1e-6)
  # Gradients reach the factors through the dropped-out path.
  grads = jax.grad(
    lambda p: jnp.sum(
      step.apply_model(model, p, {}, x, train=True, rng=jax.random.key(0))[0]["logits"]
    )
  )(params)
  assert np.abs(np.asarray(grads["fc"][lora.B])).sum() > 0


def test_training_dense_path_is_the_merged_layer_with_rank_r_gradients():
  """In training without dropout, LoRA Dense layers run lora.dense_matmul: outputs and the
  gradients of x, A, B (and of the frozen W and scale, which nothing reads) equal autodiff
  of the merged layer x·(W + scale·A·B) + b, on token-shaped [batch, tokens, in] inputs;
  the compiled gradient skips the [in, out] product xᵀg that autodiff of the merged kernel
  forms (XLA's FLOP count)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 16, 96)), jnp.float32)
  w, a, b = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((96, 160), (96, 4), (4, 160)))
  scale = jnp.float32(0.5)
  g = jnp.asarray(rng.normal(size=(4, 16, 160)), jnp.float32)

  def merged(x, w, a, b, scale):
    return x @ (w + scale * jnp.tensordot(a, b, axes=1, precision="highest"))

  want, want_vjp = jax.vjp(merged, x, w, a, b, scale)
  got, got_vjp = jax.vjp(lora.dense_matmul, x, w, a, b, scale)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for name, mine, ref in zip(("x", "W", "A", "B", "scale"), got_vjp(g), want_vjp(g)):
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4, err_msg=name)

  def grad_flops(fn):  # XLA's count for the compiled gradient of x, A and B
    grad = jax.grad(lambda x, a, b: jnp.sum(fn(x, w, a, b, scale) * g), argnums=(0, 1, 2))
    return jax.jit(grad).lower(x, a, b).compile().cost_analysis()["flops"]

  kernel_grad = 2 * 64 * 96 * 160  # xᵀg over the 64 rows: what the Dense path leaves out
  assert grad_flops(merged) - grad_flops(lora.dense_matmul) > 0.9 * kernel_grad
  # Through apply_model: a LoRA Dense layer in training computes the merged layer.
  model = _OneDense()
  params = _lora_identity(model)
  x2 = x[0, :4, :5]
  base = x2 @ params["fc"]["kernel"] + params["fc"]["bias"]
  out = step.apply_model(model, params, {}, x2, train=True, rng=jax.random.key(0))[0]
  np.testing.assert_allclose(out["logits"], base + 2 * x2, rtol=1e-5, atol=1e-6)


def test_lora_kernel_outside_dense_without_dropout_trains_merged():
  """A 2-D kernel outside nn.Dense cannot take the Dense path; without dropout apply_model
  merges it instead, so training still sees W + scale·A·B."""
  model = _RawKernel()
  params = _lora_identity(model)
  x = jnp.ones((4, 5))
  out = step.apply_model(model, params, {}, x, train=True, rng=jax.random.key(0))[0]
  np.testing.assert_allclose(out["logits"], x @ params["kernel"] + 2 * x, rtol=1e-6)


def test_lora_dropout_on_a_kernel_outside_dense_is_a_config_error():
  model = _RawKernel(lora_dropout=0.1)
  params = _lora_identity(model)
  with pytest.raises(ConfigError, match="peft.lora_dropout: 1 Dense kernels carry LoRA"):
    step.apply_model(model, params, {}, jnp.ones((4, 5)), train=True, rng=jax.random.key(0))


def test_lora_dropout_two_step_run_keeps_the_base_frozen(data_dir):
  config = _config(data_dir, peft_method="lora")
  config.peft.lora_dropout = 0.2
  exp = trainer.build(config)
  assert exp.model.lora_dropout == 0.2
  state = exp.init(jax.random.key(0))
  before = dict(named_leaves(jax.device_get(state.params)))
  its = trainer.train_iterators(exp)
  for _ in range(2):
    state, metrics = exp.update(state, sharding.global_batch(next(its), exp.mesh))
  assert np.isfinite(float(metrics["loss"]))
  after = dict(named_leaves(jax.device_get(state.params)))
  for name, old in before.items():
    if name.startswith("model/backbone/") and not name.endswith(("_lora_a", "_lora_b")):
      np.testing.assert_array_equal(old, after[name], err_msg=name)
  assert any(not np.array_equal(old, after[n]) for n, old in before.items() if n.endswith(lora.B))


def test_peft_freeze_rules_compose_with_the_run_rules():
  (rule,) = peft.freeze_rules("bitfit", ("head/.*", "bottleneck/.*", "backbone/fc/.*"))
  frozen = lambda n: bool(re.fullmatch(rule[0], n))
  assert rule[1] is None
  assert frozen("model/backbone/conv1/kernel") and frozen("model/backbone/bn1/scale")
  assert not frozen("model/backbone/bn1/bias") and not frozen("model/backbone/fc/kernel")
  assert not frozen("model/head/out/kernel") and not frozen("method/discriminator/x/kernel")
  (rule,) = peft.freeze_rules("lora", ("head/.*",))
  assert not re.fullmatch(rule[0], "model/backbone/conv1/kernel_lora_b")
  assert re.fullmatch(rule[0], "model/backbone/conv1/kernel_lora_scale")
  assert peft.freeze_rules("", ("head/.*",)) == ()


# --- configuration errors ---------------------------------------------------------------------


def test_lora_target_matching_nothing_is_a_one_line_config_error(data_dir):
  c = _config(data_dir, peft_method="lora")
  c.peft.lora_targets = ("model/backbone/.*kernel", "model/backbone/nonexistent/kernel")
  with pytest.raises(ConfigError) as e:
    trainer.build(c)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("peft.lora_targets:")
  assert "'model/backbone/nonexistent/kernel'" in msg
  c.peft.lora_targets = ("model/head/.*kernel",)
  with pytest.raises(ConfigError, match="model/head/.*trains in full"):
    trainer.build(c)
  for field, value, match in (
    ("method", "prefix", "peft.method"),
    ("lora_rank", 0, "peft.lora_rank"),
    ("lora_alpha", -1.0, "peft.lora_alpha"),
    ("lora_targets", ("(",), r"peft.lora_targets\[0\]: bad regex"),
  ):
    c = _config(data_dir, peft_method="lora")
    c.peft[field] = value
    with pytest.raises(ConfigError, match=match):
      trainer.validate(c)


# --- end to end: 2-step runs from a source-only model, and loading in and out of LoRA ---------


@pytest.fixture(scope="module")
def stage1(data_dir, tmp_path_factory):
  """A 2-step source_only run (label smoothing as SHOT's stage 1): the pretrained model."""
  c = _config(data_dir, "source_only")
  c.method.label_smoothing = 0.1
  workdir = str(tmp_path_factory.mktemp("stage1"))
  trainer.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope="module")
def run(data_dir, stage1, tmp_path_factory):
  @functools.cache
  def train(peft_method, method):
    c = _config(data_dir, method, peft_method, init_from=stage1)
    if method == "shot":
      c.model.dont_load = ()
    workdir = str(tmp_path_factory.mktemp(f"{peft_method}_{method}"))
    summary = trainer.train_and_evaluate(c, workdir)
    return workdir, summary

  return train


def _moves(peft_method, method, name):
  """Whether a 'model/...' parameter of a stage-1-started run should change in 2 steps."""
  if name.startswith("model/head/"):
    return method != "shot"  # SHOT keeps the hypothesis fixed
  if name.startswith("model/bottleneck/"):
    return True
  if peft_method == "lora":
    return name.endswith(lora.B)  # A moves only once B is nonzero (step 2's gradient)
  if peft_method == "bitfit":
    return name.endswith("/bias")
  return False


@pytest.mark.parametrize("method", ["dann", "shot"])
@pytest.mark.parametrize("peft_method", PRESETS)
def test_two_step_runs_train_only_what_the_preset_says(stage1, run, peft_method, method):
  workdir, summary = run(peft_method, method)
  assert summary["method"] == method and 0.0 <= summary["target_acc_last"] <= 1.0
  start = dict(named_leaves(checkpoint.load_model_variables(stage1)[0]))
  final = dict(named_leaves(checkpoint.load_model_variables(workdir)[0]))
  assert lora.has_lora(final) == (peft_method == "lora")
  for name, value in final.items():
    if name.rsplit("/", 1)[-1] in lora.LEAVES:
      assert ("model/" + name).endswith((lora.A, lora.SCALE)) or not np.all(value == 0)
      continue
    if not name.startswith("backbone/"):
      continue  # head and bottleneck: new in DANN's start (dont_load), loaded in SHOT's
    moved = not np.array_equal(start[name], value)
    if peft_method == "bitfit" and name.endswith("/bias"):
      continue  # trained, but a bias may get a zero gradient in 2 steps (dead units)
    assert moved == _moves(peft_method, method, "model/" + name), name
  if peft_method == "bitfit":
    assert any(
      not np.array_equal(start[n], v) for n, v in final.items() if n.startswith("backbone/")
    )
  if method == "shot":  # head and bottleneck loaded: the bottleneck trains, the head not
    assert not np.array_equal(start["bottleneck/dense/kernel"], final["bottleneck/dense/kernel"])
    for name in (n for n in final if n.startswith("head/")):
      np.testing.assert_array_equal(start[name], final[name], err_msg=name)


def test_init_from_into_lora_and_out_of_lora(data_dir, stage1, run):
  images = _images((32, 32, 3))
  # A source-only workdir into a LoRA model: every base leaf loaded, the factors new.
  c = _config(data_dir, "dann", "lora", init_from=stage1)
  exp = trainer.build(c)
  state = load_init_from(exp, exp.init(jax.random.key(0)))
  pretrained = checkpoint.load_model_variables(stage1)[0]
  loaded = jax.device_get(state.params["model"])
  for name, value in named_leaves(_base(loaded)):
    if name.startswith("backbone/"):
      np.testing.assert_array_equal(value, dict(named_leaves(pretrained))[name], err_msg=name)
  assert all(np.all(v == 0) for n, v in named_leaves(loaded) if n.endswith(lora.B))

  # A LoRA workdir (factors trained) into a plain model: the merged kernels.
  lora_run, _ = run("lora", "dann")
  c = _config(data_dir, "source_only", init_from=lora_run)
  c.model.dont_load = ()
  plain = trainer.build(c)
  state = load_init_from(plain, plain.init(jax.random.key(0)))
  params, stats, _ = checkpoint.load_model_variables(lora_run)
  assert lora.has_lora(params)
  _assert_trees_equal(jax.device_get(state.params["model"]), lora.merge_checkpoint_params(params))
  merged_out = _outputs(plain.model, state.params["model"], state.batch_stats, images)
  lora_out = _unmerged_apply(exp.model, params, stats, images)
  np.testing.assert_allclose(merged_out["logits"], lora_out["logits"], atol=1e-6, rtol=0)

  # ... and into a LoRA model: its factors are folded into the base, fresh ones start at 0.
  c = _config(data_dir, "dann", "lora", init_from=lora_run)
  c.model.dont_load = ()
  exp = trainer.build(c)
  state = load_init_from(exp, exp.init(jax.random.key(0)))
  loaded = jax.device_get(state.params["model"])
  _assert_trees_equal(_base(loaded), lora.merge_checkpoint_params(params))
  assert all(np.all(v == 0) for n, v in named_leaves(loaded) if n.endswith(lora.B))


def test_optimizer_state_bytes_of_the_presets_on_resnet18():
  """Trainable parameters and optimizer-state bytes (SGD momentum) of full fine-tuning vs
  the presets on a torchvision-width ResNet-18 with a 256-d bottleneck and a 31-way head,
  printed for docs/peft.md; the state is 4 bytes per trainable parameter."""
  model = models.get_model("resnet18", num_classes=31, bottleneck_dim=256, small_input=True)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  base = variables["params"]
  c = config_lib.base_config()
  lines = []
  for m in ("",) + PRESETS:
    c.peft.method = m
    params = {
      "model": jax.eval_shape(
        lambda m=m: (
          lora.add(base, c.peft.lora_targets, 4, 8.0, jax.random.key(0)) if m == "lora" else base
        )
      ),
      "method": {},
    }
    opt_cfg = peft.optim_config(c, c.optim)
    tx = optim.build_optimizer(opt_cfg, 10, params)
    opt_state = jax.eval_shape(tx.init, params)
    flags = dict(named_leaves(tx.trainable(params)))
    trainable = sum(int(x.size) for n, x in named_leaves(params) if flags[n])
    total = sum(int(x.size) for x in jax.tree.leaves(params))
    assert _float_state_bytes(opt_state) == 4 * trainable
    lines.append(
      f"{m or 'full':>9}: {trainable:>10,} of {total:,} trainable, "
      f"opt state {_state_bytes(opt_state):>11,} B"
    )
  print("\nresnet18 (width 64, bottleneck 256, 31 classes):\n" + "\n".join(lines))


# --- PEFT checkpoints: `jaxdapt peft export | merge` ----------------------------------------


def _peft_tool(argv, capsys) -> str:
  assert run_tool("peft", argv) == 0, capsys.readouterr().err
  return capsys.readouterr().out


def test_export_is_smaller_than_the_checkpoint_and_reproduces_the_run(run, tmp_path, capsys):
  workdir, _ = run("lora", "dann")
  out = tmp_path / "delta"
  printed = _peft_tool(["export", "--workdir", workdir, "--out", str(out)], capsys)
  print("\n" + printed)
  small, full = (int(m.replace(",", "")) for m in re.findall(r"([\d,]+) bytes", printed)[:2])
  assert 0 < small < full
  leaves, meta = delta.load(str(out))
  backbone = [n for n in leaves["params"] if n.startswith("backbone/")]
  assert backbone and all(n.rsplit("/", 1)[-1] in lora.LEAVES for n in backbone)
  assert any(n.startswith("head/") for n in leaves["params"])
  assert meta["base"]["kind"] == "run" and meta["base"]["sha256"]
  # The delta over its base is the run, bitwise (parameters and BatchNorm statistics).
  params, stats, _ = checkpoint.load_model_variables(workdir)
  got_params, got_stats = delta.reconstruct(str(out))
  _assert_trees_equal(got_params, params)
  _assert_trees_equal(got_stats, stats)
  # A base file that no longer has its recorded digest is refused, naming it.
  name = next(iter(meta["base"]["sha256"]))
  meta["base"]["sha256"][name] = "0" * 64
  with open(out / delta.META_FILE, "w") as f:
    json.dump(meta, f)
  with pytest.raises(CheckpointError, match="changed since the export"):
    delta.reconstruct(str(out))


def test_delta_split_keeps_what_the_method_trains_and_refuses_a_moved_frozen_leaf():
  base = {"backbone": {"conv": {"kernel": np.ones((2, 2)), "bias": np.zeros(2)}}}
  run_params = {
    "backbone": {
      "conv": {"kernel": np.ones((2, 2)), "bias": np.zeros(2)},
      "layer1_0": {"adapter": {"down": {"kernel": np.ones((2, 1))}}},
    },
    "head": {"out": {"kernel": np.full((2, 3), 2.0)}},
  }
  stats = {"backbone": {"bn": {"mean": np.ones(2)}}}
  out = delta.split(
    run_params, stats, base, {"backbone": {"bn": {"mean": np.ones(2)}}}, "adapter", ()
  )
  assert sorted(out["params"]) == ["backbone/layer1_0/adapter/down/kernel", "head/out/kernel"]
  assert out["batch_stats"] == {}  # statistics equal to the base's are not stored
  moved = {"backbone": {"bn": {"mean": np.zeros(2)}}}
  assert list(delta.split(run_params, moved, base, stats, "adapter", ())["batch_stats"]) == [
    "backbone/bn/mean"
  ]
  run_params["backbone"]["conv"]["bias"] = np.ones(2)  # frozen under 'adapter', yet changed
  with pytest.raises(ConfigError, match="backbone/conv/bias is frozen"):
    delta.split(run_params, stats, base, stats, "adapter", ())
  assert "backbone/conv/bias" in delta.split(run_params, stats, base, stats, "bitfit", ())["params"]


def test_merge_writes_plain_weights_that_compute_as_the_lora_run(data_dir, run, tmp_path, capsys):
  workdir, _ = run("lora", "dann")
  out = tmp_path / "merged"
  printed = _peft_tool(["merge", "--workdir", workdir, "--out", str(out)], capsys)
  assert "LoRA kernels merged" in printed and str(out) in printed
  c = _config(data_dir, "source_only", init_from=str(out))
  c.model.dont_load = ()
  plain = trainer.build(c)
  state = load_init_from(plain, plain.init(jax.random.key(0)))
  assert not lora.has_lora(state.params)
  params, stats, _ = checkpoint.load_model_variables(workdir)
  lora_model = trainer.build(_config(data_dir, "dann", "lora")).model
  images = _images((32, 32, 3))
  merged_out = _outputs(plain.model, state.params["model"], state.batch_stats, images)
  lora_out = _unmerged_apply(lora_model, params, stats, images)
  for k in ("logits", "features"):
    np.testing.assert_allclose(merged_out[k], lora_out[k], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
  "command, method, init_from, message",
  [
    ("merge", "adapter", "runs/src", "only LoRA factors fold into plain weights"),
    ("merge", "", "runs/src", "peft.method=''; only LoRA"),
    ("export", "", "runs/src", "it has no delta"),
    ("export", "lora", "", "has no model.init_from"),
  ],
)
def test_peft_tool_refuses_in_one_line_and_writes_nothing(
  tmp_path, capsys, command, method, init_from, message
):
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  c = config_lib.base_config()
  c.peft.method, c.model.init_from = method, init_from
  (workdir / "config.json").write_text(c.to_json())
  out = tmp_path / "out"
  assert run_tool("peft", [command, "--workdir", str(workdir), "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and err.startswith("error: peft ") and message in err, err
  assert not out.exists()


# --- LoRA composes with gradient accumulation, remat, bfloat16 and resume -------------------

SMALL = (16, 16, 3)  # dann_digits on 16 px inputs: a step compiles in seconds


@functools.cache
def _lora_two_steps(accum=1, remat=False, dtype="float32"):
  """Parameters after two LoRA steps of source_only (no BatchNorm: dann_digits without
  norm, no bottleneck, so micro-batches change no statistic) on fixed synthetic batches."""
  c = config_lib.base_config()
  c.method.name = "source_only"
  c.data.batch_size = 16
  c.model.head_hidden = (32,)
  c.model.remat, c.model.dtype = remat, dtype
  c.peft.method = "lora"
  c.train.steps = 2
  c.train.grad_accum_steps = accum
  exp = trainer.build_functions(c, sharding.make_mesh(), methods.for_experiment(c), SMALL, 10)
  state = exp.init(jax.random.key(0))
  for seed in range(2):
    rng = np.random.default_rng(seed)
    batch = {
      "source": {
        "image": rng.integers(0, 256, (16, *SMALL), dtype=np.uint8),
        "label": rng.integers(0, 10, 16).astype(np.int32),
      }
    }
    state, metrics = exp.update(state, sharding.global_batch(batch, exp.mesh))
  assert np.isfinite(float(metrics["loss"]))
  return jax.device_get(state.params)


@pytest.mark.parametrize(
  "variant, tolerance",
  [({"accum": 2}, 1e-6), ({"remat": True}, 1e-6), ({"dtype": "bfloat16"}, 2e-3)],
)
def test_lora_composes_with_accumulation_remat_and_bfloat16(variant, tolerance):
  reference, got = _lora_two_steps(), _lora_two_steps(**variant)
  assert jax.tree.structure(got) == jax.tree.structure(reference)
  flat = dict(named_leaves(got))
  for name, ref in named_leaves(reference):
    assert flat[name].dtype == np.float32, name  # parameters stay float32 under bf16 compute
    np.testing.assert_allclose(flat[name], ref, atol=tolerance, rtol=tolerance, err_msg=name)
  assert all(np.any(v != 0) for n, v in flat.items() if n.endswith(lora.B))  # factors trained


def test_lora_run_resumed_after_a_stop_ends_with_the_same_parameters(
  data_dir, stage1, run, tmp_path
):
  reference, _ = run("lora", "dann")
  c = _config(data_dir, "dann", "lora", init_from=stage1)
  assert trainer.train_and_evaluate(c, str(tmp_path), stop_after=1) == {"stopped_at": 1}
  trainer.train_and_evaluate(c, str(tmp_path))
  resumed = checkpoint.load_model_variables(str(tmp_path))
  uninterrupted = checkpoint.load_model_variables(reference)
  assert resumed[2] == uninterrupted[2] == 2
  _assert_trees_equal(resumed[0], uninterrupted[0])
  _assert_trees_equal(resumed[1], uninterrupted[1])
