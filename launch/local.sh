#!/usr/bin/env bash
# Thin wrapper: python -m jaxdapt.launch local --config CONFIG --workdir DIR [--dry-run] [options] [-- --config.FIELD=VALUE ...]
# See `python -m jaxdapt.launch local --help` and README "Launching".
exec "${PYTHON:-python}" -m jaxdapt.launch local "$@"
