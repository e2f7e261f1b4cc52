"""Adapters (peft.method='adapter') and visual prompt tuning (peft.method='vpt_shallow' |
'vpt_deep'): model options of ResNet, ViT and the BERT encoder (jaxdapt/peft/adapter.py).

Models are tiny (a few blocks, widths 4-32) and applied under jax.jit; trainer-level checks
trace with jax.eval_shape, and one adapter run of bert_tiny goes through the real step."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdapt import config as config_lib
from jaxdapt import methods, models, optim, peft, sharding, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.init_from import new_leaves
from jaxdapt.models.resnet import BasicBlock, BottleneckBlock, ResNet
from jaxdapt.models.text_encoder import BertEncoder
from jaxdapt.models.vit import ViT
from jaxdapt.peft import adapter
from jaxdapt.tree import named_leaves
from jaxdapt.weights import PretrainedWeights, merge_into

IMAGES = (2, 32, 32, 3)


def _backbones(**options):
  """name → (backbone with `options`, input): both ResNet block types, a ViT, a BERT."""
  resnet = dict(small_input=True, width=4)
  return {
    "resnet_basic": (ResNet(BasicBlock, (1, 1), **resnet, **options), _images()),
    "resnet_bottleneck": (ResNet(BottleneckBlock, (1, 1), **resnet, **options), _images()),
    "vit": (ViT(16, 32, 2, 2, 2.0, img_size=32, **options), _images()),
    "bert": (
      BertEncoder(
        vocab_size=64, hidden=16, layers=2, heads=2, intermediate=32, max_positions=16, **options
      ),
      jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 9)), jnp.int32),
    ),
  }


def _images():
  return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, IMAGES), jnp.float32)


def _init(model, x, seed=0):
  """(params, batch_stats) drawn in NumPy from the abstract init (a jitted init is one more
  compile): kernels ~ 1/sqrt(fan_in), adapter up projections zero (their init), norm
  scales and variances one, the rest small."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = "/".join(str(k.key) for k in path)
    if re.fullmatch(r".*/up/(kernel|bias)", name):
      return np.zeros(s.shape, s.dtype)
    if name.endswith(("/var", "/scale")):
      return np.ones(s.shape, s.dtype)
    if len(s.shape) < 2:
      return rng.normal(0, 0.01, s.shape).astype(s.dtype)
    return rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape).astype(s.dtype)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  return variables["params"], variables.get("batch_stats", {})


def _apply(model):
  return jax.jit(
    lambda p, s, x: model.apply({"params": p, **({"batch_stats": s} if s else {})}, x, False)
  )


def _without(params, regex):
  flat = {n: v for n, v in named_leaves(params) if not re.fullmatch(regex, n)}
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


# --- adapters: placement, identity at init, paths of plain models unchanged --------------


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "vit", "bert"])
def test_adapters_start_as_the_base_model_and_add_only_adapter_leaves(name):
  plain, x = _backbones()[name]
  adapted, _ = _backbones(adapter_dim=3)[name]
  params, stats = _init(adapted, x)
  names = [n for n, _ in named_leaves(params)]
  new = [n for n in names if re.fullmatch(adapter.ADAPTER_LEAF, n)]
  base = _without(params, adapter.ADAPTER_LEAF)
  plain_shapes = jax.eval_shape(lambda: plain.init(jax.random.key(0), x, train=False))["params"]
  # Without adapters the paths are the model's own; with them only adapter leaves are added.
  assert [n for n, _ in named_leaves(plain_shapes)] == [n for n, _ in named_leaves(base)]
  blocks = {n.split("/")[0] for n in new}
  per_block = {n.split("/")[1] for n in new}
  if name.startswith("resnet"):  # one adapter after every block
    assert blocks == {"layer1_0", "layer2_0"} and per_block == {"adapter"}
  else:  # Houlsby: one on each sublayer of every transformer block
    assert len(blocks) == 2 and per_block == {"adapter_attn", "adapter_mlp"}
  assert len(new) == 4 * len(blocks) * len(per_block)  # down/up × kernel/bias
  for n, v in named_leaves(params):
    if re.fullmatch(r".*/up/(kernel|bias)", n):
      assert not np.any(np.asarray(v)), n  # zero up projection: the identity at init
  moved = jax.tree_util.tree_map_with_path(  # random up projections: a real delta
    lambda p, v: (
      np.random.default_rng(1).normal(0, 0.3, v.shape).astype(v.dtype)
      if "/".join(str(k.key) for k in p).endswith("up/kernel")
      else v
    ),
    params,
  )

  @jax.jit  # one compile: the base, the adapted model at init and after a change
  def outputs(base, params, moved):
    variables = lambda p: {"params": p, **({"batch_stats": stats} if stats else {})}
    run = lambda m, p: m.apply(variables(p), x, False)
    return run(plain, base), run(adapted, params), run(adapted, moved)

  base_out, at_init, moved_out = outputs(base, params, moved)
  np.testing.assert_allclose(at_init, base_out, atol=1e-6, rtol=1e-6)
  assert np.abs(np.asarray(moved_out - base_out)).max() > 1e-3  # the adapters are live


