"""Each launcher checks the config, then its dry run prints exactly what it would execute
(`python -m jaxdapt train --config ... --set ...`), and runs nothing."""

import shlex
import subprocess

import pytest
import yaml

from jaxdapt.errors import ConfigError
from jaxdapt.tools import launch
from jaxdapt.tools.main import run_tool

CONFIG = "experiments/digits/dann.py:uci2ucim"
COMMON = ["--config", CONFIG, "--workdir", "runs/x", "--dry-run"]
SETS = ["--set", "seed=3", "--set", 'optim.rules=[[".*", 1.0]]']
TRAIN = [
  "-m",
  "jaxdapt",
  "train",
  "--config",
  CONFIG,
  "--workdir",
  "runs/x",
  "--set",
  "seed=3",
  "--set",
  'optim.rules=[[".*", 1.0]]',
]


def _refuse(monkeypatch):
  def refuse(*a, **k):
    raise AssertionError(f"executed {a}")

  monkeypatch.setattr(subprocess, "call", refuse)
  monkeypatch.setattr(subprocess, "run", refuse)


def _dry(capsys, argv, monkeypatch):
  _refuse(monkeypatch)
  assert launch.main(argv) == 0
  return capsys.readouterr().out


def test_local_dry_run(capsys, monkeypatch):
  out = _dry(capsys, ["local", "--cpu-devices", "8", *COMMON, *SETS], monkeypatch)
  assert shlex.split(out) == [
    "env",
    "JAX_PLATFORMS=cpu",
    "XLA_FLAGS=--xla_force_host_platform_device_count=8",
    "python",
    *TRAIN,
  ]


def test_slurm_dry_run(capsys, monkeypatch):
  out = _dry(capsys, ["slurm", "--nodes", "4", "--gpus-per-node", "8", *COMMON, *SETS], monkeypatch)
  lines = out.splitlines()
  assert lines[0] == "#!/bin/bash"
  assert "#SBATCH --nodes=4" in lines and "#SBATCH --ntasks-per-node=1" in lines
  assert "#SBATCH --gpus-per-node=8" in lines
  assert "#SBATCH --requeue" in lines
  srun = next(line for line in lines if line.startswith("srun "))
  assert shlex.split(srun) == ["srun", "python", *TRAIN, "||", "rc=$?"]
  assert 'if [ "$rc" -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID"; fi' in lines
  assert lines[-1] == 'exit "$rc"'


def test_tpu_dry_run(capsys, monkeypatch):
  out = _dry(
    capsys, ["tpu", "--tpu", "pod", "--zone", "us-central2-b", *COMMON, *SETS], monkeypatch
  )
  argv = shlex.split(out)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert "--worker=all" in argv and "--zone=us-central2-b" in argv
  assert argv[-1] == f"--command=cd jaxdapt && {shlex.join(['python3', *TRAIN])}"


def test_k8s_dry_run_is_a_jobset_with_coordinator(capsys, monkeypatch):
  out = _dry(capsys, ["k8s", "--replicas", "4", "--image", "img:1", *COMMON, *SETS], monkeypatch)
  doc = yaml.safe_load(out)
  assert doc["kind"] == "JobSet"
  job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
  assert job["parallelism"] == job["completions"] == 4
  container = job["template"]["spec"]["containers"][0]
  assert container["command"] == ["python", *TRAIN]  # the quotes in --set survive YAML
  env = {e["name"]: e.get("value") for e in container["env"]}
  assert env["JAX_NUM_PROCESSES"] == "4"
  assert env["JAX_COORDINATOR_ADDRESS"] == "jaxdapt-workers-0-0.jaxdapt:1234"
  (rule,) = job["podFailurePolicy"]["rules"]  # a preempted pod (exit 75) is replaced
  assert rule["action"] == "Ignore" and rule["onExitCodes"]["values"] == [75]


def test_missing_required_argument_exits(capsys):
  with pytest.raises(SystemExit) as e:
    launch.main(["slurm", "--config", "x.py", "--dry-run"])
  assert e.value.code == 2 and "--workdir" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["local", "slurm", "tpu", "k8s"])
@pytest.mark.parametrize(
  "config, sets, message",
  [
    ("nope.py", [], "--config: nope.py: no such file"),
    (CONFIG, ["--set", "train.stepz=3"], "--set train.stepz=3: unknown config field"),
    ("experiments/digits/dann.py:nope", [], "task: unknown 'nope'"),
  ],
)
def test_a_config_that_does_not_load_is_refused_before_any_script(
  capsys, monkeypatch, target, config, sets, message
):
  """`launch slurm --config nope.py --dry-run` used to print a job script and exit 0."""
  _refuse(monkeypatch)
  extra = {"tpu": ["--tpu", "pod", "--zone", "z"], "k8s": ["--image", "img:1"]}.get(target, [])
  argv = [target, *extra, "--config", config, "--workdir", "runs/x", "--dry-run", *sets]
  with pytest.raises(ConfigError, match=message):
    launch.main(argv)
  assert capsys.readouterr().out == ""
  assert run_tool("launch", argv) == 2
  captured = capsys.readouterr()
  assert captured.out == "" and captured.err.startswith("error: ")
  assert captured.err.count("\n") == 1 and message in captured.err


def test_a_missing_submit_tool_is_one_line(capsys, monkeypatch):
  monkeypatch.setenv("PATH", "/nonexistent")
  assert run_tool("launch", ["slurm", "--config", CONFIG, "--workdir", "runs/x"]) == 2
  assert capsys.readouterr().err == (
    "error: sbatch: not found on PATH (--dry-run prints what would run)\n"
  )
