"""hf_tlcv.audit.checks: out-of-fold probabilities, embeddings, leakage across folds, the grouped comparison, and the
audit of real runs with injected label errors and near-duplicates (the small version of benchmarks/bench_audit.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_recipe, make_config, tiny_model

from hf_tlcv import CVResults, KFoldTrainer
from hf_tlcv.assets import load_dataset
from hf_tlcv.audit.checks import (
    AUDIT_FILE,
    audit,
    compare_grouped,
    compute_embeddings,
    cross_validate_grouped,
    embeddings_from_feature_cache,
    fold_leakage,
    leaked_evaluations,
    near_duplicate_groups,
    oof_probabilities,
    pool_features,
    read_audit,
    straddling_pairs,
)
from hf_tlcv.audit.injection import (
    detection_scores,
    inject_label_noise,
    inject_near_duplicates,
    leakage_truth,
)
from hf_tlcv.data import subsample
from hf_tlcv.folds import Fold, load_folds, split_indices
from hf_tlcv.hub.push import repo_files
from hf_tlcv.hub.card import audit_section
from hf_tlcv.results import FoldResult, predictions_frame
from hf_tlcv.run_dir import clear_run
from hf_tlcv.stats import corrected_paired_ttest

LITE0 = "builtin:efficientnet-lite0"

# Tiers: the pure functions and the embeddings of tiny models are the fast tier. An audit runs cleanlab (an optional
# backend), and the real runs use the embedded EfficientNet-Lite0 / MiniLM and builtin data: the integration tier.
needs_cleanlab = pytest.mark.skipif(importlib.util.find_spec("cleanlab") is None,
                                    reason='the audit needs cleanlab: pip install "hf_tlcv[audit]"')


# ---- pure functions -------------------------------------------------------------------------------------------
def _random_oof(n_rows=30, n_classes=3, n_repeats=2, seed=0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_rows)
    folds = split_indices(n_rows, "kfold", n_folds=3, n_repeats=n_repeats, seed=seed)
    frames = []
    for fold in folds:
        probs = rng.dirichlet(np.ones(n_classes), size=len(fold.eval_indices))
        frames.append(predictions_frame(fold.eval_indices, fold.repeat, fold.fold, labels[fold.eval_indices], probs))
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=seed), labels


def test_oof_probabilities_average_each_row_over_its_repeats():
    oof, labels = _random_oof()
    rows, got_labels, probs = oof_probabilities(oof)
    assert rows.tolist() == list(range(30)) and got_labels.tolist() == labels.tolist()
    for row in (0, 7, 29):  # independent: a loop over the raw frame
        own = oof[oof["row"] == row]
        expected = np.mean([own[f"prob_{c}"].to_numpy() for c in range(3)], axis=1)
        np.testing.assert_allclose(probs[row], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_oof_probabilities_refuse_rows_whose_label_changes_between_repeats():
    oof, _ = _random_oof()
    oof.loc[(oof["row"] == 4) & (oof["repeat"] == 1), "label"] += 1
    with pytest.raises(ValueError, match="Row 4 has different labels"):
        oof_probabilities(oof)


@pytest.mark.parametrize("pairs, base, expected", [
    ([[0, 3], [3, 4]], None, [0, 1, 2, 0, 0, 3]),
    ([], None, [0, 1, 2, 3, 4, 5]),
    ([[5, 1]], None, [0, 1, 2, 3, 4, 1]),
    # the run's own groups are kept together and joined with the pairs: {0, 2} by group "a", {2, 4} by a pair
    ([[2, 4]], ["a", "b", "a", "c", "d", "b"], [0, 1, 0, 2, 0, 1]),
])
def test_near_duplicate_groups_are_connected_components(pairs, base, expected):
    assert near_duplicate_groups(np.array(pairs), 6, base).tolist() == expected


def _brute_force_leaks(folds, pairs):
    leaks = set()
    for fold in folds:
        train, evaluation = set(fold.train_indices.tolist()), set(fold.eval_indices.tolist())
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                if x in evaluation and y in train:
                    leaks.add((fold.repeat, fold.fold, x))
    return leaks


def test_leakage_per_fold_matches_a_brute_force_count():
    rng = np.random.default_rng(3)
    n = 40
    folds = split_indices(n, "kfold", n_folds=4, n_repeats=2, seed=1)
    pairs = rng.choice(n, size=(12, 2), replace=True)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    expected = _brute_force_leaks(folds, pairs.tolist())
    leaked = leaked_evaluations(folds, pairs, n)
    assert set(map(tuple, leaked[["repeat", "fold", "row"]].to_numpy().tolist())) == expected
    table = fold_leakage(folds, pairs, n)
    assert len(table) == 8 and table["n_eval"].tolist() == [len(f.eval_indices) for f in folds]
    for rec in table.itertuples():
        assert rec.n_leaked == sum(1 for r, f, _ in expected if (r, f) == (rec.repeat, rec.fold))
        assert rec.share == pytest.approx(rec.n_leaked / rec.n_eval)
    straddle = straddling_pairs(folds, pairs, n)
    # a pair straddles in exactly the folds where one of its rows is evaluated and the other trains
    for rec in straddle.itertuples():
        count = sum(1 for f in folds for x, y in ((rec.row_a, rec.row_b), (rec.row_b, rec.row_a))
                    if x in f.eval_indices and y in f.train_indices)
        assert rec.n_folds == count > 0
    assert len(straddle) == sum(1 for a, b in pairs if any((a in f.eval_indices) != (b in f.eval_indices)
                                                           for f in folds))


def test_timeseries_leakage_uses_the_training_prefix_not_the_complement():
    # fold 0 trains on rows 0-1 and evaluates 2-3: row 5 (evaluated later) is not in its training part, so row 2
    # does not leak there; in fold 1, rows 4 and 5 are evaluated with their partners 0 and 2 in training
    folds = [Fold(0, 0, [0, 1], [2, 3]), Fold(0, 1, [0, 1, 2, 3], [4, 5])]
    leaked = leaked_evaluations(folds, np.array([[2, 5], [0, 4]]), 6)
    assert leaked[["fold", "row"]].to_numpy().tolist() == [[1, 4], [1, 5]]


def test_pool_features_reads_each_kind_of_backbone_output():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = pool_features(hidden, attention_mask=mask, text=True)
    torch.testing.assert_close(pooled[0], hidden[0, :3].mean(dim=0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(dim=0))
    feature_map = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(pool_features(feature_map, text=False), feature_map.mean(dim=(2, 3)))
    torch.testing.assert_close(pool_features(hidden, text=False), hidden[:, 0])  # ViT: the [CLS] token
    given = torch.randn(2, 4, 1, 1)
    torch.testing.assert_close(pool_features(hidden, pooler_output=given, text=False), given.flatten(1))


# ---- compare_grouped ------------------------------------------------------------------------------------------
def _results_from(folds, labels, correct_prob, seed) -> CVResults:
    rng = np.random.default_rng(seed)
    out = []
    for fold in folds:
        rows = fold.eval_indices
        right = rng.random(len(rows)) < correct_prob
        predicted = np.where(right, labels[rows], (labels[rows] + 1) % 2)
        probs = np.eye(2)[predicted] * 0.8 + 0.1
        frame = predictions_frame(rows, fold.repeat, fold.fold, labels[rows], probs)
        out.append(FoldResult(fold.repeat, fold.fold, len(fold.train_indices), len(rows),
                              eval_metrics={"accuracy": float(right.mean())}, predictions=frame))
    return CVResults(out)


def test_compare_grouped_pairs_the_runs_on_the_grouped_runs_folds():
    n = 60
    labels = np.arange(n) % 2
    ungrouped = _results_from(split_indices(n, "kfold", 5, n_repeats=2, seed=0), labels, 0.9, seed=1)
    grouped_folds = split_indices(n, "group", 5, n_repeats=2, seed=3, groups=np.arange(n) // 3)
    grouped = _results_from(grouped_folds, labels, 0.7, seed=2)
    cmp = compare_grouped(ungrouped, grouped)
    # independently: per grouped fold, each run's accuracy on exactly those rows, from its own same-repeat predictions
    a_oof, b_oof = ungrouped.oof_predictions, grouped.oof_predictions
    scores_a, scores_b, right = [], [], {}
    for fold in grouped_folds:
        rows = set(fold.eval_indices.tolist())
        for name, oof, scores in (("a", a_oof, scores_a), ("b", b_oof, scores_b)):
            part = oof[(oof["repeat"] == fold.repeat) & oof["row"].isin(rows)]
            assert len(part) == len(rows)
            scores.append(float((part["prediction"] == part["label"]).mean()))
            for row, ok in zip(part["row"], part["prediction"] == part["label"]):
                right[name, fold.repeat, row] = ok
    # McNemar's discordant rows per repeat: exactly one of the two runs right
    discordant = sum(right["a", r, i] != right["b", r, i] for r in (0, 1) for i in range(n)) / 2
    expected = corrected_paired_ttest(scores_a, scores_b, n_train=48, n_eval=12, bounded=True, n_rows=n,
                                      n_discordant=discordant)
    assert discordant > 0
    assert cmp.n_parts == 10
    for key in ("mean_diff", "t", "p_value"):
        assert cmp.test[key] == pytest.approx(expected[key], rel=1e-12)
    # every part holds 12 rows, so the mean difference is the difference of the pooled accuracies
    assert cmp.inflation == pytest.approx(cmp.ungrouped["pooled"] - cmp.grouped["pooled"], abs=1e-12)
    assert cmp.ungrouped["mean"] == ungrouped.summary["accuracy"]["mean"]
    markdown = cmp.to_markdown()
    assert f"{cmp.inflation:+.4f}" in markdown and "grouped by near-duplicates" in markdown


def test_compare_grouped_refuses_other_metrics_and_other_rows():
    labels = np.arange(30) % 2
    a = _results_from(split_indices(30, "kfold", 3, seed=0), labels, 0.8, seed=0)
    b = _results_from(split_indices(20, "kfold", 2, seed=0), labels, 0.8, seed=0)
    with pytest.raises(ValueError, match="only the accuracy"):
        compare_grouped(a, a, metric="f1")
    with pytest.raises(ValueError, match="different rows"):
        compare_grouped(a, b)


@pytest.mark.integration
@needs_cleanlab
def test_audit_with_given_embeddings_rebuilds_the_folds_from_the_predictions():
    from datasets import ClassLabel, Dataset, Features, Value

    n = 60
    labels = np.arange(n) % 2
    folds = split_indices(n, "kfold", 3, seed=0)
    results = _results_from(folds, labels, 0.9, seed=0)  # in memory: no run folder, no folds.json
    data = Dataset.from_dict({"x": np.arange(n), "label": labels},
                             features=Features({"x": Value("int64"), "label": ClassLabel(names=["a", "b"])}))
    embeddings = np.random.default_rng(0).normal(size=(n, 8))
    a, b = int(folds[0].eval_indices[0]), int(folds[1].eval_indices[0])
    embeddings[b] = embeddings[a]  # one exact duplicate, split between fold 0 and fold 1
    report = audit(results, data, embeddings)
    assert report.embeddings_from == "given" and "embeddings" not in report.seconds
    assert report.near_duplicate_pairs[["row_a", "row_b"]].to_numpy().tolist() == [sorted([a, b])]
    # fold 0 evaluates a while b trains, fold 1 the other way round; fold 2 trains on both
    assert report.fold_leakage["n_leaked"].tolist() == [1, 1, 0]
    assert report.straddling_pairs["n_folds"].tolist() == [2]
    assert report.groups[a] == report.groups[b] and len(np.unique(report.groups)) == n - 1
    # string labels are encoded as KFoldTrainer encodes them (sorted names): the same audit, with the class names
    strings = Dataset.from_dict({"x": np.arange(n), "label": np.array(["a", "b"])[labels].tolist()})
    again = audit(results, strings, embeddings)
    pd.testing.assert_frame_equal(again.issues, report.issues)
    assert again.label_names == ["a", "b"]
    with pytest.raises(ValueError, match="another label"):
        audit(results, Dataset.from_dict({"x": np.arange(n), "label": np.array(["b", "a"])[labels].tolist()}),
              embeddings)


# ---- embeddings -----------------------------------------------------------------------------------------------
def test_text_embeddings_are_mask_pooled_and_independent_of_padding(tiny_text_data):
    model = tiny_model("bert")
    # rows of different lengths, so that batches are padded
    lengths = [3, 8, 5, 6, 2, 8, 7, 4]
    data = tiny_text_data.select(range(8)).map(
        lambda row, i: {"input_ids": row["input_ids"][: lengths[i]], "attention_mask": [1] * lengths[i]},
        with_indices=True)
    emb = compute_embeddings(model, data, batch_size=3, device="cpu")
    model.eval()
    for i in range(8):  # independent: each row alone, unpadded, mean of its token states
        ids = torch.tensor([data[i]["input_ids"]])
        with torch.no_grad():
            states = model.bert(input_ids=ids).last_hidden_state[0]
        np.testing.assert_allclose(emb[i], states.mean(dim=0).numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", ["efficientnet", "vit"])
def test_image_embeddings_are_what_the_head_reads(arch, tiny_image_data):
    model = tiny_model(arch)
    emb = compute_embeddings(model, tiny_image_data.select(range(6)), device="cpu", batch_size=4)
    model.eval()
    with torch.no_grad():
        out = model.base_model(pixel_values=torch.as_tensor(np.asarray(tiny_image_data[:6]["pixel_values"])))
    expected = out.pooler_output if arch == "efficientnet" else out.last_hidden_state[:, 0]
    np.testing.assert_allclose(emb, expected.numpy(), atol=1e-5)
    train_model = tiny_model(arch).train()
    compute_embeddings(train_model, tiny_image_data.select(range(2)), device="cpu")
    assert train_model.training  # the caller's mode is given back


def _probe_cache(arch, data, tmp_path, pooling=None):
    from hf_tlcv.cache import FeatureCache, plan_feature_cache
    from hf_tlcv.modeling import state_fingerprint
    from hf_tlcv.pooling import apply_pooling
    from hf_tlcv.strategies import apply_strategy

    args = make_config(tmp_path, finetune_strategy="linear_probe", feature_cache="memory")
    model = tiny_model(arch)
    if pooling is not None:
        assert apply_pooling(model, pooling)
    fold_model = apply_strategy(model, args, None)
    plan, reason = plan_feature_cache(fold_model, args, dataset=data, data_collator=None, user_model_init=False)
    assert plan is not None, reason
    cache, reason = FeatureCache.build(fold_model, plan, data, model_fingerprint=state_fingerprint(fold_model),
                                       mode="memory")
    assert cache is not None, reason
    return cache


def test_a_linear_probe_feature_cache_gives_the_same_embeddings(tiny_image_data, tmp_path):
    cache = _probe_cache("efficientnet", tiny_image_data, tmp_path)
    expected = compute_embeddings(tiny_model("efficientnet"), tiny_image_data, device="cpu")
    np.testing.assert_allclose(embeddings_from_feature_cache(cache), expected, atol=1e-5)


# A text probe's cache holds the audit's embedding (the mean of the token states under the mask) only when its head
# reads a mean-pooling TokenPooler; BERT's [CLS] pooler or another pooling is not the sentence embedding.
@pytest.mark.parametrize("pooling,used", [(None, False), (["mean"], True), (["max"], False), (["cls"], False)],
                         ids=["cls-pooler", "mean", "max", "cls"])
def test_a_text_probe_cache_is_used_only_when_it_holds_the_mean_pooled_embedding(pooling, used, tiny_text_data,
                                                                                  tmp_path):
    cache = _probe_cache("bert", tiny_text_data, tmp_path, pooling)
    assert cache.feature == "pooler" and cache.pooling == pooling
    got = embeddings_from_feature_cache(cache)
    if not used:
        assert got is None
        return
    expected = compute_embeddings(tiny_model("bert"), tiny_text_data, device="cpu")  # the audit's own pass
    assert got.shape == (len(tiny_text_data), 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ---- real runs: injected label errors and near-duplicates -----------------------------------------------------
DIGITS = dict(finetune_strategy="linear_probe", image_size=32, learning_rate=3e-2, num_train_epochs=4,
              per_device_train_batch_size=16, n_folds=5, eval_on_train=False)


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("builtin:digits"), 250, "label", seed=0)


@pytest.fixture(scope="module")
def noisy_run(digits, tmp_path_factory):
    noisy, flipped = inject_label_noise(digits, 0.06, seed=1)
    out = tmp_path_factory.mktemp("noisy")
    results = KFoldTrainer(LITE0, make_config(out, **DIGITS), train_dataset=noisy).cross_validate()
    return noisy, flipped, results, out, results.audit(noisy)


@pytest.mark.integration
@needs_cleanlab
def test_audit_finds_flipped_labels(noisy_run):
    from sklearn.metrics import roc_auc_score

    noisy, flipped, results, out, report = noisy_run
    found = detection_scores(report.label_issues["row"], flipped)
    ranked = report.issues.sort_values("label_score")["row"].to_numpy()
    auroc = roc_auc_score(np.isin(report.issues["row"], flipped), -report.issues["label_score"])
    # A weak model (32 px digits, about 0.71 accuracy) on 250 rows, 15 flipped. Measured: 12 of 15 flagged among
    # 44 flags, 9 of 15 among the 15 lowest label qualities. Flagging at random would find about 3 and 1.
    assert found["recall"] >= 0.6, found
    assert np.isin(ranked[: len(flipped)], flipped).mean() >= 0.4
    assert auroc >= 0.85
    # the label quality is the out-of-fold probability of the given label (cleanlab's self-confidence)
    np.testing.assert_allclose(report.issues["label_score"], report.issues["prob_label"], atol=1e-6)
    issues = report.label_issues
    assert (np.diff(issues["label_score"]) >= 0).all()
    assert issues["given"].tolist() == [str(noisy.features["label"].int2str(int(x))) for x in issues["label"]]
    assert set(report.issue_summary["issue_type"]) == {"label", "near_duplicate", "outlier"}
    assert report.count("label") == len(issues)
    assert report.seconds["embeddings"] > 0 and report.embeddings.shape == (250, 1280)


@pytest.mark.integration
@needs_cleanlab
def test_saved_audit_holds_the_numbers_and_the_gallery(noisy_run, tmp_path):
    noisy, _, results, out, first = noisy_run
    assert "Data audit" not in (out / "README.md").read_text()  # the card the run wrote, before any audit
    report = audit(CVResults.load(out), noisy, first.embeddings)  # from the run folder: folds.json is read there
    pd.testing.assert_frame_equal(report.issues, first.issues)
    written = report.save(out)
    saved = read_audit(out)
    assert saved == json.loads((out / AUDIT_FILE).read_text())
    assert saved["n_rows"] == 250 and len(saved["proposed_groups"]["values"]) == 250
    assert [r["row"] for r in saved["label_issues"]] == report.label_issues["row"].head(50).tolist()
    assert saved["leakage"]["n_leaked"] == report.n_leaked
    assert pd.read_parquet(written["issues"])["row"].tolist() == report.issues["row"].tolist()
    from PIL import Image

    with Image.open(written["gallery"]) as image:
        assert image.width > 600 and image.height > 150
    markdown = (out / "audit" / "audit.md").read_text()
    assert "## Data audit" in markdown and "](audit/label_issues.png)" in markdown
    first = report.label_issues.iloc[0]
    assert f"| {first.row} | {first.given} | {first.predicted} | {first.prob_prediction:.3f} |" in markdown
    # the run's card (README) now carries the section, its images linked from the run folder; a push carries them
    card = (out / "README.md").read_text()
    assert written["card"] == out / "README.md" and markdown.strip() in card and "## Results" in card
    assert (out / "audit" / "label_issues.png").is_file()
    pushed = {p.relative_to(out).as_posix() for p in repo_files(out)}
    assert {"README.md", "audit.json", "audit/audit.md", "audit/label_issues.png"} <= pushed
    # overwriting the run deletes its audit with its results: a stale audit never reaches the next run's card
    copy = shutil.copytree(out, tmp_path / "run")
    clear_run(copy)
    assert not (copy / AUDIT_FILE).exists() and not (copy / "audit").exists()
    assert audit_section(copy) is None


@pytest.fixture(scope="module")
def duplicated_run(digits, tmp_path_factory):
    # exact copies: what the pretrained embeddings must find without fail (augmented copies are measured in
    # benchmarks/bench_audit.py)
    dup, source, _ = inject_near_duplicates(digits, 40, column="image", augmentations={"copy": lambda v, rng: v},
                                            seed=2)
    out = tmp_path_factory.mktemp("dup")
    trainer = KFoldTrainer(LITE0, make_config(out, **DIGITS), train_dataset=dup)
    results = trainer.cross_validate()
    return dup, source, trainer, results, out, audit(results, dup)


@pytest.mark.integration
@needs_cleanlab
def test_audit_finds_every_copy_that_leaks_across_folds(duplicated_run):
    dup, source, _, results, out, report = duplicated_run
    copies = np.arange(250, 290)
    assert (report.groups[copies] == report.groups[source[copies]]).all()
    truth = leakage_truth(load_folds(out / "folds.json")[0], source)
    flagged = set(map(tuple, report.leaked[["repeat", "fold", "row"]].to_numpy().tolist()))
    scores = detection_scores(flagged, truth)
    assert scores["recall"] == 1.0 and scores["precision"] == 1.0, scores
    assert report.n_leaked == len(truth) > 0
    assert set(report.straddling_pairs["distance"]) == {0.0}


@pytest.mark.integration
@needs_cleanlab
def test_grouped_rerun_keeps_copies_together_and_reports_both_estimates(duplicated_run, tmp_path):
    dup, source, trainer, results, _, report = duplicated_run
    grouped, comparison = cross_validate_grouped(trainer, report.groups, output_dir=str(tmp_path / "grouped"))
    folds, meta = load_folds(tmp_path / "grouped" / "folds.json")
    assert meta["fold_strategy"] == "stratified_group" and meta["group_column"] == "audit_group"
    for fold in folds:
        assert not set(report.groups[fold.eval_indices]) & set(report.groups[fold.train_indices])
    assert comparison.grouped["mean"] == grouped.summary["accuracy"]["mean"]
    assert comparison.ungrouped["mean"] == results.summary["accuracy"]["mean"]
    assert comparison.to_dict()["test"]["df"] == 4
    # the grouped run changed nothing else: same model, epochs, learning rate
    assert grouped.config["learning_rate"] == results.config["learning_rate"]
    assert grouped.config["num_train_epochs"] == results.config["num_train_epochs"]


# ---- the boundary ---------------------------------------------------------------------------------------------
@pytest.mark.integration
@needs_cleanlab
def test_audit_refuses_a_dataset_that_is_not_the_one_cross_validated(noisy_run, digits):
    noisy, _, results, _, _ = noisy_run
    with pytest.raises(ValueError, match="Unknown issue type"):
        audit(results, noisy, issue_types=["labels"])
    with pytest.raises(ValueError, match="another label"):
        audit(results, digits, issue_types=["label"])  # same rows, labels before the flips
    with pytest.raises(ValueError, match="cut from 250 rows"):
        audit(results, noisy.select(range(200)))
    with pytest.raises(ValueError, match="shape"):
        audit(results, noisy, np.zeros((10, 4)))
    with pytest.raises(TypeError, match="CVResults"):
        audit({"folds": []}, noisy)


@pytest.mark.integration
@needs_cleanlab
def test_audit_of_a_built_model_run_asks_for_the_model(tiny_image_data, tmp_path):
    results = KFoldTrainer(tiny_model("vit"), make_config(tmp_path, num_train_epochs=1),
                           train_dataset=tiny_image_data).cross_validate()
    with pytest.raises(ValueError, match="pass model="):
        audit(results, tiny_image_data)
    labels_only = audit(results, tiny_image_data, issue_types=["label"])
    assert set(labels_only.issue_summary["issue_type"]) == {"label"} and labels_only.near_duplicate_pairs.empty
    given = audit(results, tiny_image_data, model=tiny_model("vit"))
    assert given.embeddings.shape == (len(tiny_image_data), 16)


# ---- text, and the recipe -------------------------------------------------------------------------------------
@pytest.mark.integration
@needs_cleanlab
def test_text_audit_shows_the_texts(tmp_path):
    data = subsample(load_dataset("builtin:movie-snippets"), 90, "label", seed=0).select_columns(["text", "label"])
    dup, _, _ = inject_near_duplicates(data, 10, column="text", seed=0)
    config = make_config(tmp_path, finetune_strategy="linear_probe", max_length=32, learning_rate=1e-2,
                         num_train_epochs=2, eval_on_train=False)
    results = KFoldTrainer("builtin:minilm-l6", config, train_dataset=dup).cross_validate()
    report = audit(results, dup)
    assert report.embeddings.shape == (100, 384) and report.image_column is None
    shown = report.label_issues["row"].head(5).tolist() + report.straddling_pairs["row_a"].head(5).tolist()
    assert shown and all(report.texts[r] == dup[r]["text"] for r in shown)
    # the suspected label errors' table carries each row's text (whitespace collapsed, `|` escaped, cut at 90)
    lines = report.to_markdown().splitlines()
    assert len(report.label_issues) > 0, "measured: 20 suspected label errors among the 100 rows"
    assert any(line.startswith("| row | given | predicted |") and line.endswith(" text |") for line in lines)
    for rec in report.label_issues.head(10).itertuples():
        text = " ".join(dup[rec.row]["text"].split()).replace("|", "\\|")
        [line] = [line for line in lines if line.startswith(f"| {rec.row} | {rec.given} | {rec.predicted} |")]
        assert line.endswith(f" {text if len(text) <= 90 else text[:89] + '…'} |"), line
    assert len(report.near_duplicate_pairs) >= 5  # most of the 10 light text edits are found
    written = report.save(tmp_path)
    assert "gallery" not in written and (tmp_path / AUDIT_FILE).exists()


def _counting_bert_forward(monkeypatch) -> list:
    """Count every forward pass of a BERT backbone, whichever instance runs it (the audit may load its own)."""
    import functools

    from transformers.models.bert import modeling_bert

    calls: list = []
    original = modeling_bert.BertModel.forward

    @functools.wraps(original)  # the signature stays readable (compute_embeddings asks which inputs it takes)
    def forward(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(modeling_bert.BertModel, "forward", forward)
    return calls


@pytest.mark.integration
@needs_cleanlab
def test_a_text_linear_probe_audit_reads_the_cache_or_says_it_embeds(tmp_path, monkeypatch, capsys, caplog):
    import logging

    from test_ensemble import _raw_texts
    from test_pooling import sentence_encoder

    from hf_tlcv.audit.checks import audit_run

    from datasets import ClassLabel

    path = sentence_encoder(tmp_path / "model", "mean")  # a tiny BERT that declares mean pooling (as MiniLM does)
    # 1 to 6 words (every batch is padded); 2 classes, so that the saved 3-class head is replaced by the run
    data = _raw_texts(45).filter(lambda row: row["label"] < 2).cast_column("label", ClassLabel(names=["c0", "c1"]))
    config = make_config(tmp_path / "cv", finetune_strategy="linear_probe", feature_cache="memory", max_length=8,
                         num_train_epochs=1, eval_on_train=False)
    caplog.set_level(logging.WARNING, logger="hf_tlcv")
    trainer = KFoldTrainer(path, config, train_dataset=data)
    results = trainer.cross_validate()
    assert "new classification head for 2 classes" in caplog.text  # the run says it: it trains that head
    cache = trainer.feature_cache
    assert cache is not None and cache.pooling == ["mean"]
    expected = compute_embeddings(path, data, max_length=8, device="cpu", batch_size=7)  # the audit's own pass

    calls = _counting_bert_forward(monkeypatch)
    capsys.readouterr()
    report = audit_run(trainer, save=False)
    assert report.embeddings_from == "feature cache" and "embeddings" not in report.seconds
    assert calls == []  # the backbone did not run again
    np.testing.assert_allclose(report.embeddings, expected, atol=1e-5)
    assert "Audit: embedding the rows" not in capsys.readouterr().err

    # Without a cache the audit embeds: it says so with a progress bar, names the model, and reads as an audit
    caplog.clear()
    again = audit(results, data, model=path, progress=True)
    err = capsys.readouterr().err
    assert again.embeddings_from == path and "embeddings" in again.seconds and calls
    assert "Audit: embedding the rows" in err and "0/30" in err
    assert "Preprocessing (once for all folds)" not in err
    assert "new classification head" not in err + caplog.text  # only the backbone is read
    np.testing.assert_allclose(again.embeddings, expected, atol=1e-5)


@pytest.mark.integration
@needs_cleanlab
def test_recipe_audit_flag(tmp_path, capsys):
    recipe = load_recipe("vit_kfold")
    out = tmp_path / "run"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--dataset_name", "builtin:digits", "--max_samples", "60", "--n_folds", "2", "--num_train_epochs", "1",
        "--image_size", "32", "--output_dir", str(out), "--disable_tqdm", "true", "--save_fold_models", "false",
        "--audit",
    ])
    assert script_args.audit and not script_args.audit_regroup
    recipe.main(script_args, config)
    assert "## Data audit" in capsys.readouterr().out
    saved = read_audit(out)
    # the linear probe's frozen-feature cache holds the embeddings: no second backbone pass
    assert saved["n_audited"] == 60 and saved["embeddings_from"] == "feature cache"
    assert "embeddings" not in saved["seconds"]
    script_args.audit = False
    script_args.audit_regroup = True
    with pytest.raises(ValueError, match="add --audit"):
        recipe.main(script_args, config)


@pytest.mark.integration
def test_injection_helpers(digits):
    noisy, flipped = inject_label_noise(digits, 0.1, seed=0)
    before, after = np.array(digits["label"]), np.array(noisy["label"])
    assert np.flatnonzero(before != after).tolist() == flipped.tolist() and len(flipped) == 25
    assert noisy.features == digits.features
    dup, source, augmentation = inject_near_duplicates(digits.select(range(30)), 6, column="image", seed=0)
    assert len(dup) == 36 and source[:30].tolist() == list(range(30))
    assert augmentation == ["shift", "flip", "noise"] * 2
    for copy, original in zip(range(30, 36), source[30:]):
        assert dup[copy]["label"] == dup[int(original)]["label"]
        a, b = np.asarray(dup[copy]["image"]), np.asarray(dup[int(original)]["image"])
        assert a.shape == b.shape and not np.array_equal(a, b)
    assert detection_scores([1, 2], [2, 3]) == {"n_flagged": 2, "n_true": 2, "n_found": 1, "precision": 0.5,
                                                "recall": 0.5}
    assert list(itertools.islice(leakage_truth([Fold(0, 0, [0, 1], [2])], np.array([0, 1, 1])), 5)) == [(0, 0, 2)]


def test_label_search_runs_in_one_job_unless_asked_otherwise():
    """cleanlab's default worker pool can deadlock in a threaded process (a server): one job by default, the
    caller's own choice kept, the caller's settings never modified."""
    from hf_tlcv.audit.checks import _issue_settings

    possible = ["label", "near_duplicate", "outlier"]
    settings = _issue_settings(None, 0.13, possible)
    assert settings["label"]["clean_learning_kwargs"]["find_label_issues_kwargs"]["n_jobs"] == 1
    asked = {"label": {"clean_learning_kwargs": {"find_label_issues_kwargs": {"n_jobs": 4}}}, "outlier": {}}
    assert _issue_settings(asked, 0.13, possible)["label"]["clean_learning_kwargs"][
        "find_label_issues_kwargs"]["n_jobs"] == 4
    bare = {"label": {}}
    _issue_settings(bare, 0.13, possible)
    assert bare == {"label": {}}
