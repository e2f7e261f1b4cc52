"""debian_text on a small synthetic apt lists folder ($JAXDAPT_APT_LISTS; never the real lists):
parsing, labels, section choice, the translation join, the group split shared by every
language, and the generated builders read back through get_source."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import shutil
import subprocess

import numpy as np
import pytest

from jaxdapt.data import debian_text as dt
from jaxdapt.data import sources
from jaxdapt.errors import ConfigError, DatasetNotPreparedError

N = 120  # synthetic packages: 12 per section, pairs sharing a source package
PREFIX = "example.org_debian_dists_fake_main_"
SECURITY = "example.org_debian-security_dists_fake-security_main_"

# A real Translation-en record of Debian 12 (bookworm main), with its real Description-md5.
REAL_NAME, REAL_MD5 = "0ad", "d943033bedada21853d2ae54a2578a7b"
REAL_EN = """Real-time strategy game of ancient warfare
 0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform
 real-time strategy (RTS) game of ancient warfare. In short, it is a
 historically-based war/economy game that allows players to relive or rewrite
 the history of Western civilizations, focusing on the years between 500 B.C.
 and 500 A.D. The project is highly ambitious, involving state-of-the-art 3D
 graphics, detailed artwork, sound, and a flexible and powerful custom-built
 game engine."""
REAL_FR = """jeu de stratégie en temps réel de guerres anciennes
 0 A.D (prononcez « zéro aye-di ») est un jeu de stratégie en temps réel
 (RTS) libre et multiplate-forme de guerres anciennes."""


def _raw(short: str, *paragraphs: str) -> str:
  """A Debian description field: short line, then ' '-indented lines, ' .' between paragraphs."""
  lines = [short]
  for i, para in enumerate(paragraphs):
    lines += [" ."] if i else []
    lines += [f" {para}"]
  return "\n".join(lines)


def _para(fields: dict[str, str]) -> str:
  return "".join(f"{k}: {v}\n" for k, v in fields.items())


def fake_corpus() -> dict:
  """{'packages': [(file prefix, record)], 'translations': {lang: [record]}, 'expect': ...}."""
  pkgs, tr = [], {lang: [] for lang in dt.LANGUAGES}
  expect = {"section": {}, "in": {lang: set() for lang in dt.LANGUAGES}}

  def add(name, section, raw_en, source=None, langs=(), prefix=PREFIX, inline=False, md5=None):
    md5 = md5 or dt.description_md5(raw_en)
    rec = {"Package": name, "Version": "1.0-1", "Architecture": "amd64"}
    if source:
      rec["Source"] = f"{source} (1.0-1)"
    if inline:  # Packages carries the long description and no md5 (third-party style)
      rec["Description"] = raw_en
    else:
      rec["Description"] = raw_en.split("\n")[0]
      rec["Description-md5"] = md5
      tr["en"].append({"Package": name, "Description-md5": md5, "Description-en": raw_en})
    rec["Section"] = section
    pkgs.append((prefix, rec))
    for lang in langs:
      text = raw_en.replace("\n ", f"\n [{lang}] ", 1) if "\n" in raw_en else f"[{lang}] {raw_en}"
      tr[lang].append({"Package": name, "Description-md5": md5, f"Description-{lang}": text})
    return md5

  for i in range(N):
    sec = dt.SECTIONS[i % len(dt.SECTIONS)]
    langs = [lang for lang, keep in (("de", i % 2), ("fr", i % 3), ("es", i % 4 == 1)) if keep]
    name = f"pkg{i:03d}"
    raw = _raw(f"{sec} program {i}", f"Does {sec} work, item {i}.", f"Second paragraph {i}.")
    add(name, ("contrib/" if i % 7 == 0 else "") + sec, raw, f"src{i // 2:03d}", langs)
    expect["section"][name] = sec
    expect["in"]["en"].add(name)
    for lang in langs:
      expect["in"][lang].add(name)
  # Not a class: left out.
  add("oldie", "oldlibs", _raw("old library", "Gone."), langs=("de",))
  # One text under two classes: both dropped.
  add("dup-libs", "libs", _raw("transitional package", "Remove it."), langs=("de",))
  add("dup-utils", "utils", _raw("transitional package", "Remove it."), langs=("de",))
  # One text, one class, two sources: one group, so one split.
  twin = _raw("network twin", "Same words.")
  for name in ("twin-a", "twin-b"):
    add(name, "net", twin, f"{name}-src", ("de",))
    expect["section"][name] = "net"
    expect["in"]["en"].add(name), expect["in"]["de"].add(name)
  # A stale German translation (another md5) does not join.
  add("stale", "text", _raw("text tool", "Current."), langs=("fr",))
  tr["de"].append({"Package": "stale", "Description-md5": "0" * 32, "Description-de": "[de] alt"})
  expect["section"]["stale"] = "text"
  expect["in"]["en"].add("stale"), expect["in"]["fr"].add("stale")
  # English only in Packages: joined by the md5 computed from it.
  add(
    "inline", "science", _raw("science kit", "Long text in Packages."), langs=("de",), inline=True
  )
  expect["section"]["inline"] = "science"
  expect["in"]["en"].add("inline"), expect["in"]["de"].add("inline")
  # Twice in the lists: -security's record has a new, untranslated description.
  add("multi", "admin", _raw("admin tool", "Old words."), langs=("de", "fr"))
  add("multi", "admin", _raw("admin tool", "New words."), prefix=SECURITY)
  expect["section"]["multi"] = "admin"
  expect["in"]["en"].add("multi"), expect["in"]["de"].add("multi"), expect["in"]["fr"].add("multi")
  # A real record.
  got = add(REAL_NAME, "games", REAL_EN, md5=REAL_MD5)
  tr["fr"].append({"Package": REAL_NAME, "Description-md5": got, "Description-fr": REAL_FR})
  expect["section"][REAL_NAME] = "games"
  expect["in"]["en"].add(REAL_NAME), expect["in"]["fr"].add(REAL_NAME)
  return {"packages": pkgs, "translations": tr, "expect": expect}


def _write(path, text: str) -> None:
  data = text.encode()
  opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix)
  if opener:
    with opener(path, "wb") as f:
      f.write(data)
  elif path.suffix == ".lz4":
    subprocess.run(["lz4", "-q", "-z", "-", str(path)], input=data, check=True)
  else:
    path.write_bytes(data)


def _lz4() -> bool:
  """Whether .lz4 lists can be written here (the lz4 command also reads them back)."""
  return shutil.which("lz4") is not None


def write_lists(folder, corpus: dict, skip: tuple[str, ...] = ()) -> None:
  """apt's file names and a mix of the compressions apt stores lists in."""
  folder.mkdir(parents=True, exist_ok=True)
  by_prefix: dict[str, list[str]] = {}
  for prefix, rec in corpus["packages"]:
    by_prefix.setdefault(prefix, []).append(_para(rec))
  _write(folder / f"{PREFIX}binary-amd64_Packages.gz", "\n".join(by_prefix[PREFIX]))
  _write(folder / f"{SECURITY}binary-amd64_Packages", "\n".join(by_prefix[SECURITY]))
  suffix = {"en": ".xz", "de": ".bz2", "fr": "", "es": ".lz4" if _lz4() else ".gz"}
  for lang, recs in corpus["translations"].items():
    if lang not in skip:
      path = folder / f"{PREFIX}i18n_Translation-{lang}{suffix[lang]}"
      _write(path, "\n".join(_para(r) for r in recs))
  release = "Origin: Example\nSuite: fake\nCodename: fake\nVersion: 0\nDate: today\n"
  _write(folder / "example.org_debian_dists_fake_InRelease", release)
  _write(folder / "elsewhere.org_debian_dists_other_InRelease", release)  # lists no list here


