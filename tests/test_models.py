"""Model zoo tests: shapes, torchvision parameter counts, padding, BN, dtypes.

Big nets are only traced (jax.eval_shape); compiled forwards use digit nets.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdapt.errors import ConfigError
from jaxdapt.models import MODELS, feature_dim, get_model
from jaxdapt.models.layers import adaptive_avg_pool, max_pool
from jaxdapt.models.vgg import VGG

ALL = [
  "dann_digits",
  "dann_svhn",
  "dtn",
  "lenet",
  "lenet_tllib",
  "resnet18",
  "resnet34",
  "resnet50",
  "resnet101",
  "resnet152",
  "wide_resnet50_2",
  "resnext50_32x4d",
  "vgg11",
  "vgg13",
  "vgg16",
  "vgg19",
  "vgg11_bn",
  "vgg13_bn",
  "vgg16_bn",
  "vgg19_bn",
  "vit_s16",
  "vit_b16",
  "vit_digits",
]


def _shapes(model, shape=(2, 32, 32, 3), train=False, **kw):
  """(outputs, variables) as ShapeDtypeStructs: traced, never compiled."""
  x = jnp.zeros(shape, jnp.float32)
  return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=train, **kw))


def _count(tree) -> int:
  return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(tree))


# Text encoders take token ids, not images (tests/test_text.py builds and checks them).
TEXT = ["bert", "bert_tiny", "minilm_l6"]


def test_registry_lists_all_models():
  assert sorted(ALL + TEXT) == MODELS.names()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bottleneck_dim", [None, 64])
def test_every_model_builds(name, bottleneck_dim):
  model = get_model(name, num_classes=7, bottleneck_dim=bottleneck_dim, head_hidden=(16,))
  out, variables = _shapes(model)
  assert set(out) == {"features", "logits"}
  assert out["logits"].shape == (2, 7) and out["logits"].dtype == jnp.float32
  d = bottleneck_dim or feature_dim(model.backbone, (32, 32, 3))
  assert out["features"].shape == (2, d)
  expected = {"backbone", "head"} | ({"bottleneck"} if bottleneck_dim else set())
  assert set(variables["params"]) == expected
  assert set(variables["params"]["head"]) == {"hidden_0", "out"}


TORCHVISION_TOTALS = {  # (total params, params of the final fc layer)
  "resnet18": (11_689_512, 513_000),
  "resnet34": (21_797_672, 513_000),
  "resnet50": (25_557_032, 2_049_000),
  "vgg11": (132_863_336, 4_097_000),
  "vgg16": (138_357_544, 4_097_000),
  "vgg11_bn": (132_868_840, 4_097_000),
  "vgg16_bn": (138_365_992, 4_097_000),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_TOTALS))
def test_backbone_param_count_matches_torchvision(name):
  total, fc = TORCHVISION_TOTALS[name]
  model = get_model(name, num_classes=1000)
  _, variables = _shapes(model, (1, 224, 224, 3))
  assert _count(variables["params"]["backbone"]) == total - fc
  assert _count(variables["params"]) == total  # head == torchvision's fc


@pytest.mark.parametrize(
  "shape,window", [((2, 8, 8, 3), 2), ((3, 9, 11, 4), 2), ((2, 10, 8, 3), 3)]
)
def test_max_pool_matches_nn_max_pool(shape, window):
  x = jax.random.normal(jax.random.key(1), shape)
  ref = lambda x: nn.max_pool(x, (window, window), strides=(window, window), padding="VALID")
  np.testing.assert_array_equal(max_pool(x, window), ref(x))
  w = jax.random.normal(jax.random.key(2), ref(x).shape)
  g = jax.grad(lambda x: jnp.sum(max_pool(x, window) * w))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
  np.testing.assert_array_equal(g, g_ref)


def test_adaptive_avg_pool_follows_torch_bins():
  x = jax.random.normal(jax.random.key(0), (1, 14, 14, 2))
  pooled = x.reshape(1, 7, 2, 7, 2, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(adaptive_avg_pool(x, (7, 7)), pooled, rtol=1e-6, atol=1e-6)
  one = jax.random.normal(jax.random.key(1), (1, 1, 1, 3))  # 1x1 map is replicated
  np.testing.assert_allclose(adaptive_avg_pool(one, (7, 7)), jnp.broadcast_to(one, (1, 7, 7, 3)))
  x5 = jnp.arange(5.0).reshape(1, 5, 1, 1)  # torch: bins [0,1) [0,2) [1,3) [2,3) [2,4) [3,5) [4,5)
  got = adaptive_avg_pool(x5, (7, 1))[0, :, 0, 0]
  np.testing.assert_allclose(got, [0, 0.5, 1.5, 2, 2.5, 3.5, 4])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_spatial_sizes_match_torchvision(name):
  model = get_model(name, num_classes=10)
  x = jnp.zeros((1, 224, 224, 3))
  _, state = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), x, train=False, capture_intermediates=True)
  )
  inter = state["intermediates"]["backbone"]
  size = lambda path: inter[path]["__call__"][0].shape[1:3]
  assert size("conv1") == (112, 112)
  last = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}[name]
  for i, hw in enumerate((56, 28, 14, 7), start=1):
    assert size(f"layer{i}_0") == (hw, hw)
    assert size(f"layer{i}_{last[i - 1] - 1}") == (hw, hw)
  assert feature_dim(model, (224, 224, 3)) == (512 if name == "resnet18" else 2048)


def test_stem_max_pool_pads_with_minus_inf_like_torch():
  x = -1.0 - jax.random.uniform(jax.random.key(0), (1, 4, 4, 1))  # all negative
  y = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  assert y.shape == (1, 2, 2, 1)
  np.testing.assert_array_equal(y[0, 0, 0, 0], x[0, :2, :2, 0].max())  # padding never wins


def test_resnet_torchvision_names():
  _, v = _shapes(get_model("resnet50", num_classes=10), (1, 64, 64, 3))
  bb = v["params"]["backbone"]
  assert set(bb) == {"conv1", "bn1"} | {
    f"layer{i}_{j}" for i, n in enumerate((3, 4, 6, 3), 1) for j in range(n)
  }
  assert set(bb["layer1_0"]) == {
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "conv3",
    "bn3",
    "downsample_conv",
    "downsample_bn",
  }
  assert "downsample_conv" not in bb["layer1_1"]
  assert bb["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)  # v1.5: stride here
  assert bb["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert set(v["batch_stats"]["backbone"]["bn1"]) == {"mean", "var"}
  _, v18 = _shapes(get_model("resnet18", num_classes=10), (1, 64, 64, 3))
  assert "downsample_conv" not in v18["params"]["backbone"]["layer1_0"]
  assert "downsample_conv" in v18["params"]["backbone"]["layer2_0"]


def test_small_input_variants():
  r = get_model("resnet18", num_classes=10, small_input=True)
  _, state = _shapes(r, (2, 32, 32, 3), capture_intermediates=True)
  assert state["intermediates"]["backbone"]["layer1_0"]["__call__"][0].shape[1:3] == (32, 32)
  assert state["params"]["backbone"]["conv1"]["kernel"].shape == (3, 3, 3, 64)
  vgg = get_model("vgg16_bn", num_classes=10, small_input=True)
  out, v = _shapes(vgg)
  assert out["features"].shape == (2, 512)
  assert not any(k.startswith("classifier") for k in v["params"]["backbone"])
  names = sorted(v["params"]["backbone"], key=lambda k: int(k.split("_")[1]))
  assert names[:3] == ["features_0", "features_1", "features_3"]  # conv, bn, conv
  assert set(v["batch_stats"]["backbone"]) == {
    k for k in names if "scale" in v["params"]["backbone"][k]
  }


def test_resnet_width_thins_tensors_and_keeps_names():
  """width 64 is torchvision's ResNet-18 (an explicit width must not change it); 16 has the
  same parameter names with a 16x smaller count, and 16·8 = 128 features."""
  total, fc = TORCHVISION_TOTALS["resnet18"]

  def params(**kw):
    return _shapes(get_model("resnet18", num_classes=10, **kw), (1, 32, 32, 3))[1]["params"]

  def names(tree):
    return sorted(
      "/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
    )

  default, wide, thin = params(), params(width=64), params(width=16, small_input=True)
  assert _count(wide["backbone"]) == _count(default["backbone"]) == total - fc
  assert names(thin) == names(wide)
  assert _count(thin["backbone"]) < (total - fc) / 15
  assert thin["head"]["out"]["kernel"].shape == (128, 10)
  assert thin["backbone"]["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
  with pytest.raises(ConfigError, match="model.width"):
    params(width=0)
  with pytest.raises(ConfigError, match="width"):
    get_model("vgg11", num_classes=10, width=16)


def test_config_model_width_reaches_the_resnet():
  from jaxdapt import config as config_lib
  from jaxdapt import step

  c = config_lib.base_config()
  c.model.name, c.model.width, c.model.head_hidden = "resnet18", 16, ()
  assert feature_dim(step.build_model(c, 10), (32, 32, 3)) == 128
  c.model.width = 0  # the model's own: torchvision's 64
  assert feature_dim(step.build_model(c, 10), (32, 32, 3)) == 512


def test_vgg_names_and_channel_first_flatten():
  _, v = _shapes(get_model("vgg16", num_classes=10), (1, 32, 32, 3))
  bb = v["params"]["backbone"]
  convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16 indices
  assert set(bb) == {f"features_{i}" for i in convs} | {"classifier_0", "classifier_3"}
  assert bb["classifier_0"]["kernel"].shape == (25088, 4096)
  # On a 7x7 map, fc6 input k must be channel k // 49 at (k % 49) // 7, k % 7.
  model = VGG(config=(4,), fc_dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (1, 7, 7, 3))
  params = model.init(jax.random.key(1), x, train=False)["params"]
  k = 2 * 49 + 3 * 7 + 5
  params["classifier_0"]["kernel"] = jnp.zeros((196, 4096)).at[k, 0].set(1.0)
  params["classifier_0"]["bias"] = jnp.zeros(4096)
  params["classifier_3"]["kernel"] = jnp.eye(4096)
  out = model.apply({"params": params}, x, train=False)
  fmap = jax.nn.relu(
    model.apply(
      {"params": params}, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    )[1]["intermediates"]["features_0"]["__call__"][0]
  )
  np.testing.assert_allclose(out[0, 0], fmap[0, 3, 5, 2], rtol=1e-6)


def test_unknown_name_and_options_raise_config_error():
  with pytest.raises(ConfigError, match="allowed: .*dann_digits.*resnet50"):
    get_model("resnet51", num_classes=10)
  with pytest.raises(ConfigError, match="small_input"):
    get_model("resnet18", num_classes=10, smal_input=True)
  with pytest.raises(ConfigError, match="norm"):
    get_model("dann_digits", num_classes=10, norm="layer")
  with pytest.raises(ConfigError, match="norm"):
    get_model("vgg16", num_classes=10, norm="batch")
  with pytest.raises(ConfigError, match="dtype"):
    get_model("lenet", num_classes=10, dtype="float33")
  with pytest.raises(ConfigError, match="num_classes"):
    get_model("lenet", num_classes=0)


def test_batch_stats_only_when_batchnorm_is_used():
  _, v = _shapes(get_model("dann_digits", num_classes=10, head_hidden=(100, 100)))
  assert set(v) == {"params"}
  _, v = _shapes(get_model("lenet", num_classes=10, bottleneck_dim=32))
  assert set(v["batch_stats"]) == {"bottleneck"}
  _, v = _shapes(get_model("dann_digits", num_classes=10, norm="batch"))
  assert set(v["batch_stats"]["backbone"]) == {"bn1", "bn2"}
  _, v = _shapes(get_model("vgg11", num_classes=10))
  assert "batch_stats" not in v


def test_train_updates_batch_stats_and_eval_uses_them():
  model = get_model("dann_digits", num_classes=10, norm="batch", bottleneck_dim=32)
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 3)) * 3 + 1
  variables = model.init(jax.random.key(1), x, train=False)
  out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out["features"].shape == (4, 32)
  old, new = variables["batch_stats"], updates["batch_stats"]
  for path in (("backbone", "bn1"), ("bottleneck", "bn")):
    a, b = old[path[0]][path[1]], new[path[0]][path[1]]
    assert not np.allclose(a["mean"], b["mean"]) and not np.allclose(a["var"], b["var"])
  # eval mode: no mutation needed, deterministic
  e1 = model.apply(variables, x, train=False)["logits"]
  e2 = model.apply(variables, x, train=False)["logits"]
  np.testing.assert_array_equal(e1, e2)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = get_model(
    "dann_digits",
    num_classes=10,
    norm="batch",
    bottleneck_dim=16,
    head_hidden=(8,),
    dtype=jnp.bfloat16,
  )
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
  out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out["logits"].dtype == jnp.float32 and out["features"].dtype == jnp.float32
  _, v = _shapes(get_model("resnet18", num_classes=10, dtype="bfloat16"))
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(v))
  out, _ = _shapes(get_model("resnet18", num_classes=10, dtype=jnp.bfloat16))
  assert out["logits"].dtype == jnp.float32


def test_head_is_separable_and_dropout_uses_rng():
  model = get_model("lenet", num_classes=5, head_hidden=(32,), dropout=0.5, dropout2d=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 28, 28, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  out = model.apply(variables, x, train=False)
  assert out["features"].shape == (2, 800) and feature_dim(model, (28, 28, 3)) == 800
  logits = model.apply(variables, out["features"], train=False, method="classify")
  np.testing.assert_allclose(logits, out["logits"], rtol=1e-6)
  t1 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  t2 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(t1["logits"], t2["logits"])
  # a new head: re-init with another class count, keep everything but head/
  other = get_model("lenet", num_classes=3, head_hidden=(32,))
  new = other.init(jax.random.key(4), x, train=False)["params"]
  new = {**new, "backbone": variables["params"]["backbone"]}
  assert other.apply({"params": new}, x, train=False)["logits"].shape == (2, 3)


def test_dann_digits_width_and_feature_dim():
  assert feature_dim(get_model("dann_digits", num_classes=10), (28, 28, 3)) == 768
  assert feature_dim(get_model("dann_digits", num_classes=10, width=2), (32, 32, 3)) == 2400
  m = get_model("dann_digits", num_classes=10, bottleneck_dim=256)
  assert feature_dim(m, (1, 32, 32, 3)) == 256
