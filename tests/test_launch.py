"""Each launcher's dry run prints exactly what it would execute, and runs nothing."""
import shlex
import subprocess

import pytest
import yaml

from jaxdapt import launch

COMMON = ["--config", "experiments/digits/dann.py", "--workdir", "runs/x", "--dry-run"]
MAIN = "-m jaxdapt.main --config=experiments/digits/dann.py --workdir=runs/x --config.seed=3"


def _dry(capsys, argv, monkeypatch):
  def refuse(*a, **k):
    raise AssertionError(f"dry run executed {a}")
  monkeypatch.setattr(subprocess, "call", refuse)
  monkeypatch.setattr(subprocess, "run", refuse)
  assert launch.main(argv) == 0
  return capsys.readouterr().out


def test_local_dry_run(capsys, monkeypatch):
  out = _dry(capsys, ["local", "--cpu-devices", "8", *COMMON, "--", "--config.seed=3"], monkeypatch)
  assert shlex.split(out) == ["env", "JAX_PLATFORMS=cpu",
                              "XLA_FLAGS=--xla_force_host_platform_device_count=8", "python",
                              *MAIN.split()]


def test_slurm_dry_run(capsys, monkeypatch):
  out = _dry(capsys, ["slurm", "--nodes", "4", "--gpus-per-node", "8", *COMMON, "--",
                      "--config.seed=3"], monkeypatch)
  lines = out.splitlines()
  assert lines[0] == "#!/bin/bash"
  assert "#SBATCH --nodes=4" in lines and "#SBATCH --ntasks-per-node=1" in lines
  assert "#SBATCH --gpus-per-node=8" in lines
  assert lines[-1] == f"srun python {MAIN}"


def test_tpu_dry_run(capsys, monkeypatch):
  out = _dry(capsys, ["tpu", "--tpu", "pod", "--zone", "us-central2-b", *COMMON, "--",
                      "--config.seed=3"], monkeypatch)
  argv = shlex.split(out)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert "--worker=all" in argv and "--zone=us-central2-b" in argv
  assert argv[-1] == f"--command=cd jaxdapt && python3 {MAIN}"


def test_k8s_dry_run_is_a_jobset_with_coordinator(capsys, monkeypatch):
  out = _dry(capsys, ["k8s", "--replicas", "4", "--image", "img:1", *COMMON, "--",
                      "--config.seed=3"], monkeypatch)
  doc = yaml.safe_load(out)
  assert doc["kind"] == "JobSet"
  job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
  assert job["parallelism"] == job["completions"] == 4
  container = job["template"]["spec"]["containers"][0]
  assert container["command"] == ["python", *MAIN.split()]
  env = {e["name"]: e.get("value") for e in container["env"]}
  assert env["JAX_NUM_PROCESSES"] == "4"
  assert env["JAX_COORDINATOR_ADDRESS"] == "jaxdapt-workers-0-0.jaxdapt:1234"


def test_missing_required_argument_exits():
  with pytest.raises(SystemExit):
    launch.main(["slurm", "--config", "x.py", "--dry-run"])