def test_registered_builders_take_the_options_and_refuse_bad_values():
  m = models.get_model("resnet18", num_classes=3, small_input=True, width=4, adapter_dim=5)
  assert m.backbone.adapter_dim == 5
  v = models.get_model("vit_s16", num_classes=3, prompt_tokens=7, prompt_mode="deep")
  assert (v.backbone.prompt_tokens, v.backbone.prompt_mode) == (7, "deep")
  assert models.get_model("bert_tiny", num_classes=3, adapter_dim=8).backbone.adapter_dim == 8
  with pytest.raises(ConfigError, match="peft.adapter_dim"):
    models.get_model("resnet18", num_classes=3, adapter_dim=-1)
  with pytest.raises(ConfigError, match="prompt_mode"):
    models.get_model("vit_s16", num_classes=3, prompt_tokens=2, prompt_mode="middle")


# --- VPT: where the prompts go, and that the head never reads them ------------------------


def test_prompt_init_is_vpts_xavier_uniform_over_a_patch():
  d = 32
  p = np.asarray(adapter.prompt_init(16)(jax.random.key(0), (1, 500, d)))
  bound = np.sqrt(6.0 / (3 * 16 * 16 + d))  # fan_in: a patch's pixels; fan_out: the width
  assert np.abs(p).max() <= bound and abs(p.std() - bound / np.sqrt(3)) < 0.05 * bound


def _norm_inputs(model, params, x):
  """{LayerNorm module path: its input} of one forward pass (the tokens a block sees after
  it has put its prompts in), and the backbone's output."""
  seen = {}

  def capture(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.LayerNorm) and context.method_name == "__call__":
      seen["/".join(context.module.path)] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    out = model.apply({"params": params}, x, train=False)
  return seen, out


@pytest.mark.parametrize("mode", ["shallow", "deep"])
def test_vpt_prompts_follow_the_class_token_and_the_head_reads_the_class_token(mode):
  n, d, patches = 5, 32, 4  # 32 px images, 16 px patches
  model = ViT(16, d, 3, 2, 2.0, img_size=32, prompt_tokens=n, prompt_mode=mode)
  x = _images()
  params, _ = _init(model, x)
  prompted = sorted(k for k, _ in named_leaves(params) if k.endswith(adapter.PROMPTS))
  depth_prompted = ["blocks_0", "blocks_1", "blocks_2"] if mode == "deep" else ["blocks_0"]
  assert prompted == [f"{b}/prompts" for b in depth_prompted]
  assert all(np.shape(dict(named_leaves(params))[k]) == (1, n, d) for k in prompted)
  seen, features = jax.jit(lambda p: _norm_inputs(model, p, x))(params)
  for i in range(3):
    tokens = seen[f"blocks_{i}/norm1"]
    assert tokens.shape == (2, 1 + n + patches, d)  # class token, prompts, patches
    if f"blocks_{i}/prompts" in prompted:  # this block's own prompts, after the class token
      own = dict(named_leaves(params))[f"blocks_{i}/prompts"][0]
      np.testing.assert_array_equal(tokens[0, 1 : 1 + n], own)
      np.testing.assert_array_equal(tokens[1, 1 : 1 + n], own)
    else:  # shallow: the prompts of block 0, transformed by the blocks since
      assert not np.allclose(tokens[0, 1 : 1 + n], dict(named_leaves(params))[prompted[0]][0])
  # Features: the final norm's class token; its other rows (prompts included) go nowhere.
  final = nn.LayerNorm(epsilon=1e-6).apply({"params": params["norm"]}, seen["norm"])
  np.testing.assert_allclose(features, final[:, 0], atol=1e-6)
  assert features.shape == (2, d)


