"""jaxdapt: transfer learning and domain adaptation in JAX/Flax."""

from jaxdapt import host_malloc as _host_malloc
from jaxdapt import xla_defaults as _xla_defaults

_xla_defaults.apply()
_host_malloc.apply()

__version__ = "0.1.0"
