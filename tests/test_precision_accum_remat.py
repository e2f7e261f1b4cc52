"""Mixed-precision policy (model.dtype), gradient accumulation (train.grad_accum_steps) and
rematerialisation (model.remat): what each must leave unchanged.

Steps are built from synthetic shapes (trainer.build_functions, no data); dtype checks
trace with jax.eval_shape, so only the numeric comparisons compile.
"""

import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdapt import config as config_lib
from jaxdapt import losses, methods, models, sharding, step, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.methods.dann import DomainDiscriminator

IMAGE_SHAPE, NUM_CLASSES = (16, 16, 3), 10  # dann_digits: 48 features


def _config(
  method: str = "source_only", *, batch: int = 16, accum: int = 1, **model
) -> config_lib.ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.method.name = method
  c.method.aux_head_hidden = (16,)
  c.data.batch_size = batch
  c.model.head_hidden = (32,)
  c.train.grad_accum_steps = accum
  c.train.progress_bar = False
  for k, v in model.items():
    c.model[k] = v
  return c


def _experiment(config) -> trainer.Experiment:
  return trainer.build_functions(
    config, sharding.make_mesh(), methods.for_experiment(config), IMAGE_SHAPE, NUM_CLASSES
  )


def _batch(exp: trainer.Experiment, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  b = exp.config.data.batch_size
  return sharding.global_batch(
    {
      d: {
        "image": rng.integers(0, 256, (b, *IMAGE_SHAPE), dtype=np.uint8),
        "label": rng.integers(0, NUM_CLASSES, b).astype(np.int32),
      }
      for d in exp.method.domains
    },
    exp.mesh,
  )


def _float_dtypes(tree) -> set[str]:
  return {
    jnp.dtype(x.dtype).name for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
  }


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- mixed precision -------------------------------------------------------------------------


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_accelerators():
  config = _config(dtype="auto")
  assert config_lib.base_config().model.dtype == "auto"
  assert step.compute_dtype(config, sharding.make_mesh()) == jnp.float32
  for platform, expected in (("gpu", jnp.bfloat16), ("tpu", jnp.bfloat16), ("cpu", jnp.float32)):
    mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform=platform)]))
    assert step.compute_dtype(config, mesh) == expected
    for explicit in ("float32", "bfloat16"):  # an explicit dtype is never overridden
      assert step.compute_dtype(_config(dtype=explicit), mesh) == jnp.dtype(explicit)
  trainer.validate(config)
  with pytest.raises(ConfigError, match="model.dtype: 'float16'.*auto, float32, bfloat16"):
    trainer.validate(_config(dtype="float16"))


def test_a_workdir_saved_before_auto_resumes_where_auto_resolves_to_its_dtype():
  """Runs saved with model.dtype='float32' and no model.remat resume under the defaults
  on CPU ('auto' → float32); a bfloat16 run does not."""
  import json

  saved = json.loads(config_lib.base_config().to_json())
  saved["model"]["dtype"] = "float32"
  del saved["model"]["remat"]
  trainer.check_same_run(saved, config_lib.base_config())  # pylint: disable=protected-access
  saved["model"]["dtype"] = "bfloat16"
  with pytest.raises(ConfigError, match="model.dtype: the run in this workdir was started with"):
    trainer.check_same_run(saved, config_lib.base_config())  # pylint: disable=protected-access


def _own_step_extra(exp: trainer.Experiment, state) -> tuple:
  """Abstract third arguments of the steps that take one (SHOT's centroids, ADDA's M_s)."""
  name = exp.config.method.name
  if name == "shot":
    dim = state.params["model"]["head"]["hidden_0"]["kernel"].shape[0]  # the features' width
    return (
      {
        "centroids": jax.ShapeDtypeStruct((NUM_CLASSES, dim), jnp.float32),
        "valid": jax.ShapeDtypeStruct((NUM_CLASSES,), jnp.bool_),
      },
    )
  if name == "adda":
    return ({"params": state.params["model"], "batch_stats": state.batch_stats},)
  return ()


@pytest.mark.parametrize("bn", ["joint", "separate"])
def test_bfloat16_compute_keeps_state_losses_and_metrics_float32_for_every_method(bn):
  """Traced, not compiled: under model.dtype='bfloat16' every method's step leaves params,
  optimizer state and BatchNorm statistics float32 and returns float32 losses and metrics
  (with 2 micro-batches in the 'separate' half, where the method accumulates)."""
  names = methods.METHODS.names()[::2] if bn == "joint" else methods.METHODS.names()[1::2]
  for name in names:
    accum = 2 if bn == "separate" and methods.METHODS.get(name).accumulates_gradients else 1
    config = _config(name, dtype="bfloat16", norm="batch", accum=accum)
    config.method.bn = bn
    if name in ("mme", "target_only"):
      config.data.target_labeled_per_class = 1
      config.model.cosine_temperature = 0.05 if name == "mme" else 0.0
    exp = _experiment(config)
    assert exp.model.dtype == jnp.bfloat16
    state = jax.eval_shape(exp.init, jax.random.key(0))
    new_state, metrics = jax.eval_shape(
      exp.update, state, _batch(exp), *_own_step_extra(exp, state)
    )
    for part in ("params", "opt_state", "batch_stats"):
      assert _float_dtypes(getattr(new_state, part)) <= {"float32"}, (name, part)
    assert jax.tree.leaves(new_state.batch_stats), name
    assert _float_dtypes(metrics) == {"float32"}, (name, metrics)
    assert metrics["loss"].dtype == jnp.float32 and metrics["transfer_loss"].dtype == jnp.float32