def test_vit_without_prompts_or_adapters_keeps_its_paths_and_outputs():
  x = _images()
  plain = ViT(16, 32, 2, 2, 2.0, img_size=32)
  same = ViT(16, 32, 2, 2, 2.0, img_size=32, prompt_tokens=0, adapter_dim=0, prompt_mode="deep")
  params, _ = _init(plain, x)
  assert jax.tree.structure(_init(same, x)[0]) == jax.tree.structure(params)
  np.testing.assert_array_equal(_apply(same)(params, {}, x), _apply(plain)(params, {}, x))


# --- the presets: what trains, through the optimizer the trainer builds ------------------


def _config(model_name, method, **model):
  c = config_lib.base_config()
  c.model.name = model_name
  c.model.head_hidden = (8,)
  c.model.bottleneck_dim = 8
  c.peft.method = method
  c.peft.adapter_dim = 4
  c.peft.prompt_tokens = 3
  c.data.batch_size = 4
  for k, v in model.items():
    c.model[k] = v
  return c


def _experiment(config, shape=(32, 32, 3), input_dtype=None):
  return trainer.build_functions(
    config,
    sharding.make_mesh(),
    methods.for_experiment(config),
    shape,
    5,
    input_dtype=input_dtype,
  )


def _trainable(exp):
  shapes = jax.eval_shape(exp.init, jax.random.key(0))
  flags = dict(named_leaves(exp.tx.trainable(shapes.params)))
  return shapes, sorted(n for n, t in flags.items() if t)


@pytest.mark.parametrize(  # (ViT adapters, VPT-shallow: the same rules, model tests above)
  "model_name, method, extra, leaf",
  [
    ("resnet18", "adapter", {"small_input": True, "width": 4}, adapter.ADAPTER_LEAF),
    ("vit_s16", "vpt_deep", {}, adapter.PROMPT_LEAF),
  ],
)
def test_presets_train_only_the_new_leaves_the_head_and_bottleneck(model_name, method, extra, leaf):
  exp = _experiment(_config(model_name, method, **extra))
  shapes, trained = _trainable(exp)
  backbone = [n for n in trained if n.startswith("model/backbone/")]
  assert backbone and all(re.fullmatch(leaf, n[len("model/") :]) for n in backbone)
  assert all(n.startswith(("model/backbone/", "model/head/", "model/bottleneck/")) for n in trained)
  names = [n for n, _ in named_leaves(shapes.params)]
  assert [n for n in names if re.fullmatch("model/" + leaf, n)] == backbone  # all of them train
  assert {n.split("/")[1] for n in trained} == {"backbone", "head", "bottleneck"}
  if method == "vpt_deep":
    assert len(backbone) == 12  # one prompt tensor per ViT-S block
  size = dict(named_leaves(jax.tree.map(lambda x: x.size, shapes.params)))
  floats = sum(x.size for x in jax.tree.leaves(shapes.opt_state) if x.dtype == jnp.float32)
  assert floats == sum(size[n] for n in trained)  # SGD momentum: state only for what trains


