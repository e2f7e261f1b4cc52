#!/usr/bin/env bash
# Thin wrapper: python -m jaxdapt.launch tpu --config CONFIG --workdir DIR [--dry-run] [options] [-- --config.FIELD=VALUE ...]
# See `python -m jaxdapt.launch tpu --help` and README "Launching".
exec "${PYTHON:-python}" -m jaxdapt.launch tpu "$@"
