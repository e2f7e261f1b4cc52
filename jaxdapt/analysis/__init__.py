"""Measurements around a trained model: how far apart the domains are (shift),
how well features suit a labelled task (transferability), which checkpoint to
keep without target labels (selection), and pictures of all of it (plots).

Everything here is a pure function of NumPy (or JAX) arrays that a run already
produces — features, logits, labels — so it can be computed after training,
from saved arrays, and tested against the papers' formulas. `plots` is not
imported here (it pulls in matplotlib): `from jaxdapt.analysis import plots`.
"""

from jaxdapt.analysis import selection, shift, transferability

__all__ = ["selection", "shift", "transferability"]
