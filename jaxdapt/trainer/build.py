"""Config → Experiment: validated config, data sources, model, method, optimizer, jitted steps."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdapt import batchnorm, data, methods, optim, peft, sharding, step
from jaxdapt.data.labeled import labeled_subset
from jaxdapt.errors import ConfigError
from jaxdapt.kernels import cpu_conv
from jaxdapt.methods import Method
from jaxdapt.trainer.evaluate import eval_target
from jaxdapt.trainer.experiment import Experiment
from jaxdapt.trainer.validate import validate

DOMAINS = ("source", "target")
LORA_SEED = 0x10FA  # folded into the model's init key for the LoRA factors


def optimizer_config(config: ml_collections.ConfigDict, batch_stats) -> ml_collections.ConfigDict:
  """config.optim with the rules the run's other fields add in front: model.bn_mode='frozen'
  (batchnorm.optim_config) and config.peft (peft.optim_config). `jaxdapt optim` shows it."""
  return peft.optim_config(config, batchnorm.optim_config(config, batch_stats))


def data_dir(config: ml_collections.ConfigDict) -> str | None:
  return config.data.data_dir or None


def build(config: ml_collections.ConfigDict, devices=None) -> Experiment:
  """Validates the config and builds model, method, optimizer and jitted functions."""
  mesh = sharding.make_mesh(devices)
  validate(config, device_count=mesh.size)
  method = methods.for_experiment(config)
  ddir = data_dir(config)
  splits = {
    "source": (config.data.source, config.data.source_split),
    "source_val": (config.data.source, config.data.source_val_split),
    "target": (config.data.target, config.data.target_split),
    "target_test": (config.data.target, config.data.target_test_split),
  }
  fields = {
    "source": "data.source",
    "source_val": "data.source_val_split",
    "target": "data.target",
    "target_test": "data.target_test_split",
  }
  sources, opened = {}, {}
  for key, (name, split) in splits.items():
    if (name, split) not in opened:  # e.g. target_test_split == target_split: read once
      try:
        opened[name, split] = data.in_memory.hold(
          data.get_source(name, split, ddir), config.data.in_memory_mb << 20
        )
      except ConfigError as e:
        raise ConfigError(f"{fields[key]}: {e}") from None
    sources[key] = opened[name, split]
  num_classes = data.num_classes(config.data.source, ddir)
  target_classes = data.num_classes(config.data.target, ddir)
  if target_classes != num_classes:
    raise ConfigError(
      f"data.target: {config.data.target} has {target_classes} classes but "
      f"data.source {config.data.source} has {num_classes}"
    )
  if config.data.target_labeled_per_class:
    sources[methods.LABELED] = labeled_subset(
      sources["target"], config.data.target_labeled_per_class, config.seed
    )
  example = np.asarray(sources["source"][0]["image"])
  return build_functions(
    config, mesh, method, example.shape, num_classes, sources, input_dtype=example.dtype
  )


def build_functions(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  method: Method,
  image_shape: tuple[int, ...],
  num_classes: int,
  sources: dict[str, Any] | None = None,
  input_dtype: Any = None,
) -> Experiment:
  """Model, optimizer and jitted functions for `image_shape` inputs; reads no data, so
  the step benchmark (jaxdapt/bench.py) builds the same step for synthetic shapes.
  `input_dtype`: the examples' dtype; signed integers are token ids (text encoders)."""
  dtype = step.compute_dtype(config, mesh)
  model = step.build_model(config, num_classes, dtype).clone(
    conv_kernel=cpu_conv.resolve(
      config.model.conv_kernel, mesh.devices.flat[0].platform, mesh.devices.size
    )
  )
  peft_options = peft.model_options(config.peft)  # adapters / prompts: backbone options
  if peft_options:  # validate() checked that the backbone takes them
    model = model.clone(backbone=model.backbone.clone(**peft_options))
  if config.peft.method == "lora" and config.peft.lora_dropout:
    model = model.clone(lora_dropout=float(config.peft.lora_dropout))
  total_steps = config.train.steps

  def init(rng):
    model_rng, method_rng, state_rng = jax.random.split(rng, 3)
    # Token ids (text encoders) initialise from int32 ids, pixels from the compute dtype.
    tokens = input_dtype is not None and np.issubdtype(input_dtype, np.signedinteger)
    dummy = jnp.zeros((2, *image_shape), jnp.int32 if tokens else dtype)
    variables = model.init({"params": model_rng, "dropout": model_rng}, dummy, train=False)
    feature_dim = model.apply(variables, dummy, train=False)["features"].shape[-1]
    model_params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if config.peft.method == "lora":  # new leaves beside the kernels; the base init unchanged
      model_params = peft.lora.add(
        model_params,
        tuple(config.peft.lora_targets),
        config.peft.lora_rank,
        float(config.peft.lora_alpha),
        jax.random.fold_in(model_rng, LORA_SEED),
      )
    if config.method.bn == "dsbn":
      model_params, batch_stats = batchnorm.stack(model_params, batch_stats)
    params = {"model": model_params, "method": method.init(method_rng, feature_dim, num_classes)}
    return params, batch_stats, state_rng

  try:
    abstract_params, abstract_stats, _ = jax.eval_shape(init, jax.random.key(0))
  except (TypeError, ValueError) as e:  # e.g. a conv stack that shrinks the image below 1 px
    raise ConfigError(
      f"model.name: {config.model.name} cannot take {image_shape} images from data.source "
      f"{config.data.source} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    ) from None
  batchnorm.check(config, abstract_stats, eval_target(config))
  if config.peft.method == "lora":
    peft.lora.check_targets(
      abstract_params["model"],
      tuple(config.peft.lora_targets),
      peft.trained_in_full(tuple(config.model.dont_load)),
    )
  tx = optim.build_optimizer(optimizer_config(config, abstract_stats), total_steps, abstract_params)
  replicated = sharding.replicated(mesh)

  def init_state(rng):
    params, batch_stats, state_rng = init(rng)
    return step.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      opt_state=tx.init(params),
      rng=state_rng,
    )

  mean_std = step.input_mean_std(config)
  step_fn = method.update_fn() or step.train_step
  ctx = step.StepContext(
    model=model,
    method=method,
    tx=tx,
    bn=config.method.bn,
    dtype=dtype,
    total_steps=total_steps,
    mean_std=mean_std,
    grad_accum_steps=config.train.grad_accum_steps,
  )
  update = jax.jit(
    functools.partial(step_fn, ctx=ctx), out_shardings=(replicated, replicated), donate_argnums=0
  )
  evaluate_batch = jax.jit(
    functools.partial(step.eval_step, model=model, dtype=dtype, mean_std=mean_std),
    out_shardings=replicated,
  )
  return Experiment(
    config=config,
    mesh=mesh,
    model=model,
    method=method,
    tx=tx,
    num_classes=num_classes,
    sources=sources or {},
    update=update,
    evaluate_batch=evaluate_batch,
    init=jax.jit(init_state, out_shardings=replicated),
  )


def train_iterators(exp: Experiment) -> data.PairedIterator:
  """One stream per domain (+ the labeled target with data.target_labeled_per_class)."""
  cfg = exp.config.data
  labeled = methods.LABELED
  its = {}
  for i, d in enumerate(DOMAINS + ((labeled,) if labeled in exp.sources else ())):
    its[d] = data.train_iterator(
      exp.sources[d],
      global_batch_size=cfg.batch_size,
      seed=exp.config.seed * 1000 + i,
      augment=cfg.augment,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      prefetch=cfg.prefetch,
    )
  return data.PairedIterator(its.pop("source"), its.pop("target"), **its)
