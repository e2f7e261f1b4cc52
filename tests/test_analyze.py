"""`jaxdapt analyze` on a tiny finished run: outputs, report and errors."""

import json
import os

import pytest
from test_train import tiny_config

from jaxdapt import config as config_lib
from jaxdapt import trainer
from jaxdapt.errors import JaxdaptError
from jaxdapt.tools import analyze
from jaxdapt.tools.main import run_tool


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
  """A 6-step DANN run on uci → uci_m, logging the label-free selection scores the report
  reads (tiny_config turns them off)."""
  c = tiny_config(
    data_dir, "dann", selection_points=config_lib.base_config().train.selection_points
  )
  workdir = str(tmp_path_factory.mktemp("run"))
  trainer.train_and_evaluate(c, workdir)
  return workdir


def test_analyze_writes_json_report_and_plots(run_dir, capsys):
  code = analyze.main(
    [
      "--workdir",
      run_dir,
      "--max-train",
      "300",
      "--tsne-points",
      "300",
      "--permutations",
      "20",
      "--shift-points",
      "200",
    ]
  )
  assert code == 0
  out_dir = os.path.join(run_dir, "analysis")
  result = json.load(open(os.path.join(out_dir, "analysis.json")))
  for key in ("step", "accuracy", "shift", "criteria_final", "selection", "images", "n"):
    assert key in result
  assert result["step"] == 6
  for state in ("before", "after"):
    assert {"pad", "mmd2", "mmd_p_value", "coral", "per_class"} <= result["shift"][state].keys()
    assert set(result["accuracy"][state]) == set(analyze.SPLITS)
  assert result["n"]["source"] == 300
  assert {"neg_entropy", "info_max", "snd", "neg_dev"} <= result["criteria_final"]["target"].keys()

  evals = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  eval_steps = sorted(r["step"] for r in evals if r["kind"] == "eval")
  assert eval_steps == [3, 6]
  sel = result["selection"]
  assert set(sel) == {"oracle", "last", *analyze.LOGGED_CRITERIA}
  assert sel["last"]["step"] == 6
  assert all(s["step"] in eval_steps for s in sel.values())
  assert all(s["regret"] >= 0 for s in sel.values())

  for name in result["images"].values():
    assert os.path.getsize(os.path.join(out_dir, name)) > 1000
  html = open(os.path.join(out_dir, "report.html"), encoding="utf-8").read()
  assert html.count("data:image/png;base64,") == 3
  assert "-target_test_entropy" in html and "<td>3</td>" in html and "<td>6</td>" in html
  printed = capsys.readouterr().out
  assert "report: " + os.path.join(out_dir, "report.html") in printed


def test_before_run_replaces_the_initialisation(run_dir, tmp_path, capsys):
  """--before RUN compares with that run's model: with the run itself (latest step), before
  and after are one model, so every accuracy and shift measure matches; random init
  (the default) would not. A directory that is not a run is a one-line error."""
  small = [
    "--max-train",
    "200",
    "--tsne-points",
    "200",
    "--permutations",
    "10",
    "--shift-points",
    "150",
  ]
  assert analyze.main(["--workdir", run_dir, "--before", run_dir, *small]) == 0
  result = json.load(open(os.path.join(run_dir, "analysis", "analysis.json")))
  assert result["before"] == "run …/" + "/".join(run_dir.rstrip("/").split("/")[-2:])
  assert result["accuracy"]["before"] == result["accuracy"]["after"]
  for key in ("pad", "mmd2", "coral"):
    assert result["shift"]["before"][key] == pytest.approx(result["shift"]["after"][key])
  capsys.readouterr()
  argv = ["--workdir", run_dir, "--before", str(tmp_path / "nope"), *small]
  with pytest.raises(analyze.RunError, match="^--before .*nope: no such directory$"):
    analyze.main(argv)
  assert run_tool("analyze", argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --before ") and err.count("\n") == 1
  assert "no such directory" in err


@pytest.mark.parametrize("what", ["dir", "checkpoints"])
def test_missing_run_is_a_one_line_error(tmp_path, capsys, what):
  run = tmp_path / "run"
  if what == "checkpoints":
    run.mkdir()
    (run / "config.json").write_text("{}")
  message = "no such directory" if what == "dir" else "no checkpoint in"
  with pytest.raises(JaxdaptError, match=message):
    analyze.main(["--workdir", str(run)])
  assert run_tool("analyze", ["--workdir", str(run)]) == 2
  captured = capsys.readouterr()
  err = captured.err
  assert err.count("\n") == 1 and err.startswith("error: --workdir ") and message in err
  assert captured.out == ""
  assert not (run / "checkpoints").exists() and not (run / "analysis").exists()
  assert os.listdir(tmp_path) == (["run"] if what == "checkpoints" else [])