def test_a_model_without_the_option_is_a_one_line_config_error():
  for model_name, method in (("dann_digits", "adapter"), ("resnet18", "vpt_deep")):
    with pytest.raises(ConfigError) as e:
      trainer.validate(_config(model_name, method))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("peft.method:") and model_name in msg
  for field in ("adapter_dim", "prompt_tokens"):
    c = _config("vit_s16", "adapter")
    c.peft[field] = 0
    with pytest.raises(ConfigError, match=f"peft.{field}"):
      trainer.validate(c)


@pytest.mark.parametrize("name, method", [("bert", "adapter"), ("vit", "vpt_deep")])
def test_two_steps_move_only_the_new_leaves_and_the_head(name, method):
  """The freeze rule and the optimizer the trainer builds (peft.optim_config,
  optim.build_optimizer, optim.value_and_grad), two SGD steps on a tiny model."""
  if method == "adapter":  # one layer: a BERT backward pass is slow to compile on CPU
    backbone = BertEncoder(
      vocab_size=64, hidden=16, layers=1, heads=2, intermediate=32, max_positions=16, adapter_dim=3
    )
    x = _backbones()[name][1]
  else:
    backbone = ViT(16, 32, 2, 2, 2.0, img_size=32, prompt_tokens=4, prompt_mode="deep")
    x = _images()
  model = models.Classifier(backbone=backbone, num_classes=3)
  labels = jnp.asarray([0, 2])
  params = {"model": _init(model, x)[0], "method": {}}
  c = _config("vit_s16", method)
  tx = optim.build_optimizer(peft.optim_config(c, c.optim), 10, params)

  @jax.jit
  def update(params, opt_state):
    loss_fn = lambda p: (
      optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p["model"]}, x, False)["logits"], labels
      ).mean(),
      None,
    )
    _, grads = optim.value_and_grad(loss_fn, params, tx)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  new = dict(named_leaves(update(*update(params, tx.init(params)))[0]))
  leaf = adapter.ADAPTER_LEAF if method == "adapter" else adapter.PROMPT_LEAF
  for name_, old in named_leaves(params):
    moves = name_.startswith("model/head/") or bool(re.fullmatch("model/" + leaf, name_))
    if name_.endswith("/bias") and "/down/" in name_:
      continue  # a down bias may get no gradient through a dead ReLU/GELU-flat unit
    assert (not np.array_equal(old, new[name_])) == moves, name_


# --- model.init_from: adapters and prompts are new parameters unless the weights have them --


def test_init_from_rule_for_adapter_and_prompt_leaves():
  model, x = _backbones(adapter_dim=3)["vit"]
  params, _ = _init(model, x)
  base = _without(params, adapter.ADAPTER_LEAF)
  base = jax.tree.map(lambda v: np.asarray(v) + 1.0, base)  # distinguishable from the init
  skip = new_leaves("base", params, base)
  assert adapter.ADAPTER_LEAF in skip and adapter.PROMPT_LEAF in skip
  loaded, _, report = merge_into(params, {}, PretrainedWeights(base, {}, {}), skip)
  for name, value in named_leaves(loaded):
    if re.fullmatch(adapter.ADAPTER_LEAF, name):  # kept at init: the base's function
      np.testing.assert_array_equal(value, dict(named_leaves(params))[name])
    else:
      np.testing.assert_array_equal(value, dict(named_leaves(base))[name])
  assert len(report.kept_init) == 16
  # An adapter run's weights: its adapters load (same adapter_dim) ...
  assert adapter.ADAPTER_LEAF not in new_leaves("run", params, params)
  merge_into(params, {}, PretrainedWeights(params, {}, {}), new_leaves("run", params, params))
  # ... and cannot load into a model without adapters (one line, naming the weights).
  with pytest.raises(ConfigError) as e:
    new_leaves("runs/adapter", base, params)
  assert "\n" not in str(e.value) and "runs/adapter holds adapters" in str(e.value)
