"""`jaxdapt bench text`: the text encoder's step and feature extraction against the same
model in PyTorch + transformers. The twin starts from the JAX model's weights, so the first
step's losses (and the first batch's features) agree: the ratio compares one computation."""

import json
import re

import numpy as np
import pytest

from jaxdapt.errors import ConfigError
from jaxdapt.tools import bench
from jaxdapt.tools.main import run_tool

pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = ["text", "--model", "bert_tiny", "--batch", "4", "--seq", "32", "--steps", "2"]


def _bench(capsys, argv):
  assert bench.main(argv) == 0
  out = capsys.readouterr().out
  return out, json.loads(out.splitlines()[-1])


def test_text_step_times_jax_and_torch_from_the_same_weights(capsys):
  out, r = _bench(capsys, [*TINY, "--warmup", "1", "--torch"])
  assert "source_only step, bert_tiny (float32), batch 4 × 32 tokens" in out
  assert "jax/torch sequences/s:" in out and "first step's loss: jax" in out
  assert r["sequences_per_s"] > 0 and r["torch_sequences_per_s"] > 0 and r["compile_s"] > 0
  assert r["rounds"] == 2 and r["round_steps"] == [1, 1] and len(r["torch_round_ms"]) == 2
  assert r["jax_over_torch"] == pytest.approx(r["torch_step_ms"] / r["step_ms"])
  assert abs(r["jax_first_loss"] - r["torch_first_loss"]) <= 1e-4 and r["check"] == "ok"
  # the same updates on the same batches: still together after 1 warm-up + 2 timed steps
  assert r["jax_final_loss"] != r["jax_first_loss"]
  assert r["torch_final_loss"] == pytest.approx(r["jax_final_loss"], abs=1e-4)
  assert r["flops_per_device_step"] > 0 and len(r["loadavg_start"]) == 3


def test_text_features_time_the_eval_forward_and_its_twin(capsys):
  out, r = _bench(capsys, [*TINY, "--warmup", "0", "--features", "--torch"])
  assert "feature extraction (eval forward), bert_tiny (float32), batch 4 × 32" in out
  assert r["method"] == "features" and r["torch_sequences_per_s"] > 0
  assert r["feature_max_abs_diff"] <= 1e-4 and r["check"] == "ok"
  assert "jax_first_loss" not in r


def test_token_batches_pad_every_fourth_row():
  batches = bench.token_batches(2, 8, 16, vocab=30522, num_classes=10)
  tokens = batches[0]["image"]
  assert tokens.dtype == np.int32 and tokens.shape == (8, 16)
  real = (tokens != 0).sum(1)
  assert list(real[[0, 1, 2, 4, 5, 6]]) == [16] * 6 and all(4 <= n < 16 for n in real[[3, 7]])
  assert (tokens[tokens != 0] >= 1000).all() and not np.array_equal(tokens, batches[1]["image"])
  assert bench.round_sizes(10, 3) == [4, 3, 3] and bench.round_sizes(2, 5) == [1, 1]


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--model", "resnet18"], "model.name: 'resnet18' is not a text encoder"),
    (["--model", "bert_tiny", "--seq", "600"], "--seq 600: bert_tiny takes 1..512 tokens"),
    (["--rounds", "0"], "--rounds 0 --devices 1: each must be >= 1"),
  ],
)
def test_text_mode_reports_bad_input_in_one_line(monkeypatch, capsys, argv, message):
  monkeypatch.setattr(bench, "text_benchmark", lambda *a, **k: pytest.fail("measured"))
  with pytest.raises(ConfigError, match=re.escape(message)):
    bench.main(["text", *argv, "--no-torch"])
  assert run_tool("bench", ["text", *argv, "--no-torch"]) == 2
  assert capsys.readouterr().err.startswith(f"error: {message}")


def test_loaded_weights_keep_the_peft_leaves_they_lack():
  """`bench text --weights ... --set peft.method=lora`: the imported encoder replaces the
  backbone's pretrained leaves; the LoRA factors (absent from the weights) keep their init."""
  base = {"layer_0": {"query": {"kernel": 0, "kernel_lora_a": "A", "kernel_lora_b": "B"}}}
  loaded = {"layer_0": {"query": {"kernel": 1}}}
  assert bench._overlay(base, loaded) == {
    "layer_0": {"query": {"kernel": 1, "kernel_lora_a": "A", "kernel_lora_b": "B"}}
  }
  assert bench._overlay(base, {"embeddings": 2})["embeddings"] == 2
