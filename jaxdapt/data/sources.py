"""Name -> random-access source: project builders (generated on first use) or TFDS catalog."""

from __future__ import annotations

import tensorflow_datasets as tfds

from jaxdapt.data import catalog, views
from jaxdapt.data.debian_text import DebianText
from jaxdapt.data.digits_real import MnistM, SynNumbers, Usps
from jaxdapt.data.fashion_mnist import FashionMnistLocal, FashionMnistM
from jaxdapt.data.features import OfflineBuilder
from jaxdapt.data.office import Office31, OfficeHome, Pacs, VisDA2017
from jaxdapt.data.paths import check_writable, resolve_data_dir
from jaxdapt.data.syn_digits import SynDigits
from jaxdapt.data.text_files import DOMAIN_NAME, TextFiles, TextFilesConfig
from jaxdapt.data.uci_digits import UciDigits, UciDigitsM
from jaxdapt.errors import ConfigError
from jaxdapt.registry import Registry

DomainSource = catalog.DomainSource  # re-exported: data.DomainSource

DOMAINS: Registry[type[OfflineBuilder]] = Registry("dataset", "dataset")
DOMAINS.register("syn_digits")(SynDigits)
DOMAINS.register("uci_digits")(UciDigits)
DOMAINS.register("uci_digits_m")(UciDigitsM)
# Shadows the catalog's name: the project builder has the source/target split and reads
# the idx files, or the prepared catalog fashion_mnist when they are missing.
DOMAINS.register("fashion_mnist")(FashionMnistLocal)
DOMAINS.register("fashion_mnist_m")(FashionMnistM)
# Text: Debian descriptions by section, debian_text/en (source) and /de, /fr, /es (targets).
DOMAINS.register("debian_text")(DebianText)
# The user's own CSV/JSONL text: text_files/<domain>, one config per domain of the files.
DOMAINS.register("text_files")(TextFiles)
# Real datasets read from a folder the user has (folder_builders.py); never downloaded.
for _cls in (Usps, MnistM, SynNumbers, Office31, OfficeHome, VisDA2017, Pacs):
  DOMAINS.register(_cls.name)(_cls)

# No network: never let TFDS try GCS or a download, even by accident.
_NO_DOWNLOAD = tfds.download.DownloadConfig(try_download_gcs=False)


def domain_names() -> list[str]:
  """Project domains, with every `name/config` spelled out."""
  out = []
  for name in DOMAINS.names():
    cls = DOMAINS.get(name)
    out.append(f"{name}/<domain>" if cls is TextFiles else name)
    out += [f"{name}/{c.name}" for c in (cls.BUILDER_CONFIGS or [])]
  return out


def _project_builder(name: str, data_dir: str) -> OfflineBuilder | None:
  """The builder for a project domain name (`syn_digits`, `syn_digits/grey`), else None."""
  base, _, config = name.partition("/")
  if base not in DOMAINS:
    return None
  cls = DOMAINS.get(base)
  if cls is TextFiles:  # configs are the files' domains, known only once they are read
    if not DOMAIN_NAME.fullmatch(config):
      raise ConfigError(
        f"dataset: {name!r}: name a domain of your files, text_files/<domain> (docs/text.md)"
      )
    return cls(data_dir=data_dir, config=TextFilesConfig(name=config), file_format="array_record")
  if config:
    allowed = [c.name for c in (cls.BUILDER_CONFIGS or [])]
    if config not in allowed:
      raise ConfigError(
        f"dataset: {base!r} has no config {config!r}; allowed: {', '.join(allowed) or 'none'}"
      )
    return cls(data_dir=data_dir, config=config, file_format="array_record")
  return cls(data_dir=data_dir, file_format="array_record")


def builder_for(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Builder for `name` (a view suffix `@HxWxC` ignored), without preparing anything."""
  data_dir = resolve_data_dir(data_dir)
  name = views.split_name(name)[0]
  return _project_builder(name, data_dir) or catalog.catalog_builder(name, data_dir, domain_names())


def ensure_prepared(builder: OfflineBuilder) -> None:
  """Generates a project domain on first use; never downloads."""
  if builder.is_prepared():
    return
  check_writable(builder.data_dir, f"dataset {builder.info.full_name}")
  builder.check_inputs()
  print(
    f"jaxdapt: generating {builder.info.full_name} into {builder.data_dir} (first use)", flush=True
  )
  tfds.disable_progress_bar()
  builder.download_and_prepare(file_format="array_record", download_config=_NO_DOWNLOAD)


def get_source(name: str, split: str, data_dir: str | None = None) -> catalog.DomainSource:
  """Random-access source of `{'image', 'label'}` for one split of a domain.

  Project domains are generated on first use; TFDS catalog datasets must already
  be prepared as ArrayRecord under `data_dir` (raises DatasetNotPreparedError).
  `name@HxWxC` reads it resized; variable-size images are read as 224² eval crops
  (views.py).
  """
  data_dir = resolve_data_dir(data_dir)
  base, spec = views.split_name(name)
  builder = _project_builder(base, data_dir)
  if builder is not None:
    catalog.check_split(base, split, builder.split_names())
    ensure_prepared(builder)
    catalog.check_split(base, split, builder.split_names())  # text_files: splits with rows
    source = catalog.DomainSource(builder.as_data_source(split=split), name, split)
  else:
    source = catalog.catalog_source(base, split, data_dir, domain_names())
  return views.apply(source, catalog.stored_shape(builder_for(base, data_dir).info), spec)


def num_classes(name: str, data_dir: str | None = None) -> int:
  """Number of label classes, from the builder's feature spec (no data read)."""
  n = catalog.num_label_classes(builder_for(name, data_dir).info)
  if n is None:
    raise ConfigError(f"dataset: {name!r} has no ClassLabel 'label' feature")
  return n


def image_shape(name: str, data_dir: str | None = None) -> tuple[int, ...]:
  """(H, W, C) the trainer sees, from the feature spec and the view (no data read)."""
  stored = catalog.stored_shape(builder_for(name, data_dir).info)
  return views.shown_shape(stored, views.split_name(name)[1])
