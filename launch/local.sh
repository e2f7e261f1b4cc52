#!/usr/bin/env bash
# Thin wrapper, the same as the console command `jaxdapt launch local ...`:
#   python -m jaxdapt launch local --config CONFIG[:ARG] --workdir DIR [--dry-run] [options]
#       [--set FIELD=VALUE ...]
# See `python -m jaxdapt launch local --help` and README "Launching".
# Exit status: 0 finished, 2 user error (a config that does not load, a bad flag); any
# other is the training's own status (75: stopped by SIGTERM, checkpoint saved; rerun).
exec "${PYTHON:-python}" -m jaxdapt launch local "$@"
