"""Benchmark: how often are the study's answers right? Decisions measured against held-out truth on real data.

    .venv/bin/python benchmarks/decisions.py --smoke                  # < 60 s: runs everything once, tiny
    nice -n 19 .venv/bin/python benchmarks/decisions.py --work-dir outputs/decisions --draws 10
    .venv/bin/python benchmarks/decisions.py --work-dir outputs/decisions --aggregate-only

For every task (an embedded dataset and model) a fixed **held-out pool** of rows is set aside that no
cross-validation ever sees (group-disjoint from the rest for the text sets, whose `group` column marks
near-duplicates); the remaining rows are cut into disjoint **draws** of n rows: R independent training sets. A
**unit** is one (task, n, draw): the study questions of `GRID` are asked through the public study path
(`TransferStudy(...).run()`, with the pool given as `eval_dataset`, so every fold model is scored on it too), and
every variant is then trained once on all n rows, exactly as a fold is (same settings, seed, head and frozen-feature
cache, `KFoldTrainer.fold_jobs` + `run_fold` on a fold whose training rows are the n rows and whose eval rows are the
pool), which gives its held-out accuracy, per-row correctness and per-epoch held-out loss: the truth.

Each unit is a run folder `<work-dir>/<task>/n<n>/draw<r>/` (one study folder per question group, `truth/` beside
it); `unit.json` is written last and marks it finished, so a second invocation skips finished units and resumes an
interrupted one (the library resumes its finished folds). Units run draw by draw, so a partial run covers every task.

Aggregation (`--aggregate-only`, and after every unit) reads only what the run folders saved and scores, per task and
size: the regret of the recommendation (best held-out accuracy minus the recommended variant's), the direction of
every "significant" verdict, "not distinguishable" verdicts and the held-out gap then, the coverage of each
variant's 95% interval of both targets (the held-out accuracy of the model trained on all n rows, and the mean
held-out accuracy of the k fold models) for every method in `--ci-methods` (`CI_METHODS` below: a function of the
saved results, so a new interval is scored from the saved folds without training again), and the overfitting flag
against the held-out loss rising; side by side with what users do instead: one 80/20 holdout split (fold 0 of the
same stratified 5 folds, an 80/20 split of the n rows; its winner then trained on all n rows, which is that variant's
truth) and the 5 folds without corrections (plain mean, plain t interval, plain paired t-test). Writes
`benchmarks/results/decisions.{md,json}` (with `--smoke` into its temporary folder) and `docs/decisions_regret.png`.

The grid and every default are in `GRID` below and its hash is in the results: they were committed before any
held-out number was looked at (issue 25).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DOCS = ROOT / "docs"

# ---- the grid: fixed before any held-out number was seen ----------------------------------------------------------
# Training settings follow the docs: images as docs/studies.md (3 epochs, batch 32), text as docs/text.md (5 epochs,
# batch 32, 64 tokens, grouped folds on `group`); images at 32 px. The study's own defaults are kept: 5 folds, one
# repeat, fold_seed 42, seed 42, alpha 0.05, Holm, rope 0.01, gap_threshold 0.1, loss_rise 0.1, the default lr grid
# (5 log-spaced values, lr/10 .. lr*10) and the default freeze depths n/4, n/2, 3n/4 (depth 0 and layer-wise decay
# are full fine-tuning: they belong to the expensive tier and are left out of the cheap freeze question).
GRID = {
    "version": 1,
    "tasks": {
        "animal-mnist": {"data": "builtin:animal-mnist", "model": "builtin:efficientnet-lite0", "kind": "image",
                         "pool": 1000, "train": {"image_size": 32, "num_train_epochs": 3}},
        "trec": {"data": "builtin:trec", "model": "builtin:minilm-l6", "kind": "text", "pool": 1000,
                 "train": {"max_length": 64, "num_train_epochs": 5, "group_column": "group"}},
        "sms-spam": {"data": "builtin:sms-spam", "model": "builtin:minilm-l6", "kind": "text", "pool": 1000,
                     "train": {"max_length": 64, "num_train_epochs": 5, "group_column": "group"}},
        "movie-snippets": {"data": "builtin:movie-snippets", "model": "builtin:minilm-l6", "kind": "text",
                           "pool": 1000, "train": {"max_length": 64, "num_train_epochs": 5, "group_column": "group"}},
        "digits": {"data": "builtin:digits", "model": "builtin:efficientnet-lite0", "kind": "image", "pool": 1000,
                   "train": {"image_size": 32, "num_train_epochs": 3}, "sizes": [100]},
    },
    # The order in which a full run visits tasks (draw by draw): the cheap questions on these first.
    "task_order": ["animal-mnist", "trec", "sms-spam", "movie-snippets", "digits"],
    "sizes": [200, 500],
    "common": {"n_folds": 5, "n_repeats": 1, "fold_seed": 42, "seed": 42, "per_device_train_batch_size": 32,
               "per_device_eval_batch_size": 64, "save_fold_models": False, "disable_tqdm": True,
               "report_to": "none", "feature_cache": "auto"},
    "study": {"alpha": 0.05, "rope": 0.01, "p_adjust": "holm", "gap_threshold": 0.1, "loss_rise": 0.1},
    # Question groups; tier "cheap" runs by default, "expensive" with --tiers cheap,expensive.
    "studies": {
        # Which learning rate (linear probe, default grid around 1e-2, the probe lr of docs/text.md), and the
        # pretrained probe against the classical baseline (same folds). The nested interval (25 extra fits per
        # variant, about 5x the probe's cost) only on the first `nested_draws` draws of each task and size. The five
        # probes share one frozen cut: an on-disk cache (in the unit's folder, removed when the unit is done) is
        # computed once and reused by all (same results, documented for feature_cache).
        "probe_lr": {"tier": "cheap", "questions": ["lr", "baseline", "overfitting"],
                     "base": {"finetune_strategy": "linear_probe", "learning_rate": 1e-2},
                     "ci_method": "nested", "nested_draws": 2, "feature_cache": "disk"},
        # How many layers to freeze: the default depths n/4, n/2, 3n/4 and the linear probe, at one learning rate
        # (images 1e-3 as docs/studies.md, text 1e-4 as docs/text.md's freeze row).
        "freeze": {"tier": "cheap", "questions": ["overfitting"], "freeze_sweep": True,
                   "base": {"finetune_strategy": "freeze", "learning_rate": {"image": 1e-3, "text": 1e-4}}},
        # Pretrained vs scratch, full fine-tuning, n = 200 on two tasks.
        "pretrained_full": {"tier": "expensive", "questions": ["pretrained", "overfitting"],
                            "base": {"finetune_strategy": "full", "learning_rate": {"image": 1e-3, "text": 1e-4}},
                            "tasks": ["animal-mnist", "sms-spam"], "sizes": [200]},
    },
    # Truth: accuracy of the model trained on all n rows, on the pool; the overfitting truth is that model's
    # held-out loss at the last epoch more than 5% above its minimum over epochs.
    "truth": {"loss_rise": 0.05},
    # A variant is "flagged" when the study flags a majority of its folds.
    "overfitting_flag": "majority of folds",
    "confidence": 0.95,
    "holdout": {"split": "fold 0 of the study's 5 folds (80/20)", "test": "exact McNemar, Holm over comparisons",
                "interval": "Wilson on the holdout rows", "ties": "first in grid order"},
    "uncorrected": {"test": "paired t-test on fold scores, Holm", "interval": "mean +- t(k-1) s / sqrt(k)"},
    "seed": 2026,
}
GRID_HASH = hashlib.sha256(json.dumps(GRID, sort_keys=True).encode()).hexdigest()[:12]

SMOKE = {
    "tasks": {"digits": {**GRID["tasks"]["digits"], "pool": 120, "sizes": [45],
                         "train": {"image_size": 32, "num_train_epochs": 1}}},
    "sizes": [45], "draws": 1, "common": {**GRID["common"], "n_folds": 3},
    "studies": {"probe_lr": {**GRID["studies"]["probe_lr"], "learning_rates": [1e-2, 1e-1], "ci_method": "corrected"}},
}
# The unit's folder holds this marker once everything in it is finished.
UNIT_DONE = "unit.json"


# ---- data: pool and draws ---------------------------------------------------------------------------------------
def split_rows(dataset, pool_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(pool, rest)` row positions: a seeded random pool of about `pool_size` rows, whole groups when the data has a
    `group` column (near-duplicates never straddle pool and training rows); `rest` in a seeded random order."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    if "group" in dataset.column_names:
        groups = np.asarray(dataset["group"])
        order = rng.permutation(np.unique(groups))
        sizes = {g: c for g, c in zip(*np.unique(groups, return_counts=True))}
        chosen, total = [], 0
        for g in order:
            if total >= pool_size:
                break
            chosen.append(g)
            total += sizes[g]
        in_pool = np.isin(groups, chosen)
    else:
        in_pool = np.zeros(n, bool)
        in_pool[rng.permutation(n)[:pool_size]] = True
    pool = np.flatnonzero(in_pool)
    rest = rng.permutation(np.flatnonzero(~in_pool))
    return pool, rest


def class_quotas(labels: np.ndarray, n: int, minimum: int) -> dict[int, int]:
    """Rows per class in a draw of `n`: proportional to the class's share (largest remainder), at least `minimum`
    (the folds' count, so that stratified folds can hold every class)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * n
    quota = {int(c): max(minimum, int(math.floor(e))) for c, e in zip(classes, exact)}
    order = sorted(zip(classes, exact - np.floor(exact)), key=lambda ce: -ce[1])
    i = 0
    while sum(quota.values()) < n:
        quota[int(order[i % len(order)][0])] += 1
        i += 1
    while sum(quota.values()) > n:  # minimums pushed it over: take from the largest classes
        largest = max(quota, key=quota.get)
        quota[largest] -= 1
    return quota


def draw_rows(labels: np.ndarray, rest: np.ndarray, n: int, draw: int, minimum: int) -> np.ndarray | None:
    """The `draw`-th of disjoint stratified draws of `n` rows from `rest` (in its seeded order); `None` when a class
    runs out (R is capped there)."""
    rest_labels = labels[rest]
    rows = []
    for c, q in class_quotas(rest_labels, n, minimum).items():
        members = rest[rest_labels == c]
        if (draw + 1) * q > len(members):
            return None
        rows.append(members[draw * q:(draw + 1) * q])
    return np.sort(np.concatenate(rows))


# ---- one unit ---------------------------------------------------------------------------------------------------
def _value(setting, kind: str):
    return setting[kind] if isinstance(setting, dict) else setting


def study_plan(grid: dict, task: str, n: int, tiers: set[str]) -> dict:
    """The study groups a unit of (task, n) runs."""
    out = {}
    for name, spec in grid["studies"].items():
        if spec["tier"] not in tiers:
            continue
        if "tasks" in spec and task not in spec["tasks"]:
            continue
        if "sizes" in spec and n not in spec["sizes"]:
            continue
        out[name] = spec
    return out


def make_study(grid: dict, task: str, spec: dict, train, pool, output_dir: Path, draw: int = 0):
    from hf_tlcv import KFoldConfig, TransferStudy

    t = grid["tasks"][task]
    base = {k: _value(v, t["kind"]) for k, v in spec["base"].items()}
    nested = spec.get("ci_method") and draw < spec.get("nested_draws", math.inf)
    ci = {"ci_method": spec["ci_method"]} if nested else {}
    if spec.get("feature_cache"):
        ci["feature_cache"] = spec["feature_cache"]
    args = KFoldConfig(output_dir=str(output_dir), **{**grid["common"], **t["train"], **base, **ci})
    kwargs = dict(grid["study"])
    variants = None
    if spec.get("freeze_sweep"):
        from hf_tlcv.studies.study import default_freeze_depths
        from hf_tlcv.strategies import discover_layout
        from hf_tlcv.modeling import load_classifier

        n_blocks = discover_layout(load_classifier(t["model"], None, len(set(train["label"])))).n_blocks
        # The study's own default depths, without depth 0 (full fine-tuning, the expensive tier).
        variants = {f"freeze_{d}": {"finetune_strategy": "freeze", "freeze_layers": d}
                    for d in default_freeze_depths(n_blocks) if d > 0}
        variants["linear_probe"] = {"finetune_strategy": "linear_probe", "freeze_layers": 0}
    if spec.get("learning_rates"):
        kwargs["learning_rates"] = spec["learning_rates"]
    return TransferStudy(t["model"], train, args, questions=spec["questions"], variants=variants,
                         eval_dataset=pool, **kwargs)


def truth_fit(study, variant_name: str, train, pool, output_dir: Path) -> dict:
    """Train the variant on all n rows exactly as a fold is trained and score it on the pool (resumable)."""
    import datasets

    from hf_tlcv.folds import Fold
    from hf_tlcv.fold_job import run_fold
    from hf_tlcv.results import FoldResult

    fold_dir = output_dir / "fold_0_0"
    if not FoldResult.is_complete(fold_dir):
        both = datasets.concatenate_datasets([train, pool])
        n = len(train)
        trainer = study.make_trainer(study.variants[variant_name], dataset=both, output_dir=output_dir)
        fold = Fold(repeat=0, fold=0, train_indices=np.arange(n), eval_indices=np.arange(n, len(both)))
        (job,) = trainer.fold_jobs(folds=[fold])
        result = run_fold(job)
        result.save(fold_dir)
        del trainer
    return summarize_truth(FoldResult.load(fold_dir))


def summarize_truth(result) -> dict:
    """Held-out accuracy (with its binomial standard error), per-row correctness, held-out loss per epoch."""
    pred = result.predictions.sort_values("row")
    correct = (pred["prediction"].to_numpy() == pred["label"].to_numpy()).astype(int)
    acc = float(correct.mean())
    losses = [e["eval_loss"] for e in result.log_history if "eval_loss" in e and "epoch" in e]
    return {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / len(correct)), "n_pool": len(correct),
            "loss_per_epoch": losses, "correct": correct.tolist()}


