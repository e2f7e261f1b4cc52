"""Errors a user can act on: each names the field or thing at fault and what is allowed."""


class JaxdaptError(Exception):
  """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(JaxdaptError, ValueError):
  """A config field holds a value that cannot work (unknown name, impossible shape...)."""


class DatasetNotPreparedError(JaxdaptError, FileNotFoundError):
  """A dataset is not on disk; the message says how to prepare it."""


class NonFiniteLossError(JaxdaptError, FloatingPointError):
  """Training produced a NaN/Inf loss; names the method and the step."""


class CheckpointError(JaxdaptError, RuntimeError):
  """A checkpoint could not be restored (corrupt or from another config)."""
