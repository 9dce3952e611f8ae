"""Benchmark: hf_tlcv's k-fold cross-validation against the naive loop, in the same run, on the same data.

    .venv/bin/python benchmarks/bench_cv.py            # the full table (about 25 min of one free CPU core)
    .venv/bin/python benchmarks/bench_cv.py --quick    # small sizes, a few minutes: checks that it all runs
    .venv/bin/python benchmarks/bench_cv.py --sizes    # the linear probe at 200, 500 and 1000 rows, one run

Variants, each run in its own subprocess (so that its peak memory is its own), one thread each:

- `hf_tlcv`: `KFoldTrainer(model_path, args, train_dataset=raw).cross_validate()`: the pretrained weights read
  once, preprocessing once, the frozen part run once (frozen-feature cache), plots and result files included.
- `naive`: what accelerate's `examples/by_feature/cross_validation.py` does with a `transformers.Trainer`: per
  fold, the model is loaded from disk again, the fold's rows are preprocessed again, every layer runs at every
  step, and a plain `Trainer` trains and evaluates it. Same folds (`hf_tlcv.folds.make_folds`), seed, head
  initialisation, strategy (`hf_tlcv.strategies.apply_strategy`), epochs, batch sizes and eval work
  (fold eval + eval on the training rows) as `hf_tlcv`, so the metrics must agree.
- `floor` (linear probe only): the least any linear-probe cross-validation can do: preprocessing once, one
  forward pass of the backbone over all rows, then per fold a plain PyTorch loop training and evaluating the head.

Variants are interleaved (A B A B ...) and repeated; the report gives medians and ratios. Absolute times are
noisy (shared cores); ratios measured within one run are the numbers to read. Peak memory is each subprocess's
RSS high-water mark (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), which includes torch and transformers
themselves (about 0.5 GB).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# One scenario per row of the main table. Sizes are chosen so that each variant's time is dominated by model
# compute rather than fixed start-up costs, within a run of about 30 minutes on one thread.
SCENARIOS = {
    "lite0-linear_probe": dict(model="lite0", strategy="linear_probe", image_size=128, n_rows=200, epochs=2,
                               variants=("hf_tlcv", "naive", "floor"), lr=1e-3),
    "lite0-freeze8": dict(model="lite0", strategy="freeze", freeze_layers=8, image_size=128, n_rows=160, epochs=2,
                          variants=("hf_tlcv", "naive"), lr=1e-3),
    "lite0-full": dict(model="lite0", strategy="full", image_size=128, n_rows=120, epochs=1,
                       variants=("hf_tlcv", "naive"), lr=1e-3),
    "lite0-lora": dict(model="lite0", strategy="lora", image_size=128, n_rows=120, epochs=1,
                       variants=("hf_tlcv", "naive"), lr=1e-3),
    "vit6-freeze3": dict(model="vit6", strategy="freeze", freeze_layers=3, image_size=128, n_rows=160, epochs=2,
                         variants=("hf_tlcv", "naive"), lr=1e-3),
    "vit6-linear_probe": dict(model="vit6", strategy="linear_probe", image_size=128, n_rows=160, epochs=2,
                              variants=("hf_tlcv", "naive", "floor"), lr=1e-3),
    # The linear probe at more rows (--sizes runs them with the 200-row one; not in the default set: the naive loop
    # takes ~6 min at 1000 rows).
    "lite0-linear_probe-500": dict(model="lite0", strategy="linear_probe", image_size=128, n_rows=500, epochs=2,
                                   variants=("hf_tlcv", "naive", "floor"), lr=1e-3),
    "lite0-linear_probe-1000": dict(model="lite0", strategy="linear_probe", image_size=128, n_rows=1000, epochs=2,
                                    variants=("hf_tlcv", "naive", "floor"), lr=1e-3),
}
DEFAULT_SCENARIOS = [name for name in SCENARIOS if not name.endswith(("-500", "-1000"))]
SIZES = ["lite0-linear_probe", "lite0-linear_probe-500", "lite0-linear_probe-1000"]
# How time grows with k and with the number of rows (ViT-6, linear probe).
SCALING = dict(model="vit6", image_size=128, epochs=2, lr=1e-3, ks=(2, 5, 10), n_rows=(80, 160, 320), base_k=5,
               base_n=160)
QUICK = dict(n_rows=80, epochs=1, image_size_lite0=64, image_size_vit=128)


# ---- shared pieces ---------------------------------------------------------------------------------------------
def _setup_env(workdir: Path) -> None:
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                      HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      HF_HUB_DISABLE_TELEMETRY="1", HF_TLCV_FEATURE_CACHE=str(workdir / "feature_cache"))


def _load_rows(spec: dict):
    from hf_tlcv.assets import load_dataset
    from hf_tlcv.data import subsample

    return subsample(load_dataset("builtin:animal-mnist"), spec["n_rows"], seed=0)


def _args_dict(spec: dict, output_dir: str) -> dict:
    """The TrainingArguments both variants share."""
    return dict(output_dir=output_dir, num_train_epochs=spec["epochs"], per_device_train_batch_size=32,
                per_device_eval_batch_size=64, learning_rate=spec["lr"], seed=0, use_cpu=True, report_to="none",
                disable_tqdm=True, save_strategy="no", logging_strategy="no", eval_strategy="no",
                dataloader_num_workers=0)


def _model_path(spec: dict, workdir: Path) -> str:
    if spec["model"] == "lite0":
        return "builtin:efficientnet-lite0"
    return str(Path(spec["workdir"]) / "vit6")


def _make_vit(workdir: Path) -> None:
    """A 6-layer ViT built from a config (random weights), saved like a pretrained checkpoint."""
    import torch
    import transformers as tf

    folder = workdir / "vit6"
    if folder.exists():
        return
    torch.manual_seed(0)
    config = tf.ViTConfig(image_size=128, patch_size=16, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                          intermediate_size=768, num_labels=10)
    tf.ViTForImageClassification(config).save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 128, "width": 128}).save_pretrained(folder)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# ---- the variants (each in its own subprocess) ------------------------------------------------------------------
def run_hf_tlcv(spec: dict, workdir: Path) -> dict:
    from hf_tlcv import KFoldConfig, KFoldTrainer

    raw = _load_rows(spec)
    start = time.perf_counter()
    extra = {"freeze_layers": spec["freeze_layers"]} if spec.get("freeze_layers") else {}
    args = KFoldConfig(**_args_dict(spec, str(workdir / "hf_tlcv")), n_folds=spec["k"], fold_seed=0,
                       finetune_strategy=spec["strategy"], image_size=spec["image_size"], save_fold_models=False,
                       overwrite_output_dir=True, metrics=["accuracy"], **extra)
    trainer = KFoldTrainer(_model_path(spec, workdir), args, train_dataset=raw)
    cv = trainer.cross_validate()
    wall = time.perf_counter() - start
    oof = cv.oof_predictions.sort_values("row")
    cache = trainer.feature_cache
    return dict(wall_s=wall, accuracy=[f.eval_metrics["accuracy"] for f in cv.folds],
                oof=oof.filter(like="prob_").to_numpy().tolist(), train_eval_s=cv.seconds.get("train_eval", 0.0),
                cache_mb=cache.nbytes / 2**20 if cache is not None else None,
                cache_note=cache.describe() if cache is not None else getattr(trainer, "feature_cache_reason", ""))


def run_naive(spec: dict, workdir: Path) -> dict:
    """accelerate's cross-validation example with a plain Trainer: everything again in every fold."""
    import numpy as np
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import set_seed

    from hf_tlcv.data import label_names, num_labels, preprocess
    from hf_tlcv.folds import make_folds
    from hf_tlcv.metrics import build_compute_metrics
    from hf_tlcv.modeling import load_classifier, load_processor

    raw = _load_rows(spec)
    start = time.perf_counter()
    path = _model_path(spec, workdir)
    names, n_labels = label_names(raw, "label"), num_labels(raw, "label")
    processor = load_processor(path)
    folds = make_folds(raw, strategy="stratified", n_folds=spec["k"], seed=0, label_column="label")
    strategy_args = argparse.Namespace(finetune_strategy=spec["strategy"], freeze_layers=spec.get("freeze_layers", 0),
                                       layerwise_lr_decay=None, lora_r=8, lora_alpha=16, lora_dropout=0.1,
                                       lora_target_modules=None)
    oof = np.zeros((len(raw), n_labels))
    accuracy, train_eval_s = [], 0.0
    for fold in folds:
        set_seed(0)  # the head is drawn from the seed, as hf_tlcv draws its one head
        loaded = load_classifier(path, names, n_labels)  # from disk, every fold
        train_ds = preprocess(raw.select(fold.train_indices), processor, image_size=spec["image_size"])
        eval_ds = preprocess(raw.select(fold.eval_indices), processor, image_size=spec["image_size"])
        args = TrainingArguments(**_args_dict(spec, str(workdir / "naive" / fold.name)))
        # What a user writes for one fold: seed, build the model with its strategy (LoRA adapters draw their initial
        # weights here), then Trainer(model=...), which seeds again before training (dropout draws from there).
        set_seed(args.seed)
        model = _strategy_applied_copy(loaded, strategy_args)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          compute_metrics=build_compute_metrics(["accuracy"]))
        trainer.train()
        prediction = trainer.predict(eval_ds)
        tick = time.perf_counter()
        trainer.predict(train_ds)  # the same eval work as hf_tlcv's eval_on_train
        train_eval_s += time.perf_counter() - tick
        logits = prediction.predictions
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        oof[fold.eval_indices] = probs / probs.sum(-1, keepdims=True)
        accuracy.append(prediction.metrics["test_accuracy"])
        del trainer, model, loaded
    wall = time.perf_counter() - start
    return dict(wall_s=wall, accuracy=accuracy, oof=oof.tolist(), train_eval_s=train_eval_s)


