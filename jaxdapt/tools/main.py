"""`jaxdapt <tool> ...`: the one command, its process setup and its one error path.

Process setup (jaxdapt's default XLA flags and host allocator settings,
jaxdapt.runtime.setup) happens here, before JAX starts, never on import. A user error is
a JaxdaptError: one line `error: ...` on stderr and exit status 2. Anything else is a bug
in jaxdapt and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# tool → (module under jaxdapt.tools, one-line description)
TOOLS = {
  "train": ("train", "train one experiment from a config file (resumes a workdir)"),
  "grid": ("grid", "task × method × seed grid → results table"),
  "analyze": ("analyze", "per-run report: shift, label-free selection, t-SNE, curves"),
  "probe": ("probe", "linear probe and kNN on a run's or imported weights' features"),
  "rank": ("rank", "rank pretrained candidates: transferability scores vs fine-tuning"),
  "transfer-table": ("transfer_table", "fine-tuning strategies × pretraining source × k"),
  "negative-transfer": ("negative_transfer", "transfer recipe vs target-only, with a verdict"),
  "optim": ("optim", "show the parameter groups, lr multipliers and trainable counts"),
  "peft": ("peft", "a PEFT run as a small delta over its base, or LoRA merged into weights"),
  "weights": ("weights", "import torchvision/timm or Hugging Face text weights; inspect, list"),
  "data": ("data", "prepare the offline domains (generated, never downloaded)"),
  "bench": ("bench", "step or feature-extraction throughput, with the PyTorch twin"),
  "bench-suite": ("bench_suite", "every benchmark row, one table (results/bench)"),
  "bench-ops": ("bench_ops", "the digits network layer by layer, JAX vs PyTorch"),
  "launch": ("launch", "job scripts: local, SLURM, TPU VM pod, Kubernetes"),
}


def usage() -> str:
  width = max(map(len, TOOLS))
  lines = ["usage: jaxdapt <tool> [--help] ...", "", "tools:"]
  lines += [f"  {name:<{width}}  {text}" for name, (_, text) in TOOLS.items()]
  lines += [
    "",
    "Config overrides are --set FIELD=VALUE everywhere. `jaxdapt <tool> --help` "
    "shows a tool's options.",
  ]
  return "\n".join(lines)


def run_tool(tool: str, argv: Sequence[str]) -> int:
  """Runs one tool's main(argv) behind the error path; its exit status."""
  from jaxdapt.errors import JaxdaptError

  if tool not in TOOLS:
    print(f"error: unknown tool {tool!r}; tools: {', '.join(TOOLS)}", file=sys.stderr)
    return 2
  module = importlib.import_module(f"jaxdapt.tools.{TOOLS[tool][0]}")
  try:
    return int(module.main(list(argv)) or 0)
  except JaxdaptError as e:
    print(f"error: {str(e).strip()}", file=sys.stderr)
    return 2


def cli(argv: Sequence[str] | None = None) -> None:
  """The console script `jaxdapt` (and `python -m jaxdapt`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    sys.exit(0 if argv else 2)
  from jaxdapt import runtime

  runtime.setup()  # before JAX starts a backend
  sys.exit(run_tool(argv[0], argv[1:]))


if __name__ == "__main__":
  cli()