@pytest.fixture(scope="module")
def corpus():
  return fake_corpus()


@pytest.fixture(scope="module")
def lists(tmp_path_factory, corpus):
  folder = tmp_path_factory.mktemp("apt_lists")
  write_lists(folder, corpus)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(dt.ENV_VAR, str(folder))
    yield folder


@pytest.fixture(scope="module")
def data(lists):
  return dt.load_dataset()


def test_parse_and_md5_follow_debian():
  recs = list(dt.parse_deb822(f"Package: {REAL_NAME}\nDescription-en: {REAL_EN}\n\n\nPackage: b\n"))
  assert [r["package"] for r in recs] == [REAL_NAME, "b"]
  assert dt.description_md5(recs[0]["description-en"]) == REAL_MD5  # Debian's own value
  text = dt.plain_text(_raw("short", "one", "two"))
  assert text == "short\none\n\ntwo"
  assert dt.section_label("contrib/net") == "net" == dt.section_label("net")
  assert dt.section_label("non-free-firmware/kernel") == "kernel"


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz", ".bz2", ".lz4"])
def test_read_list_decompresses(tmp_path, suffix):
  if suffix == ".lz4" and not _lz4():
    pytest.skip("the lz4 command (to write the test file) is not installed")
  path = tmp_path / f"x_Packages{suffix}"
  _write(path, "Package: ä\n")
  assert dt.read_list(str(path)) == "Package: ä\n"


