"""Builders over a folder the user already has (TFDS `manual_dir` style), never a download.

Where the folder is, first found wins:
  $JAXDAPT_<NAME>_DIR                       e.g. JAXDAPT_OFFICE31_DIR=/data/office31
  $JAXDAPT_MANUAL_DIR/<name>                one folder holding several datasets
  <data_dir>/downloads/manual/<name>        TFDS's own manual_dir convention
A missing or incomplete folder stops with DatasetNotPreparedError naming the layout
expected and what is missing, before anything is written.

Storage: the original encoded JPEG/PNG bytes (`tfds.features.Image`, decoded on read),
not resized pixels. A 256x256 RGB array is 192 KiB, more than most of these files
(Office-Home's 15,588 images would take 3 GB as such arrays); decoding costs about as
much as the resize that follows it; and every resize/crop policy stays a pipeline choice
(imagenet_pipeline.py) instead of being baked into the files. Images that are not plain
RGB JPEG/PNG (grey, palette, CMYK, alpha) are converted to RGB and stored as PNG, so a
decoded row is always HxWx3.

`FolderImageBuilder` serves the `<domain>/<class>/<image>` datasets (Office-31,
Office-Home, VisDA-2017, PACS: office.py); it also reads Transfer-Learning-Library's
`image_list/*.txt` files ('relative/path label' per line) where a domain has one. The
class of an image is its parent folder's name in either layout, so both layouts give the
same labels (sorted class names).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from jaxdapt.data.catalog import manual_dir as tfds_manual_dir
from jaxdapt.data.features import OfflineBuilder
from jaxdapt.errors import DatasetNotPreparedError

MANUAL_ENV = "JAXDAPT_MANUAL_DIR"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SHOW = 8  # names listed in a message before '...'


def env_var(dataset: str) -> str:
  return f"JAXDAPT_{dataset.upper()}_DIR"


def candidate_dirs(dataset: str, data_dir: str) -> list[tuple[str, str]]:
  """[(how it was found, folder)] in the order they are tried."""
  out = []
  if os.environ.get(env_var(dataset)):
    out.append((f"${env_var(dataset)}", os.path.expanduser(os.environ[env_var(dataset)])))
  if os.environ.get(MANUAL_ENV):
    out.append(
      (
        f"${MANUAL_ENV}/{dataset}",
        os.path.join(os.path.expanduser(os.environ[MANUAL_ENV]), dataset),
      )
    )
  out.append(("data_dir", os.path.join(tfds_manual_dir(data_dir), dataset)))
  return out


def shorten(names: Sequence[str]) -> str:
  names = list(names)
  more = f" ... ({len(names)} in all)" if len(names) > SHOW else ""
  return ", ".join(names[:SHOW]) + more


def not_found(title: str, dataset: str, data_dir: str, layout: str) -> DatasetNotPreparedError:
  looked = "\n".join(f"    {how}: {path}" for how, path in candidate_dirs(dataset, data_dir))
  return DatasetNotPreparedError(
    f"{title} is not on this machine, and jaxdapt never downloads. Point it at the folder "
    f"you have:\n  export {env_var(dataset)}=/path/to/{dataset}\n"
    f"  (or ${MANUAL_ENV}/{dataset}, or <data_dir>/downloads/manual/{dataset})\n"
    f"  looked in:\n{looked}\nExpected layout:\n{layout}\nSee docs/datasets.md."
  )


def find_root(title: str, dataset: str, data_dir: str, layout: str) -> str:
  """The first candidate folder that exists."""
  for _, path in candidate_dirs(dataset, data_dir):
    if os.path.isdir(path):
      return path
  raise not_found(title, dataset, data_dir, layout)


def incomplete(title: str, root: str, what: str, layout: str) -> DatasetNotPreparedError:
  return DatasetNotPreparedError(
    f"{title} in {root} is incomplete: {what}\nExpected layout:\n{layout}\nSee docs/datasets.md."
  )


def image_label_info(
  builder: tfds.core.DatasetBuilder, image: tfds.features.FeatureConnector, names
) -> tfds.core.DatasetInfo:
  """DatasetInfo of {'image': `image`, 'label': ClassLabel(names)}, supervised."""
  return tfds.core.DatasetInfo(
    builder=builder,
    description=builder.__doc__,
    features=tfds.features.FeaturesDict(
      {"image": image, "label": tfds.features.ClassLabel(names=list(names))}
    ),
    supervised_keys=("image", "label"),
  )


def read_image_list(path: str) -> list[tuple[str, int]]:
  """TLlib's 'relative/path with spaces 3' lines -> [(path, label)]; blank lines skipped."""
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      try:
        rows.append((" ".join(parts[:-1]), int(parts[-1])))
      except ValueError:
        raise DatasetNotPreparedError(
          f"{path}:{n}: expected 'relative/path label', got {line.strip()!r}"
        ) from None
  return rows


def rgb_bytes(path: str) -> bytes:
  """The file's bytes if it is an RGB JPEG/PNG, else the image converted to RGB as PNG."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as im:
      if im.mode == "RGB" and im.format in ("JPEG", "PNG"):
        return data
      buf = io.BytesIO()
      im.convert("RGB").save(buf, format="PNG")
      return buf.getvalue()
  except (UnidentifiedImageError, OSError) as e:
    raise DatasetNotPreparedError(
      f"{path}: not a readable image ({e}); replace or remove it and run again"
    ) from None


@dataclasses.dataclass(frozen=True)
class FolderDomain:
  """One domain: its `<class>/<image>` folder and, optionally, TLlib's image list."""

  name: str  # builder config name ('amazon')
  folders: tuple[str, ...]  # candidate folders under the root, first existing wins
  image_list: str = ""  # TLlib list under the root (paths relative to the root)
  published: int = 0  # images in the published release (0: not stated)


