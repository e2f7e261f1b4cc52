#!/usr/bin/env bash
# Thin wrapper, the same as the console command `jaxdapt launch slurm ...`:
#   python -m jaxdapt launch slurm --config CONFIG[:ARG] --workdir DIR [--dry-run] [options]
#       [--set FIELD=VALUE ...]
# See `python -m jaxdapt launch slurm --help` and README "Launching".
# Exit status: 0 finished, 2 user error (a config that does not load, a bad flag); any
# other is the status of sbatch. The submitted job itself requeues when training exits 75
# (stopped by SIGTERM, checkpoint saved).
exec "${PYTHON:-python}" -m jaxdapt launch slurm "$@"
