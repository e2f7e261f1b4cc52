"""Source only: English labels alone, tested on the target language (the lower bound).

  jaxdapt grid --experiments experiments/text/crosslingual --tasks en2de \\
      --methods source_only,dann,mcc,shot,kshot,target_oracle --seeds 0,1,2 --out results/text
The recipe is jaxdapt.configs.text_config (results/text/README.md).
"""

from jaxdapt.configs import text_config


def get_config(task: str = "en2de"):
  return text_config(task, "source_only")