def baseline_truth(study, train, pool, folds) -> dict:
    """The classical baseline fitted on all n rows (and on each fold's training rows), scored on the pool."""
    import datasets

    from hf_tlcv.studies.baselines import classical_baseline
    from hf_tlcv.folds import Fold

    both = datasets.concatenate_datasets([train, pool])
    n, args = len(train), study.args
    held = np.arange(n, len(both))
    fits = [Fold(repeat=0, fold=0, train_indices=np.arange(n), eval_indices=held)]
    fits += [Fold(repeat=1, fold=f.fold, train_indices=f.train_indices, eval_indices=held) for f in folds]
    res = classical_baseline(both, fits, kind="auto", label_column=args.label_column, text_column=args.text_column,
                             image_column=args.image_column, metrics=["accuracy"], seed=args.seed)
    full = res.folds[0]
    pred = full.predictions.sort_values("row")
    correct = (pred["prediction"].to_numpy() == pred["label"].to_numpy()).astype(int)
    acc = float(correct.mean())
    return {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / len(correct)), "n_pool": len(correct),
            "loss_per_epoch": [], "correct": correct.tolist(),
            "fold_models": [float(f.eval_metrics["accuracy"]) for f in res.folds[1:]]}


def run_unit(grid: dict, task: str, n: int, draw: int, work_dir: Path, tiers: set[str], data_cache: dict) -> dict | None:
    unit_dir = work_dir / task / f"n{n}" / f"draw{draw}"
    plan = study_plan(grid, task, n, tiers)
    done = json.loads((unit_dir / UNIT_DONE).read_text()) if (unit_dir / UNIT_DONE).exists() else None
    if done is not None and set(plan) <= set(done["studies"]):
        return done
    from hf_tlcv import load_data
    from hf_tlcv.folds import load_folds

    t = grid["tasks"][task]
    if task not in data_cache:
        full = load_data(t["data"])
        pool_rows, rest = split_rows(full, t["pool"], grid["seed"])
        data_cache[task] = (full, pool_rows, rest)
    full, pool_rows, rest = data_cache[task]
    rows = draw_rows(np.asarray(full["label"]), rest, n, draw, grid["common"]["n_folds"])
    if rows is None:
        return None
    if done is not None and done["rows"] != rows.tolist():
        raise RuntimeError(f"{unit_dir}: the draw's rows differ from the finished unit's; the data or grid changed")
    train, pool = full.select(rows), full.select(pool_rows)
    started = time.time()
    os.environ["HF_TLCV_FEATURE_CACHE"] = str(unit_dir / "feature_cache")
    # A finished unit asked for a further tier (--tiers cheap,expensive) runs only the study groups it lacks.
    studies = dict(done["studies"]) if done is not None else {}
    for name, spec in plan.items():
        if name in studies:
            continue
        s0 = time.time()
        out = unit_dir / name
        study = make_study(grid, task, spec, train, pool, out, draw)
        study.run()
        truth = {}
        for run in dict.fromkeys(study.runs.values()):
            variant = study.variants[run]
            if variant.classical:
                folds, _ = load_folds(out / next(r for r in study.runs.values()
                                                 if not study.variants[r].classical) / "folds.json")
                truth[run] = baseline_truth(study, train, pool, folds)
            else:
                truth[run] = truth_fit(study, run, train, pool, out / "truth" / run)
        (out / "truth.json").write_text(json.dumps(truth))
        studies[name] = {"seconds": time.time() - s0, "runs": dict(study.runs)}
    seconds = time.time() - started + (done["seconds"] if done is not None else 0.0)
    record = {"task": task, "n": n, "draw": draw, "grid_hash": GRID_HASH, "rows": rows.tolist(),
              "n_pool": int(len(pool_rows)), "seconds": seconds, "studies": studies,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    shutil.rmtree(unit_dir / "feature_cache", ignore_errors=True)  # activations only: cheap to recompute, large
    # Written whole or not at all: another process aggregating meanwhile reads the old marker or the new one.
    partial = unit_dir / f"{UNIT_DONE}.tmp"
    partial.write_text(json.dumps(record))
    os.replace(partial, unit_dir / UNIT_DONE)
    return record


# ---- intervals: one function per method, of the saved results only -------------------------------------------------
def _corrected(cv, folder, confidence):
    from hf_tlcv.results import fold_sizes
    from hf_tlcv.stats import corrected_ci

    n_train, n_eval, n_rows = fold_sizes(cv.folds)
    scores = [f.eval_metrics["accuracy"] for f in cv.folds]
    return list(corrected_ci(scores, n_train, n_eval, confidence, bounded=True, n_rows=n_rows))


def _nested(cv, folder, confidence):
    nested = (cv.nested or {}).get("metrics", {}).get("accuracy")
    if nested is None:
        return None
    if confidence == 0.95:
        return list(nested["ci95"])
    from hf_tlcv.folds import load_folds
    from hf_tlcv.nested_interval import nested_fits, nested_summary
    from hf_tlcv.results import FoldResult

    folds, _ = load_folds(Path(folder) / "folds.json")
    extra, _ = load_folds(Path(folder) / "nested_folds.json")
    fits = nested_fits(folds, extra)
    out = nested_summary(folds, cv.folds, fits, [FoldResult.load(Path(folder) / f.name) for f in fits], confidence)
    return list(out["metrics"]["accuracy"][f"ci{confidence * 100:g}"])


def _uncorrected(cv, folder, confidence):
    from scipy.stats import t

    s = np.array([f.eval_metrics["accuracy"] for f in cv.folds], float)
    half = float(t.ppf((1 + confidence) / 2, len(s) - 1) * s.std(ddof=1) / math.sqrt(len(s)))
    return [float(s.mean() - half), float(s.mean() + half)]


def _holdout(cv, folder, confidence):
    from scipy.stats import norm

    f = cv.folds[0]
    p, m, z = f.eval_metrics["accuracy"], f.n_eval, float(norm.ppf((1 + confidence) / 2))
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z / (1 + z * z / m) * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    return [centre - half, centre + half]


def _row(cv, folder, confidence):
    """The library's per-row interval (`ci_method="row"`, the default since 0.3), with its fall-backs, recomputed from
    the saved folds and predictions exactly as a run made with it would summarise them."""
    from hf_tlcv.results import CVResults

    if confidence != 0.95:
        return None
    again = CVResults(cv.folds, oof_metrics=cv.oof_metrics, config={**cv.config, "ci_method": "row"},
                      label_names=cv.label_names, metadata=cv.metadata, diagnostics=cv.diagnostics)
    return list(again.summary["accuracy"]["ci95"])


# Every interval scored, by name: the library's ci_method values first, then what users do instead. A new method
# is one function of (CVResults, its run folder, confidence) -> [low, high] or None.
CI_METHODS = {"row": _row, "corrected": _corrected, "nested": _nested, "uncorrected_t": _uncorrected,
              "holdout_wilson": _holdout}


# ---- decisions of the alternatives ----------------------------------------------------------------------------------
def _holm(pvalues):
    from hf_tlcv.stats import adjust_pvalues

    return adjust_pvalues(pvalues, method="holm") if pvalues else []


def _mcnemar(a, b) -> float:
    """Exact two-sided McNemar p-value of two paired 0/1 vectors."""
    from scipy.stats import binomtest

    b01 = int(np.sum((a == 1) & (b == 0)))
    b10 = int(np.sum((a == 0) & (b == 1)))
    return 1.0 if b01 + b10 == 0 else float(binomtest(b01, b01 + b10, 0.5).pvalue)


def _fold0_correct(cv) -> np.ndarray:
    p = cv.folds[0].predictions.sort_values("row")
    return (p["prediction"].to_numpy() == p["label"].to_numpy()).astype(int)


def method_scores(method: str, names: list[str], cvs: dict) -> dict[str, float]:
    """What `method` ranks the variants by: the holdout fold's accuracy ("holdout"), else the mean over the folds
    (the study and the uncorrected folds)."""
    if method == "holdout":
        return {n: cvs[n].folds[0].eval_metrics["accuracy"] for n in names}
    return {n: float(np.mean([f.eval_metrics["accuracy"] for f in cvs[n].folds])) for n in names}


def decide(method: str, names: list[str], cvs: dict, alpha: float) -> dict:
    """`{"best", "significant": [(winner, loser)], "distinguishable": bool, "runner_up"}` of `method` ("holdout" or
    "uncorrected") among `names` (the best against every other, Holm-adjusted, as the study does)."""
    from scipy.stats import ttest_rel

    score = method_scores(method, names, cvs)
    order = sorted(names, key=lambda n: -score[n])  # stable: ties keep grid order
    best, rest = order[0], order[1:]
    pvalues = []
    for other in rest:
        if method == "holdout":
            pvalues.append(_mcnemar(_fold0_correct(cvs[best]), _fold0_correct(cvs[other])))
        else:
            a = np.array([f.eval_metrics["accuracy"] for f in cvs[best].folds])
            b = np.array([f.eval_metrics["accuracy"] for f in cvs[other].folds])
            pvalues.append(1.0 if np.allclose(a, b) else float(ttest_rel(a, b).pvalue))
    adjusted = _holm(pvalues)
    significant = [(best, o) for o, p in zip(rest, adjusted) if p < alpha and score[best] != score[o]]
    return {"best": best, "runner_up": rest[0], "significant": significant,
            "distinguishable": bool(adjusted[0] < alpha and score[best] != score[rest[0]])}


# ---- aggregation -----------------------------------------------------------------------------------------------
def question_records(unit_dir: Path, unit: dict, grid: dict, ci_methods: list[str]) -> list[dict]:
    """One record per (study question) of a finished unit: the decisions of CV, holdout and uncorrected folds and
    the truth, plus one record per variant (coverage, overfitting)."""
    from hf_tlcv import StudyReport
    from hf_tlcv.results import CVResults

    out = []
    alpha, conf = grid["study"]["alpha"], grid["confidence"]
    for name, info in unit["studies"].items():
        folder = unit_dir / name
        tier = grid["studies"].get(name, {}).get("tier", "cheap")
        report = StudyReport.load(folder)
        truth = json.loads((folder / "truth.json").read_text())
        runs = info["runs"]
        cvs = {}
        for run in dict.fromkeys(runs.values()):
            try:
                cvs[run] = CVResults.load(folder / run)
            except FileNotFoundError:
                continue
        acc = {v: truth[runs[v]]["accuracy"] for v in runs}
        for verdict in report.verdicts:
            q = verdict.question
            if q in ("overfitting",) or q.endswith("(nested)"):
                continue
            names = report.questions.get(q, [])
            if len(names) < 2:
                continue
            num = verdict.numbers
            if q in ("pretrained", "baseline"):
                a, b = num["a"], num["b"]
                winner = num.get("winner")
                rec = a if num["mean_diff"] >= 0 else b
                cv_dec = {"best": rec, "runner_up": b if rec == a else a,
                          "significant": [(winner, b if winner == a else a)] if winner else [],
                          "distinguishable": bool(winner)}
            else:
                cv_dec = {"best": num["best"], "runner_up": num["runner_up"],
                          "significant": [(num["best"], o) for o in num["better_than"]],
                          "distinguishable": bool(num["distinguishable"])}
            cv_by_name = {v: cvs[runs[v]] for v in names}
            decisions = {"cv": cv_dec, "holdout": decide("holdout", names, cv_by_name, alpha),
                         "uncorrected": decide("uncorrected", names, cv_by_name, alpha)}
            top = max(acc[v] for v in names)
            correct = {v: np.asarray(truth[runs[v]]["correct"]) for v in names}
            rec = {"kind": "question", "tier": tier, "task": unit["task"], "n": unit["n"], "draw": unit["draw"],
                   "study": name, "question": q, "variants": names, "truth": {v: acc[v] for v in names},
                   "truth_se": {v: truth[runs[v]]["se"] for v in names}, "methods": {}}
            for method, d in decisions.items():
                score = method_scores(method, names, cv_by_name)
                # Variants tied with the choice on the method's own score: the grid-order rule picked one of them;
                # a random pick would lose their mean regret.
                tied = [v for v in names if math.isclose(score[v], score[d["best"]], abs_tol=1e-12)]
                rec["methods"][method] = {
                    "choice": d["best"], "regret": top - acc[d["best"]], "tied": len(tied),
                    "regret_random_tie": float(np.mean([top - acc[v] for v in tied])),
                    # pool_p: the exact McNemar test of the two all-rows models on the pool, so a "wrong" verdict
                    # can be told from one the truth's own noise cannot resolve
                    "significant": [{"winner": w, "loser": lo, "wrong": acc[w] < acc[lo], "gap": acc[w] - acc[lo],
                                     "runner_up": lo == d["runner_up"], "pool_p": _mcnemar(correct[w], correct[lo])}
                                    for w, lo in d["significant"]],
                    "distinguishable": d["distinguishable"],
                    "gap_runner_up": acc[d["best"]] - acc[d["runner_up"]]}
            out.append(rec)
        # Per run: coverage of both targets, overfitting flag vs truth.
        diagnoses = report.overfitting or {}
        for run, cv in cvs.items():
            tr = truth[run]
            fold_models = tr.get("fold_models") or [f.test_metrics.get("accuracy") for f in cv.folds]
            target_b = float(np.mean(fold_models)) if None not in fold_models else None
            cover = {}
            for method in ci_methods:
                interval = CI_METHODS[method](cv, folder / run, conf)
                if interval is None or not all(math.isfinite(x) for x in interval):
                    continue
                cover[method] = {"interval": interval,
                                 "full": interval[0] <= tr["accuracy"] <= interval[1],
                                 "folds": None if target_b is None else interval[0] <= target_b <= interval[1]}
            losses = tr["loss_per_epoch"]
            rising = (losses[-1] > (1 + grid["truth"]["loss_rise"]) * min(losses)) if len(losses) >= 2 else None
            ds = diagnoses.get(run) or []
            flagged = (sum(bool(d["overfitting"]) for d in ds) * 2 > len(ds)) if ds else None
            # The study's loss-rise rule alone (its other rule is the train-eval gap): the same kind of signal as
            # the truth's rising held-out loss.
            rise_flag = (sum(d.get("onset_epoch") is not None for d in ds) * 2 > len(ds)) if ds else None
            # Two study groups can train the same variant (the images' linear probe at 1e-3 is in the learning-rate
            # grid and the freeze sweep): the same settings, model and rows are one variant in the counts.
            same = json.dumps({k: cv.metadata.get(k) for k in ("config", "model_fingerprint", "data_fingerprint",
                                                               "baseline", "folds_fingerprint")},
                              sort_keys=True, default=str)
            out.append({"kind": "variant", "tier": tier, "task": unit["task"], "n": unit["n"], "draw": unit["draw"],
                        "study": name, "variant": run, "same_as": hashlib.sha256(same.encode()).hexdigest()[:16],
                        "truth": tr["accuracy"], "truth_se": tr["se"], "fold_models_mean": target_b,
                        "cv_mean": float(np.mean([f.eval_metrics["accuracy"] for f in cv.folds])),
                        "coverage": cover, "overfit_flag": flagged, "loss_rise_flag": rise_flag,
                        "heldout_loss_rising": rising})
    return out


def wilson(k: int, m: int, z: float = 1.959964) -> list[float]:
    if m == 0:
        return [math.nan, math.nan]
    p = k / m
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z / (1 + z * z / m) * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def by_question(records: list[dict]) -> dict:
    """Regret of each method per question (lr, baseline, custom = the freeze sweep), over every task and size."""
    out: dict[str, dict] = {}
    for r in records:
        if r["kind"] != "question":
            continue
        row = out.setdefault(r["question"], {"decisions": 0, "methods": {}, "verdicts": {}})
        row["decisions"] += 1
        for method, m in r["methods"].items():
            row["methods"].setdefault(method, []).append(m["regret"])
            # Per question too, so that an easy question (pretrained vs scratch) cannot carry the overall rate.
            counts = row["verdicts"].setdefault(method, [0, 0])
            counts[0] += len(m["significant"])
            counts[1] += sum(v["wrong"] for v in m["significant"])
    return {q: {"decisions": row["decisions"],
                **{f"{method}_mean": float(np.mean(v)) for method, v in row["methods"].items()},
                **{f"{method}_se": float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
                   for method, v in row["methods"].items()},
                **{f"{method}_significant": c[0] for method, c in row["verdicts"].items()},
                **{f"{method}_wrong": c[1] for method, c in row["verdicts"].items()}}
            for q, row in out.items()}


def unique_variants(records: list[dict]) -> list[dict]:
    """Variant records with a variant trained in two study groups of a unit (`same_as`) counted once."""
    seen, out = set(), []
    for r in records:
        if r["kind"] == "variant":
            key = (r["task"], r["n"], r["draw"], r.get("same_as") or r["variant"])
            if key in seen:
                continue
            seen.add(key)
        out.append(r)
    return out


def noisy_truth_coverage(lower: float, upper: float, truth_se: float, z: float = 1.959964) -> float:
    """The coverage a 95% interval [lower, upper] would measure if it were exact for the variant's true accuracy,
    when it is scored against a truth measured with standard error `truth_se` (a pool of finite size): the
    interval's own spread, (width / 2) / z, and the truth's add. The ceiling of a measured coverage."""
    from scipy.stats import norm

    half = (upper - lower) / 2
    if half <= 0:
        return 0.0
    return float(2 * norm.cdf(half / math.hypot(half / z, truth_se)) - 1)


def widened(interval: list[float], truth_se: float, z: float = 1.959964) -> list[float]:
    """`interval` widened on each side for the truth's own noise: sqrt(side^2 + (z * truth_se)^2)."""
    lower, upper = interval
    mid = (lower + upper) / 2
    return [mid - math.hypot(mid - lower, z * truth_se), mid + math.hypot(upper - mid, z * truth_se)]


def summarize_records(records: list[dict], ci_methods: list[str]) -> dict:
    """Per (task, n) and overall: regret (with ties), verdicts, the paired comparison, coverage, overfitting."""
    from scipy.stats import binomtest

    groups: dict[str, list[dict]] = {}
    for r in unique_variants(records):
        for key in (f"{r['task']}|{r['n']}", "all|all"):
            groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        qs = [r for r in rs if r["kind"] == "question"]
        vs = [r for r in rs if r["kind"] == "variant"]
        row = {"units": len({(r["task"], r["n"], r["draw"]) for r in rs}), "decisions": len(qs), "methods": {}}
        for method in ("cv", "holdout", "uncorrected"):
            ms = [q["methods"][method] for q in qs]
            regrets = np.array([m["regret"] for m in ms], float)
            sig = [s for m in ms for s in m["significant"]]
            wrong = sum(s["wrong"] for s in sig)
            runner_up = [s for s in sig if s.get("runner_up")]
            decided = [m for m in ms if m["significant"]]  # decisions with at least one significant verdict
            decided_wrong = sum(any(s["wrong"] for s in m["significant"]) for m in decided)
            nd = [m["gap_runner_up"] for m in ms if not m["distinguishable"]]
            row["methods"][method] = {
                "regret_mean": float(regrets.mean()) if len(regrets) else None,
                "regret_se": float(regrets.std(ddof=1) / math.sqrt(len(regrets))) if len(regrets) > 1 else None,
                "regret_median": float(np.median(regrets)) if len(regrets) else None,
                "regret_p90": float(np.percentile(regrets, 90)) if len(regrets) else None,
                "right_choice": float(np.mean(regrets == 0)) if len(regrets) else None,
                "ties": sum(m.get("tied", 1) > 1 for m in ms),
                "regret_random_tie_mean": float(np.mean([m.get("regret_random_tie", m["regret"]) for m in ms]))
                if ms else None,
                "significant": len(sig), "wrong": int(wrong),
                "wrong_rate": wrong / len(sig) if sig else None, "wrong_ci95": wilson(wrong, len(sig)),
                # a wrong verdict the pool itself resolves (exact McNemar on the pool, p < 0.05)
                "wrong_resolved": sum(s["wrong"] and s.get("pool_p", 0.0) < 0.05 for s in sig),
                "runner_up_significant": len(runner_up), "runner_up_wrong": sum(s["wrong"] for s in runner_up),
                # verdicts of one decision share its folds: the rate over decisions does not count them as many
                "decisions_significant": len(decided), "decisions_wrong": int(decided_wrong),
                "decisions_wrong_ci95": wilson(decided_wrong, len(decided)),
                "not_distinguishable": len(nd), "not_distinguishable_rate": len(nd) / len(qs) if qs else None,
                "nd_gap_median": float(np.median(np.abs(nd))) if nd else None,
                "nd_gap_p90": float(np.percentile(np.abs(nd), 90)) if nd else None}
        # The two methods decide on the same unit and question: compare them paired. The decisions of one unit share
        # their data, so the standard error and the sign test are over units (each unit's mean difference).
        diffs = [q["methods"]["holdout"]["regret"] - q["methods"]["cv"]["regret"] for q in qs]
        per_unit: dict[tuple, list[float]] = {}
        for q, d in zip(qs, diffs):
            per_unit.setdefault((q["task"], q["n"], q["draw"]), []).append(d)
        unit_means = np.array([np.mean(v) for v in per_unit.values()], float)
        better, worse = int(np.sum(unit_means > 0)), int(np.sum(unit_means < 0))
        row["paired"] = {"holdout_minus_cv_mean": float(np.mean(diffs)) if diffs else None,
                         "se_over_units": float(unit_means.std(ddof=1) / math.sqrt(len(unit_means)))
                         if len(unit_means) > 1 else None, "units": len(unit_means),
                         "cv_better": sum(d > 0 for d in diffs), "tie": sum(d == 0 for d in diffs),
                         "holdout_better": sum(d < 0 for d in diffs),
                         "units_cv_better": better, "units_holdout_better": worse,
                         "sign_test_p": float(binomtest(better, better + worse).pvalue) if better + worse else None}
        cov = {}
        # the variants every method has an interval for (nested ran on some draws only): compared on the same ones
        matched = [v for v in vs if all(m in v["coverage"] for m in ci_methods)]
        for method in ci_methods:
            scored = [v for v in vs if method in v["coverage"]]
            hits = [v["coverage"][method] for v in scored]
            full = [h["full"] for h in hits]
            folds = [h["folds"] for h in hits if h["folds"] is not None]
            widths = [h["interval"][1] - h["interval"][0] for h in hits]
            ceiling = [noisy_truth_coverage(*v["coverage"][method]["interval"], v["truth_se"]) for v in scored]
            wide = [widened(v["coverage"][method]["interval"], v["truth_se"]) for v in scored]
            adjusted = [lo <= v["truth"] <= hi for v, (lo, hi) in zip(scored, wide)]
            on_matched = [v["coverage"][method]["full"] for v in matched]
            cov[method] = {"n": len(hits), "full": float(np.mean(full)) if full else None,
                           "full_ci95": wilson(sum(full), len(full)),
                           "folds": float(np.mean(folds)) if folds else None,
                           "folds_ci95": wilson(sum(folds), len(folds)),
                           "width_median": float(np.median(widths)) if widths else None,
                           "ceiling": float(np.mean(ceiling)) if ceiling else None,
                           "full_widened": float(np.mean(adjusted)) if adjusted else None,
                           "matched_n": len(matched),
                           "matched_full": float(np.mean(on_matched)) if on_matched else None,
                           "matched_width_median": float(np.median(
                               [np.diff(v["coverage"][method]["interval"])[0] for v in matched])) if matched else None}
        row["coverage"] = cov
        row["overfitting"] = {}
        for flag in ("overfit_flag", "loss_rise_flag"):
            pairs = [(v[flag], v["heldout_loss_rising"]) for v in vs
                     if v.get(flag) is not None and v["heldout_loss_rising"] is not None]
            row["overfitting"][flag] = {
                "n": len(pairs), "agree": float(np.mean([a == b for a, b in pairs])) if pairs else None,
                "flag_and_rising": sum(a and b for a, b in pairs), "flag_not_rising": sum(a and not b for a, b in pairs),
                "rising_not_flagged": sum(b and not a for a, b in pairs),
                "neither": sum((not a) and (not b) for a, b in pairs)}
        row["truth_se_median"] = float(np.median([v["truth_se"] for v in vs])) if vs else None
        out[key] = row
    # "Averaged over tasks" (the goal): each (task, n) weighs the same, whatever its number of decisions.
    cells = [row for key, row in out.items() if key != "all|all"]
    if "all|all" in out and cells:
        means = {m: float(np.mean([row["methods"][m]["regret_mean"] for row in cells])) for m in ("cv", "holdout")}
        out["all|all"]["task_averaged"] = {**means, "cells": len(cells),
                                           "ratio": means["cv"] / means["holdout"] if means["holdout"] else None}
    return out


def _f(x, digits=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ci(c):
    return "" if c is None or any(math.isnan(x) for x in c) else f" [{c[0]:.2f}, {c[1]:.2f}]"


def _rows(summary: dict):
    for key, row in sorted(summary.items(), key=lambda kv: (kv[0] == "all|all", kv[0])):
        yield (*key.split("|"), row)


def summary_tables(summary: dict, ci_methods: list[str]) -> list[str]:
    """The Markdown tables of one summary (one tier): regret and verdicts, the paired comparison, coverage,
    overfitting."""
    lines = ["Regret: held-out accuracy of the truly best variant minus that of the recommended one (model trained on "
             "all n rows, scored on the pool). `cv` = the study's verdicts; `holdout` = one 80/20 split; "
             "`uncorrected` = the same 5 folds with a plain paired t-test (its choice is the CV choice). Ties: "
             "decisions whose choice tied with another variant on the method's own score (the grid-order rule "
             "picked one), and the mean regret had the pick been random among them. Wrong: verdicts that point the "
             "wrong way on the pool, and (in brackets) those the pool itself resolves (exact McNemar p < 0.05); "
             "the rate is quoted from 30 verdicts on, and again over decisions (a decision's verdicts share its "
             "folds).", "",
             "| task | n | units | decisions | method | regret mean ± se | median | p90 | right choice | ties (random "
             "pick) | significant | wrong (resolved) | wrong rate [95%] | decisions with a verdict: wrong [95%] | "
             "best vs runner-up: significant (wrong) | not distinguishable | gap then (median, p90) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, n, row in _rows(summary):
        for method, m in row["methods"].items():
            rate = (f"{_f(m['wrong_rate'], 3)}{_ci(m['wrong_ci95'])}" if m["significant"] >= 30
                    else f"(< 30 verdicts){_ci(m['wrong_ci95']) if m['significant'] else ''}")
            per_decision = (f"{m['decisions_wrong']} of {m['decisions_significant']}"
                            f"{_ci(m['decisions_wrong_ci95']) if m['decisions_significant'] else ''}")
            lines.append(f"| {task} | {n} | {row['units']} | {row['decisions']} | {method} | "
                         f"{_f(m['regret_mean'])} ± {_f(m['regret_se'])} | {_f(m['regret_median'])} | "
                         f"{_f(m['regret_p90'])} | {_f(m['right_choice'], 2)} | {m['ties']} "
                         f"({_f(m['regret_random_tie_mean'])}) | {m['significant']} | {m['wrong']} "
                         f"({m['wrong_resolved']}) | {rate} | {per_decision} | {m['runner_up_significant']} "
                         f"({m['runner_up_wrong']}) | {m['not_distinguishable']} | {_f(m['nd_gap_median'])}, "
                         f"{_f(m['nd_gap_p90'])} |")
    averaged = summary.get("all|all", {}).get("task_averaged")
    if averaged:
        lines += ["", f"Averaged over the {averaged['cells']} (task, n) cells, each weighing the same: regret "
                      f"{_f(averaged['cv'])} (study) vs {_f(averaged['holdout'])} (holdout), ratio "
                      f"{_f(averaged['ratio'], 2)}."]
    lines += ["", "Paired: the study and the holdout split decide on the same unit and question. Holdout regret minus "
              "study regret (positive: the study lost less), mean ± standard error over units (a unit's decisions "
              "share its data); decisions each lost less on; units whose mean difference favours each, and the "
              "sign test over those units.", "",
              "| task | n | units | holdout − study regret | decisions: study better, tie, holdout better | units: "
              "study better, holdout better | sign test p (units) |", "|---|---|---|---|---|---|---|"]
    for task, n, row in _rows(summary):
        pr = row["paired"]
        lines.append(f"| {task} | {n} | {pr['units']} | {_f(pr['holdout_minus_cv_mean'])} ± {_f(pr['se_over_units'])} "
                     f"| {pr['cv_better']}, {pr['tie']}, {pr['holdout_better']} | {pr['units_cv_better']}, "
                     f"{pr['units_holdout_better']} | {_f(pr['sign_test_p'], 2)} |")
    lines += ["", "Coverage of each variant's stated 95% interval: `full` = the held-out accuracy of the model trained "
              "on all n rows [95%], `widened` = the same with each side widened for the truth's own noise "
              "(sqrt(side² + (1.96 se)²)), `ceiling` = what an interval exact for the true accuracy would measure "
              "against this noisy truth, `folds` = the mean held-out accuracy of the k fold models, median width. "
              "A variant trained in two study groups counts once.", "",
              "| task | n | truth se | " + " | ".join(f"{m}: n, full, widened, ceiling, folds, width" for m in ci_methods)
              + " |", "|---|---|---|" + "---|" * len(ci_methods)]
    for task, n, row in _rows(summary):
        cells = []
        for m in ci_methods:
            c = row["coverage"][m]
            cells.append(f"{c['n']}, {_f(c['full'], 2)}{_ci(c['full_ci95']) if c['n'] else ''}, "
                         f"{_f(c['full_widened'], 2)}, {_f(c['ceiling'], 2)}, {_f(c['folds'], 2)}, "
                         f"{_f(c['width_median'], 2)}")
        lines.append(f"| {task} | {n} | {_f(row['truth_se_median'])} | " + " | ".join(cells) + " |")
    everything = summary.get("all|all", {}).get("coverage", {})
    if everything and next(iter(everything.values()))["matched_n"]:
        matched = ", ".join(f"`{m}` {_f(c['matched_full'], 2)} (width {_f(c['matched_width_median'], 2)})"
                            for m, c in everything.items())
        lines += ["", f"On the {next(iter(everything.values()))['matched_n']} variants that have every interval "
                      f"(`nested` ran on some draws only), coverage of the all-rows model: {matched}."]
    lines += ["", "Overfitting: a variant is flagged when the study flags a majority of its folds, by either of its "
              "rules (`either`: eval loss rising, or a train-eval gap) or by the loss rule alone (`loss rise`); "
              "truth: the held-out loss of the model trained on all n rows ends more than 5% above its minimum.", "",
              "| task | n | rule | variants | agree | flag & rising | flag, not rising | rising, not flagged | neither |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task, n, row in _rows(summary):
        for flag, label in (("overfit_flag", "either"), ("loss_rise_flag", "loss rise")):
            o = row["overfitting"][flag]
            lines.append(f"| {task} | {n} | {label} | {o['n']} | {_f(o['agree'], 2)} | {o['flag_and_rising']} | "
                         f"{o['flag_not_rising']} | {o['rising_not_flagged']} | {o['neither']} |")
    return lines


def write_markdown(summaries: dict, meta: dict, ci_methods: list[str], path: Path, questions: dict) -> None:
    """`summaries`: tier -> summary (the cheap questions, and the expensive tier's full fine-tuning apart)."""
    lines = [f"# Decisions against held-out truth ({'smoke' if meta['smoke'] else meta['status']})", "",
             f"Grid hash `{meta['grid_hash']}` (benchmarks/decisions.py `GRID`, committed before any held-out number "
             f"was read). Units finished: {meta['units']} ({meta['units_by_task']}); compute {meta['compute_s']:.0f} s "
             f"in units (sum of unit wall times). Continue: `{meta['continue']}`."]
    titles = {"cheap": "Cheap tier: learning rate and probe vs baseline (linear probes), freeze depth",
              "expensive": "Expensive tier: pretrained vs scratch, full fine-tuning"}
    for tier, summary in summaries.items():
        if summary:
            lines += ["", f"## {titles.get(tier, tier)}", "", *summary_tables(summary, ci_methods)]
    lines += ["", "## Per question", "", "All tasks and sizes; `custom` is the freeze sweep.", "",
              "| question | decisions | regret cv (mean ± se) | regret holdout (mean ± se) | significant (wrong): "
              "cv, holdout, uncorrected |", "|---|---|---|---|---|"]
    for q, row in questions.items():
        verdicts = ", ".join(f"{row.get(f'{m}_significant', 0)} ({row.get(f'{m}_wrong', 0)})"
                             for m in ("cv", "holdout", "uncorrected"))
        lines.append(f"| {q} | {row['decisions']} | {_f(row.get('cv_mean'))} ± {_f(row.get('cv_se'))} | "
                     f"{_f(row.get('holdout_mean'))} ± {_f(row.get('holdout_se'))} | {verdicts} |")
    path.write_text("\n".join(lines) + "\n")


def plot_regret(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(k for k in summary if k != "all|all")
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(max(6.5, 2.0 + 1.5 * len(keys)), 3.8))
    width = 0.36
    # The uncorrected folds choose what the study chooses (same means): only their verdicts differ, so two bars.
    for i, (method, colour, label) in enumerate((("cv", "#2b6cb0", "hf_tlcv study (5 folds)"),
                                                 ("holdout", "#dd6b20", "one 80/20 holdout split"))):
        means = [summary[k]["methods"][method]["regret_mean"] or 0 for k in keys]
        ses = [summary[k]["methods"][method]["regret_se"] or 0 for k in keys]
        p90 = [summary[k]["methods"][method]["regret_p90"] or 0 for k in keys]
        x = np.arange(len(keys)) + (i - 0.5) * width
        ax.bar(x, means, width, yerr=ses, color=colour, capsize=3, label=f"{label}: mean ± s.e.")
        ax.scatter(x, p90, marker="_", s=300, color="black", zorder=3,
                   label="90th percentile" if i == 0 else None)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([f"{k.split('|')[0]}\nn={k.split('|')[1]} ({summary[k]['decisions']} dec.)" for k in keys],
                       fontsize=8)
    ax.set_ylabel("regret (held-out accuracy lost)")
    ax.set_title("Held-out accuracy lost by following the recommendation (lower is better)", fontsize=9)
    ax.axhline(0, color="black", linewidth=0.6)
    top = max([summary[k]["methods"][m]["regret_p90"] or 0 for k in keys for m in ("cv", "holdout")] + [0.01])
    ax.set_ylim(0, top * 1.1)
    handles, labels = ax.get_legend_handles_labels()  # under the axes: never over a bar, marker or tick
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aggregate(grid: dict, work_dir: Path, ci_methods: list[str], output: Path, smoke: bool, cont: str,
              plot: Path | None) -> dict:
    records, units, compute = [], {}, 0.0
    for marker in sorted(work_dir.glob(f"*/n*/draw*/{UNIT_DONE}")):
        unit = json.loads(marker.read_text())
        if unit.get("grid_hash") != GRID_HASH:
            print(f"skipping {marker.parent}: grid {unit.get('grid_hash')} is not {GRID_HASH}", file=sys.stderr)
            continue
        records += question_records(marker.parent, unit, grid, ci_methods)
        units[unit["task"]] = units.get(unit["task"], 0) + 1
        compute += unit["seconds"]
    # The expensive tier (full fine-tuning, some tasks only) is summarized apart from the cheap questions.
    summaries = {tier: summarize_records([r for r in records if r.get("tier", "cheap") == tier], ci_methods)
                 for tier in ("cheap", "expensive")}
    summary = summaries["cheap"]
    questions = by_question(records)
    meta = {"grid_hash": GRID_HASH, "grid": grid, "smoke": smoke, "units": sum(units.values()),
            "units_by_task": ", ".join(f"{t} {k}" for t, k in units.items()), "compute_s": compute,
            "continue": cont, "ci_methods": ci_methods, "status": "partial" if not smoke else "smoke",
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                       "summary_expensive": summaries["expensive"],
                                                       "by_question": questions, "records": records},
                                                      indent=1, default=float))
    write_markdown(summaries, meta, ci_methods, output.with_suffix(".md"), questions)
    if plot is not None:
        plot_regret(summary, plot)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run in a temporary folder (< 60 s)")
    parser.add_argument("--work-dir", default="outputs/decisions", help="where the unit run folders live")
    parser.add_argument("--draws", type=int, default=10, help="R: draws per task and size (capped by the rows)")
    parser.add_argument("--tasks", default=",".join(GRID["task_order"]))
    parser.add_argument("--sizes", default=",".join(map(str, GRID["sizes"])),
                        help="training-set sizes n; a task with its own sizes in GRID (digits) uses those")
    parser.add_argument("--tiers", default="cheap", help="cheap, or cheap,expensive")
    parser.add_argument("--ci-methods", default=",".join(CI_METHODS))
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--max-units", type=int, default=None, help="stop after this many new units")
    parser.add_argument("--output", default=None)
    ns = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    ci_methods = [m.strip() for m in ns.ci_methods.split(",") if m.strip()]
    unknown = sorted(set(ci_methods) - set(CI_METHODS))
    if unknown:
        parser.error(f"unknown --ci-methods {unknown}; known: {', '.join(CI_METHODS)}")
    if ns.smoke:
        import tempfile

        grid = {**GRID, **SMOKE}
        work_dir = Path(tempfile.mkdtemp(prefix="decisions_smoke_"))
        tasks, sizes, draws, tiers = list(SMOKE["tasks"]), SMOKE["sizes"], SMOKE["draws"], {"cheap"}
        output = Path(ns.output) if ns.output else work_dir / "decisions_smoke"
        plot = None
    else:
        grid = GRID
        work_dir = Path(ns.work_dir)
        tasks = [t.strip() for t in ns.tasks.split(",") if t.strip()]
        sizes = [int(s) for s in ns.sizes.split(",") if s.strip()]
        draws, tiers = ns.draws, {t.strip() for t in ns.tiers.split(",")}
        output = Path(ns.output) if ns.output else RESULTS / "decisions"
        # The docs' plot only with the committed results; results written elsewhere get their plot beside them.
        plot = DOCS / "decisions_regret.png" if not ns.output else output.with_name(output.name + "_regret.png")
    cont = (f"nice -n 19 .venv/bin/python benchmarks/decisions.py --work-dir {ns.work_dir} --draws {ns.draws} "
            f"--tasks {','.join(tasks)} --sizes {','.join(map(str, sizes))} --tiers {','.join(sorted(tiers))}")
    print(f"grid {GRID_HASH}; work dir {work_dir}", flush=True)
    if not ns.aggregate_only:
        data_cache: dict = {}
        new = 0
        for draw in range(draws):
            for task in tasks:
                # A task with its own sizes (digits: its pool allows only small draws) uses them.
                for n in grid["tasks"][task].get("sizes", sizes):
                    if ns.max_units is not None and new >= ns.max_units:
                        break
                    marker = work_dir / task / f"n{n}" / f"draw{draw}" / UNIT_DONE
                    before = marker.read_text() if marker.exists() else None
                    t0 = time.time()
                    unit = run_unit(grid, task, n, draw, work_dir, tiers, data_cache)
                    if unit is None:
                        continue
                    if marker.read_text() != before:
                        new += 1
                        print(f"unit {task} n={n} draw={draw}: {time.time() - t0:.0f} s", flush=True)
                        aggregate(grid, work_dir, ci_methods, output, ns.smoke, cont, plot)
    summary = aggregate(grid, work_dir, ci_methods, output, ns.smoke, cont, plot)
    print(output.with_suffix(".md").read_text())
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
