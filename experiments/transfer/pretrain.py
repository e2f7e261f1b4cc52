"""Supervised pretraining of the transfer table's backbone on a source: `:fashion`, `:syn_digits`.

ResNet-18, 32×32 stem (3×3/1 conv, no max-pool), 16 base channels (CPU budget); set
model.width 64 for the torchvision width. Trained with labels on the source only
(method source_only) at 32×32×3: Fashion-MNIST through the view `fashion_mnist@32x32x3`
(28×28 grey resized and repeated to RGB, the shape of uci_digits), syn_digits as stored.
Evaluation reports source-validation accuracy and, never trained on, uci_digits test
accuracy (source-only transfer). The head is linear on the 128 pooled features, so a
linear probe of the backbone and fine-tuning read the same features.

Recipe (not tuned): the usual CIFAR ResNet one, SGD momentum 0.9 at lr 0.1 (He et al.,
2016) with Nesterov and weight decay 5e-4 on kernels (Zagoruyko & Komodakis, 2016),
cosine decay, batch 64, shift augmentation. Length: 20 steps timed single-threaded on an
otherwise idle core
(`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0`) cost 0.34 s a step on
either source, start-up and compile ~21 s, an evaluation ~5.5 s; STEPS = 700 (45k
images: 1.6 epochs of the 28k Fashion-MNIST training images, 2.2 of syn_digits') is
≈ 4.6 minutes on one core.
  jaxdapt train --config experiments/transfer/pretrain.py:fashion --workdir runs/pre
jaxdapt transfer-table runs it (OUT/pretrain/SOURCE) before the fine-tuning table.

`SOURCE_vit` (`:syn_digits_vit`) pretrains the ViT of the PEFT study instead (vit_digits:
4 px patches, 6 blocks of width 128), on the ViT-from-scratch recipe (Dosovitskiy et al.,
2021; DeiT): AdamW at lr 1e-3, weight decay 0.05, linear warmup over 10 % of the steps
then cosine decay, batch 64, shift augmentation, the same 700 steps. Not tuned.
"""

from jaxdapt.config import base_config

SOURCES = {"fashion": "fashion_mnist@32x32x3", "syn_digits": "syn_digits"}
VIT = "_vit"
STEPS = 700


def get_config(source: str = "fashion"):
  allowed = [*SOURCES, *(name + VIT for name in SOURCES)]
  if source not in allowed:
    raise ValueError(f"pretrain.py: source {source!r}; allowed: {', '.join(allowed)}")
  vit = source.endswith(VIT)
  c = base_config()
  c.data.source = SOURCES[source.removesuffix(VIT)]
  c.data.source_val_split = "validation"
  c.data.target, c.data.target_test_split = "uci_digits", "test"
  c.data.batch_size = 64
  c.model.name, c.model.small_input, c.model.width = "resnet18", True, 16
  c.model.head_hidden = ()
  c.method.name = "source_only"
  c.optim.lr, c.optim.nesterov, c.optim.weight_decay = 0.1, True, 5e-4
  c.optim.schedule = "cosine"
  c.train.steps = STEPS
  c.train.log_every = 50
  c.train.eval_every = c.train.checkpoint_every = STEPS // 2
  c.train.selection_points = 0  # label-free criteria: not needed to pretrain
  if vit:
    c.model.name, c.model.small_input, c.model.width = "vit_digits", False, 0
    c.optim.name, c.optim.lr, c.optim.nesterov, c.optim.weight_decay = "adamw", 1e-3, False, 0.05
    c.optim.warmup_steps = STEPS // 10
  return c
