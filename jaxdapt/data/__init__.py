"""Datasets for domain adaptation: offline digit domains, TFDS catalog access, grain pipelines.

Public API (the trainer uses exactly these):
  DOMAINS, domain_names()            project builders ('syn_digits', 'uci_digits', 'uci_digits_m',
                                     'fashion_mnist', 'fashion_mnist_m')
  get_source(name, split, data_dir)  random access {'image': uint8 HWC, 'label': int}
  num_classes(name), image_shape(name)
  train_iterator, PairedIterator, eval_batches   (jaxdapt.data.pipeline)
  in_memory.hold(source, max_bytes)  a small split read once into RAM
  default_data_dir()                 $JAXDAPT_DATA_DIR or ~/.cache/jaxdapt/tensorflow_datasets

`syn_digits` resolves to its default config `syn_digits/grey`.
`fashion_mnist` is the project builder `fashion_mnist_local` (source/target halves), not
the TFDS catalog's; it reads $JAXDAPT_FASHION_MNIST_DIR (see fashion_mnist.py).
"""

from jaxdapt.data import in_memory
from jaxdapt.data.paths import default_data_dir
from jaxdapt.data.pipeline import PairedIterator, eval_batches, train_iterator
from jaxdapt.data.sources import (
  DOMAINS,
  DomainSource,
  domain_names,
  get_source,
  image_shape,
  num_classes,
)

__all__ = [
  "DOMAINS",
  "DomainSource",
  "PairedIterator",
  "default_data_dir",
  "domain_names",
  "eval_batches",
  "get_source",
  "image_shape",
  "in_memory",
  "num_classes",
  "train_iterator",
]
