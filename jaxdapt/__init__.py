"""jaxdapt: transfer learning and domain adaptation in JAX/Flax."""

from jaxdapt import xla_defaults as _xla_defaults

_xla_defaults.apply()

__version__ = "0.1.0"
