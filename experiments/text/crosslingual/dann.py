"""DANN (Ganin et al., JMLR 2016) across languages: a domain classifier (256 hidden units)
on the pooled features, gradient reversal with DANN's 2/(1+e^{-10p}) − 1 warm-up."""

from jaxdapt.configs import text_config


def get_config(task: str = "en2de"):
  return text_config(task, "dann")
