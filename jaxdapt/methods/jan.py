"""JAN: joint adaptation networks (Long et al., ICML 2017).

Joint MMD over the features and the softmax predictions: the joint kernel
is the product of the two layers' kernels, k(f, f') · k(p, p'). Estimator:
the paper's quadratic-time (biased, all pairs) JMMD² of Eq. 10.
Kernels: features — multi-kernel Gaussian with bandwidths method.mmd_bandwidths
× the mean pairwise squared distance (as `dan`); softmax — one Gaussian
exp(−‖p − p'‖² / b), b = method.jan_softmax_bandwidth (1.68, as in the authors'
release). Trade-off: weight × weight_schedule (paper: 1, DANN-style ramp).
"""

from __future__ import annotations

import dataclasses

import jax

from jaxdapt.methods import checks
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS, Method


@METHODS.register("jan")
@dataclasses.dataclass(frozen=True)
class JAN(Method):
  def __post_init__(self):
    checks.positive_number("jan_softmax_bandwidth", self.config.jan_softmax_bandwidth)

  def loss(self, params, outputs, progress, rng):
    del params, rng
    src, tgt = outputs["source"], outputs["target"]
    value = ml.joint_mmd(
      (src["features"], jax.nn.softmax(src["logits"], -1)),
      (tgt["features"], jax.nn.softmax(tgt["logits"], -1)),
      bandwidths=(tuple(self.config.mmd_bandwidths), None),
      fixed_bandwidths=(None, self.config.jan_softmax_bandwidth),
    )
    return self.weight(progress) * value, {"jmmd": value}
