"""The config schema: every field an experiment may set, with its default.

Experiment files in experiments/ start from `base_config()` (or a recipe in
jaxdapt/configs) and change fields; the returned ConfigDict is locked, so a typo
(`config.optim.lr_decay = ...`) fails where it is written. This module is a leaf: it
imports no other layer. The checks that need the registries and subsystems
(trainer/validate.py) run before anything is built and turn every impossible value into
a one-line ConfigError naming the field and the allowed values.
"""

from __future__ import annotations

import difflib

import ml_collections

from jaxdapt.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "syn_digits"  # labeled source domain
  c.data.source_split = "train"
  c.data.source_val_split = "validation"  # model selection without target labels
  c.data.target = "uci_digits"  # unlabeled target domain
  c.data.target_split = "train"  # its labels are used only by target_oracle
  c.data.target_test_split = "test"
  c.data.data_dir = ""  # '' → $JAXDAPT_DATA_DIR or ~/.cache/jaxdapt
  c.data.augment = "shift"
  c.data.batch_size = 64  # global, per domain
  c.data.eval_batch_size = 512
  c.data.prefetch = 2
  # Splits whose images fit in this many MB are read into RAM once when the run starts
  # (data/in_memory.py: same rows, no per-row record reads); 0: always read from disk.
  c.data.in_memory_mb = 256
  # k labeled target training examples per class (stratified, drawn from the seed) as a
  # third domain `target_labeled`: 0 off, -1 all; jaxdapt/methods/fewshot.py.
  c.data.target_labeled_per_class = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "dann_digits"
  c.model.norm = "default"  # the model's own default (see jaxdapt/models)
  c.model.bottleneck_dim = 0  # 0: no bottleneck
  c.model.head_hidden = (100, 100)
  c.model.dropout = 0.0  # head dropout, before its output layer (classifier.py)
  c.model.cosine_temperature = 0.0  # > 0: cosine-classifier output layer (MME: 0.05)
  c.model.small_input = False  # ResNet/VGG: stem for 32×32 inputs
  # ResNet: base width w (stem and stages w, 2w, 4w, 8w; same parameter names); 0: the
  # model's own (64, torchvision's, which imported weights need).
  c.model.width = 0
  # Mixed-precision policy (train.compute_dtype): the dtype of activations and of the
  # backbone/bottleneck/head matmuls. 'auto': bfloat16 on GPU/TPU, float32 on CPU (XLA:CPU's
  # bf16 convolutions are slow). Whatever it is, parameters, optimizer state, BatchNorm
  # statistics, the classifier's output layer, method heads (domain discriminator, MCD/MDD
  # heads), logits and features handed to losses, every loss and metric are float32.
  c.model.dtype = "auto"
  # Recompute the backbone blocks' activations in the backward pass (nn.remat around ResNet
  # blocks, VGG stages, ViT blocks, dann_digits conv blocks): less memory, ~1/3 more compute.
  # Parameter paths are unchanged, so checkpoints and imported weights load either way.
  c.model.remat = False
  # Text encoders: read only the first N token ids of each row (0: all of them); attention
  # and feed-forward cost grow with N, so a shorter input is the CPU budget's lever.
  c.model.max_tokens = 0
  # Convolution kernels: 'auto' runs the convs they cover (float32, stride 1, unpadded,
  # 16-64 output channels: dann_digits') through jaxdapt's CPU kernels when the run has one
  # CPU device and a C++ compiler builds them, else XLA's; 'xla' | 'direct' force one
  # ('direct' fails where it cannot run); jaxdapt/kernels/cpu_conv.py.
  c.model.conv_kernel = "auto"
  # Backbone BatchNorm in training: train | frozen_stats (running statistics, never
  # updated) | frozen (and scale/bias frozen through an optimizer rule); jaxdapt/batchnorm.py.
  c.model.bn_mode = "train"
  # Start from pretrained weights: a directory written by `jaxdapt weights import`
  # or a jaxdapt workdir (its latest checkpoint; RUN@STEP: that step's). Loading is strict:
  # every parameter is loaded or matches a dont_load regex (over '/'-joined paths such as
  # 'head/out/kernel').
  c.model.init_from = ""
  c.model.dont_load = ("head/.*", "bottleneck/.*")

  c.method = ml_collections.ConfigDict()
  c.method.name = "source_only"
  c.method.bn = "joint"  # BatchNorm over two domains: joint | separate | dsbn
  c.method.weight = 1.0  # trade-off of the transfer loss
  c.method.weight_schedule = "dann"  # constant | dann (2/(1+e^{-10p}) - 1)
  c.method.disc_hidden = (100,)  # DANN domain classifier
  c.method.mmd_bandwidths = (0.25, 0.5, 1.0, 2.0, 4.0)  # DAN kernels, × mean sq. distance
  c.method.cdan_random_dim = 1024  # CDAN: randomized multilinear map width (D·C > 4096)
  c.method.bsp_weight = 0.0  # BSP penalty in dann/cdan (paper: 1e-4); 0 = off
  c.method.bsp_k = 1  # BSP: number of top singular values penalised
  c.method.mcc_temperature = 2.5  # MCC probability rescaling temperature T
  c.method.jan_softmax_bandwidth = 1.68  # JAN: kernel exp(-|p-q|²/bw) on the softmax layer
  c.method.afn_delta_r = 1.0  # AFN (stepwise): norm increment Δr
  c.method.mdd_margin = 4.0  # MDD margin γ
  c.method.aux_head_hidden = (100, 100)  # MDD/MCD second classifier widths (= model.head_hidden)
  c.method.mcd_generator_steps = 4  # MCD: generator updates (step C) per iteration
  c.method.label_smoothing = 0.0  # ε of the supervised cross-entropy (SHOT stage 1: 0.1)
  c.method.refresh_every = 0  # steps between Method.refresh calls; 0 = only at start
  c.method.shot_beta = 0.3  # SHOT: weight β of the pseudo-label cross-entropy
  c.method.fixmatch_threshold = 0.95  # FixMatch: confidence τ of a weak-view pseudo-label
  c.method.fixmatch_ops = 2  # FixMatch: RandAugment ops per strong view
  c.method.fixmatch_cutout = 0.5  # FixMatch: cutout square side / image side (0: off)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.b1 = 0.9  # adam/adamw: first-moment decay β1 (ADDA's code: 0.5)
  # On conv/dense kernels only (not biases, norms, ViT tokens): L2 added to the gradient
  # for sgd/adam (torch's weight_decay), decoupled for adamw.
  c.optim.weight_decay = 0.0
  c.optim.schedule = "dann"  # lr·(1+10p)^-0.75 (DANN paper)
  # Linear warmup from 0 to lr over the first N updates; the schedule then spans the rest.
  c.optim.warmup_steps = 0
  # (regex over '/'-joined paths 'model/...' or 'method/...', lr multiplier | None=frozen);
  # first match wins; every parameter must match one rule. The fields below compile to
  # such a list (jaxdapt/finetune.py); `jaxdapt optim --config ...` prints it.
  c.optim.rules = ((".*", 1.0),)
  # A named rule list instead of `rules`: 'discriminative' (backbone at 0.1× lr) or
  # 'linear_probe' (backbone and bottleneck frozen: stage 1 of experiments/transfer/lp_ft.py).
  c.optim.preset = ""
  # Layer-wise lr decay: a backbone block at depth d (stem/embedding 0) of D gets
  # llrd^(D − d) × its rule's multiplier; head, bottleneck, method at ×1. 0 or 1: off.
  c.optim.llrd = 0.0
  # Gradual unfreezing: ((step, regex), ...): matching parameters get zero updates and no
  # optimizer-state change for updates 0..step−1, then train (first matching entry wins).
  c.optim.unfreeze = ()

  # Against forgetting when fine-tuning from model.init_from; each 0 = off; any method with
  # the shared step (jaxdapt/methods/regularizers.py has the papers and hyperparameters).
  c.regularizer = ml_collections.ConfigDict()
  c.regularizer.l2sp_alpha = 0.0  # L2-SP: α/2‖w − w⁰‖² on what init_from supplies
  c.regularizer.l2sp_beta = 0.0  # L2-SP: β/2‖w‖² on the new layers (dont_load)
  c.regularizer.delta_weight = 0.0  # DELTA: attention-weighted feature-map distance
  c.regularizer.delta_layers = ("backbone",)  # DELTA: modules whose outputs are compared
  c.regularizer.delta_attention_points = 128  # DELTA: rows scoring the channels, once
  c.regularizer.bss_weight = 0.0  # BSS η (paper 0.001)
  c.regularizer.bss_k = 1  # BSS: smallest singular values penalised
  c.regularizer.lwf_weight = 0.0  # LwF λ_o (paper 1)
  c.regularizer.lwf_temperature = 2.0  # LwF T (paper 2)

  # Parameter-efficient transfer (jaxdapt/peft, docs/peft.md): the model's pretrained
  # weights stay frozen and only a small set of parameters trains, through one optimizer
  # rule in front of optim.rules / optim.preset. What trains besides the head, bottleneck,
  # model.dont_load layers and the method's parameters: 'lora' the LoRA factors of the
  # lora_targets kernels, 'bitfit' every bias (norm biases too), 'head_only' nothing more,
  # 'adapter' bottleneck adapters the backbone adds (ResNet, ViT, BERT), 'vpt_shallow' /
  # 'vpt_deep' prompt tokens the ViT adds; '' = off (everything optim.rules says).
  c.peft = ml_collections.ConfigDict()
  c.peft.method = ""
  c.peft.lora_rank = 4  # r: A [..., in, r], B [r, out]
  # alpha: the delta is (alpha / r)·A·B (scale 2 at the defaults). As in Hu et al., keep
  # alpha fixed when trying other ranks, so the lr need not be retuned for each r.
  c.peft.lora_alpha = 8.0
  # Dropout on the LoRA path's input (Dense kernels; training only), as PEFT's lora_dropout.
  c.peft.lora_dropout = 0.0
  # Regexes fully matching the '/'-joined names of the Dense/Conv kernels LoRA adapts (e.g.
  # ViT attention only: 'model/backbone/blocks_.*/attn/(qkv|proj)/kernel'); each must match
  # one, and none the head, bottleneck or model.dont_load layers (they train in full).
  c.peft.lora_targets = ("model/backbone/.*kernel",)
  # Adapters (Houlsby et al., ICML 2019): the bottleneck width d of down [D, d] / up [d, D]
  # (up zero-initialised: the model is unchanged at step 0).
  c.peft.adapter_dim = 64
  # VPT (Jia et al., ECCV 2022): prompt tokens per prompted ViT block, after the class token.
  c.peft.prompt_tokens = 10

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000
  # Split each step's batch (data.batch_size per domain) into this many micro-batches inside
  # the compiled step; gradients are averaged into ONE optimizer update. BatchNorm
  # statistics update micro-batch by micro-batch, and every loss sees one micro-batch, so
  # batch-statistic losses (MMD, CORAL, MCC, BSP, domain discriminators) see the smaller
  # batch: with them N > 1 is not the same objective as N = 1 (the usual trade-off).
  c.train.grad_accum_steps = 1
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.baseline = ""  # e.g. 'source_only': also train it and print side by side
  c.train.progress_bar = True
  # Rows per domain (source train, source val, target train) scored at each evaluation by
  # the label-free selection criteria SND and DEV (analysis/selection.py); 0 turns them off.
  c.train.selection_points = 1000
  # BatchNorm statistics target splits are evaluated with: running (what training left) |
  # target (AdaBN: recomputed on the target train images at each evaluation).
  c.train.eval_target_bn = "running"
  # Persistent XLA compilation cache; 'auto': ~/.cache/jaxdapt/xla_cache, '': off.
  c.train.compilation_cache_dir = "auto"
  c.lock()
  return c


def find_field(config, dotted: str, label: str):
  """(group, key) of the field at the dotted path `dotted`, for reading or setting it. A
  path that leaves the config raises a ConfigError that starts with `label` and lists the
  fields of the group where it left (with the nearest name, for a typo)."""
  node, path = config, dotted.split(".")
  for i, key in enumerate(path):
    if not hasattr(node, "keys") or key not in node:
      keys = sorted(node.keys()) if hasattr(node, "keys") else []
      near = difflib.get_close_matches(key, keys, n=1)
      raise ConfigError(
        f"{label}: unknown config field; fields of "
        f"{'.'.join(path[:i]) or 'config'}: {', '.join(keys) or 'none'}"
        + (f"; did you mean {near[0]!r}?" if near else "")
      )
    group, node = node, node[key]
  return group, path[-1]
