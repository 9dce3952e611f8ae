"""Benchmark: does the pretrained MiniLM beat a classical baseline on the builtin text datasets, on the same folds?

    .venv/bin/python benchmarks/bench_text.py                       # the table of docs/text.md
    .venv/bin/python benchmarks/bench_text.py --rows 200 --variants linear_probe,tfidf   # a quick check

For each dataset (a stratified sample of `--rows` rows), one `TransferStudy` with the `"baseline"` question and the
strategies as variants: every variant (and the TF-IDF + logistic-regression baseline) runs on the same `folds.json`
(grouped folds on the datasets' `group` column, so near-duplicate texts never straddle train and eval). The table
gives each variant's mean accuracy, its 95% corrected interval and the paired difference to the baseline with the
corrected t-test's p-value. Writes `benchmarks/results/text.md` and `text.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATASETS = ("movie-snippets", "trec", "sms-spam")
# Each strategy with the settings docs/text.md states as the text defaults for it.
STRATEGIES = {
    "linear_probe": dict(finetune_strategy="linear_probe", learning_rate=1e-2),
    # the same probe on BERT's [CLS] pooler, as transformers builds the model (hf_tlcv before text_pooling)
    "linear_probe_pooler": dict(finetune_strategy="linear_probe", learning_rate=1e-2, text_pooling="pooler"),
    "freeze": dict(finetune_strategy="freeze", freeze_layers=4, learning_rate=1e-4),
    "lora": dict(finetune_strategy="lora", learning_rate=1e-3),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--variants", default="linear_probe,freeze,lora,tfidf")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--output", default=str(RESULTS / "text"))
    ns = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import tempfile

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from hf_tlcv import KFoldConfig, TransferStudy, load_data
    from hf_tlcv.data import subsample
    from hf_tlcv.studies.study import compare

    variants = [v.strip() for v in ns.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(STRATEGIES) - {"tfidf"})
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(STRATEGIES)}, tfidf")
    workdir = Path(ns.workdir or tempfile.mkdtemp(prefix="bench_text_"))
    rows, records = [], []
    for name in [d.strip() for d in ns.datasets.split(",") if d.strip()]:
        data = subsample(load_data(f"builtin:{name}"), ns.rows, seed=0)
        args = KFoldConfig(output_dir=str(workdir / name), n_folds=ns.folds, group_column="group",
                           num_train_epochs=ns.epochs, max_length=ns.max_length, per_device_train_batch_size=32,
                           per_device_eval_batch_size=64, save_fold_models=False, disable_tqdm=True, report_to="none",
                           **STRATEGIES["linear_probe"])
        trained = {v: STRATEGIES[v] for v in variants if v in STRATEGIES}
        start = time.perf_counter()
        study = TransferStudy("builtin:minilm-l6", data, args, questions="baseline" if "tfidf" in variants else (),
                              variants=trained if len(trained) >= 2 else None)
        report = study.run()
        wall = time.perf_counter() - start
        baseline = report.variants.get("baseline")
        for variant, cv in report.variants.items():
            if variant == "pretrained" and "linear_probe" in report.variants:
                continue  # the same run as linear_probe (the study's base setup is the probe)
            acc = cv.summary["accuracy"]
            shown = {"baseline": "tfidf", "pretrained": "linear_probe"}.get(variant, variant)
            record = dict(dataset=name, variant=shown, rows=len(data),
                          mean=acc["mean"], std=acc["std"], ci95=acc["ci95"])
            if baseline is not None and variant != "baseline":
                c = compare(cv, baseline, "accuracy")
                record.update(diff=c["mean_diff"], diff_ci95=c["ci95"], p=c["p_value"])
            records.append(record)
        rows.append((name, wall))
        print(f"{name}: {len(data)} rows, {wall:.0f} s", file=sys.stderr)
    lines = [f"MiniLM-L6 (builtin:minilm-l6, mean pooling read from its folder) vs. TF-IDF + logistic regression, "
             f"{ns.rows} rows per dataset, {ns.folds} grouped stratified folds, {ns.epochs} epochs, max_length "
             f"{ns.max_length}; command: `python benchmarks/bench_text.py {' '.join(argv or sys.argv[1:])}`",
             "", "| dataset | variant | accuracy (mean ± std) | 95% corrected CI | vs. TF-IDF (paired) | p |",
             "|---|---|---|---|---|---|"]
    for r in records:
        diff = f"{r['diff']:+.3f} [{r['diff_ci95'][0]:+.3f}, {r['diff_ci95'][1]:+.3f}]" if "diff" in r else ""
        p = f"{r['p']:.3g}" if "p" in r else ""
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['mean']:.3f} ± {r['std']:.3f} | "
                     f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {diff} | {p} |")
    lines.append("")
    lines.append("Wall time per dataset (all variants, one after another): "
                 + ", ".join(f"{n} {w:.0f} s" for n, w in rows))
    out = Path(ns.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(records, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
