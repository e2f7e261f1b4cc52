"""Launch one experiment on local devices, a SLURM cluster, a Cloud TPU pod or GKE.

  jaxdapt launch local --config experiments/digits/dann.py --workdir runs/x --set seed=1
  jaxdapt launch slurm --nodes 4 --gpus-per-node 8 --config ... --workdir ... --dry-run
  jaxdapt launch tpu --tpu my-pod --zone us-central2-b --config ... --workdir gs://...
  jaxdapt launch k8s --replicas 4 --gpus-per-node 8 --image IMAGE --config ... --workdir ...

Every launcher first checks that --config FILE[:ARG] loads with the --set overrides (so a
typo fails here, not on the cluster), then builds the exact command (or manifest) it would
run; --dry-run prints it and does nothing else. Each process runs the same
`python -m jaxdapt train --config FILE[:ARG] --workdir DIR --set FIELD=VALUE ...`;
`jaxdapt.sharding.maybe_initialize_distributed` joins them into one JAX runtime (SLURM
and TPU are auto-detected; Kubernetes passes the coordinator through
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).

Exit status: 0 finished, 2 user error (a config that does not load, a bad flag); any other
is the launched program's: for `local` the training's (75: stopped by SIGTERM with its
checkpoint saved, rerun to resume), else that of sbatch, gcloud or kubectl.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence

from jaxdapt.errors import JaxdaptError
from jaxdapt.tools import cli
from jaxdapt.tools.train import PREEMPTED

COORDINATOR_PORT = 1234


class LaunchError(JaxdaptError):
  """The launcher's own tool (sbatch, gcloud, kubectl) is not there to run."""


def _run(cmd: list[str], text: str | None = None) -> int:
  """Runs `cmd` (feeding it `text`), its exit status; a missing program is a LaunchError."""
  try:
    if text is None:
      return subprocess.call(cmd)
    return subprocess.run(cmd, input=text, text=True).returncode
  except FileNotFoundError:
    raise LaunchError(f"{cmd[0]}: not found on PATH (--dry-run prints what would run)") from None


def main_command(args: argparse.Namespace, python: str = "python") -> list[str]:
  """`python -m jaxdapt train --config FILE[:ARG] --workdir DIR --set FIELD=VALUE ...`."""
  return [
    python,
    "-m",
    "jaxdapt",
    "train",
    "--config",
    args.config,
    "--workdir",
    args.workdir,
    *(a for item in args.set for a in ("--set", item)),
  ]


def local_command(args: argparse.Namespace) -> list[str]:
  env = []
  if args.cpu_devices:
    env = [
      "env",
      "JAX_PLATFORMS=cpu",
      f"XLA_FLAGS=--xla_force_host_platform_device_count={args.cpu_devices}",
    ]
  return env + main_command(args, sys.executable if not args.dry_run else "python")


def slurm_script(args: argparse.Namespace) -> str:
  """An sbatch script: one task per node, each task sees all GPUs of its node."""
  cmd = shlex.join(main_command(args))
  return "\n".join(
    [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.job_name}",
      f"#SBATCH --nodes={args.nodes}",
      "#SBATCH --ntasks-per-node=1",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      f"#SBATCH --cpus-per-task={args.cpus_per_task}",
      f"#SBATCH --time={args.time}",
      f"#SBATCH --output={args.workdir}/slurm-%j.out",
      "#SBATCH --requeue",
      "set -euo pipefail",
      f"mkdir -p {shlex.quote(args.workdir)}",
      "# jax.distributed.initialize() reads the SLURM environment (one process per node).",
      "# Exit status 75: stopped by SIGTERM (preempted) with its checkpoint saved; the job is",
      "# requeued and the same command resumes from it. 0: finished; 2: a user error.",
      "rc=0",
      f"srun {cmd} || rc=$?",
      f'if [ "$rc" -eq {PREEMPTED} ]; then scontrol requeue "$SLURM_JOB_ID"; fi',
      'exit "$rc"',
      "",
    ]
  )


