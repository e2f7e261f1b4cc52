"""Launch one experiment on local devices, a SLURM cluster, a Cloud TPU pod or GKE.

  python -m jaxdapt.launch local --config experiments/digits/dann.py --workdir runs/x
  python -m jaxdapt.launch slurm --nodes 4 --gpus-per-node 8 --config ... --workdir ... --dry-run
  python -m jaxdapt.launch tpu --tpu my-pod --zone us-central2-b --config ... --workdir gs://...
  python -m jaxdapt.launch k8s --replicas 4 --gpus-per-node 8 --image IMAGE --config ... --workdir ...

Every launcher builds the exact command (or manifest) it would run; --dry-run
prints it and does nothing else. Each process runs the same `jaxdapt.main`
command; `jaxdapt.sharding.maybe_initialize_distributed` joins them into one
JAX runtime (SLURM and TPU are auto-detected; Kubernetes passes the
coordinator through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Sequence

COORDINATOR_PORT = 1234


def main_command(args: argparse.Namespace, python: str = "python") -> list[str]:
  return [python, "-m", "jaxdapt.main", f"--config={args.config}", f"--workdir={args.workdir}",
          *args.overrides]


def local_command(args: argparse.Namespace) -> list[str]:
  env = []
  if args.cpu_devices:
    env = ["env", "JAX_PLATFORMS=cpu",
           f"XLA_FLAGS=--xla_force_host_platform_device_count={args.cpu_devices}"]
  return env + main_command(args, sys.executable if not args.dry_run else "python")


def slurm_script(args: argparse.Namespace) -> str:
  """An sbatch script: one task per node, each task sees all GPUs of its node."""
  cmd = shlex.join(main_command(args))
  return "\n".join([
      "#!/bin/bash",
      f"#SBATCH --job-name={args.job_name}",
      f"#SBATCH --nodes={args.nodes}",
      "#SBATCH --ntasks-per-node=1",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      f"#SBATCH --cpus-per-task={args.cpus_per_task}",
      f"#SBATCH --time={args.time}",
      f"#SBATCH --output={args.workdir}/slurm-%j.out",
      "set -euo pipefail",
      f"mkdir -p {shlex.quote(args.workdir)}",
      "# jax.distributed.initialize() reads the SLURM environment (one process per node).",
      f"srun {cmd}",
      "",
  ])


def tpu_command(args: argparse.Namespace) -> list[str]:
  """gcloud ssh to every worker of a TPU VM pod, running the same command on each."""
  remote = f"cd {shlex.quote(args.remote_dir)} && {shlex.join(main_command(args, 'python3'))}"
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}",
          f"--project={args.project}" if args.project else None, "--worker=all",
          f"--command={remote}"]


def k8s_manifest(args: argparse.Namespace) -> str:
  """A JobSet with `replicas` pods (one process each) and a headless coordinator address."""
  name = args.job_name
  cmd = ", ".join(f'"{c}"' for c in main_command(args))
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
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="target", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--config", required=True)
  common.add_argument("--workdir", required=True)
  common.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
  common.add_argument("overrides", nargs="*", help="--config.FIELD=VALUE overrides (after --)")
  local = sub.add_parser("local", parents=[common])
  local.add_argument("--cpu-devices", type=int, default=0, help="N fake CPU devices")
  slurm = sub.add_parser("slurm", parents=[common])
  slurm.add_argument("--nodes", type=int, default=1)
  slurm.add_argument("--gpus-per-node", type=int, default=8)
  slurm.add_argument("--cpus-per-task", type=int, default=16)
  slurm.add_argument("--time", default="24:00:00")
  slurm.add_argument("--job-name", default="jaxdapt")
  tpu = sub.add_parser("tpu", parents=[common])
  tpu.add_argument("--tpu", required=True, help="TPU VM (pod slice) name")
  tpu.add_argument("--zone", required=True)
  tpu.add_argument("--project", default="")
  tpu.add_argument("--remote-dir", default="jaxdapt", help="checkout on every worker")
  k8s = sub.add_parser("k8s", parents=[common])
  k8s.add_argument("--replicas", type=int, default=2)
  k8s.add_argument("--gpus-per-node", type=int, default=8)
  k8s.add_argument("--image", required=True)
  k8s.add_argument("--job-name", default="jaxdapt")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.target == "local":
    cmd = local_command(args)
    if args.dry_run:
      print(shlex.join(cmd))
      return 0
    return subprocess.call(cmd)
  if args.target == "tpu":
    cmd = [c for c in tpu_command(args) if c is not None]
    if args.dry_run:
      print(shlex.join(cmd))
      return 0
    return subprocess.call(cmd)
  text = slurm_script(args) if args.target == "slurm" else k8s_manifest(args)
  if args.dry_run:
    print(text, end="")
    return 0
  tool = ["sbatch"] if args.target == "slurm" else ["kubectl", "apply", "-f", "-"]
  return subprocess.run(tool, input=text, text=True).returncode


if __name__ == "__main__":
  sys.exit(main())
