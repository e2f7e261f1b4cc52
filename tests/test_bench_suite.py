"""The benchmark suite: its dry run prints the bench commands, a real row runs in its own
process and lands in the table, and a failing row is recorded without stopping the rest."""

import pytest

from jaxdapt.tools import bench_suite
from jaxdapt.tools.main import run_tool


def test_dry_run_prints_the_gpu_rows(capsys):
  assert bench_suite.main(["--platform", "gpu", "--dry-run", "--steps", "50"]) == 0
  lines = capsys.readouterr().out.splitlines()
  tail = "--steps 50 --warmup 10"
  assert lines == [
    "python -m jaxdapt bench throughput --model resnet50 --image-size 224 --method "
    f"source_only --batch 256 {tail}",
    f"python -m jaxdapt bench throughput --model resnet50 --image-size 224 --method dann "
    f"--batch 256 {tail}",
    f"python -m jaxdapt bench features --model resnet50 --image-size 224 --batch 1024 {tail}",
    f"python -m jaxdapt bench --config experiments/digits/dann.py {tail}",
  ]


def test_rows_run_in_their_own_process_and_failures_are_recorded(capsys):
  rows = [
    ("tiny", ["throughput", "--model", "dann_digits", "--batch", "8", "--no-torch"]),
    ("typo", ["throughput", "--model", "resnet_50", "--batch", "8", "--no-torch"]),
  ]
  results = bench_suite.run_suite(rows, steps=2, warmup=1)
  assert [r["label"] for r in results] == ["tiny", "typo"]
  tiny = results[0]["result"]
  assert tiny["model"] == "dann_digits" and tiny["images_per_s"] > 0
  # A bad row's error is bench's one line, not a traceback.
  assert results[1]["error"].startswith("exit 2:\nerror: model.name: unknown model 'resnet_50'")
  assert "Traceback" not in results[1]["error"] and "result" not in results[1]
  table = bench_suite.markdown(results, "2026-12-02")
  assert table.startswith(f"Measured 2026-12-02 on {tiny['devices']} cpu device(s)")
  row = next(line for line in table.splitlines() if line.startswith("| tiny |"))
  assert f"| {tiny['images_per_s']:,.0f} | {tiny['step_ms']:.1f} |" in row
  assert "| n/a |" in row  # no MFU on CPU
  assert "--steps 2 --warmup 1`" in row
  assert next(line for line in table.splitlines() if line.startswith("| typo | failed: "))


def test_table_gives_the_torch_ratio_and_mfu():
  result = {
    "devices": 1,
    "platform": "gpu",
    "device_kind": "NVIDIA H200",
    "host": "x86_64",
    "jax": "0.10.2",
    "dtype": "bfloat16",
    "conv_kernel": "xla",
    "images_per_s": 6000.0,
    "step_ms": 85.3,
    "compile_s": 40.0,
    "mfu": 0.412,
    "torch": "2.11",
    "torch_device": "cuda",
    "torch_threads": 16,
    "torch_images_per_s": 4000.0,
  }
  table = bench_suite.markdown(
    [{"label": "r50", "command": ["-m", "jaxdapt", "bench"], "result": result}], "2026-12-02"
  )
  assert "PyTorch 2.11 (cuda, 16 threads)" in table.splitlines()[0]
  assert (
    "| r50 | bfloat16, xla convs | 6,000 | 85.3 | 40.0 | 41.2% | 4,000 | 1.50 | "
    "`python -m jaxdapt bench` |"
  ) in table


def test_an_unknown_platform_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as e:
    run_tool("bench-suite", ["--platform", "tpu", "--dry-run"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.startswith("usage: jaxdapt bench-suite")
  assert "argument --platform: invalid choice: 'tpu'" in err
