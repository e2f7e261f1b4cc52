#!/usr/bin/env bash
# The GPU rows of README "Benchmark" on a GPU machine that cannot reach PyPI but already has
# jax (CUDA), flax, optax, orbax-checkpoint and torch (the lent H100/H200 images):
#   launch/gpu_bench.sh fetch         here, with PyPI: the other packages jaxdapt needs, as
#                                     Python 3.12 wheels, into .whl/ (git-ignored, ~10 MB)
#   launch/gpu_bench.sh run [OUT]     there: installs .whl/ into /tmp/site, then runs
#                                     python -m jaxdapt bench-suite --platform gpu --out OUT
# PYTHON (default python3) picks the interpreter; WHEELS (default .whl) the wheel folder.
# Exit status: 0 finished, 2 user error (a bad argument); run: 1 when a benchmark row failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
# Not in those images (checked against .library/device/KINDS.md): ml-collections,
# tensorflow-datasets and grain, with the requirements of theirs the images lack.
PACKAGES=(ml-collections==1.1.0 tensorflow-datasets==4.9.10 grain==0.2.18 array-record==0.8.6
          dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 tensorflow-metadata==1.21.0
          termcolor==3.3.0 toml==0.10.2 portpicker==1.6.0 docstring-parser==0.17.0)
SDISTS=(promise==2.3)  # no wheel on PyPI: built here (pure Python)

case "${1:-}" in
  fetch)
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" \
        "${PACKAGES[@]}"
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "${SDISTS[@]}"
    ls "$WHEELS"
    ;;
  run)
    out=${2:-results/bench_gpu}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())'
    exec "$PY" -m jaxdapt bench-suite --platform gpu --out "$out"
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