def tpu_command(args: argparse.Namespace) -> list[str]:
  """gcloud ssh to every worker of a TPU VM pod, running the same command on each."""
  remote = f"cd {shlex.quote(args.remote_dir)} && {shlex.join(main_command(args, 'python3'))}"
  return [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    args.tpu,
    f"--zone={args.zone}",
    f"--project={args.project}" if args.project else None,
    "--worker=all",
    f"--command={remote}",
  ]


def k8s_manifest(args: argparse.Namespace) -> str:
  """A JobSet with `replicas` pods (one process each) and a headless coordinator address."""
  name = args.job_name
  cmd = ", ".join(json.dumps(c) for c in main_command(args))  # JSON strings are YAML
  return f"""apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: {name}
spec:
  network:
    enableDNSHostnames: true
  replicatedJobs:
  - name: workers
    replicas: 1
    template:
      spec:
        parallelism: {args.replicas}
        completions: {args.replicas}
        backoffLimit: 0
        completionMode: Indexed
        # Exit status 75 is a preempted run whose checkpoint is saved: replace the pod (the
        # same command resumes) without counting a failure; any other failure ends the job.
        podFailurePolicy:
          rules:
          - action: Ignore
            onExitCodes:
              containerName: jaxdapt
              operator: In
              values: [{PREEMPTED}]
        template:
          spec:
            restartPolicy: Never
            containers:
            - name: jaxdapt
              image: {args.image}
              command: [{cmd}]
              env:
              - name: JAX_COORDINATOR_ADDRESS
                value: "{name}-workers-0-0.{name}:{COORDINATOR_PORT}"
              - name: JAX_NUM_PROCESSES
                value: "{args.replicas}"
              - name: JAX_PROCESS_ID
                valueFrom:
                  fieldRef:
                    fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
              resources:
                limits:
                  nvidia.com/gpu: {args.gpus_per_node}
"""


def _parser() -> argparse.ArgumentParser:
  parser = cli.parser("launch", __doc__)
  sub = parser.add_subparsers(dest="target", required=True, metavar="{local,slurm,tpu,k8s}")
  common = argparse.ArgumentParser(add_help=False)
  cli.add_config_arguments(common)
  common.add_argument("--workdir", required=True)
  common.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
  local = sub.add_parser("local", parents=[common], help="this machine's devices")
  local.add_argument("--cpu-devices", type=int, default=0, help="N fake CPU devices")
  slurm = sub.add_parser("slurm", parents=[common], help="an sbatch script, one task per node")
  slurm.add_argument("--nodes", type=int, default=1)
  slurm.add_argument("--gpus-per-node", type=int, default=8)
  slurm.add_argument("--cpus-per-task", type=int, default=16)
  slurm.add_argument("--time", default="24:00:00")
  slurm.add_argument("--job-name", default="jaxdapt")
  tpu = sub.add_parser("tpu", parents=[common], help="every worker of a TPU VM pod slice")
  tpu.add_argument("--tpu", required=True, help="TPU VM (pod slice) name")
  tpu.add_argument("--zone", required=True)
  tpu.add_argument("--project", default="")
  tpu.add_argument("--remote-dir", default="jaxdapt", help="checkout on every worker")
  k8s = sub.add_parser("k8s", parents=[common], help="a JobSet manifest for kubectl apply")
  k8s.add_argument("--replicas", type=int, default=2)
  k8s.add_argument("--gpus-per-node", type=int, default=8)
  k8s.add_argument("--image", required=True)
  k8s.add_argument("--job-name", default="jaxdapt")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  # The config must load here (ConfigError: one line, exit 2) before any script is
  # written or job submitted.
  cli.load_config(args.config, args.set)
  if args.target == "local":
    cmd = local_command(args)
    if args.dry_run:
      print(shlex.join(cmd))
      return 0
    return _run(cmd)
  if args.target == "tpu":
    cmd = [c for c in tpu_command(args) if c is not None]
    if args.dry_run:
      print(shlex.join(cmd))
      return 0
    return _run(cmd)
  text = slurm_script(args) if args.target == "slurm" else k8s_manifest(args)
  if args.dry_run:
    print(text, end="")
    return 0
  tool = ["sbatch"] if args.target == "slurm" else ["kubectl", "apply", "-f", "-"]
  return _run(tool, text)
