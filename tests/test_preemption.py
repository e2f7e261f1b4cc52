"""Stopped runs resume to the same files: SIGTERM → checkpoint at the next log step → exit 75;
kill -9 → the rerun resumes from the last checkpoint. Either way, after the same command
runs to the end, every file of the workdir equals an uninterrupted run's byte for byte,
except the wall-clock fields named in WALL_CLOCK and the checkpoints' own path."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough that SIGTERM, sent once the first log line is written, lands mid-run.
STEPS = 200
LOG_EVERY, CHECKPOINT_EVERY, EVAL_EVERY = 5, 50, 100
# Fields that hold wall-clock time, per file name: the only differences allowed.
WALL_CLOCK = {
  "metrics.jsonl": ("images_per_s",),
  "_CHECKPOINT_METADATA": ("init_timestamp_nsecs", "commit_timestamp_nsecs"),
}


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
    f"train.log_every={LOG_EVERY}",
    "--set",
    f"train.eval_every={EVAL_EVERY}",
    "--set",
    f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "--set",
    "train.progress_bar=false",
  ]


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _without(text: str, fields: tuple[str, ...]) -> list:
  rows = [json.loads(line) for line in text.splitlines() if line.strip()]
  return [{k: v for k, v in r.items() if k not in fields} for r in rows]


def _files(root) -> dict[str, str]:
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      out[os.path.relpath(path, root)] = path
  return out


def assert_same_files(a, b) -> None:
  """Every file of workdir `a` equals `b`'s byte for byte, but WALL_CLOCK fields and the
  absolute workdir path Orbax writes into commit_success.txt."""
  fa, fb = _files(a), _files(b)
  assert sorted(fa) == sorted(fb)
  for rel in sorted(fa):
    x, y = open(fa[rel], "rb").read(), open(fb[rel], "rb").read()
    name = os.path.basename(rel)
    if name in WALL_CLOCK:
      x, y = (_without(t.decode(), WALL_CLOCK[name]) for t in (x, y))
    elif name == "commit_success.txt":
      x, y = x.replace(str(a).encode(), b"WORKDIR"), y.replace(str(b).encode(), b"WORKDIR")
    assert x == y, rel


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
  """The uninterrupted run both tests compare with."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  done = subprocess.run(
    _command(workdir, data_dir),
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return workdir


def _start(workdir, data_dir) -> subprocess.Popen:
  return subprocess.Popen(
    _command(workdir, data_dir),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _wait_for_rows(proc, workdir, rows: int) -> None:
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 600
  while not (metrics.exists() and metrics.read_text().count("\n") >= rows):
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    assert time.time() < deadline
    time.sleep(0.02)


def test_sigterm_checkpoints_and_rerun_resumes_to_the_same_files(tmp_path, data_dir, straight):
  workdir = tmp_path / "preempted"
  proc = _start(workdir, data_dir)
  _wait_for_rows(proc, workdir, 1)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 75, err[-2000:]  # preempted: distinct from finished (0)
  assert "stopped at step" in out, out
  stopped_at = int(out.split("stopped at step ")[1].split()[0])
  assert 0 < stopped_at < STEPS
  assert stopped_at % LOG_EVERY == 0  # stops at a log step: its train row is complete
  assert (workdir / "checkpoints" / str(stopped_at)).is_dir()
  resumed = subprocess.run(
    _command(workdir, data_dir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert_same_files(workdir, straight)
  if stopped_at % CHECKPOINT_EVERY:  # the stop's own checkpoint is gone again
    assert not (workdir / "checkpoints" / str(stopped_at)).exists()


def test_kill_9_three_times_then_resume_gives_the_same_files(tmp_path, data_dir, straight):
  workdir = tmp_path / "killed"
  rng = random.Random(0)
  rows_per_run = STEPS // LOG_EVERY
  # Kill points spread over the run (rows of metrics.jsonl seen), each in a later stretch.
  for low, high in (
    (2, rows_per_run // 3),
    (rows_per_run // 3, 2 * rows_per_run // 3),
    (2 * rows_per_run // 3, rows_per_run - 2),
  ):
    proc = _start(workdir, data_dir)
    _wait_for_rows(proc, workdir, rng.randint(low, high))
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
  done = subprocess.run(
    _command(workdir, data_dir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert_same_files(workdir, straight)
