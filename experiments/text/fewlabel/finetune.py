"""Few-label transfer on English: all-MiniLM-L6-v2's pretrained weights, every parameter
fine-tuned on k labelled descriptions per class (jaxdapt.configs.text_fewlabel_config).

  jaxdapt grid --experiments experiments/text/fewlabel --tasks k4,k16,k64,all \\
      --methods finetune,scratch --seeds 0,1,2 --out results/text/fewlabel
  jaxdapt grid --experiments experiments/text/fewlabel --tasks k16 \\
      --methods linear_probe,lp_ft,llrd,bitfit,lora_r4,adapter --seeds 0,1,2 \\
      --out results/text/fewlabel
"""

from jaxdapt.configs import text_fewlabel_config


def get_config(task: str = "k16"):
  return text_fewlabel_config(task)
