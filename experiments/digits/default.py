"""The default offline experiment: syn_digits → uci_digits, DAN against source-only.

Trains source-only and the adaptation method with the same recipe and seed,
then prints both target accuracies side by side. About 6 minutes on 2 CPU
cores, including the first-use generation of the domains (~1 min).

Run:  python -m jaxdapt.main --config=experiments/digits/default.py --workdir=runs/default

The method is the one with the best label-free score (target information
maximisation, no target labels) in the README grid; see README "Default experiment".
"""
from jaxdapt.config import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "dan"
  config.train.baseline = "source_only"
  return config