def test_find_lists(lists):
  files = dt.find_lists(str(lists))
  assert [p.rsplit("/", 1)[1] for p in files.packages] == [
    f"{SECURITY}binary-amd64_Packages",
    f"{PREFIX}binary-amd64_Packages.gz",
  ]
  assert sorted(files.translations) == sorted(dt.LANGUAGES)
  assert [p.rsplit("/", 1)[1] for p in files.releases] == [
    "example.org_debian_dists_fake_InRelease"
  ]
  assert dt.release_info(files.releases[0])["suite"] == "fake"


def test_top_sections():
  counts = {
    "en": {"a": 100, "b": 90, "c": 80, "d": 500, "e": 60},
    "de": {"a": 10, "b": 30, "c": 30, "d": 4, "e": 60},
  }
  # Ranked by the smallest count over languages (e 60, b = c 30: by name, a 10); d: 4 < 5.
  assert dt.top_sections(counts, k=3, min_count=5) == ("e", "b", "c")
  assert dt.top_sections(counts, k=9, min_count=5) == ("e", "b", "c", "a")
  assert dt.top_sections(counts, k=9, min_count=11) == ("e", "b", "c")
  assert dt.top_sections({}, k=3) == ()


def test_labels_and_translation_join(data, corpus):
  expect = corpus["expect"]
  assert data.labels == {n: dt.SECTIONS.index(s) for n, s in expect["section"].items()}
  for lang in dt.LANGUAGES:
    assert set(data.texts[lang]) == expect["in"][lang], lang
  sec = dt.SECTIONS[1]
  assert data.texts["de"]["pkg001"] == f"{sec} program 1\n[de] Does {sec} work, item 1.\n\n" + (
    "Second paragraph 1."
  )
  assert data.texts["fr"][REAL_NAME].startswith("jeu de stratégie")
  assert data.texts["en"][REAL_NAME].startswith(
    "Real-time strategy game of ancient warfare\n0 A.D."
  )
  assert data.texts["en"]["inline"] == "science kit\nLong text in Packages."
  assert data.texts["en"]["multi"] == "admin tool\nOld words."  # the translated record won
  assert "stale" not in data.texts["de"]


def test_splits_are_package_disjoint_grouped_and_shared(data):
  by_split = {s: set(data.names("en", s)) for s in dt.SPLIT_NAMES}
  assert all(by_split.values()), {s: len(v) for s, v in by_split.items()}
  assert sum(map(len, by_split.values())) == len(set().union(*by_split.values()))
  for lang in dt.LANGUAGES:
    for split in dt.SPLIT_NAMES:
      assert set(data.names(lang, split)) <= by_split[split], (lang, split)
  for i in range(0, N, 2):  # a source package's binaries stay together
    assert data.splits[f"pkg{i:03d}"] == data.splits[f"pkg{i + 1:03d}"]
  assert data.splits["twin-a"] == data.splits["twin-b"]  # one text, one split
  assert dt.split_of("x") == dt.split_of("x") and {dt.split_of(str(i)) for i in range(50)} == set(
    dt.SPLIT_NAMES
  )


def test_missing_lists_name_the_prepare_command(tmp_path, corpus, monkeypatch):
  monkeypatch.setenv(dt.ENV_VAR, str(tmp_path / "empty"))
  with pytest.raises(DatasetNotPreparedError, match="Translation-en") as err:
    sources.get_source("debian_text/de", "train", str(tmp_path / "tfds"))
  assert dt.PREPARE_COMMAND in str(err.value) and "Packages" in str(err.value)
  write_lists(tmp_path / "partial", corpus, skip=("es",))
  monkeypatch.setenv(dt.ENV_VAR, str(tmp_path / "partial"))
  with pytest.raises(DatasetNotPreparedError, match="no Translation-es in") as err:
    sources.get_source("debian_text/en", "test", str(tmp_path / "tfds"))
  assert dt.PREPARE_COMMAND in str(err.value)


def test_registered_names():
  assert {f"debian_text/{lang}" for lang in dt.LANGUAGES} <= set(sources.domain_names())
  with pytest.raises(ConfigError, match="no config 'it'"):
    sources.builder_for("debian_text/it", "/nonexistent")


