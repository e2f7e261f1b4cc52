"""Layer-wise lr decay: layer i of 6 at 0.9^(6 − i) of the lr, the embeddings at 0.9^7
(0.48), the head at the full lr. 0.9 over MiniLM's 6 layers gives the bottom/top ratio
that 0.95 gives over BERT-base's 12 (Clark et al., ELECTRA); fixed before the runs."""

from jaxdapt.configs import text_fewlabel_config


def get_config(task: str = "k16"):
  config = text_fewlabel_config(task)
  config.optim.llrd = 0.9
  return config
