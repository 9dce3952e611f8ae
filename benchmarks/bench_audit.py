"""Benchmark: how well the audit (`hf_tlcv.audit.checks`) finds defects injected on purpose, and what it costs.

    .venv/bin/python benchmarks/bench_audit.py            # image + text, 1000 rows each (image: ~10 min CPU time)
    .venv/bin/python benchmarks/bench_audit.py --quick    # 200 rows, small images: checks that everything runs
    .venv/bin/python benchmarks/bench_audit.py --cases text --n_rows 400   # one case, fewer rows (its entry only)

For each case (the embedded image default: EfficientNet-Lite0 linear probe on Animal-MNIST at 128 px, lr 3e-3,
3 epochs; and text: all-MiniLM-L6-v2 on TREC with its bottom 4 of 6 layers frozen, max_length 64, lr 3e-4,
4 epochs; 5-fold, seed 42):

1. **clean**: cross-validate a stratified subset, audit it. Its time is the cost the audit is compared with; its
   label flags are the base rate of the untouched data (real errors and ambiguous rows).
2. **label noise**: flip 5% of the labels to another class (`inject_label_noise`), cross-validate, audit with the
   same embeddings: precision and recall of the label issues against the flipped rows, precision among the
   lowest-quality `n_flipped` rows, and the AUROC of the label-quality score.
3. **near-duplicates**: append augmented copies of 20% of the rows (`inject_near_duplicates`: images shifted by
   1-2 px, mirrored or with pixel noise; texts with changed punctuation, a dropped word or a typo), cross-validate
   ungrouped, audit: recall of the injected pairs (per augmentation) at several thresholds, extra pairs found,
   precision and recall of the leaked evaluations against the true ones (`leakage_truth`). Then cross-validate
   again grouped by the true copy groups (the oracle) and by the audit's proposed groups
   (`cross_validate_grouped`): the inflation is ungrouped minus oracle, paired on the same rows
   (`compare_grouped`), and the share of it that the audit's grouping removes is
   (ungrouped - audit-grouped) / (ungrouped - oracle).

Results: `benchmarks/results/audit.{json,md}` (`audit_quick.*` with `--quick`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
THRESHOLDS = (0.13, 0.25, 0.5, 1.0)
# thresholds whose proposed groups are cross-validated again (cleanlab's default, and a looser one)
GROUPED_THRESHOLDS = (0.13, 0.5)

CASES = {
    "image": dict(model="builtin:efficientnet-lite0", dataset="builtin:animal-mnist", column="image", n_rows=1000,
                  config=dict(finetune_strategy="linear_probe", image_size=128, learning_rate=3e-3,
                              num_train_epochs=3)),
    # When this case was chosen, MiniLM's linear probe read BERT's [CLS] pooler, which sentence-transformers never
    # trained: 0.48 accuracy on these 1000 TREC questions (measured), too weak for the out-of-fold probabilities to
    # mean much; the top two of its six layers trained on the cached output of the bottom four reach 0.91. Main now
    # reads MiniLM with its own mean pooling (KFoldConfig.text_pooling), so a linear probe may now be the cheaper case.
    "text": dict(model="builtin:minilm-l6", dataset="builtin:trec", column="text", n_rows=1000,
                 config=dict(finetune_strategy="freeze", freeze_layers=4, max_length=64, learning_rate=3e-4,
                             num_train_epochs=4)),
}
# Repeats of the near-duplicate runs, to tell the inflation from the noise of one fold assignment; a linear probe's
# repeats are cheap (the backbone runs once per run, not per repeat).
DUPLICATE_REPEATS = {"image": 3, "text": 1}
QUICK = {"image": dict(dataset="builtin:digits", n_rows=200, config=dict(image_size=32, learning_rate=3e-2)),
         "text": dict(n_rows=400, config=dict(num_train_epochs=1))}


def _config(output_dir: Path, **settings):
    from hf_tlcv import KFoldConfig

    return KFoldConfig(output_dir=str(output_dir), overwrite_output_dir=True, n_folds=5, seed=42,
                       per_device_train_batch_size=32, per_device_eval_batch_size=64, report_to="none",
                       disable_tqdm=True, use_cpu=True, save_fold_models=False, logging_steps=10, eval_on_train=False,
                       **settings)


def _cv(model, dataset, config):
    from hf_tlcv import KFoldTrainer

    start = time.perf_counter()
    trainer = KFoldTrainer(model, config, train_dataset=dataset)
    results = trainer.cross_validate()
    return trainer, results, time.perf_counter() - start


def _label_noise(case, base, embeddings, work: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    from hf_tlcv.audit.checks import audit
    from hf_tlcv.audit.injection import detection_scores, inject_label_noise

    noisy, flipped = inject_label_noise(base, 0.05, seed=1)
    _, results, seconds = _cv(case["model"], noisy, _config(work / "noisy", **case["config"]))
    report = audit(results, noisy, embeddings)
    scores = detection_scores(report.label_issues["row"], flipped)
    ranked = report.issues.sort_values(["label_score", "row"])["row"].to_numpy()
    is_flipped = np.isin(report.issues["row"], flipped)
    return {**scores, "cv_seconds": seconds, "accuracy": results.summary["accuracy"]["mean"],
            "precision_at_n_flipped": float(np.isin(ranked[: len(flipped)], flipped).mean()),
            "auroc": float(roc_auc_score(is_flipped, -report.issues["label_score"]))}


def _duplicates(name, case, base, work: Path) -> dict:
    from hf_tlcv.audit.checks import audit, compare_grouped, compute_embeddings, cross_validate_grouped
    from hf_tlcv.audit.injection import detection_scores, inject_near_duplicates, leakage_truth
    from hf_tlcv.folds import load_folds

    dup, source, augmentation = inject_near_duplicates(base, n_copies=len(base) // 5, column=case["column"], seed=2)
    config = _config(work / "dup", n_repeats=DUPLICATE_REPEATS[name], **case["config"])
    trainer, ungrouped, seconds = _cv(case["model"], dup, config)
    embeddings = compute_embeddings(case["model"], dup, image_size=case["config"].get("image_size"),
                                    max_length=case["config"].get("max_length"))
    folds = load_folds(work / "dup" / "folds.json")[0]
    truth = leakage_truth(folds, source)
    copies = np.arange(len(base), len(dup))
    out = {"n_rows": len(dup), "n_copies": len(copies), "n_repeats": config.n_repeats, "cv_seconds": seconds,
           "true_leaked_evaluations": len(truth), "thresholds": {}}
    reports = {}
    for threshold in THRESHOLDS:
        report = audit(ungrouped, dup, embeddings, near_duplicate_threshold=threshold)
        reports[threshold] = report
        found = report.groups[copies] == report.groups[source[copies]]
        rows = report.near_duplicate_pairs[["row_a", "row_b"]].to_numpy()
        extra = int((source[rows[:, 0]] != source[rows[:, 1]]).sum())
        flagged = {tuple(x) for x in report.leaked[["repeat", "fold", "row"]].itertuples(index=False)}
        leak = detection_scores(flagged, truth)
        out["thresholds"][str(threshold)] = {
            "pair_recall": float(found.mean()),
            "pair_recall_by_augmentation": {a: float(found[np.array(augmentation) == a].mean())
                                            for a in dict.fromkeys(augmentation)},
            "pairs_found": int(len(rows)), "extra_pairs": extra, "leakage": leak}
    oracle, oracle_cmp = cross_validate_grouped(trainer, source, output_dir=str(work / "dup-oracle"))
    inflation = oracle_cmp.inflation
    out.update({"accuracy": {"ungrouped": ungrouped.summary["accuracy"], "oracle_grouped": oracle.summary["accuracy"]},
                "inflation": oracle_cmp.to_dict(), "audit_grouped": {}})
    for threshold in GROUPED_THRESHOLDS:
        grouped, audit_cmp = cross_validate_grouped(trainer, reports[threshold].groups,
                                                    output_dir=str(work / f"dup-audit-{threshold}"))
        out["audit_grouped"][str(threshold)] = {
            "accuracy": grouped.summary["accuracy"], "vs_ungrouped": audit_cmp.to_dict(),
            "vs_oracle": compare_grouped(grouped, oracle).to_dict(),
            "inflation_removed": audit_cmp.inflation / inflation if inflation else float("nan")}
    return out


def run_case(name: str, case: dict, work: Path) -> dict:
    from hf_tlcv.assets import load_dataset
    from hf_tlcv.audit.checks import audit
    from hf_tlcv.data import subsample

    base = subsample(load_dataset(case["dataset"]), case["n_rows"], "label", seed=0)
    base = base.select_columns([case["column"], "label"])
    _, clean, cv_seconds = _cv(case["model"], base, _config(work / "clean", **case["config"]))
    report = audit(clean, base)  # with its own embedding pass: the cost to state
    report.save(work / "clean")
    row = {
        "case": name, "model": case["model"], "dataset": case["dataset"], "n_rows": len(base), **case["config"],
        "clean": {"accuracy": clean.summary["accuracy"], "cv_seconds": cv_seconds, "audit_seconds": report.seconds,
                  "audit_over_cv": sum(report.seconds.values()) / cv_seconds,
                  "label_issues": report.count("label"), "near_duplicates": report.count("near_duplicate"),
                  "outliers": report.count("outlier"), "leaked_evaluations": report.n_leaked},
        "label_noise": _label_noise(case, base, report.embeddings, work),
        "duplicates": _duplicates(name, case, base, work),
    }
    print(json.dumps(row, indent=1, default=float), flush=True)
    return row


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}%"


def to_markdown(rows: list[dict]) -> str:
    lines = ["### Label issues: 5% of the labels flipped", "",
             "| case | rows | CV accuracy clean / noisy | flagged (clean data) | flipped | flagged | precision | recall "
             "| precision among lowest n | AUROC |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        n = r["label_noise"]
        lines.append(f"| {r['case']} ({r['dataset']}) | {r['n_rows']} | {r['clean']['accuracy']['mean']:.3f} / "
                     f"{n['accuracy']:.3f} | {r['clean']['label_issues']} | {n['n_true']} | {n['n_flagged']} | "
                     f"{_pct(n['precision'])} | {_pct(n['recall'])} | {_pct(n['precision_at_n_flipped'])} | "
                     f"{n['auroc']:.3f} |")
    lines += ["", "### Near-duplicates: augmented copies of 20% of the rows", "",
              "| case | threshold | pairs found (extra) | pair recall | by augmentation | leaked evaluations true / "
              "flagged | leakage precision | leakage recall |", "|---|---:|---|---:|---|---|---:|---:|"]
    for r in rows:
        d = r["duplicates"]
        for t, s in d["thresholds"].items():
            by = ", ".join(f"{a} {_pct(v)}" for a, v in s["pair_recall_by_augmentation"].items())
            lines.append(f"| {r['case']} | {t} | {s['pairs_found']} ({s['extra_pairs']}) | {_pct(s['pair_recall'])} "
                         f"| {by} | {s['leakage']['n_true']} / {s['leakage']['n_flagged']} | "
                         f"{_pct(s['leakage']['precision'])} | {_pct(s['leakage']['recall'])} |")
    lines += ["", "### Inflation of the estimate, and how much of it grouping by the audit removes", "",
              "| case | ungrouped accuracy | grouped by true copies | inflation (paired, 95% interval, p) | "
              "audit threshold | grouped by the audit | share of the inflation removed |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        d = r["duplicates"]
        acc, inf = d["accuracy"], d["inflation"]["test"]
        for t, g in d["audit_grouped"].items():
            lines.append(f"| {r['case']} | {acc['ungrouped']['mean']:.4f} | {acc['oracle_grouped']['mean']:.4f} | "
                         f"{inf['mean_diff']:+.4f} [{inf['ci95'][0]:+.4f}, {inf['ci95'][1]:+.4f}], "
                         f"p = {inf['p_value']:.3g} | {t} | {g['accuracy']['mean']:.4f} | "
                         f"{_pct(g['inflation_removed'])} |")
    lines += ["", "### Cost (clean run)", "",
              "| case | cross-validation s | audit: embedding pass s | audit: cleanlab s | audit / CV |",
              "|---|---:|---:|---:|---:|"]
    for r in rows:
        c = r["clean"]
        lines.append(f"| {r['case']} | {c['cv_seconds']:.1f} | {c['audit_seconds'].get('embeddings', 0):.1f} | "
                     f"{c['audit_seconds']['cleanlab']:.1f} | {c['audit_over_cv']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 rows, small images: checks that it all runs")
    parser.add_argument("--cases", default="image,text", help="comma-separated: image, text")
    parser.add_argument("--n_rows", type=int, default=None, help="rows per case instead of the case's own")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        for name in args.cases.split(","):
            case = dict(CASES[name])
            if args.quick:
                quick = QUICK[name]
                case = {**case, **{k: v for k, v in quick.items() if k != "config"},
                        "config": {**case["config"], **quick.get("config", {})}}
            if args.n_rows:
                case["n_rows"] = args.n_rows
            rows.append(run_case(name, case, Path(tmp) / name))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "audit_quick" if args.quick else "audit"
    meta = {"python": sys.version.split()[0], "platform": platform.platform(), "threads": 1,
            "command": "benchmarks/bench_audit.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    # A case run alone replaces its own entry and keeps the others' (each entry records the command that made it).
    for row in rows:
        row["meta"] = meta
    path = RESULTS / f"{stem}.json"
    done = {row["case"] for row in rows}
    kept = [r for r in json.loads(path.read_text())["cases"] if r["case"] not in done] if path.exists() else []
    rows = sorted(kept + rows, key=lambda r: list(CASES).index(r["case"]))
    path.write_text(json.dumps({"cases": rows}, indent=1, default=float))
    markdown = to_markdown(rows)
    (RESULTS / f"{stem}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