def test_bfloat16_activations_but_float32_features_logits_and_heads():
  model = models.get_model(
    "dann_digits", num_classes=NUM_CLASSES, head_hidden=(32,), norm="batch", dtype="bfloat16"
  )
  x = jnp.zeros((2, *IMAGE_SHAPE))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert _float_dtypes(variables) == {"float32"}
  assert (
    jax.eval_shape(lambda v: model.apply(v, x, train=False, method="extract"), variables).dtype
    == jnp.bfloat16
  )  # computes in bfloat16
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert out["features"].dtype == jnp.float32 and out["logits"].dtype == jnp.float32
  disc = DomainDiscriminator((8,))
  disc_vars = jax.eval_shape(disc.init, jax.random.key(0), jnp.zeros((2, 4), jnp.bfloat16))
  assert _float_dtypes(disc_vars) == {"float32"}
  assert jax.eval_shape(disc.apply, disc_vars, jnp.zeros((2, 4), jnp.bfloat16)).dtype == jnp.float32
  logits = jnp.asarray([[4.0, -1.0, 0.5]], jnp.bfloat16)
  assert losses.cross_entropy(logits, jnp.asarray([0])).dtype == jnp.float32


def test_bfloat16_forward_and_backward_run_and_give_float32_gradients():
  model = models.get_model("dann_digits", num_classes=NUM_CLASSES, norm="batch", dtype="bfloat16")
  x = jax.random.normal(jax.random.key(1), (2, *IMAGE_SHAPE))
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()

  def f(params):
    out, stats = model.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return losses.cross_entropy(out["logits"], jnp.arange(2)), stats

  (loss, stats), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(variables["params"])
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  assert _float_dtypes(grads) == _float_dtypes(stats) == {"float32"}


# --- gradient accumulation -------------------------------------------------------------------


def test_two_micro_batches_give_the_same_update_as_one_batch_and_trace_once(monkeypatch):
  """Without BatchNorm the loss is a mean over rows, so the mean of the two micro-batch
  gradients is the full-batch gradient: the same parameters after one SGD-momentum step.
  The step's loss is traced once (a lax.scan over micro-batches, not a Python loop)."""
  traced = []
  cross_entropy = losses.cross_entropy
  monkeypatch.setattr(
    losses, "cross_entropy", lambda *a, **k: traced.append(1) or cross_entropy(*a, **k)
  )
  full = _experiment(_config("source_only", norm="none"))
  accum = _experiment(_config("source_only", norm="none", accum=2))
  batch = _batch(full)
  state = full.init(jax.random.key(0))
  want, want_metrics = full.update(jax.tree.map(jnp.copy, state), batch)
  traced.clear()
  got, got_metrics = accum.update(jax.tree.map(jnp.copy, state), batch)
  got, _ = accum.update(got, batch)  # a second step: no retrace
  assert len(traced) == 1
  again, _ = full.update(want, batch)
  _assert_trees_close(jax.device_get(got.params), jax.device_get(again.params))
  np.testing.assert_allclose(float(got_metrics["loss"]), float(want_metrics["loss"]), rtol=1e-5)
  np.testing.assert_allclose(
    float(got_metrics["grad_norm"]), float(want_metrics["grad_norm"]), rtol=1e-4
  )
  assert int(got.step) == 2


def test_batchnorm_statistics_move_through_the_micro_batches_in_order():
  """N = 2, with model.remat on (the trainer's plumbing of both): the statistics after
  the step are those of the plain model applied to micro-batch 0, then to micro-batch 1."""
  exp = _experiment(_config("source_only", norm="batch", accum=2, remat=True))
  plain = step.build_model(_config(norm="batch"), NUM_CLASSES)
  batch = _batch(exp)
  state = exp.init(jax.random.key(0))
  new_state, _ = exp.update(jax.tree.map(jnp.copy, state), batch)

  @jax.jit
  def sequential(stats, images):
    for i in range(2):  # micro-batch i: rows i, i+2, ... (step.micro_batches)
      x = step.normalize(images[i::2], jnp.float32)
      _, stats = step.apply_model(
        plain, state.params["model"], stats, x, train=True, rng=jax.random.key(0)
      )
    return stats

  stats = sequential(state.batch_stats, jnp.asarray(np.asarray(batch["source"]["image"])))
  _assert_trees_close(jax.device_get(new_state.batch_stats), jax.device_get(stats))


