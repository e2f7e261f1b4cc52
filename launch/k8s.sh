#!/usr/bin/env bash
# Thin wrapper: python -m jaxdapt.launch k8s --config CONFIG --workdir DIR [--dry-run] [options] [-- --config.FIELD=VALUE ...]
# See `python -m jaxdapt.launch k8s --help` and README "Launching".
exec "${PYTHON:-python}" -m jaxdapt.launch k8s "$@"