def _strategy_applied_copy(model, strategy_args):
    from hf_tlcv.strategies import apply_strategy

    return apply_strategy(copy.deepcopy(model), strategy_args)


def run_floor(spec: dict, workdir: Path) -> dict:
    """Linear-probe floor: preprocessing once, one backbone pass over all rows, then a bare head-training loop."""
    import numpy as np
    import torch
    from transformers.trainer_utils import set_seed

    from transformers import default_data_collator

    from hf_tlcv.cache import _batch
    from hf_tlcv.data import label_names, num_labels, preprocess
    from hf_tlcv.folds import make_folds
    from hf_tlcv.modeling import load_classifier, load_processor
    from hf_tlcv.strategies import discover_layout

    raw = _load_rows(spec)
    start = time.perf_counter()
    path = _model_path(spec, workdir)
    set_seed(0)
    model = load_classifier(path, label_names(raw, "label"), num_labels(raw, "label")).eval()
    data = preprocess(raw, load_processor(path), image_size=spec["image_size"])
    layout = discover_layout(model)
    backbone, head = model.get_submodule(layout.backbone), model.get_submodule(layout.head[0])
    feats = []
    with torch.no_grad():
        for i in range(0, len(data), 64):
            batch = _batch(data, i, min(i + 64, len(data)), default_data_collator)  # the fastest read of the rows
            out = backbone(pixel_values=batch["pixel_values"])
            feats.append(out.pooler_output if getattr(out, "pooler_output", None) is not None
                         else out.last_hidden_state[:, 0])
    x, y = torch.cat(feats), torch.as_tensor(np.asarray(raw["label"]))
    folds = make_folds(raw, strategy="stratified", n_folds=spec["k"], seed=0, label_column="label")
    for fold in folds:
        fold_head = copy.deepcopy(head).train()
        opt = torch.optim.AdamW(fold_head.parameters(), lr=spec["lr"], weight_decay=0.0)
        tr = torch.as_tensor(fold.train_indices)
        steps = spec["epochs"] * -(-len(tr) // 32)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
        g = torch.Generator().manual_seed(0)
        for _ in range(spec["epochs"]):
            for b in tr[torch.randperm(len(tr), generator=g)].split(32):
                loss = torch.nn.functional.cross_entropy(fold_head(x[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        with torch.no_grad():
            fold_head.eval()(x[torch.as_tensor(fold.eval_indices)]).softmax(-1)
            fold_head(x[tr]).argmax(-1)
    return dict(wall_s=time.perf_counter() - start)


VARIANTS = {"hf_tlcv": run_hf_tlcv, "naive": run_naive, "floor": run_floor}


def worker(spec: dict) -> None:
    workdir = Path(spec["workdir"])
    _setup_env(Path(tempfile.mkdtemp(dir=workdir)))
    import datasets
    import torch

    torch.set_num_threads(1)
    datasets.disable_caching()  # no variant may reuse another's (or an earlier repeat's) preprocessing
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    result = VARIANTS[spec["variant"]](spec, Path(tempfile.mkdtemp(dir=workdir)))
    result["peak_rss_mb"] = _peak_rss_mb()
    print("BENCH_RESULT " + json.dumps(result))


# ---- the orchestration -----------------------------------------------------------------------------------------
def run_variant(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {spec['variant']} of {spec.get('name')} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("BENCH_RESULT "))


def compare(name: str, spec: dict, repeats: int, log) -> dict:
    """Run the variants of one scenario interleaved (A B C A B C ...), `repeats` times; medians and ratios."""
    import numpy as np

    runs: dict[str, list[dict]] = {v: [] for v in spec["variants"]}
    for r in range(repeats):
        for variant in spec["variants"]:
            result = run_variant({**spec, "variant": variant, "name": name})
            runs[variant].append(result)
            log(f"  {name} {variant} repeat {r + 1}: {result['wall_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB")
    med = {v: statistics.median(x["wall_s"] for x in rs) for v, rs in runs.items()}
    rss = {v: statistics.median(x["peak_rss_mb"] for x in rs) for v, rs in runs.items()}
    train_eval = {v: statistics.median(x["train_eval_s"] for x in rs) for v, rs in runs.items() if v != "floor"}
    row = dict(scenario=name, spec={k: v for k, v in spec.items() if k not in ("variants", "workdir")},
               wall_s=med, peak_rss_mb=rss, repeats=repeats, train_eval_s=train_eval,
               all_wall_s={v: [x["wall_s"] for x in rs] for v, rs in runs.items()})
    hf = runs["hf_tlcv"][0]
    row["accuracy_hf_tlcv"] = float(np.mean(hf["accuracy"]))
    row["cache"] = hf.get("cache_note")
    if "naive" in runs:
        naive = runs["naive"][0]
        row.update(speedup=med["naive"] / med["hf_tlcv"], rss_ratio=rss["hf_tlcv"] / rss["naive"],
                   max_abs_prob_diff=float(np.abs(np.asarray(hf["oof"]) - np.asarray(naive["oof"])).max()),
                   accuracy_diff=float(abs(np.mean(hf["accuracy"]) - np.mean(naive["accuracy"]))))
    if "floor" in med:
        row["vs_floor"] = med["hf_tlcv"] / med["floor"]
        if "naive" in med:  # the most any linear-probe cross-validation could gain over the naive loop
            row["ceiling"] = med["naive"] / med["floor"]
    return row


def scaling(repeats: int, workdir: Path, quick: bool, log) -> list[dict]:
    s = SCALING
    rows = []
    points = [("k", k, s["base_n"]) for k in s["ks"]] + [("n_rows", n, s["base_k"]) for n in s["n_rows"]
                                                        if n != s["base_n"]]
    strategy = "linear_probe"
    for axis, value, other in points:
        k, n = (value, other) if axis == "k" else (other, value)
        spec = dict(model=s["model"], strategy=strategy, image_size=s["image_size"], epochs=s["epochs"],
                    lr=s["lr"], k=k, n_rows=n, workdir=str(workdir))
        if quick:
            if k > 5:  # 10 stratified folds need 10 rows of every class, more than a quick run has
                continue
            spec.update(n_rows=max(50, n // 4), image_size=QUICK["image_size_vit"], epochs=1)
        times = {}
        for variant in ("hf_tlcv", "naive"):
            walls = [run_variant({**spec, "variant": variant, "name": "scaling"})["wall_s"]
                     for _ in range(repeats)]
            times[variant] = statistics.median(walls)
        log(f"  scaling {strategy} k={k} n={spec['n_rows']}: hf_tlcv {times['hf_tlcv']:.1f} s, naive {times['naive']:.1f} s")
        rows.append(dict(strategy=strategy, k=k, n_rows=spec["n_rows"], epochs=spec["epochs"], hf_tlcv_s=times["hf_tlcv"],
                         naive_s=times["naive"], speedup=times["naive"] / times["hf_tlcv"]))
    return rows


def markdown(report: dict) -> str:
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; each variant in its own subprocess with 1 thread; "
        f"medians of {report['repeats']} interleaved repeats. Absolute times are noisy (cores shared with other "
        "jobs); read the ratios.",
    ]
    if report["scenarios"]:
        lines += [
            "",
            "| scenario | rows x px, k, epochs | hf_tlcv s | naive s | speed-up | floor s | hf_tlcv / floor | "
            "naive / floor (ceiling) | eval_on_train pass s, hf_tlcv / naive | peak RSS hf_tlcv / naive MB | "
            "accuracy | acc. diff | max prob diff | cache |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in report["scenarios"]:
        s, wall, rss, te = r["spec"], r["wall_s"], r["peak_rss_mb"], r.get("train_eval_s", {})
        floor, naive = wall.get("floor"), wall.get("naive")
        lines.append(
            f"| {r['scenario']} | {s['n_rows']} x {s['image_size']}, {s['k']}, {s['epochs']} | "
            f"{wall['hf_tlcv']:.1f} | {'-' if naive is None else f'{naive:.1f}'} | "
            f"{'-' if naive is None else '**%.2fx**' % r['speedup']} | "
            f"{'' if floor is None else f'{floor:.1f}'} | "
            f"{'' if floor is None else '**%.2fx**' % r['vs_floor']} | "
            f"{'' if 'ceiling' not in r else '%.1fx' % r['ceiling']} | "
            f"{te.get('hf_tlcv', float('nan')):.1f} / {te.get('naive', float('nan')):.1f} | "
            f"{rss['hf_tlcv']:.0f} / {rss.get('naive', float('nan')):.0f} | {r['accuracy_hf_tlcv']:.3f} | "
            f"{r.get('accuracy_diff', float('nan')):.1e} | {r.get('max_abs_prob_diff', float('nan')):.1e} | "
            f"{r.get('cache') or ''} |")
    if report.get("scaling"):
        runs = report.get("scaling_repeats", 1)
        epochs = report["scaling"][0].get("epochs", SCALING["epochs"])
        lines += ["", f"How time grows with k and with the number of rows (ViT-6 linear probe, 128 px, {epochs} "
                  f"epoch(s); median of {runs} run(s) per point):", "",
                  "| strategy | k | rows | hf_tlcv s | naive s | speed-up |", "|---|---|---|---|---|---|"]
        for r in report["scaling"]:
            lines.append(f"| {r['strategy']} | {r['k']} | {r['n_rows']} | {r['hf_tlcv_s']:.1f} | {r['naive_s']:.1f} "
                         f"| {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the whole benchmark")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per scenario (default 2, 1 "
                        "with --quick)")
    parser.add_argument("--scenarios", nargs="*", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS),
                        help="rows of the main table to run (none: only the scaling table)")
    parser.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS),
                        help="run only these variants of each scenario (hf_tlcv is always run)")
    parser.add_argument("--sizes", action="store_true", help=f"the linear-probe table: {', '.join(SIZES)}, one "
                        "repeat, no scaling table, into benchmarks/results/linear_probe_sizes.json")
    parser.add_argument("--k", type=int, default=5, help="number of folds of the main table")
    parser.add_argument("--no-scaling", action="store_true", help="skip the k / dataset-size table")
    parser.add_argument("--scaling-repeats", type=int, default=1)
    parser.add_argument("--output", default=None, help="JSON report path (default benchmarks/results/"
                        "[quick_]latest.json, with a .md beside it)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        worker(json.loads(opts.worker))
        return
    if opts.sizes:
        opts.scenarios, opts.no_scaling = SIZES, True
        opts.output = opts.output or str(RESULTS / ("quick_linear_probe_sizes.json" if opts.quick
                                                    else "linear_probe_sizes.json"))
    repeats = opts.repeats or (1 if opts.quick or opts.sizes else 2)
    workdir = Path(tempfile.mkdtemp(prefix="hf_tlcv_bench_"))
    _setup_env(workdir)
    _make_vit(workdir)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    report = dict(command="benchmarks/bench_cv.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
                  repeats=repeats, scaling_repeats=opts.scaling_repeats, scenarios=[], scaling=[])
    for name in opts.scenarios:
        spec = dict(SCENARIOS[name], k=opts.k, workdir=str(workdir))
        if opts.variants:
            spec["variants"] = tuple(v for v in spec["variants"] if v == "hf_tlcv" or v in opts.variants)
        if opts.quick:
            size = QUICK["image_size_lite0"] if spec["model"] == "lite0" else QUICK["image_size_vit"]
            spec.update(n_rows=QUICK["n_rows"], epochs=QUICK["epochs"], image_size=size)
        log(f"{name}: {spec['strategy']} on {spec['model']}, {spec['n_rows']} rows at {spec['image_size']} px, "
            f"k={spec['k']}, {spec['epochs']} epochs")
        report["scenarios"].append(compare(name, spec, repeats, log))
    if not opts.no_scaling:
        report["scaling"] = scaling(opts.scaling_repeats, workdir, opts.quick, log)
    output = Path(opts.output) if opts.output else RESULTS / ("quick_latest.json" if opts.quick else "latest.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    output.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
