"""`syn_digits`: printed digits rendered from matplotlib's fonts (SynNumbers-like).

Configs follow the parameter table in shared/notes/offline-digits-first-measurements.md:
`color` = v1 (SynNumbers-like), `clean` = v2, `grey` = v3 (v2 plus handwriting-like
geometry), the default because it gave the most realistic shift to `uci_digits`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxdapt.data import render
from jaxdapt.data.features import OfflineBuilder, digit_features

# (split name, number of examples, generation seed)
FULL_SPLITS: tuple[tuple[str, int, int], ...] = (
  ("train", 20_000, 0),
  ("validation", 2_000, 1),
  ("test", 2_000, 2),
)

MIN_PER_WORKER = 1000  # below this, a worker's ~1 s start-up is not worth it


@dataclasses.dataclass(eq=False)
class SynDigitsConfig(tfds.core.BuilderConfig):
  """A rendering recipe plus split sizes; everything that changes the bytes is here."""

  params: render.RenderParams = dataclasses.field(default_factory=render.RenderParams)
  splits: tuple[tuple[str, int, int], ...] = FULL_SPLITS


V1 = render.RenderParams()
V2 = dataclasses.replace(
  V1, blur=(0.0, 0.5), noise=(0.0, 0.03), colour="light_on_dark", min_contrast=0.5
)
V3 = dataclasses.replace(
  V2, height=(0.8, 1.0), aspect=(0.6, 1.0), jitter=2, stroke=(0, 5), shear=0.3, elastic=2.0
)

CONFIGS = (
  SynDigitsConfig(
    name="grey",
    params=V3,
    description=(
      "v3: grey, light ink on dark, narrower, sheared and elastically warped "
      "(handwriting-like geometry). Default."
    ),
  ),
  SynDigitsConfig(
    name="color",
    params=V1,
    description=("v1: SynNumbers-like; 50% grey / 50% colour, random polarity, blur and noise."),
  ),
  SynDigitsConfig(
    name="clean",
    params=V2,
    description=("v2: grey, light ink on dark, little blur/noise, printed geometry."),
  ),
)


def _workers(num: int) -> int:
  env = os.environ.get("JAXDAPT_DATA_WORKERS")
  n = int(env) if env else (os.cpu_count() or 1)
  return max(1, min(n, num // MIN_PER_WORKER))


def render_split(
  params: render.RenderParams, seed: int, num: int
) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (index, uint8 image) for index < num; large splits render in worker processes."""
  workers = _workers(num)
  if workers == 1:
    yield from enumerate(render.render_range(params, seed, 0, num))
    return
  bounds = np.linspace(0, num, workers + 1).astype(int)
  # One BLAS/OpenMP thread per worker: the workers already fill the cores.
  env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
  with tempfile.TemporaryDirectory(prefix="jaxdapt_render_") as tmp:
    procs = []
    for w in range(workers):
      out = os.path.join(tmp, f"{w}.npy")
      cmd = [
        sys.executable,
        render.__file__,
        render.params_to_json(params),
        str(seed),
        str(bounds[w]),
        str(bounds[w + 1]),
        out,
      ]
      procs.append((out, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)))
    for _out, proc in procs:
      _, err = proc.communicate()
      if proc.returncode:
        raise RuntimeError(f"syn_digits render worker failed ({proc.returncode}):\n{err}")
    for w, (out, _) in enumerate(procs):
      yield from zip(range(bounds[w], bounds[w + 1]), np.load(out))


class SynDigits(OfflineBuilder):
  """Rendered printed digits; deterministic from (config, split seed, index)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: configs grey (v3, default), color (v1), clean (v2)."}
  BUILDER_CONFIGS = list(CONFIGS)
  DEFAULT_BUILDER_CONFIG_NAME = "grey"
  SPLITS = tuple(s[0] for s in FULL_SPLITS)

  def split_names(self) -> tuple[str, ...]:
    return tuple(s[0] for s in self.builder_config.splits)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "Digits 0-9 rendered offline with Pillow from matplotlib's bundled "
        "TrueType fonts; balanced labels (index % 10)."
      ),
      features=digit_features(),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    return {
      name: self._generate_examples(num, seed) for name, num, seed in self.builder_config.splits
    }

  def _generate_examples(self, num: int, seed: int):
    params = self.builder_config.params
    for index, image in render_split(params, seed, num):
      yield index, {"image": image, "label": render.label_of(index)}