def test_grad_accum_config_errors():
  trainer.validate(_config("dann", accum=2), device_count=8)
  with pytest.raises(
    ConfigError,
    match=r"train.grad_accum_steps: method 'mcd' has its own "
    r"update step",
  ):
    trainer.validate(_config("mcd", accum=2), device_count=8)
  with pytest.raises(
    ConfigError,
    match=r"data.batch_size: 16 does not split into 4 "
    r"micro-batches .* multiple of 32",
  ):
    trainer.validate(_config("dann", accum=4), device_count=8)
  with pytest.raises(ConfigError, match="train.grad_accum_steps: must be a positive integer"):
    trainer.validate(_config("dann", accum=0))
  assert not any(
    methods.METHODS.get(m).accumulates_gradients for m in ("mcd", "adda", "shot", "tent")
  )


# --- rematerialisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
  "name,options,shape",
  [
    ("dann_digits", {"norm": "batch"}, (1, 28, 28, 3)),
    ("resnet18", {"small_input": True}, (1, 16, 16, 3)),
    ("resnet50", {}, (1, 32, 32, 3)),
    ("vgg11_bn", {"small_input": True}, (1, 32, 32, 3)),
    ("vgg16", {}, (1, 32, 32, 3)),
    ("vit_s16", {"img_size": 32}, (1, 32, 32, 3)),
  ],
)
def test_remat_keeps_the_variable_tree(name, options, shape):
  """Same paths and shapes, so checkpoints and imported weights load either way."""

  def variables(remat):
    model = models.get_model(name, num_classes=5, remat=remat, **options)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))

  plain, remat = variables(False), variables(True)
  assert jax.tree.structure(plain) == jax.tree.structure(remat)
  assert jax.tree.map(lambda x: x.shape, plain) == jax.tree.map(lambda x: x.shape, remat)


def test_remat_on_a_model_without_blocks_is_refused():
  with pytest.raises(ConfigError, match="model.remat: lenet has no blocks.*dann_digits"):
    models.get_model("lenet", num_classes=5, remat=True)


def _temp_bytes(compiled) -> int | None:
  try:
    return getattr(compiled.memory_analysis(), "temp_size_in_bytes", None)
  except Exception:  # not every backend implements it
    return None


def _dann_digits(remat: bool):
  return models.get_model("dann_digits", num_classes=3, norm="batch", remat=remat)


def _resnet(remat: bool):
  from jaxdapt.models import resnet

  return resnet.ResNet(resnet.BasicBlock, (1, 1), small_input=True, remat=remat)


@pytest.mark.parametrize("build", [_dann_digits, _resnet], ids=["function", "module_class"])
def test_remat_gives_the_same_loss_gradients_and_statistics(build):
  """dann_digits' conv blocks (functions run in the module's scope) and ResNet blocks (a
  wrapped Module class) under nn.remat: the same numbers; for the ResNet, less temporary
  memory in the compiled backward pass where the backend reports it (dann_digits' two
  blocks are too shallow to save any)."""
  x = jax.random.normal(jax.random.key(1), (16, *IMAGE_SHAPE))
  variables = jax.jit(lambda: build(False).init(jax.random.key(0), x, train=False))()
  results, temp = [], []
  for remat in (False, True):
    model = build(remat)

    def f(params):
      out, stats = model.apply(  # noqa: B023
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      out = out["logits"] if isinstance(out, dict) else out
      return jnp.mean(out.astype(jnp.float32) ** 2), stats

    compiled = jax.jit(jax.value_and_grad(f, has_aux=True)).lower(variables["params"]).compile()
    results.append(compiled(variables["params"]))
    temp.append(_temp_bytes(compiled))
  ((want, want_stats), want_grads), ((got, got_stats), got_grads) = results
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  _assert_trees_close(got_grads, want_grads, rtol=1e-4, atol=1e-6)
  _assert_trees_close(got_stats, want_stats)
  if build is _resnet and all(temp):
    assert temp[1] < temp[0], temp


def test_resume_refuses_another_grad_accum_steps_and_accepts_runs_saved_before_the_field():
  """Micro-batching changes BatchNorm statistics, so a workdir keeps its accumulation;
  a run saved before the field existed counts as 1 micro-batch."""
  import json

  saved = json.loads(config_lib.base_config().to_json())
  del saved["train"]["grad_accum_steps"]
  trainer.check_same_run(saved, config_lib.base_config())  # pylint: disable=protected-access
  current = config_lib.base_config()
  current.train.grad_accum_steps = 2
  with pytest.raises(ConfigError, match="train.grad_accum_steps: .* with 1 micro-batches"):
    trainer.check_same_run(saved, current)  # pylint: disable=protected-access


@pytest.mark.parametrize("method,accum", [("source_only", 2), ("mcd", 1)])
def test_cpu_steps_with_repeated_sub_steps_compile_without_a_while_loop(method, accum):
  """Gradient accumulation's micro-batches and MCD's generator sub-steps are unrolled on
  CPU: XLA:CPU ran a step inside a while-loop body 17x (accumulation) to 150x (MCD)
  slower on the digits net (jaxdapt.bench, one core)."""
  exp = _experiment(_config(method, batch=16, accum=accum))
  state = exp.init(jax.random.key(0))
  hlo = exp.update.lower(state, _batch(exp)).compile().as_text()
  assert not re.search(r"\bwhile\(", hlo)
