"""`ci_method="nested"`: the extra fits run as fold jobs, the interval recomputed from their saved predictions, its
cost reported, resumed like folds, refused where it cannot work."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import image_dataset, make_config, tiny_model

from hf_tlcv import CVResults, KFoldConfig, KFoldTrainer
from hf_tlcv.folds import load_folds
from hf_tlcv.stats import nested_cv_interval


class Starts:
    def __init__(self):
        self.n = 0

    def on_train_begin(self, *args, **kwargs):
        self.n += 1

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _trainer(out, callbacks=()):
    args = make_config(out, n_folds=3, num_train_epochs=1, finetune_strategy="linear_probe", ci_method="nested")
    return KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset(), callbacks=list(callbacks))


def _right(out, name, rows) -> np.ndarray:
    """1/0 per row of `rows` (in that order): did the model of folder `name` predict it right?"""
    frame = pd.read_parquet(out / name / "predictions.parquet").set_index("row").loc[rows]
    return (frame["prediction"].to_numpy() == frame["label"].to_numpy()).astype(float)


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nested") / "cv"
    starts = Starts()
    results = _trainer(out, [starts]).cross_validate()
    return out, results, starts.n


def test_the_extra_fits_train_like_folds_on_the_rows_they_should(nested_run):
    out, results, trainings = nested_run
    folds, _ = load_folds(out / "folds.json")
    extra, _ = load_folds(out / "nested_folds.json")
    assert [f.repeat for f in extra] == [1, 1, 1]  # one repeat run: a second split for the nested interval
    n = 36
    # 3 fold fits of the second split + 3 pair fits per split, each with its folder and predictions
    assert trainings == 3 + 3 + 2 * 3
    assert results.nested["extra_fits"] == 9
    assert results.nested["fit_seconds"] > 0 and results.nested["fold_seconds"] > 0
    for split in (folds, extra):
        for j in range(3):
            for k in range(j + 1, 3):
                name = f"nested_{split[0].repeat}_{j}_{k}"
                held = np.union1d(split[j].eval_indices, split[k].eval_indices)
                predicted = pd.read_parquet(out / name / "predictions.parquet")["row"].to_numpy()
                assert np.array_equal(np.sort(predicted), held)
                assert not (out / name / "model").exists()  # extra fits are not fold models
                record = json.loads((out / name / "fold_result.json").read_text())
                assert record["n_train"] == n - len(held)
                assert record["test_metrics"] == {}
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_0_0", "fold_0_1", "fold_0_2"]


def test_the_interval_is_the_bates_interval_of_the_saved_predictions(nested_run):
    out, results, _ = nested_run
    folds, _ = load_folds(out / "folds.json")
    extra, _ = load_folds(out / "nested_folds.json")
    inner, outer = [], []
    for split, outer_name in ((folds, "fold_{r}_{k}"), (extra, "nested_{r}_{k}")):
        inner.append([])
        outer.append([])
        for k, held in enumerate(split):
            outer[-1].append(_right(out, outer_name.format(r=held.repeat, k=k), held.eval_indices))
            parts = [_right(out, f"nested_{held.repeat}_{min(j, k)}_{max(j, k)}", other.eval_indices)
                     for j, other in enumerate(split) if j != k]
            inner[-1].append(np.concatenate(parts))
    expected = nested_cv_interval(inner, outer, bounded=True)
    got = results.summary["accuracy"]
    assert got["ci_method"] == "nested"
    assert got["mean"] == pytest.approx(expected["mean"], abs=1e-12)
    assert got["ci95"] == pytest.approx(expected["ci95"], abs=1e-12)
    low, high = got["ci95"]
    assert 0.0 <= low < high <= 1.0
    # the spread stays that of the fold scores; the plain mean of the folds is kept beside the estimate
    fold_accuracy = [f.eval_metrics["accuracy"] for f in results.folds]
    assert got["std"] == pytest.approx(np.std(fold_accuracy, ddof=1))
    assert got["cv_mean"] == pytest.approx(np.mean(np.concatenate([v for split in outer for v in split])))
    # the model's loss is the plain cross-entropy: the loss gets the nested interval too; other metrics keep theirs
    assert results.summary["loss"]["ci_method"] == "nested"
    assert results.summary["f1"]["ci_method"] == "corrected_wilson"
    assert "nested CV interval" in results.format_table()


def test_a_nested_run_loads_and_resumes_without_training(nested_run):
    out, results, _ = nested_run
    assert CVResults.load(out).summary == results.summary
    starts = Starts()
    again = _trainer(out, [starts]).cross_validate()
    assert starts.n == 0
    assert again.summary == results.summary


@pytest.mark.parametrize("settings", [dict(n_folds=2), dict(fold_strategy="timeseries"), dict(ci_method="exact")])
def test_what_the_nested_interval_cannot_do_is_refused_before_training(tmp_path, settings):
    with pytest.raises(ValueError, match="ci_method"):
        KFoldConfig(output_dir=str(tmp_path), report_to="none", **{"ci_method": "nested", **settings})


def test_the_run_card_says_which_metrics_carry_the_nested_interval(nested_run):
    out, _, _ = nested_run
    card = (out / "README.md").read_text()
    assert "nested cross-validation estimate" in card and "from 9 extra fits" in card
    assert "accuracy and loss" in card
