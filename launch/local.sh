#!/usr/bin/env bash
# Local launcher: one process, every local device (GPUs/TPU cores, or N fake CPU devices).
#   launch/local.sh experiments/digits/dann.py runs/dann [--config.seed=1 ...]
#   CPU_DEVICES=8 launch/local.sh ...   # data-parallel over 8 fake CPU devices
#   DRY_RUN=1 launch/local.sh ...       # print the command instead of running it
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
shift 2
env_prefix=()
if [[ -n "${CPU_DEVICES:-}" ]]; then
  env_prefix=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${CPU_DEVICES}")
fi
cmd=("${env_prefix[@]}" "${PYTHON:-python}" -m jaxdapt.main "--config=${config}" "--workdir=${workdir}" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
