"""SIGTERM → checkpoint at the current step → exit 75 → the same command resumes to the same
end."""

import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough that SIGTERM, sent once the first log line is written, lands mid-run.
STEPS = 200


def _command(workdir, data_dir):
  return [
    sys.executable,
    "-m",
    "jaxdapt",
    "train",
    "--config",
    "experiments/digits/source_only.py:uci2ucim",
    "--workdir",
    workdir,
    "--set",
    f"data.data_dir={data_dir}",
    "--set",
    "data.batch_size=16",
    "--set",
    "model.norm=none",
    "--set",
    "model.head_hidden=[32]",
    "--set",
    f"train.steps={STEPS}",
    "--set",
    "train.log_every=5",
    "--set",
    f"train.eval_every={STEPS}",
    "--set",
    f"train.checkpoint_every={STEPS}",
    "--set",
    "train.progress_bar=false",
  ]


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _final_eval(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if r["kind"] == "eval"]


def test_sigterm_checkpoints_and_rerun_resumes_to_the_same_result(tmp_path, data_dir):
  straight = subprocess.run(
    _command(tmp_path / "straight", data_dir),
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert straight.returncode == 0, straight.stderr[-2000:]
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(
    _command(workdir, data_dir),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 600
  while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 75, err[-2000:]  # preempted: distinct from finished (0)
  assert "stopped at step" in out, out
  stopped_at = int(out.split("stopped at step ")[1].split()[0])
  assert 0 < stopped_at < STEPS
  assert (workdir / "checkpoints" / str(stopped_at)).is_dir()
  resumed = subprocess.run(
    _command(workdir, data_dir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert _final_eval(workdir) == _final_eval(tmp_path / "straight")
