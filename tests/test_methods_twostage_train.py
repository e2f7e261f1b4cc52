"""Stage 1 (shot_source: source-only, label smoothing) then SHOT, TENT and ADDA from it,
each through trainer.train_and_evaluate on the tiny uci2ucim config (4 steps, batch 16)."""

import numpy as np
import pytest
from test_methods_train import _named, tiny, train_tiny

from jaxdapt import checkpoint
from jaxdapt.methods import shot, tent


def _tiny(data_dir, experiment):
  c = tiny(data_dir, experiment, norm="batch")
  if "selection_points" in c.train:  # the label-free selection scores are not under test here
    c.train.selection_points = 0
  return c


@pytest.fixture(scope="module")
def stage1(data_dir, tmp_path_factory):
  c = _tiny(data_dir, "shot_source")
  assert c.method.label_smoothing == 0.1
  workdir = tmp_path_factory.mktemp("stage1")
  train_tiny(c, workdir)
  return str(workdir)


def _run_stage2(data_dir, stage1, workdir, method, **method_fields):
  """Trains stage 2 from `stage1`; returns (summary, train rows, (stage-1, final) params)."""
  c = _tiny(data_dir, method)
  c.model.init_from = stage1
  for k, v in method_fields.items():
    c.method[k] = v
  summary, train_rows = train_tiny(c, workdir)
  params = [_named(checkpoint.load_model_variables(d)[0]) for d in (stage1, str(workdir))]
  return summary, train_rows, params


def _assert_moved_exactly(before, after, moves):
  for name, old in before.items():
    assert (not np.array_equal(old, after[name])) == moves("model/" + name), name


def test_shot_from_stage1_keeps_the_loaded_head_and_refreshes(
  data_dir, stage1, tmp_path, monkeypatch
):
  calls = []
  refresh = shot.SHOT.refresh
  monkeypatch.setattr(
    shot.SHOT,
    "refresh",
    lambda self, exp, state: calls.append(int(state.step)) or refresh(self, exp, state),
  )
  _, rows, (before, after) = _run_stage2(data_dir, stage1, tmp_path, "shot", refresh_every=2)
  assert calls == [0, 2]  # before step 1 and before step 3
  _assert_moved_exactly(before, after, lambda n: not n.startswith("model/head/"))
  assert all(np.isfinite(r["pseudo_ce"]) and np.isfinite(r["im_loss"]) for r in rows)


def test_tent_from_stage1_adapts_only_batchnorm_affine(data_dir, stage1, tmp_path):
  summary, rows, (before, after) = _run_stage2(data_dir, stage1, tmp_path, "tent")
  stats = checkpoint.load_model_variables(stage1)[1]
  _assert_moved_exactly(before, after, tent.batchnorm_affine(stats))
  assert 0.0 <= summary["target_online_acc"] <= 1.0
  assert summary["target_online_acc"] == pytest.approx(np.mean([r["online_acc"] for r in rows]))


def test_adda_from_stage1_trains_the_target_encoder_only(data_dir, stage1, tmp_path):
  _, rows, (before, after) = _run_stage2(data_dir, stage1, tmp_path, "adda")
  _assert_moved_exactly(before, after, lambda n: not n.startswith("model/head/"))
  assert all(0.0 <= r["domain_acc"] <= 1.0 for r in rows)
