"""Prepare domains once: `jaxdapt data [--data_dir D] [--grid out.png] [names...]`.

Generates the project domains (default: syn_digits, uci_digits, uci_digits_m; name
fashion_mnist fashion_mnist_m to prepare those), prints how long each took, and
optionally saves a grid of samples to eyeball.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from jaxdapt.data.catalog import prepare_command
from jaxdapt.data.features import OfflineBuilder
from jaxdapt.data.paths import resolve_data_dir
from jaxdapt.data.sources import builder_for, ensure_prepared, get_source
from jaxdapt.errors import ConfigError, JaxdaptError
from jaxdapt.tools import cli

DEFAULT = ("syn_digits", "uci_digits", "uci_digits_m")


def sample_grid(names: list[str], data_dir: str, per_row: int = 20, rows: int = 2) -> np.ndarray:
  """rows x per_row test/train images per domain, stacked; label order 0..9 repeated."""
  blocks = []
  for name in names:
    split = "test"
    src = get_source(name, split, data_dir)
    by_label: dict[int, list[int]] = {}
    for i in range(min(len(src), 400)):
      by_label.setdefault(src[i]["label"], []).append(i)
    picks = [by_label[k % 10][k // 10] for k in range(per_row * rows)]
    imgs = [src[i]["image"] for i in picks]
    if imgs[0].shape[-1] == 1:
      imgs = [np.repeat(x, 3, -1) for x in imgs]
    blocks += [np.concatenate(imgs[r * per_row : (r + 1) * per_row], 1) for r in range(rows)]
    blocks.append(np.full((4, blocks[-1].shape[1], 3), 255, np.uint8))
  return np.concatenate(blocks[:-1], 0)


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("data", __doc__)
  parser.add_argument("names", nargs="*", default=list(DEFAULT))
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--grid", default=None, help="save a PNG of samples (columns 0..9)")
  args = parser.parse_args(argv)
  data_dir = resolve_data_dir(args.data_dir)
  # Every name is checked before anything is generated.
  builders = {}
  for name in args.names:
    builder = builder_for(name, data_dir)  # ConfigError naming the allowed ones
    if not isinstance(builder, OfflineBuilder):
      raise ConfigError(
        f"{name}: a TFDS catalog dataset, not a project domain; `jaxdapt "
        f"data` generates project domains only. Prepare it with: "
        f"{prepare_command(name, data_dir)}"
      )
    builders[name] = builder
  for name, builder in builders.items():
    start = time.perf_counter()
    try:
      ensure_prepared(builder)
    except JaxdaptError as e:
      e.args = (f"{name}: {e}",)
      raise
    print(f"{name}: ready at {builder.data_dir} ({time.perf_counter() - start:.1f} s)")
  if args.grid:
    from PIL import Image

    grid = sample_grid(args.names, data_dir)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(
      args.grid
    )
    print(f"grid: {args.grid} (rows per domain: {', '.join(args.names)})")
  return 0
