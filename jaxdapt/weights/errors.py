"""The one error type of weight import: names the file and every tensor at fault."""

from jaxdapt.errors import JaxdaptError


class WeightsError(JaxdaptError, ValueError):
  """A weights file is unreadable, unsafe, or does not fit the architecture."""
