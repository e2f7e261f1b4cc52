"""jaxdapt: transfer learning and domain adaptation in JAX/Flax.

Importing it has no side effects; the command line's process setup is
`jaxdapt.runtime.setup()`. The layers, low to high, are listed in jaxdapt/layers.py.
"""

__version__ = "0.1.0"
