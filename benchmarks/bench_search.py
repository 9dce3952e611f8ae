"""Benchmark: hyperparameter search on cross-validation, and fold jobs on Ray; every comparison within one run.

    .venv/bin/python benchmarks/bench_search.py            # the full set (about 40 min of 2 free CPU cores)
    .venv/bin/python benchmarks/bench_search.py --quick    # tiny sizes, a few minutes: checks that it all runs
    .venv/bin/python benchmarks/bench_search.py --medium   # smaller searches, Ray at full size (~30 min shared)
    .venv/bin/python benchmarks/bench_search.py --only ray # one part: pruning, cache or ray

1. **pruning**: the same search (space, sampler seed, trial budget) with Optuna's median pruner on the fold-level
   reports and without pruning: fold trainings, wall time, and whether both choose the same configuration.
2. **cache**: a search whose trials share one frozen part (linear probes), with the trials reading one on-disk
   frozen-feature cache (`feature_cache="auto"`, what a search does) against each trial computing its own in memory
   (`feature_cache="memory"`): wall time, caches computed, and the trials' values (they must be equal).
3. **ray**: one cross-validation with its folds as Ray tasks on a local cluster of 2 CPUs against 1 CPU (one CPU per
   fold job): folds per minute, cold (the Ray workers import torch and transformers first) and warm (a second run on
   the same cluster), and the largest difference of any out-of-fold probability between the two (must be ~0).

Each variant runs in its own subprocess with one torch thread per process (`OMP_NUM_THREADS=1`). Models and data:
the embedded EfficientNet-Lite0 (`builtin:efficientnet-lite0`, 16 blocks) on `builtin:animal-mnist` for the
searches; a 4-layer ViT built from a config on synthetic 32 px images for Ray (compute-bound folds). Absolute times
on shared cores are noisy; the ratios measured within one run are the numbers to read. Results go to
`benchmarks/results/search.{json,md}` (`quick_search.*` with `--quick`, `medium_search.*` with `--medium`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

FULL = dict(
    search=dict(n_rows=300, image_size=64, n_folds=5, n_trials=12, startup_trials=5, lr=(1e-4, 3e-2), epochs=(1, 3),
                min_freeze=8),
    cache=dict(n_rows=300, image_size=64, n_folds=5, n_trials=6),
    ray=dict(n_per_class=160, n_folds=4, epochs=3),
)
# Between the two, for shared machines: the pruning search at 4 folds x 10 trials, Ray at the full size.
MEDIUM = dict(
    search=dict(n_rows=120, image_size=32, n_folds=4, n_trials=10, startup_trials=3, lr=(1e-4, 3e-2), epochs=(1, 2),
                min_freeze=12),
    cache=dict(n_rows=120, image_size=32, n_folds=4, n_trials=4),
    ray=FULL["ray"],
)
QUICK = dict(
    search=dict(n_rows=90, image_size=32, n_folds=3, n_trials=6, startup_trials=2, lr=(1e-4, 3e-2), epochs=(1, 2),
                min_freeze=12),
    cache=dict(n_rows=90, image_size=32, n_folds=3, n_trials=3),
    ray=dict(n_per_class=40, n_folds=4, epochs=1),
)


def _env(workdir: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                RAY_AUTH_MODE="disabled", HF_TLCV_FEATURE_CACHE=str(workdir / "feature_cache"),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


# ---- the variants (each in its own subprocess) -------------------------------------------------------------------
def _search_trainer(spec: dict, output_dir: str, feature_cache: str = "auto"):
    from hf_tlcv import KFoldConfig, KFoldTrainer
    from hf_tlcv.assets import load_dataset
    from hf_tlcv.data import subsample

    rows = subsample(load_dataset("builtin:animal-mnist"), spec["n_rows"], seed=0)
    args = KFoldConfig(output_dir=output_dir, n_folds=spec["n_folds"], fold_seed=0, seed=0, image_size=spec["image_size"],
                       per_device_train_batch_size=32, per_device_eval_batch_size=64, use_cpu=True, report_to="none",
                       disable_tqdm=True, save_strategy="no", logging_strategy="no", eval_on_train=False,
                       metrics=["accuracy"], save_fold_models=False, feature_cache=feature_cache,
                       finetune_strategy="linear_probe")
    return KFoldTrainer("builtin:efficientnet-lite0", args, train_dataset=rows)


def run_search(spec: dict, workdir: Path, pruned: bool) -> dict:
    """The pruning scenario: linear probes and freezing of the top blocks, learning rate and epochs."""
    import optuna

    def space(trial):
        strategy = trial.suggest_categorical("finetune_strategy", ["linear_probe", "freeze"])
        return {"finetune_strategy": strategy,
                "freeze_layers": trial.suggest_int("freeze_layers", spec["min_freeze"], 15) if strategy == "freeze"
                else 0,
                "learning_rate": trial.suggest_float("learning_rate", *spec["lr"], log=True),
                "num_train_epochs": trial.suggest_int("num_train_epochs", *spec["epochs"])}

    trainer = _search_trainer(spec, str(workdir / ("pruned" if pruned else "unpruned")))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec["startup_trials"]) if pruned
              else optuna.pruners.NopPruner())
    start = time.perf_counter()
    best = trainer.hyperparameter_search(hp_space=space, n_trials=spec["n_trials"], pruner=pruner)
    wall = time.perf_counter() - start
    report = best.run_summary
    return dict(wall_s=wall, best_trial=int(best.run_id), best_value=best.objective, best=best.hyperparameters,
                pruning=report.pruning, cache=report.feature_cache,
                trials=[{k: r[k] for k in ("trial", "state", "value", "settings")} for r in report.trials])


def run_cache(spec: dict, workdir: Path, shared: bool) -> dict:
    """The cache scenario: linear probes only (one frozen part), learning rate and epochs."""
    def space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True),
                "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 3)}

    import optuna

    trainer = _search_trainer(spec, str(workdir / ("shared" if shared else "per_trial")),
                              feature_cache="auto" if shared else "memory")
    start = time.perf_counter()
    best = trainer.hyperparameter_search(hp_space=space, n_trials=spec["n_trials"], pruner=optuna.pruners.NopPruner())
    wall = time.perf_counter() - start
    report = best.run_summary
    computed = report.feature_cache["computed"] if shared else len(report.trials)  # memory caches: one per trial
    return dict(wall_s=wall, caches_computed=computed, values=[r["value"] for r in report.trials])


def run_ray(spec: dict, workdir: Path, cpus: int) -> dict:
    """The Ray scenario: full fine-tuning of a small ViT, one CPU per fold job, on a local cluster of `cpus` CPUs."""
    import ray
    import torch
    import transformers as tf

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import image_dataset, make_config

    from hf_tlcv import KFoldTrainer
    from hf_tlcv.execution import RayExecutor

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    out = {}
    for run in ("cold", "warm"):
        torch.manual_seed(0)
        model = tf.ViTForImageClassification(tf.ViTConfig(
            image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=128, num_labels=3))
        args = make_config(workdir / f"ray{cpus}_{run}", n_folds=spec["n_folds"], num_train_epochs=spec["epochs"],
                           learning_rate=1e-3, logging_steps=50, per_device_train_batch_size=16,
                           per_device_eval_batch_size=64)
        trainer = KFoldTrainer(model, args, train_dataset=image_dataset(n_per_class=spec["n_per_class"]))
        start = time.perf_counter()
        results = trainer.cross_validate(executor=RayExecutor(num_cpus=1))
        out[f"{run}_s"] = time.perf_counter() - start
        out["oof"] = results.oof_predictions.sort_values(["repeat", "row"]).filter(like="prob_").to_numpy().tolist()
    ray.shutdown()
    return out


# ---- the driver --------------------------------------------------------------------------------------------------
def _variant(part: str, spec: dict, workdir: Path, flag) -> dict:
    """Run one variant in a fresh subprocess; return what it measured."""
    result = workdir / f"{part}_{flag}.json"
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_search as b; "
            f"from pathlib import Path; r = b.run_{part}({spec!r}, Path({str(workdir)!r}), {flag!r}); "
            f"Path({str(result)!r}).write_text(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(workdir / f"{part}_{flag}"), cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{part} ({flag}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(result.read_text())


def bench_pruning(spec: dict, workdir: Path) -> dict:
    pruned, unpruned = _variant("search", spec, workdir, True), _variant("search", spec, workdir, False)
    return {"spec": spec, "pruned": pruned, "unpruned": unpruned,
            "fold_trainings_ratio": pruned["pruning"]["fold_trainings"] / unpruned["pruning"]["fold_trainings"],
            "wall_ratio": pruned["wall_s"] / unpruned["wall_s"],
            "same_choice": pruned["best"] == unpruned["best"],
            "same_trials_sampled": [t["settings"] for t in pruned["trials"]]
            == [t["settings"] for t in unpruned["trials"]]}


def bench_cache(spec: dict, workdir: Path) -> dict:
    shared, per_trial = _variant("cache", spec, workdir, True), _variant("cache", spec, workdir, False)
    diff = max(abs(a - b) for a, b in zip(shared["values"], per_trial["values"]))
    return {"spec": spec, "shared": shared, "per_trial": per_trial, "speedup": per_trial["wall_s"] / shared["wall_s"],
            "max_value_diff": diff}


def bench_ray(spec: dict, workdir: Path) -> dict:
    import numpy as np

    one, two = _variant("ray", spec, workdir, 1), _variant("ray", spec, workdir, 2)
    folds = spec["n_folds"]
    diff = float(np.max(np.abs(np.asarray(one.pop("oof")) - np.asarray(two.pop("oof")))))
    return {"spec": spec, "cpus_1": one, "cpus_2": two, "max_prob_diff": diff,
            "throughput_ratio_cold": one["cold_s"] / two["cold_s"], "throughput_ratio_warm": one["warm_s"] / two["warm_s"],
            "folds_per_min": {"1_cold": 60 * folds / one["cold_s"], "2_cold": 60 * folds / two["cold_s"],
                              "1_warm": 60 * folds / one["warm_s"], "2_warm": 60 * folds / two["warm_s"]}}


def markdown(results: dict) -> str:
    lines = [f"# Search and Ray benchmark ({results['machine']['when']})", "",
             f"{results['machine']['cpus']} CPUs, load average at start {results['machine']['load_start']}, at end "
             f"{results['machine']['load_end']}; one torch thread per process.", ""]
    if "pruning" in results:
        p = results["pruning"]
        s = p["spec"]
        lines += ["## Pruning: median pruner on the fold reports vs. no pruning (same space, seed and budget)", "",
                  f"EfficientNet-Lite0 on {s['n_rows']} Animal-MNIST images at {s['image_size']} px, {s['n_folds']} "
                  f"folds, {s['n_trials']} trials (linear probe or freeze >= {s['min_freeze']} of 16 blocks, "
                  f"learning rate, epochs); median pruner after {s['startup_trials']} trials.", "",
                  "| variant | wall s | fold trainings | pruned trials | best trial | best accuracy | best settings |",
                  "|---|---|---|---|---|---|---|"]
        for name in ("pruned", "unpruned"):
            v = p[name]
            lines.append(f"| {name} | {v['wall_s']:.0f} | {v['pruning']['fold_trainings']} | "
                         f"{v['pruning']['n_pruned']} | {v['best_trial']} | {v['best_value']:.4f} | {v['best']} |")
        lines += ["", f"Pruned / unpruned: fold trainings **{p['fold_trainings_ratio']:.2f}x**, wall time "
                      f"**{p['wall_ratio']:.2f}x**; same configuration chosen: **{p['same_choice']}**; the same "
                      f"trials sampled: {p['same_trials_sampled']}.", ""]
    if "cache" in results:
        c = results["cache"]
        s = c["spec"]
        lines += ["## Frozen-feature cache shared by the trials vs. one per trial", "",
                  f"{s['n_trials']} linear-probe trials (learning rate, epochs), {s['n_folds']} folds, "
                  f"{s['n_rows']} images at {s['image_size']} px.", "",
                  "| variant | wall s | caches computed |", "|---|---|---|",
                  f"| shared on disk (`auto` in a search) | {c['shared']['wall_s']:.0f} | "
                  f"{c['shared']['caches_computed']} |",
                  f"| one per trial (`memory`) | {c['per_trial']['wall_s']:.0f} | {c['per_trial']['caches_computed']} |",
                  "", f"Speed-up of sharing: **{c['speedup']:.2f}x**; largest difference of a trial's value: "
                      f"{c['max_value_diff']:.1e}.", ""]
    if "ray" in results:
        r = results["ray"]
        s = r["spec"]
        f = r["folds_per_min"]
        lines += ["## Fold jobs on Ray: 2 CPUs vs. 1 (one CPU per fold job)", "",
                  f"ViT 4x64 built from a config, {3 * s['n_per_class']} images of 32 px, {s['n_folds']} folds, "
                  f"{s['epochs']} epochs, full fine-tuning.", "",
                  "| cluster | cold s | warm s | folds/min (cold) | folds/min (warm) |", "|---|---|---|---|---|",
                  f"| 1 CPU | {r['cpus_1']['cold_s']:.1f} | {r['cpus_1']['warm_s']:.1f} | {f['1_cold']:.1f} | "
                  f"{f['1_warm']:.1f} |",
                  f"| 2 CPUs | {r['cpus_2']['cold_s']:.1f} | {r['cpus_2']['warm_s']:.1f} | {f['2_cold']:.1f} | "
                  f"{f['2_warm']:.1f} |", "",
                  f"Throughput 2 CPUs / 1 CPU: **{r['throughput_ratio_cold']:.2f}x** cold, "
                  f"**{r['throughput_ratio_warm']:.2f}x** warm; largest out-of-fold probability difference "
                  f"{r['max_prob_diff']:.1e}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--medium", action="store_true", help="smaller searches, Ray at full size (shared machines)")
    parser.add_argument("--only", choices=["pruning", "cache", "ray"], action="append",
                        help="run only these parts (repeatable)")
    opts = parser.parse_args()
    specs = QUICK if opts.quick else MEDIUM if opts.medium else FULL
    parts = opts.only or ["pruning", "cache", "ray"]
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "when": time.strftime("%Y-%m-%d %H:%M"), "load_start": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        workdir = Path(tmp)
        for part in parts:
            spec = specs["search" if part == "pruning" else part]
            print(f"[bench_search] {part} ...", flush=True)
            results[part] = {"pruning": bench_pruning, "cache": bench_cache, "ray": bench_ray}[part](spec, workdir)
    results["machine"]["load_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    size = "quick_" if opts.quick else "medium_" if opts.medium else ""
    name = size + "search" + ("_" + "_".join(parts) if opts.only else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