@pytest.fixture(scope="module")
def built(lists, packaged_tokenizer, tmp_path_factory):
  """{lang: {split: {package: (ids, label)}}} read from the generated builders."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  out = {}
  for lang in ("en", "de"):
    sources.get_source(f"debian_text/{lang}", "train", data_dir)  # generates
    builder = sources.builder_for(f"debian_text/{lang}", data_dir)
    out[lang] = {}
    for split in dt.SPLIT_NAMES:
      src = builder.as_data_source(split=split)
      rows = [src[i] for i in range(len(src))]
      out[lang][split] = {
        r["package"].decode(): (np.asarray(r["image"]), int(r["label"])) for r in rows
      }
  return {"data_dir": data_dir, "rows": out, "builder": builder}


def test_builder_stores_token_ids_and_labels(built, data, packaged_tokenizer):
  from jaxdapt.data.text import Tokenizer

  tokenize = Tokenizer(packaged_tokenizer, buckets=(dt.SEQ_LEN,))
  for lang, splits in built["rows"].items():
    for split, rows in splits.items():
      assert sorted(rows) == data.names(lang, split), (lang, split)
      names = sorted(rows)
      want, _ = tokenize([data.texts[lang][n] for n in names])
      for name, row in zip(names, want, strict=True):
        ids, label = rows[name]
        assert ids.dtype == np.int32 and ids.shape == (dt.SEQ_LEN,)
        np.testing.assert_array_equal(ids, row)
        assert ids[0] == 101 and ids[-1] == 0  # [CLS] ... [PAD]
        assert label == data.labels[name]
  de_test, en_test = built["rows"]["de"]["test"], built["rows"]["en"]["test"]
  assert de_test and set(de_test) <= set(en_test)
  meta = built["builder"].info.metadata
  assert (
    meta["tokenizer"]["sha256"] == hashlib.sha256(open(packaged_tokenizer, "rb").read()).hexdigest()
  )
  assert meta["counts"] == {s: len(built["rows"]["de"][s]) for s in dt.SPLIT_NAMES}
  assert sources.num_classes("debian_text/de", built["data_dir"]) == len(dt.SECTIONS)
  assert sources.image_shape("debian_text/de", built["data_dir"]) == (dt.SEQ_LEN,)


def test_get_source_reads_labels(built):
  src = sources.get_source("debian_text/de", "test", built["data_dir"])
  rows = built["rows"]["de"]["test"]
  assert len(src) == len(rows)
  assert sorted(src[i]["label"] for i in range(len(src))) == sorted(r[1] for r in rows.values())
  assert set(src[0]) == {"image", "label"} and src[0]["image"].shape == (dt.SEQ_LEN,)


def test_get_source_keeps_int32_token_ids(built):
  src = sources.get_source("debian_text/de", "test", built["data_dir"])
  ids = {tuple(src[i]["image"].tolist()) for i in range(len(src))}
  assert src[0]["image"].dtype == np.int32
  assert ids == {tuple(r[0].tolist()) for r in built["rows"]["de"]["test"].values()}


def _text_run(
  built, tmp_path, arg: str, *overrides: str, path: str = "experiments/text/debian.py"
) -> tuple[dict, list[dict]]:
  """Two steps of a text experiment file (`path`:`arg`) on the synthetic corpus, with
  BERT-Tiny's shape from random initialisation (the recipe's MiniLM is the same code at
  another size)."""
  import json
  import os

  from jaxdapt import trainer
  from jaxdapt.tools import cli

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = cli.load_config(
    os.path.join(root, f"{path}:{arg}"),
    [
      f"data.data_dir={built['data_dir']}",
      "model.name=bert_tiny",
      "model.init_from=",
      "data.batch_size=8",
      "data.eval_batch_size=64",
      "train.steps=2",
      "train.log_every=1",
      "train.eval_every=2",
      "train.checkpoint_every=2",
      "train.progress_bar=false",
      "train.selection_points=0",
      *overrides,
    ],
  )
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  return summary, rows


def test_text_encoder_trains_with_dann_on_token_ids(built, tmp_path):
  summary, rows = _text_run(built, tmp_path, "en2de,dann")
  train = [r for r in rows if r["kind"] == "train"]
  assert [r["step"] for r in train] == [1, 2]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["transfer_loss"]) for r in train)
  assert any(r["transfer_loss"] != 0 for r in train)  # the domain loss is on
  assert 0.0 <= summary["target_acc_last"] <= 1.0
  assert (summary["source"], summary["target"]) == ("debian_text/en", "debian_text/de")


def test_text_encoder_trains_with_a_regularizer(built, tmp_path):
  _, rows = _text_run(built, tmp_path, "en2de", "regularizer.bss_weight=0.001")
  train = [r for r in rows if r["kind"] == "train"]
  assert all(np.isfinite(r["reg_bss"]) and r["reg_bss"] > 0 for r in train)


def test_text_mcc_with_lora_and_lora_dropout_trains_on_token_ids(built, tmp_path):
  """The cross-language study's LoRA row (crosslingual/mcc_lora.py) with dropout on the
  LoRA path: every BERT kernel is a Dense, so each takes the dropout path."""
  summary, rows = _text_run(
    built,
    tmp_path,
    "en2de",
    "peft.lora_dropout=0.1",
    path="experiments/text/crosslingual/mcc_lora.py",
  )
  train = [r for r in rows if r["kind"] == "train"]
  assert all(np.isfinite(r["loss"]) for r in train)
  assert any(r["transfer_loss"] != 0 for r in train)  # MCC is on
  assert 0.0 <= summary["target_acc_last"] <= 1.0


def test_text_few_label_llrd_run_takes_labels_from_the_target(built, tmp_path):
  """fewlabel/llrd.py: k labelled English rows per class, LLRD by text-encoder layer."""
  summary, rows = _text_run(
    built, tmp_path, "k4", "data.target_test_split=test", path="experiments/text/fewlabel/llrd.py"
  )
  assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
  assert (summary["source"], summary["target"]) == ("debian_text/en", "debian_text/en")


SMALL = "model.name=bert_tiny"
STUDY_FILES = {
  "crosslingual": ("source_only", "dann", "mcc", "shot", "kshot", "target_oracle", "mcc_lora"),
  "fewlabel": (
    "finetune",
    "scratch",
    "linear_probe",
    "lp_ft",
    "llrd",
    "bitfit",
    "lora_r4",
    "lora_r16",
    "adapter",
  ),
}


def test_text_study_files_build_what_their_names_say(capsys, built):
  """Every file of results/text's studies loads (MiniLM, 64 tokens) and builds (jaxdapt
  optim, abstract, at BERT-Tiny's size): the probe trains the head only, PEFT rows < 3 %
  of the parameters, LLRD gives the encoder a depth per layer, SHOT freezes the head,
  scratch starts from random weights. `optim` opens the data: the synthetic lists' domains
  in a temporary data dir (never the machine's cache or apt lists), where one labelled
  example per class is what every class has."""
  import os

  from jaxdapt.configs import PEFT_LR
  from jaxdapt.tools import cli
  from jaxdapt.tools.main import run_tool

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  counts = {}
  for study, names in STUDY_FILES.items():
    task = "en2de" if study == "crosslingual" else "k16"
    for name in names:
      path = os.path.join(root, "experiments", "text", study, f"{name}.py")
      config = cli.load_config(f"{path}:{task}", [])
      assert config.model.name == "minilm_l6" and config.model.max_tokens == 64
      assert config.model.init_from == ("" if name == "scratch" else "runs/minilm")
      if config.peft.method:
        assert config.optim.lr == PEFT_LR
      if name == "shot":  # source-free: needs its stage-1 run to build; the head is frozen
        assert tuple(config.optim.rules[0]) == ("model/head/.*", None)
        continue
      # BERT-Tiny's shape (hidden 128): the same files' rules, a fraction of the tracing.
      argv = ["--config", f"{path}:{task}", "--set", "model.init_from=", "--set", SMALL]
      argv += ["--set", f"data.data_dir={built['data_dir']}"]
      if config.data.target_labeled_per_class:
        argv += ["--set", "data.target_labeled_per_class=1"]
      assert run_tool("optim", argv) == 0, capsys.readouterr().err
      out = capsys.readouterr().out
      trainable, total = (
        int(n.replace(",", "")) for n in re.search(r"trainable: ([\d,]+) of ([\d,]+)", out).groups()
      )
      counts[name] = (trainable, total)
      if name == "llrd":  # BERT-Tiny: embeddings 0.9^3, layer_0 0.9^2, layer_1 0.9, head 1
        assert re.search(r"0\.729 .* model/backbone/embeddings", out), out
        assert re.search(r"0\.9 .* model/backbone/layer_1", out), out
  assert counts["linear_probe"][0] == 128 * 10 + 10
  assert counts["finetune"][0] == counts["finetune"][1]
  for name in ("bitfit", "lora_r4", "adapter", "mcc_lora"):
    assert counts[name][0] < 0.03 * counts[name][1], name
  # Rank 16 trains 4x rank 4's factors (A [in, r], B [r, out] per kernel); the head is shared.
  head = counts["linear_probe"][0]
  assert counts["lora_r16"][0] - head == 4 * (counts["lora_r4"][0] - head)
