#!/usr/bin/env bash
# Thin wrapper, the same as the console command `jaxdapt launch k8s ...`:
#   python -m jaxdapt launch k8s --config CONFIG[:ARG] --workdir DIR [--dry-run] [options]
#       [--set FIELD=VALUE ...]
# See `python -m jaxdapt launch k8s --help` and README "Launching".
# Exit status: 0 finished, 2 user error (a config that does not load, a bad flag); any
# other is the status of kubectl apply. The JobSet replaces a pod whose training exits 75
# (stopped by SIGTERM, checkpoint saved) without counting a failure.
exec "${PYTHON:-python}" -m jaxdapt launch k8s "$@"
