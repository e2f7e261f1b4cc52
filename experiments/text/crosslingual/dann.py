"""DANN (Ganin et al., JMLR 2016) across languages: a domain classifier (256 hidden units)
on the pooled features, gradient reversal with DANN's 2/(1+e^{-10p}) − 1 warm-up.

The discriminator, new and untrained, learns at 10× the encoder's lr (Transfer-Learning-
Library's ratio of new layers to the pretrained backbone). At 1× (the first try, seed 0)
the pretrained encoder outran it: domain accuracy fell to 0 (it was confidently wrong; a
label-free sign, in metrics.jsonl) and the target collapsed to one class
(results/text/README.md)."""

from jaxdapt.configs import text_config

DISC_LR = 10.0


def get_config(task: str = "en2de"):
  config = text_config(task, "dann")
  config.optim.rules = (("method/.*", DISC_LR), (".*", 1.0))
  return config
