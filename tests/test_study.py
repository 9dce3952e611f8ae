"""TransferStudy: the plan of each question, identical folds and seeds across variants, the verdicts' numbers
(composed from hf_tlcv.stats), resume, and the report's markdown / plots / save-load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import image_dataset, load_recipe, make_config, tiny_model
from transformers import TrainerCallback

from hf_tlcv import StudyReport, TransferStudy
from hf_tlcv.folds import load_folds
from hf_tlcv.modeling import state_fingerprint
from hf_tlcv.studies.overfitting import diagnose_fold
from hf_tlcv.studies.report import Verdict
from hf_tlcv.results import CVResults, FoldResult, predictions_frame
from hf_tlcv.stats import adjust_pvalues, bayesian_correlated_ttest, corrected_ci, corrected_paired_ttest
from hf_tlcv.strategies import discover_layout
from hf_tlcv.studies.study import (
    compare,
    default_learning_rates,
    degenerate_predictions,
    discordant_rows,
    nested_verdict,
    overfitting_verdict,
    pairwise_verdict,
    selection_interval,
    selection_verdict,
)


class StartRecorder(TrainerCallback):
    """Per fold trained: the variant folder, the torch seed it was trained from, and its starting weights."""

    def __init__(self):
        self.starts = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        variant = args.output_dir.rstrip("/").split("/")[-2]
        self.starts.append({"variant": variant, "fold": args.output_dir.rstrip("/").split("/")[-1],
                            "seed": torch.initial_seed(), "weights": state_fingerprint(model)})


# ---- plan (no training) ----------------------------------------------------------------------------------
def test_every_variant_is_derived_from_one_base_trainer(tmp_path):
    # The variants' trainers come from KFoldTrainer.derive: the model is one object for every pretrained variant, the
    # from-scratch one gets new random weights, and each differs from the base only by its own settings and folder.
    callback = StartRecorder()
    args = make_config(tmp_path / "s", learning_rate=1e-3)
    # (the tiny "pretrained" model is drawn from another seed than the run's, so that random init differs from it)
    study = TransferStudy(tiny_model("vit", seed=7), image_dataset(), args, questions="pretrained, lr",
                          callbacks=[callback])
    base = study.base_trainer
    assert study.base_trainer is base  # built once
    pretrained, scratch = (study.make_trainer(study.variants[v]) for v in ("pretrained", "scratch"))
    lr = study.make_trainer(study.variants[study.question_variants["lr"][0]])
    assert pretrained.model_source.template is base.model_source.template is lr.model_source.template
    assert scratch.model_source.template is not base.model_source.template
    assert scratch.model_fingerprint != base.model_fingerprint
    assert all(callback in t.callback_handler.callbacks for t in (pretrained, scratch, lr))
    assert pretrained.cv_args.output_dir == str(tmp_path / "s" / "pretrained")
    assert lr.cv_args.learning_rate == study.variants[study.question_variants["lr"][0]].overrides["learning_rate"]
    assert (lr.cv_args.n_folds, lr.cv_args.fold_seed, lr.cv_args.seed) == (args.n_folds, args.fold_seed, args.seed)


def test_plan_of_each_question(tmp_path):
    model = tiny_model("efficientnet")
    n = discover_layout(model).n_blocks
    args = make_config(tmp_path / "s", learning_rate=1e-3)
    study = TransferStudy(model, image_dataset(), args, questions="pretrained, freeze,lr")
    assert study.question_variants["pretrained"] == ["pretrained", "scratch"]
    assert study.variants["scratch"].overrides == {"pretrained": False}
    freeze = study.question_variants["freeze"]
    depths = sorted({0, n // 4, n // 2, 3 * n // 4})
    assert freeze == [f"freeze_{d}" for d in depths] + ["linear_probe", "llrd_0.8"]
    assert study.variants[f"freeze_{depths[-1]}"].overrides["freeze_layers"] == depths[-1]
    assert study.variants["llrd_0.8"].overrides["layerwise_lr_decay"] == 0.8
    lrs = [study.variants[v].overrides["learning_rate"] for v in study.question_variants["lr"]]
    assert lrs == default_learning_rates(1e-3) == [1e-4, 3.2e-4, 1e-3, 3.2e-3, 1e-2]
    # identical effective settings share one run: full fine-tuning of the pretrained model at the base lr
    assert study.runs["freeze_0"] == study.runs["lr_0.001"] == "pretrained"
    assert study.runs["scratch"] == "scratch" and study.runs["freeze_1"] == "freeze_1"


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(questions="pretrained,depth"), ValueError, "Unknown study question 'depth'"),
    (dict(), ValueError, "something to answer"),
    (dict(variants={"a": {"seed": 1}, "b": {}}), ValueError, "decide the folds or the training seed"),
    (dict(variants={"a": {"n_folds": 5}, "b": {}}), ValueError, "identical folds"),
    (dict(variants={"a b": {}, "c": {}}), ValueError, "folder name"),
    (dict(variants={"plots": {}, "c": {}}), ValueError, "folder name"),
    (dict(variants={"a": {"finetune_strategy": "nope"}, "b": {}}), ValueError, "finetune_strategy"),
    (dict(variants={"a": {"learning_rat": 1.0}, "b": {}}), ValueError,
     "'learning_rat', which is not a KFoldConfig setting"),
    (dict(variants={"a": {}}), ValueError, "at least two variants"),
    (dict(questions="freeze", freeze_depths=[0, 99]), ValueError, "freeze_depths must lie in 0..7"),
    (dict(questions="lr", learning_rates=[1e-3]), ValueError, "at least two positive"),
    (dict(questions="pretrained", nested=True), ValueError, "nested=True"),
    (dict(questions="lr", p_adjust="fdr"), ValueError, "p_adjust"),
])
def test_bad_plans_fail_before_training(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        TransferStudy(tiny_model("efficientnet"), image_dataset(), make_config(tmp_path / "s"), **kwargs)


def test_two_fold_scores_per_variant_are_refused_before_training(tmp_path):
    # a paired test on k x r = 2 fold scores has one degree of freedom: refused, with the fix, before any training
    args = make_config(tmp_path / "s", n_folds=2)
    with pytest.raises(ValueError, match=r"n_folds=2 x n_repeats=1 gives 2; set n_folds=3 or more, or n_repeats=2"):
        TransferStudy(tiny_model("vit"), image_dataset(), args, questions="pretrained")
    # repeats fix it; a study that compares nothing (overfitting only) needs no test
    TransferStudy(tiny_model("vit"), image_dataset(), make_config(tmp_path / "s", n_folds=2, n_repeats=2),
                  questions="pretrained")
    TransferStudy(tiny_model("vit"), image_dataset(), args, questions="overfitting")


# ---- verdicts from given fold scores (no training) --------------------------------------------------------
def _cv(scores: list[float], n_train: int = 80, n_eval: int = 20) -> CVResults:
    return CVResults([FoldResult(repeat=0, fold=i, n_train=n_train, n_eval=n_eval, eval_metrics={"accuracy": s})
                      for i, s in enumerate(scores)])


A = [0.80, 0.82, 0.85, 0.79, 0.84]
B = [0.78, 0.80, 0.80, 0.78, 0.81]
C = [0.50, 0.52, 0.55, 0.49, 0.53]


# accuracy is bounded: the tests get the McNemar floor of the 100 rows evaluated per repeat (no predictions here, so
# the smallest discordant count the fold scores allow)
FLOOR = {"bounded": True, "n_rows": 100.0}


def test_pairwise_verdict_numbers_are_the_corrected_tests():
    verdict = pairwise_verdict("pretrained", "pretrained", "scratch", _cv(A), _cv(C), "accuracy")
    expected = corrected_paired_ttest(A, C, 80, 20, **FLOOR)
    bayes = bayesian_correlated_ttest(A, C, 80, 20, rope=0.01, **FLOOR)
    assert verdict.numbers["p_value"] == pytest.approx(expected["p_value"])
    assert verdict.numbers["ci95"] == pytest.approx(expected["ci95"])
    assert verdict.numbers["p_a_better"] == pytest.approx(bayes["p_a_better"])
    assert verdict.numbers["winner"] == "pretrained"
    assert verdict.text.startswith("Pretrained beats scratch by +0.302 accuracy")
    assert f"p={expected['p_value']:.3g}" in verdict.text and "P(pretrained better) = 1.00" in verdict.text
    # A vs B: the doc example of corrected_paired_ttest, p = 0.063: no clear winner at alpha 0.05
    close = pairwise_verdict("x", "A", "B", _cv(A), _cv(B), "accuracy")
    assert close.numbers["winner"] is None and "No clear winner: A - B = +0.026" in close.text
    p_a = bayesian_correlated_ttest(A, B, 80, 20, rope=0.01, **FLOOR)["p_a_better"]
    assert f"P(A better) = {p_a:.2f}" in close.text
    # the floor matters here: differences of 0.01-0.05 on 20-row folds need at least 2.6 discordant rows of 100
    assert close.numbers["p_value"] > corrected_paired_ttest(A, B, 80, 20)["p_value"]


def test_selection_verdict_adjusts_the_comparisons_with_the_best():
    results = {"b": _cv(B), "a": _cv(A), "c": _cv(C)}
    verdict = selection_verdict("lr", results, "accuracy", {"a": "learning rate 1e-3"})
    n = verdict.numbers
    assert n["best"] == "a" and n["runner_up"] == "b"
    raw = [corrected_paired_ttest(A, B, 80, 20, **FLOOR)["p_value"],
           corrected_paired_ttest(A, C, 80, 20, **FLOOR)["p_value"]]
    assert [r["p_value"] for r in n["comparisons"]] == pytest.approx(raw)
    assert [r["p_adjusted"] for r in n["comparisons"]] == pytest.approx(adjust_pvalues(raw, "holm"))
    assert not n["distinguishable"] and n["n_distinguishable"] == 1
    assert verdict.text.startswith("Best is a (learning rate 1e-3) with accuracy 0.820")
    # the winner's interval accounts for the selection among 3: each candidate's at 1 - 0.05 / 3 (Bonferroni)
    selected = corrected_ci(A, 80, 20, 1 - 0.05 / 3, bounded=True, n_rows=100)
    assert n["best_ci95_selection"] == pytest.approx(list(selected))
    assert n["best_ci95_selection"] == selection_interval(results["a"], "accuracy", 3)
    assert n["best_ci95_selection"][0] < n["best_ci95"][0] and n["best_ci95"][1] < n["best_ci95_selection"][1]
    assert f"[{selected[0]:.3f}, {selected[1]:.3f}] accounting for the selection among 3 variants" in verdict.text
    assert "NOT distinguishable from the runner-up" in verdict.text and "holm-adjusted over 2" in verdict.text
    bonf = selection_verdict("lr", results, "accuracy", p_adjust="bonferroni").numbers["comparisons"]
    assert [r["p_adjusted"] for r in bonf] == pytest.approx(adjust_pvalues(raw, "bonferroni"))


def test_selection_verdict_leads_with_the_nested_estimate():
    nested = {"estimate": {"mean": 0.79, "std": 0.02, "ci95": [0.74, 0.83]}}
    verdict = selection_verdict("lr", {"b": _cv(B), "a": _cv(A), "c": _cv(C)}, "accuracy", nested=nested)
    assert verdict.text.startswith("Choosing the best of 3 variants and training it scores accuracy 0.790 (nested "
                                   "cross-validation, 95% interval [0.740, 0.830]")
    assert "the best is a with 0.820 (optimistic by +0.030" in verdict.text
    assert verdict.numbers["estimate"] == nested["estimate"]


def _cv_predicting(per_fold: list[list[int]], n_train: int = 80) -> CVResults:
    """One fold per list of predicted classes, on rows whose labels alternate 0, 1 (accuracy from the predictions)."""
    folds, start = [], 0
    for i, preds in enumerate(per_fold):
        preds = np.asarray(preds)
        rows = np.arange(start, start + len(preds))
        labels = rows % 2
        start += len(preds)
        probs = np.eye(2)[preds]
        folds.append(FoldResult(repeat=0, fold=i, n_train=n_train, n_eval=len(preds),
                                eval_metrics={"accuracy": float(np.mean(preds == labels)), "loss": 0.693},
                                predictions=predictions_frame(rows, 0, i, labels, probs)))
    return CVResults(folds)


ONE_CLASS = [[1] * 10 for _ in range(5)]  # accuracy 0.5, the majority rate, on every fold
HEALTHY = [[0, 1] * 4 + [1, 1], [0, 1] * 5, [0, 1] * 3 + [0, 0, 1, 1], [0, 1] * 5, [1, 1] + [0, 1] * 4]


@pytest.mark.parametrize("per_fold, expected", [
    (ONE_CLASS, [1, 1, 1, 1, 1]),
    ([[0] * 10, [1] * 10, [0] * 10], [0, 1, 0]),  # a different constant per fold is still one class per fold
    (HEALTHY, None),
    ([[1] * 10, [1] * 9 + [0], [1] * 10], None),  # one row of another class in one fold: it learned something
])
def test_degenerate_predictions_needs_one_class_on_every_fold(per_fold, expected):
    assert degenerate_predictions(_cv_predicting(per_fold)) == expected


def test_degenerate_predictions_without_saved_predictions_is_unknown():
    assert degenerate_predictions(_cv(A)) is None


def test_a_one_class_variant_is_called_out_in_its_verdict():
    pre, scratch = _cv_predicting(HEALTHY), _cv_predicting(ONE_CLASS)
    verdict = pairwise_verdict("pretrained", "pretrained", "scratch", pre, scratch, "accuracy")
    warning = ("scratch predicts one class on every fold: it learned nothing; its comparison says nothing about "
               "pretraining.")
    assert verdict.degenerate == ["scratch"] and verdict.numbers["degenerate"] == {"scratch": [1] * 5}
    assert verdict.details[0] == warning and warning[1:] in verdict.text
    assert "scratch predicts" in verdict.block()
    healthy = pairwise_verdict("pretrained", "pretrained", "scratch", pre, _cv_predicting(HEALTHY[::-1]), "accuracy")
    assert healthy.degenerate == [] and "learned nothing" not in healthy.block() + healthy.text
    among = selection_verdict("freeze", {"a": pre, "b": scratch, "c": _cv_predicting(HEALTHY[::-1])}, "accuracy")
    assert among.degenerate == ["b"] and "b predicts one class on every fold" in among.block()
    assert "says nothing about freeze depth" in " ".join(line.strip() for line in among.block().splitlines())


def test_selection_verdict_names_the_variants_the_best_beats():
    worse = [x - 0.25 for x in A]
    results = {"b": _cv(B), "a": _cv(A), "c": _cv(C), "d": _cv(worse)}
    verdict = selection_verdict("lr", results, "accuracy", alpha=0.05)
    rows = {r["variant"]: r["p_adjusted"] for r in verdict.numbers["comparisons"]}
    beaten = sorted(n for n, p in rows.items() if p < 0.05)
    assert beaten and len(beaten) < len(rows)  # the case tests both lists
    assert sorted(verdict.numbers["better_than"]) == beaten == sorted(["c", "d"])
    line = next(d for d in verdict.details if d.startswith("significantly better"))
    assert line.startswith(f"significantly better (holm p < 0.05) than {len(beaten)} of 3: ")
    assert all(f"{n} (p={rows[n]:.2g})" in line for n in beaten) and "b (" not in line
    assert "not distinguishable from the best: b" in verdict.details
    assert f"other variants (adjusted p < 0.05): {', '.join(verdict.numbers['better_than'])}." in verdict.text
    assert verdict.headline == "Best is a (accuracy 0.820), NOT distinguishable from the runner-up b (0.794)."


def _all_verdicts():
    long = "a_rather_long_variant_name_that_someone_chose_for_their_sweep"
    labels = {long: "embeddings + 12 of 16 blocks frozen, layer-wise lr decay 0.8, label smoothing 0.1 " * 2}
    nested = {"inner_folds": 3, "estimate": {"mean": 0.79, "ci95": [0.7, 0.88]}, "naive_best": long,
              "naive_mean": 0.82, "outer_folds": [{"selected": long}, {"selected": "b"}, {"selected": long}]}
    diagnoses = {long: [diagnose_fold(FoldResult(repeat=0, fold=i, n_train=80, n_eval=20,
                                                 eval_metrics={"accuracy": 0.6}, train_metrics={"accuracy": 0.95}),
                                     metric="accuracy", gap_threshold=0.1, loss_rise=0.1)
                        for i in range(8)], "b": []}
    results = {long: _cv(A), "b": _cv(B), "c": _cv(C), "d": _cv([0.5] * 5)}
    return [
        pairwise_verdict("pretrained", "pretrained", "scratch", _cv_predicting(HEALTHY), _cv_predicting(ONE_CLASS),
                         "accuracy", context="With finetune_strategy=freeze: "),
        pairwise_verdict("x", "a", "b", _cv(A), _cv(B), "accuracy"),
        selection_verdict("freeze", results, "accuracy", labels),
        selection_verdict("freeze", results, "accuracy", labels, nested=nested),
        nested_verdict("freeze", nested, "accuracy"),
        overfitting_verdict(diagnoses, "accuracy", 0.1, 0.1),
        overfitting_verdict({"b": []}, "accuracy", 0.1, 0.1),
    ]


def test_every_printed_verdict_line_is_short():
    for verdict in _all_verdicts():
        lines = verdict.block().splitlines()
        assert lines[0].startswith(f"[{verdict.question}] ") and len(lines) >= 2
        assert all(line.startswith("  ") for line in lines[1:])
        assert max(map(len, lines)) <= 100, verdict.block()


def test_report_saved_before_headlines_still_loads(tmp_path):
    verdict = selection_verdict("lr", {"a": _cv(A), "b": _cv(B)}, "accuracy")
    report = StudyReport([verdict], {"a": _cv(A), "b": _cv(B)}, {"lr": ["a", "b"]},
                         {"a": {"run": "a", "label": ""}, "b": {"run": "b", "label": ""}}, "accuracy")
    report.save(tmp_path, plots=False)
    saved = json.loads((tmp_path / "study_report.json").read_text())
    for v in saved["verdicts"]:  # the format written before headlines, details and degenerate existed
        for key in ("headline", "details", "degenerate"):
            del v[key]
    (tmp_path / "study_report.json").write_text(json.dumps(saved))
    old = StudyReport.load(tmp_path).verdict("lr")
    assert old.text == verdict.text and old.headline == "" and old.details == []
    lines = old.block().splitlines()
    assert " ".join(line.strip() for line in lines) == f"[lr] {verdict.text}" and max(map(len, lines)) <= 100
    assert f"- **Learning rate**: {verdict.text}" in StudyReport.load(tmp_path).to_markdown()


def test_comparisons_refuse_results_from_different_folds():
    with pytest.raises(ValueError, match="same folds"):
        compare(_cv(A), _cv(B, n_train=70, n_eval=30))


def test_discordant_rows_are_counted_from_the_predictions():
    # 2 repeats x 3 folds of 2 rows; predictions of class 1 or 0, labels all 1: A right where it predicts 1.
    def cv(predictions):
        folds = []
        for j, preds in enumerate(predictions):
            rows = np.array([2 * (j % 3), 2 * (j % 3) + 1])
            probs = np.stack([1.0 - np.array(preds), np.array(preds)], axis=1).astype(float)
            folds.append(FoldResult(repeat=j // 3, fold=j % 3, n_train=4, n_eval=2,
                                    eval_metrics={"accuracy": float(np.mean(preds)), "f1": 0.5},
                                    predictions=predictions_frame(rows, j // 3, j % 3, np.ones(2), probs)))
        return CVResults(folds)

    a = cv([[1, 1], [1, 0], [0, 0], [1, 1], [1, 1], [1, 0]])
    b = cv([[1, 0], [0, 1], [0, 0], [1, 1], [0, 0], [1, 0]])
    # exactly one right: repeat 0: 1 + 2 + 0 rows, repeat 1: 0 + 2 + 0 rows -> 5 rows in 2 repeats -> 2.5 per repeat
    assert discordant_rows(a, b) == 2.5
    assert discordant_rows(a, b, "f1") == 2.5  # other metrics: rows whose predicted classes differ (the same here)
    c = compare(a, b)
    assert c["n_discordant"] == 2.5
    assert c["p_value"] == corrected_paired_ttest(
        [f.eval_metrics["accuracy"] for f in a.folds], [f.eval_metrics["accuracy"] for f in b.folds], 4, 2,
        bounded=True, n_rows=6, n_discordant=2.5)["p_value"]
    assert discordant_rows(a, _cv([0.5] * 6, n_train=4, n_eval=2)) is None  # no predictions to count from


# ---- a real study on a tiny model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    recorder = StartRecorder()
    args = make_config(out, n_folds=3, num_train_epochs=1)
    # seed 1: the "pretrained" weights differ from the random init the study draws from the training seed 0
    study = TransferStudy(tiny_model("vit", seed=1), image_dataset(n_per_class=6), args,
                          questions=("pretrained", "overfitting"),
                          variants={"base_lr": {"learning_rate": args.learning_rate}, "lr_high": {"learning_rate": 2e-2}},
                          callbacks=[recorder])
    with pytest.MonkeyPatch.context() as patch:
        # each variant's own cross-validation plots are not under test here; the study's plots are
        patch.setattr("hf_tlcv.plots.cv.save_plots", lambda results, directory: {})
        report = study.run()
    return study, report, recorder, out


def test_variants_share_folds_and_seeds(ran):
    study, report, recorder, out = ran
    runs = ["pretrained", "scratch", "lr_high"]
    assert set(report.variants) == {*runs, "base_lr"}
    assert study.runs["base_lr"] == "pretrained" and not (out / "base_lr").exists()  # same settings: one run
    folds = {run: load_folds(out / run / "folds.json")[0] for run in runs}
    assert all(folds[run] == folds["pretrained"] for run in runs)
    assert len(recorder.starts) == len(runs) * 3  # every variant trained every fold
    assert {s["seed"] for s in recorder.starts} == {study.args.seed}
    # the same starting weights per fold for the pretrained-start variants, other ones for the random init
    by = {(s["variant"], s["fold"]): s["weights"] for s in recorder.starts}
    for fold in ("fold_0_0", "fold_0_1"):
        assert by[("pretrained", fold)] == by[("lr_high", fold)]
        assert by[("scratch", fold)] != by[("pretrained", fold)]
    assert by[("scratch", "fold_0_0")] == by[("scratch", "fold_0_1")]
    # per-fold eval rows are the same in every variant's out-of-fold predictions
    rows = {run: report.variants[run].oof_predictions.sort_values("row")[["row", "fold"]].to_numpy()
            for run in runs}
    assert all(np.array_equal(rows[run], rows["pretrained"]) for run in runs)


def test_study_verdicts_and_report_round_trip(ran, tmp_path):
    study, report, recorder, out = ran
    assert [v.question for v in report.verdicts] == ["pretrained", "custom", "overfitting"]
    pre = report.verdict("pretrained")
    scores = [[f.eval_metrics["accuracy"] for f in report.variants[n].folds] for n in ("pretrained", "scratch")]
    sizes = [np.mean([f.n_train for f in report.variants["pretrained"].folds]),
             np.mean([f.n_eval for f in report.variants["pretrained"].folds])]
    discordant = discordant_rows(report.variants["pretrained"], report.variants["scratch"])
    oof = [report.variants[n].oof_predictions.sort_values("row") for n in ("pretrained", "scratch")]
    right = [(o["prediction"] == o["label"]).to_numpy() for o in oof]
    assert discordant == np.sum(right[0] != right[1])  # one repeat: every row once
    n_rows = len(study.train_dataset)
    assert pre.numbers["p_value"] == pytest.approx(corrected_paired_ttest(
        *scores, *sizes, bounded=True, n_rows=n_rows, n_discordant=discordant)["p_value"])
    assert pre.text.startswith("With finetune_strategy=full: ")
    assert report.verdict("custom").numbers["best"] in ("base_lr", "lr_high")

    markdown = (out / "report.md").read_text()
    for v in report.verdicts:
        assert f"**: {v.headline}" in markdown and all(f"  - {d}" in markdown for d in v.details)
    for png in ("variant_scores_pretrained", "variant_scores_custom", "learning_curves_pretrained",
                "learning_curves_lr_high"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
        assert f"](plots/{png}.png)" in markdown
    saved = json.loads((out / "study_report.json").read_text())
    assert saved["settings"]["folds_fingerprint"] and saved["metric"] == "accuracy"

    loaded = StudyReport.load(out)
    assert [(v.question, v.text, v.block()) for v in loaded.verdicts] == [
        (v.question, v.text, v.block()) for v in report.verdicts]
    assert loaded.to_markdown() == report.to_markdown()
    assert loaded.variants["scratch"].summary == report.variants["scratch"].summary
    # a saved report is self-contained: it can be moved and saved again
    loaded.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "plots" / "variant_scores_pretrained.png").exists()
    with pytest.raises(FileNotFoundError, match="study_report.json"):
        StudyReport.load(tmp_path / "nothing")


def test_rerun_resumes_every_variant(ran):
    study, report, recorder, out = ran
    before = len(recorder.starts)
    again = study.run()
    assert len(recorder.starts) == before  # nothing trained again
    assert [v.text for v in again.verdicts] == [v.text for v in report.verdicts]


# ---- the recipe ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recipe():
    return load_recipe("vit_kfold")


def test_recipe_study_arguments_parse(recipe):
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--study", "pretrained,freeze,lr", "--study_freeze_depths", "0,4,8", "--study_learning_rates", "1e-4,1e-3",
        "--study_nested", "true", "--study_inner_folds", "2", "--study_layerwise_lr_decay", "0.7",
    ])
    assert script_args.study == "pretrained,freeze,lr" and script_args.study_freeze_depths == "0,4,8"
    assert script_args.study_learning_rates == "1e-4,1e-3" and script_args.study_nested
    assert (script_args.study_inner_folds, script_args.study_layerwise_lr_decay) == (2, 0.7)
    assert recipe.make_parser().parse_args_into_dataclasses(args=[])[0].study is None


@pytest.mark.integration
def test_recipe_study_runs_and_prints_the_verdicts(recipe, tmp_path, capsys):
    out = tmp_path / "study"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--study", "pretrained", "--dataset_name", "builtin:digits", "--max_samples", "40", "--n_folds", "2",
        "--n_repeats", "2",
        "--num_train_epochs", "1", "--image_size", "32", "--output_dir", str(out), "--disable_tqdm", "true",
        "--save_fold_models", "false",
    ])
    report = recipe.main(script_args, config)
    printed = capsys.readouterr().out
    assert isinstance(report, StudyReport)
    assert report.verdict("pretrained").block() in printed
    assert all(len(line) <= 100 for block in map(Verdict.block, report.verdicts) for line in block.splitlines())
    assert "  With finetune_strategy=linear_probe" in printed  # the recipe's default strategy, in both variants
    assert (out / "report.md").exists() and (out / "scratch" / "cv_results.json").exists()
    with pytest.raises(ValueError, match="--from_scratch and --study"):
        recipe.main(*recipe.make_parser().parse_args_into_dataclasses(args=[
            "--study", "pretrained", "--from_scratch", "true", "--dataset_name", "builtin:digits",
            "--max_samples", "40", "--output_dir", str(tmp_path / "x")]))
