"""The classical baseline is fitted on exactly the folds of a run, scored with the run's metrics, and compared with it
by a TransferStudy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_config
from datasets import ClassLabel, Dataset
from datasets import Image as ImageFeature
from PIL import Image
from test_ensemble import _raw_texts, save_base

from hf_tlcv import TransferStudy
from hf_tlcv.studies.baselines import classical_baseline
from hf_tlcv.folds import folds_fingerprint, load_folds, make_folds


def _words(n: int = 45) -> Dataset:
    """Three classes of short texts, each class drawing most of its words from its own vocabulary."""
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 3
    vocab = [[f"{c}word{i}" for i in range(8)] for c in "abc"]
    texts = [" ".join(rng.choice(vocab[c] if rng.random() < 0.7 else vocab[(c + 1) % 3], size=5)) for c in labels]
    return Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", ClassLabel(names=["a", "b", "c"]))


def test_the_text_baseline_is_tfidf_logistic_regression_on_each_folds_rows():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    data = _words()
    folds = make_folds(data, strategy="stratified", n_folds=3, seed=0)
    cv = classical_baseline(data, folds)
    texts, labels = np.asarray(data["text"], dtype=object), np.asarray(data["label"])
    assert cv.metadata["folds_fingerprint"] == folds_fingerprint(folds)
    for fold, result in zip(folds, cv.folds):
        # independently: the same model, fitted by hand on the fold's training rows
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        model = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(
            vectorizer.fit_transform(texts[fold.train_indices]), labels[fold.train_indices])
        probs = model.predict_proba(vectorizer.transform(texts[fold.eval_indices]))
        frame = result.predictions
        np.testing.assert_array_equal(frame["row"].to_numpy(), fold.eval_indices)
        np.testing.assert_allclose(frame.filter(like="prob_").to_numpy(), probs, atol=1e-9)
        expected = float(np.mean(probs.argmax(1) == labels[fold.eval_indices]))
        assert result.eval_metrics["accuracy"] == pytest.approx(expected)
        assert result.eval_metrics["loss"] == pytest.approx(
            -np.mean(np.log(probs[np.arange(len(probs)), labels[fold.eval_indices]])))
        assert (result.n_train, result.n_eval) == (len(fold.train_indices), len(fold.eval_indices))
        assert {"precision", "recall", "f1"} <= set(result.eval_metrics)
    assert cv.summary["accuracy"]["mean"] > 0.6  # the words tell the classes apart


def test_the_image_baseline_reads_raw_pixels_and_a_class_missing_from_training_gets_probability_zero():
    rng = np.random.default_rng(0)
    labels = [0] * 9 + [1] * 9 + [2]  # class 2 has one row: absent from the training rows of its own fold
    images = [Image.fromarray((rng.random((8, 8, 3)) * 80 + 120 * (c == 1)).astype(np.uint8)) for c in labels]
    data = Dataset.from_dict({"image": images, "label": labels}).cast_column("image", ImageFeature())
    folds = make_folds(data, strategy="kfold", n_folds=3, seed=0)
    cv = classical_baseline(data, folds, image_size=8)
    assert cv.config["baseline"] == "pixels_logreg"
    frame = cv.oof_predictions
    assert sorted(frame["row"]) == list(range(len(labels)))
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0)
    lonely = next(f for f in cv.folds if 18 in f.predictions["row"].to_numpy())
    assert (lonely.predictions["prob_2"] == 0).all()
    assert cv.summary["accuracy"]["mean"] > 0.8  # the bright class and the dark one are told apart


@pytest.mark.parametrize("case,message", [
    ("other_dataset", "made for another dataset"),
    ("no_raw_column", "needs a raw text column"),
    ("kind", "kind must be one of"),
])
def test_bad_input_is_refused_with_what_to_do(case, message):
    data = _words(12)
    folds = make_folds(data, strategy="stratified", n_folds=3, seed=0)
    if case == "other_dataset":
        data = data.select(range(6))
    elif case == "no_raw_column":
        data = data.map(lambda r: {"input_ids": [1, 2]}, remove_columns=["text"])
    with pytest.raises(ValueError, match=message):
        classical_baseline(data, folds, kind="tfidf" if case == "kind" else "auto")


def test_a_study_compares_the_pretrained_model_with_the_baseline_on_the_same_folds(tmp_path):
    base = save_base(tmp_path / "base", "bert")
    data = _raw_texts(24)
    args = make_config(tmp_path / "study", finetune_strategy="linear_probe", max_length=8, n_folds=3)
    report = TransferStudy(base, data, args, questions="baseline").run()
    trained, baseline = report.variants["pretrained"], report.variants["baseline"]
    for a, b in zip(trained.folds, baseline.folds):
        np.testing.assert_array_equal(a.predictions["row"].to_numpy(), b.predictions["row"].to_numpy())
    run_folds, _ = load_folds(tmp_path / "study" / "pretrained" / "folds.json")
    assert folds_fingerprint(load_folds(tmp_path / "study" / "baseline" / "folds.json")[0]) == \
        folds_fingerprint(run_folds) == baseline.metadata["folds_fingerprint"]
    verdict = report.verdict("baseline")
    assert verdict.numbers["a"] == "pretrained" and verdict.numbers["b"] == "baseline"
    expected = np.mean([f.eval_metrics["accuracy"] for f in trained.folds]) - \
        np.mean([f.eval_metrics["accuracy"] for f in baseline.folds])
    assert verdict.numbers["mean_diff"] == pytest.approx(expected)
    saved = json.loads((tmp_path / "study" / "baseline" / "cv_results.json").read_text())
    assert saved["config"]["baseline"] == "tfidf_logreg"
    assert "classical baseline" in (tmp_path / "study" / "report.md").read_text()


def test_a_study_without_raw_text_or_images_refuses_the_baseline_before_training(tmp_path):
    from conftest import text_dataset

    with pytest.raises(ValueError, match="needs a raw text column"):
        TransferStudy(save_base(tmp_path / "base", "bert"), text_dataset(), make_config(tmp_path / "s"),
                      questions="baseline")
