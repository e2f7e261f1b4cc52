"""jaxdapt's default XLA flags: added on import for the jaxlib versions they were
measured on, never over a flag the user set, and in effect in the compiled program."""

import os
import subprocess
import sys

import pytest

from jaxdapt.runtime import xla_defaults

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def test_adds_the_flag_after_the_users_own_flags():
  out = xla_defaults.with_defaults("--xla_force_host_platform_device_count=2", "0.10.2")
  assert out.split() == [
    "--xla_force_host_platform_device_count=2",
    f"{FLAG}=-individual_convolution",
  ]


@pytest.mark.parametrize("users", [f"{FLAG}=", f"{FLAG}=+individual_dot"])
def test_a_flag_the_user_set_is_kept_as_set(users):
  assert xla_defaults.with_defaults(users, "0.10.2") == users


def test_nothing_is_added_on_untested_jaxlib_versions():
  assert xla_defaults.with_defaults("", "0.11.0") == ""
  assert xla_defaults.with_defaults("", "") == ""


# Compiles one digits-sized conv in a fresh process and says whether XLA gave it to
# YNNPACK (whose fusions are named "ynn_fusion" in the optimized HLO).
_PROBE = """
import sys
if sys.argv[1] == "import": import jaxdapt.runtime; jaxdapt.runtime.setup()
import jax, jax.numpy as jnp
x, w = jnp.ones((2, 32, 32, 3)), jnp.ones((5, 5, 3, 32))
conv = lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
print("ynn_fusion" in jax.jit(conv).lower(x, w).compile().as_text())
"""


def _conv_goes_to_ynn(how: str, xla_flags: str = "") -> bool:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
  out = subprocess.run(
    [sys.executable, "-c", _PROBE, how], env=env, check=True, capture_output=True, text=True
  ).stdout.split()
  return out[-1] == "True"


def test_importing_jaxdapt_takes_convolutions_off_ynnpack():
  if not xla_defaults.with_defaults("", xla_defaults._jaxlib_version()):
    pytest.skip("no default flag for this jaxlib version")
  if not _conv_goes_to_ynn("plain"):
    pytest.skip("this jaxlib does not give convolutions to YNNPACK: the flag may be obsolete")
  assert not _conv_goes_to_ynn("import")
  assert _conv_goes_to_ynn("import", f"{FLAG}=+individual_convolution")  # user's choice wins