def _scan(
  root: str, folder: str, classes: Sequence[str], title: str, layout: str
) -> list[tuple[str, int]]:
  base = os.path.join(root, folder)
  present = {d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))}
  missing = [c for c in classes if c not in present]
  unknown = sorted(present - set(classes))
  if missing or unknown:
    what = []
    if missing:
      what.append(
        f"{folder}/ lacks {len(missing)} of {len(classes)} class folders: {shorten(missing)}"
      )
    if unknown:
      what.append(f"{folder}/ has folders that are not classes: {shorten(unknown)}")
    raise incomplete(title, root, "; ".join(what), layout)
  rows, empty = [], []
  for label, cls in enumerate(classes):
    files = sorted(
      f for f in os.listdir(os.path.join(base, cls)) if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
      empty.append(cls)
    rows += [(os.path.join(folder, cls, f), label) for f in files]
  if empty:
    raise incomplete(
      title,
      root,
      f"class folders with no image ({', '.join(IMAGE_EXTENSIONS)}) in {folder}/: {shorten(empty)}",
      layout,
    )
  return rows


def _from_list(
  root: str, list_file: str, classes: Sequence[str], title: str, layout: str
) -> list[tuple[str, int]]:
  index = {c: i for i, c in enumerate(classes)}
  rows, missing, unknown = [], [], []
  for path, _ in read_image_list(os.path.join(root, list_file)):
    cls = os.path.basename(os.path.dirname(path))
    if cls not in index:
      unknown.append(path)
    elif not os.path.isfile(os.path.join(root, path)):
      missing.append(path)
    else:
      rows.append((path, index[cls]))
  if unknown:
    raise incomplete(
      title,
      root,
      f"{list_file}: {len(unknown)} path(s) whose folder is not a class name: {shorten(unknown)}",
      layout,
    )
  if missing:
    raise incomplete(
      title,
      root,
      f"{list_file} lists {len(missing)} image(s) that are not there: {shorten(missing)}",
      layout,
    )
  if not rows:
    raise incomplete(title, root, f"{list_file} lists no image", layout)
  return rows


class FolderImageBuilder(OfflineBuilder, skip_registration=True):
  """One builder config per domain (made from DOMAINS); split 'train' holds every image
  of the domain (the DA protocols train and test on all of a domain's images)."""

  TITLE = ""  # human name ('Office-31')
  CLASSES: tuple[str, ...] = ()
  DOMAINS: tuple[FolderDomain, ...] = ()
  SPLITS = ("train",)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: original encoded images, all in 'train'."}

  def __init_subclass__(cls, **kwargs):
    if cls.DOMAINS:
      cls.BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=d.name, description=f"all images of {d.name}")
        for d in cls.DOMAINS
      ]
    super().__init_subclass__(**kwargs)

  @property
  def domain(self) -> FolderDomain:
    return next(d for d in self.DOMAINS if d.name == self.builder_config.name)

  def layout(self) -> str:
    d = self.domain
    lines = [f"  <dir>/{d.folders[0]}/<class>/*.jpg   ({len(self.CLASSES)} class folders)"]
    lines += [f"  or <dir>/{f}/<class>/*.jpg" for f in d.folders[1:]]
    if d.image_list:
      lines.append(f"  or <dir>/{d.image_list} + the images it lists (Transfer-Learning-Library)")
    lines.append(f"  classes: {shorten(self.CLASSES)}")
    return "\n".join(lines)

  def _title(self) -> str:
    return f"{self.TITLE} ({self.name}/{self.domain.name})"

  def root(self) -> str:
    return find_root(self._title(), self.name, os.fspath(self.data_dir_root), self.layout())

  def entries(self) -> tuple[str, list[tuple[str, int]]]:
    """(root, [(path relative to root, label)]) of this domain; raises if incomplete."""
    root, d = self.root(), self.domain
    if d.image_list and os.path.isfile(os.path.join(root, d.image_list)):
      return root, _from_list(root, d.image_list, self.CLASSES, self._title(), self.layout())
    for folder in d.folders:
      if os.path.isdir(os.path.join(root, folder)):
        return root, _scan(root, folder, self.CLASSES, self._title(), self.layout())
    wanted = [f"{f}/" for f in d.folders] + ([d.image_list] if d.image_list else [])
    raise incomplete(self._title(), root, f"none of {', '.join(wanted)} is there", self.layout())

  def check_inputs(self) -> None:
    self.entries()

  def _info(self) -> tfds.core.DatasetInfo:
    return image_label_info(self, tfds.features.Image(shape=(None, None, 3)), self.CLASSES)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    root, rows = self.entries()
    if self.domain.published and len(rows) != self.domain.published:
      print(
        f"jaxdapt: {self._title()}: {len(rows)} images in {root}, the published release "
        f"has {self.domain.published}",
        flush=True,
      )
    return {"train": self._generate_examples(root, rows)}

  def _generate_examples(self, root: str, rows: list[tuple[str, int]]) -> Iterator:
    for path, label in rows:
      yield path, {"image": rgb_bytes(os.path.join(root, path)), "label": label}
