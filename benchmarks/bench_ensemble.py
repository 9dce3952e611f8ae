"""Benchmark: the fold ensemble's prediction cost with frozen strategies, against one fold model, in the same run.

    .venv/bin/python benchmarks/bench_ensemble.py                  # EfficientNet-Lite0, 128 px, k=5, 300 images
    .venv/bin/python benchmarks/bench_ensemble.py --rows 60 --predict 60    # a quick check

For `linear_probe` and `freeze` (8 and 14 of 16 blocks), a k-fold run saves its fold models; then, interleaved and repeated:
`one` (a one-fold ensemble, `KFoldEnsemble.from_pretrained(run, folds=["fold_0_0"])`, the model run whole),
`one_shared` (the same one-fold ensemble through the shared path: the frozen part, then one trained part), `shared`
(the k-fold ensemble, frozen part once: the default) and `whole` (`share_frozen=False`: k whole models).
Each time includes preprocessing the raw images. Reports medians, the ratios to `one` and the largest probability
difference between `shared` and `whole`. One thread; the ratios are the numbers to read on a shared machine.

The least an ensemble that runs k different trained parts can cost is `one + (k-1) * trained part`:
`(shared - one_shared) / (k - 1)` measures one trained part, and `one_shared / one` what the shared path adds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# freeze8: half of Lite0's 16 blocks trained; freeze14: only the top two (and the final 1x1 convolution) trained
STRATEGIES = {"linear_probe": {}, "freeze8": {"finetune_strategy": "freeze", "freeze_layers": 8},
              "freeze14": {"finetune_strategy": "freeze", "freeze_layers": 14}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100, help="rows cross-validated (to get the fold models)")
    parser.add_argument("--predict", type=int, default=300, help="images predicted")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results" / "ensemble"))
    ns = parser.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from hf_tlcv import KFoldConfig, KFoldEnsemble, KFoldTrainer, load_data
    from hf_tlcv.data import subsample

    data = load_data("builtin:animal-mnist").shuffle(seed=0)
    train, images = subsample(data, ns.rows, seed=0), list(data.select(range(ns.rows, ns.rows + ns.predict))["image"])
    work = Path(tempfile.mkdtemp(prefix="bench_ensemble_"))
    records = []
    for name, overrides in STRATEGIES.items():
        args = KFoldConfig(output_dir=str(work / name), n_folds=ns.k, num_train_epochs=1, image_size=ns.image_size,
                           learning_rate=1e-3, save_fold_models=True, disable_tqdm=True, report_to="none",
                           eval_on_train=False, **{"finetune_strategy": "linear_probe", **overrides})
        KFoldTrainer("builtin:efficientnet-lite0", args, train_dataset=train).cross_validate()
        one = KFoldEnsemble.from_pretrained(work / name, folds=["fold_0_0"])
        ensemble = KFoldEnsemble.from_pretrained(work / name)
        runs = {"one": lambda: one.predict(images, share_frozen=False), "one_shared": lambda: one.predict(images),
                "shared": lambda: ensemble.predict(images), "whole": lambda: ensemble.predict(images, share_frozen=False)}
        times, outputs = {v: [] for v in runs}, {}
        for _ in range(ns.repeats):
            for variant, run in runs.items():  # interleaved: one, one_shared, shared, whole, one, ...
                start = time.perf_counter()
                outputs[variant] = run()
                times[variant].append(time.perf_counter() - start)
        median = {v: statistics.median(t) for v, t in times.items()}
        diff = float(np.abs(outputs["shared"].fold_probabilities - outputs["whole"].fold_probabilities).max())
        trained_part = (median["shared"] - median["one_shared"]) / (ns.k - 1)
        records.append(dict(strategy=name, k=ns.k, images=ns.predict, image_size=ns.image_size, **{
            f"{v}_s": median[v] for v in runs}, shared_over_one=median["shared"] / median["one"],
            trained_part_over_one=trained_part / median["one"], overhead=median["one_shared"] / median["one"],
            whole_over_one=median["whole"] / median["one"], max_prob_diff=diff, times=times))
        print(f"{name}: {median}", file=sys.stderr)
    lines = [f"KFoldEnsemble.predict, EfficientNet-Lite0 at {ns.image_size} px, k={ns.k}, {ns.predict} raw images, "
             f"1 thread, medians of {ns.repeats} interleaved repeats; command: "
             f"`python benchmarks/bench_ensemble.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| strategy | one model s | ensemble, frozen part shared s | ensemble, k whole models s | "
             "shared / one | whole / one | one trained part / one model | one model via the shared path / one model | "
             "max prob diff shared vs whole |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['strategy']} | {r['one_s']:.2f} | {r['shared_s']:.2f} | {r['whole_s']:.2f} | "
                     f"**{r['shared_over_one']:.2f}x** | {r['whole_over_one']:.2f}x | {r['trained_part_over_one']:.2f} | "
                     f"{r['overhead']:.2f}x | {r['max_prob_diff']:.1e} |")
    out = Path(ns.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(records, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
