"""What every `jaxdapt <tool>` shares: reading config files, --set overrides, the error path.

One override syntax everywhere: `--set FIELD=VALUE` (JSON for numbers, booleans and lists,
verbatim for strings), refusing what a cast would silently change. One error path: a
problem the user can fix is a JaxdaptError, printed as one line `error: ...` with exit
status 2 by `jaxdapt.tools.main`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from jaxdapt.config import find_field
from jaxdapt.errors import ConfigError

# Exit status of a command whose run was stopped by SIGTERM after saving its checkpoint
# (sysexits.h's EX_TEMPFAIL, "try again later"): a scheduler requeues on it, rerunning the
# same command resumes. 0 is a finished command, 2 a user error. `train` and the tools that
# train runs (grid, rank, transfer-table) all answer a stop with it.
PREEMPTED = 75

# What JSON value each field type takes from --set (an int field no float, no field a bool
# unless it holds one); tuples and lists take JSON lists.
_OVERRIDE_KINDS = {bool: (bool,), int: (int,), float: (int, float), tuple: (list,), list: (list,)}


def _override_value(item: str, old: Any, value: str) -> Any:
  """`value` (JSON; verbatim for a string field) as the type of the field's `old` value.
  Refuses what a cast would silently change: 2.5 for an int field, 1 for a bool one."""
  if isinstance(old, str):
    return value
  try:
    new = json.loads(value)
  except json.JSONDecodeError:
    raise ConfigError(
      f"--set {item}: {value!r} is not JSON (the field holds {type(old).__name__} {old!r})"
    ) from None
  if old is None or new is None:
    return new
  allowed = _OVERRIDE_KINDS.get(type(old))
  if allowed is None:  # a nested ConfigDict and the like: its constructor checks
    return type(old)(new)
  if not isinstance(new, allowed) or (isinstance(new, bool) and bool not in allowed):
    raise ConfigError(
      f"--set {item}: the field holds {type(old).__name__} {old!r}; "
      f"got {type(new).__name__} {new!r}"
    )
  return type(old)(new)


def apply_overrides(config, overrides: Sequence[str] = ()):
  """Sets each FIELD=VALUE in place; returns `config`."""
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ConfigError(f"--set {item}: expected FIELD=VALUE, e.g. train.steps=500")
    group, leaf = find_field(config, key, f"--set {item}")
    group[leaf] = _override_value(item, group[leaf], value)
  return config


def config_module(path: str, label: str = "--config"):
  """The Python config file at `path`, executed; its own errors become one ConfigError
  line naming the file and line (the file is the user's: a bug there is theirs to fix)."""
  if not path:
    raise ConfigError(f"{label}: empty; give a config file, e.g. experiments/digits/dann.py")
  if not os.path.isfile(path):
    what = "a folder" if os.path.isdir(path) else "no such file"
    raise ConfigError(
      f"{label}: {path}: {what}; give a config file, e.g. experiments/digits/dann.py"
    )
  name = "_jaxdapt_config_" + "".join(c if c.isalnum() else "_" for c in path)
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"{label}: {path}: not a Python file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except ConfigError:
    raise
  except SyntaxError as e:
    raise ConfigError(f"{label}: {path}:{e.lineno}: syntax error: {e.msg}") from None
  except Exception as e:  # the user's file raised: name where
    raise ConfigError(f"{label}: {path}{_where(e, path)}: {type(e).__name__}: {e}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(
      f"{label}: {path} defines no get_config(); a config file returns its "
      f"ConfigDict from get_config() (see experiments/digits/dann.py)"
    )
  return module


def _where(error: BaseException, path: str) -> str:
  tb, line = error.__traceback__, None
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
      line = tb.tb_lineno
    tb = tb.tb_next
  return f":{line}" if line else ""


def call_get_config(module, path: str, arg: str | None, label: str = "--config"):
  """module.get_config(arg) (no argument when `arg` is None), its errors as one line."""
  try:
    config = module.get_config() if arg is None else module.get_config(arg)
  except ConfigError as e:
    raise ConfigError(
      f"{label}: {path}:{arg}: {e}" if arg is not None else f"{label}: {e}"
    ) from None
  except TypeError as e:
    if arg is not None and "positional argument" in str(e):
      raise ConfigError(
        f"{label}: {path} takes no ':{arg}' argument (its get_config() has none)"
      ) from None
    raise ConfigError(f"{label}: {path}{_where(e, path)}: TypeError: {e}") from None
  except Exception as e:
    raise ConfigError(f"{label}: {path}{_where(e, path)}: {type(e).__name__}: {e}") from None
  if not hasattr(config, "lock") or not hasattr(config, "to_json"):
    raise ConfigError(
      f"{label}: {path}: get_config() returned {type(config).__name__}, "
      f"not an ml_collections.ConfigDict"
    )
  config.lock()
  return config


def load_config(spec: str, overrides: Sequence[str] = (), label: str = "--config"):
  """'FILE[:ARG]' → FILE's get_config(ARG) with `overrides` applied, locked."""
  path, sep, arg = spec.partition(":")
  module = config_module(path, label)
  return apply_overrides(call_get_config(module, path, arg if sep else None, label), overrides)


def check_workdir(path: str, label: str = "--workdir") -> None:
  """`path` is a folder, or can be made one, and can be written; checked before any data
  loads or anything compiles, so a bad workdir costs nothing and leaves nothing behind."""
  if not path:
    raise ConfigError(f"{label}: empty; give a folder for the run's outputs")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{label}: {path} is a file, not a folder")
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe.rstrip(os.sep)) or "."
  if not os.path.isdir(probe):
    raise ConfigError(f"{label}: {path}: {probe} is a file, not a folder")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError(
      f"{label}: {path}: cannot write in {probe} (permissions or a read-only filesystem)"
    )


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
  """--config FILE[:ARG] and repeated --set FIELD=VALUE."""
  parser.add_argument(
    "--config",
    required=required,
    metavar="FILE[:ARG]",
    help="config file (experiments/...); ':ARG' is passed to get_config, "
    "e.g. a task: experiments/digits/dann.py:uci2ucim",
  )
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="override a config field (JSON for numbers, booleans and lists; "
    "strings verbatim), e.g. --set train.steps=500; repeatable",
  )


def parser(prog: str, description: str | None) -> argparse.ArgumentParser:
  """An ArgumentParser named `jaxdapt TOOL`, its description the module doc's first part."""
  first = (description or "").split("\n\n")[0]
  return argparse.ArgumentParser(prog=f"jaxdapt {prog}", description=first)


def fail(message: str) -> None:
  """Print one error line and exit 2 (for code that runs outside the dispatcher)."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)
