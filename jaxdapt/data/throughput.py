"""How many 224² training images one CPU core prepares per second (decode + crop + flip).

  jaxdapt data.throughput --domain office31/amazon [--data_dir D] [--eval]
  jaxdapt data.throughput --domain synthetic      (generated 500x375 JPEGs)

One thread, so the number is per core; the grain pipeline runs `data.prefetch` threads
and PIL releases the GIL while decoding and resampling, so a host feeds about that many
times more. Compare with the step's images/s (`jaxdapt bench`) to see whether
the input pipeline can keep an accelerator busy.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxdapt.data.imagenet_pipeline import eval_crop, train_crop


def synthetic_jpegs(n: int, size: tuple[int, int] = (375, 500), seed: int = 0) -> list[dict]:
  """n JPEG-encoded noisy gradients of ImageNet's typical size (500x375)."""
  rng = np.random.default_rng(seed)
  h, w = size
  ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
  rows = []
  for i in range(n):
    img = np.clip(ramp + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    rows.append({"image": buf.getvalue(), "label": i % 10})
  return rows


def throughput(
  source: Sequence[Mapping[str, Any]], n: int = 200, seed: int = 0, train: bool = True
) -> dict[str, float]:
  """Images/s of reading + (train | eval) crop of the first n rows, in this thread.

  Rows may hold encoded bytes or pixels; a prepared domain's source decodes on read, so
  its time includes decoding. Row 0 is read once untimed (opens the files).
  """
  n = min(n, len(source))
  rng = np.random.default_rng(seed)
  _ = source[0]
  start = time.perf_counter()
  for i in range(n):
    image = source[i]["image"]
    _ = train_crop(image, rng) if train else eval_crop(image)
  elapsed = time.perf_counter() - start
  return {"images": n, "seconds": elapsed, "images_per_s_per_core": n / elapsed}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--domain",
    required=True,
    help="a prepared domain (office31/amazon, domainnet/real...) or 'synthetic'",
  )
  parser.add_argument("--split", default="train")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("-n", type=int, default=200, help="images to time")
  parser.add_argument("--eval", action="store_true", help="time the eval crop instead")
  args = parser.parse_args(argv)
  if args.domain == "synthetic":
    source: Sequence = synthetic_jpegs(args.n)
  else:
    from jaxdapt.data.sources import get_source

    view = get_source(args.domain, args.split, args.data_dir)
    source = getattr(view, "source", view)  # the stored rows: time their decoding too
  r = throughput(source, args.n, train=not args.eval)
  print(
    f"{args.domain}: {'eval' if args.eval else 'train'} crop, {r['images']} images in "
    f"{r['seconds']:.2f} s = {r['images_per_s_per_core']:.0f} images/s per core"
  )


if __name__ == "__main__":
  main()
