#!/usr/bin/env bash
# Thin wrapper, the same as the console command `jaxdapt launch tpu ...`:
#   python -m jaxdapt launch tpu --config CONFIG[:ARG] --workdir DIR [--dry-run] [options]
#       [--set FIELD=VALUE ...]
# See `python -m jaxdapt launch tpu --help` and README "Launching".
# Exit status: 0 finished, 2 user error (a config that does not load, a bad flag); any
# other is the status of gcloud ssh.
exec "${PYTHON:-python}" -m jaxdapt launch tpu "$@"
