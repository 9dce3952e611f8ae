"""Benchmark: the same bench_cv.py scenarios (variant `hf_tlcv`) under two source trees of this repository.

    .venv/bin/python benchmarks/compare_revisions.py --before ../before --after .
    .venv/bin/python benchmarks/compare_revisions.py --before A --after B --quick --repeats 1   # smoke test

Each run is that tree's own bench_cv.py worker (its `run_variant`: `<tree>/benchmarks/bench_cv.py --worker SPEC`
in a subprocess of its own, one thread) with `PYTHONPATH=<tree>`, so it imports that tree's hf_tlcv (checked before
any timing). Both trees get the same spec (the `--before` tree's SCENARIOS, k=5 as
`make bench`). The time is the worker's `wall_s`: the whole `cross_validate()`, from config to result files.

Runs are interleaved: for each repeat, for each scenario, before then after, the order swapped every repeat
(before-after, after-before, ...) to cancel drift. The report gives every run's time, the medians, the ratio
after/before and whether it is within +-10%, and the largest difference of the fold accuracies and out-of-fold
probabilities between the trees (same folds and seed: they must agree). Absolute times are noisy (shared
cores); the ratios measured within one run are the numbers to read. Writes --output (JSON) and a .md beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
TOLERANCE = 0.10
SIDES = ("before", "after")


def load_bench(tree: Path, side: str):
    """bench_cv.py of a tree as a module (its top level imports only the standard library)."""
    spec = importlib.util.spec_from_file_location(f"bench_cv_{side}", tree / "benchmarks" / "bench_cv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def importing_from(tree: Path) -> Iterator[None]:
    """While inside: the subprocesses this process starts import `tree`'s hf_tlcv (`PYTHONPATH`)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def describe_tree(tree: Path) -> str:
    """The tree's commit (with `+dirty` for uncommitted changes); checks that a subprocess imports its hf_tlcv."""
    code = "import hf_tlcv; print(hf_tlcv.__file__)"
    # from a neutral folder, as the worker (whose sys.path starts with the tree's benchmarks/): PYTHONPATH decides
    found = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), env=tree_env(tree),
                           capture_output=True, text=True, check=True).stdout.strip()
    if Path(found).resolve().parent != (tree / "hf_tlcv").resolve():
        raise SystemExit(f"a worker in {tree} would import hf_tlcv from {found}, not from that tree")
    git = ["git", "-C", str(tree)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return (head or "?") + ("+dirty" if dirty else "")


def run_worker(bench, tree: Path, spec: dict) -> dict:
    """One run of the tree's own bench_cv worker (`bench.run_variant`: its subprocess, one thread), on its hf_tlcv."""
    with importing_from(tree):
        return bench.run_variant(spec)


def max_diff(a: list, b: list) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max())


def summarise(name: str, spec: dict, runs: dict) -> dict:
    walls = {side: [r["wall_s"] for r in runs[side]] for side in SIDES}
    med = {side: statistics.median(w) for side, w in walls.items()}
    ratio = med["after"] / med["before"]
    pairs = list(zip(runs["before"], runs["after"]))
    return dict(scenario=name, spec={k: v for k, v in spec.items() if k not in ("workdir", "variant", "name")},
                wall_s=walls, median_s=med, ratio=ratio, within_10pct=abs(ratio - 1) <= TOLERANCE,
                accuracy={side: [r["accuracy"] for r in runs[side]] for side in SIDES},
                max_abs_accuracy_diff=max(max_diff(b["accuracy"], a["accuracy"]) for b, a in pairs),
                max_abs_prob_diff=max(max_diff(b["oof"], a["oof"]) for b, a in pairs),
                peak_rss_mb={side: statistics.median(r["peak_rss_mb"] for r in runs[side]) for side in SIDES})


def markdown(report: dict) -> str:
    lines = [f"Command: `{report['command']}`  ",
             f"before: `{report['before']}` ({report['before_rev']}), after: `{report['after']}` "
             f"({report['after_rev']}); {report['repeats']} interleaved repeat(s), 1 thread each. Read the ratios.", "",
             "| scenario | rows x px, k, epochs | before s | after s | median before / after s | after / before "
             "| within ±10% | max abs acc. diff | max abs prob diff |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["scenarios"]:
        s, w, m = r["spec"], r["wall_s"], r["median_s"]
        runs = {side: ", ".join(f"{t:.1f}" for t in w[side]) for side in SIDES}
        lines.append(f"| {r['scenario']} | {s['n_rows']} x {s['image_size']}, {s['k']}, {s['epochs']} | "
                     f"{runs['before']} | {runs['after']} | {m['before']:.1f} / {m['after']:.1f} | "
                     f"**{r['ratio']:.3f}** | {'yes' if r['within_10pct'] else 'NO'} | "
                     f"{r['max_abs_accuracy_diff']:.1e} | {r['max_abs_prob_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="source tree of the old revision")
    parser.add_argument("--after", required=True, type=Path, help="source tree of the new revision")
    parser.add_argument("--scenarios", nargs="+", default=["lite0-linear_probe", "lite0-full"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="bench_cv.py's quick sizes (a smoke test)")
    parser.add_argument("--output", type=Path, default=None, help="JSON report (default benchmarks/results/"
                        "compare_revisions.json, quick_compare_revisions.json with --quick), a .md beside it")
    opts = parser.parse_args(argv)
    trees = {"before": opts.before.resolve(), "after": opts.after.resolve()}
    benches = {side: load_bench(tree, side) for side, tree in trees.items()}
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    for name in opts.scenarios:
        if name not in benches["before"].SCENARIOS:
            parser.error(f"unknown scenario {name!r}; the before tree has {', '.join(benches['before'].SCENARIOS)}")
        if benches["after"].SCENARIOS.get(name) != benches["before"].SCENARIOS[name]:
            log(f"warning: {name} differs in the after tree's bench_cv.py; both run the before tree's spec")
    revs = {side: describe_tree(tree) for side, tree in trees.items()}
    report = dict(command="benchmarks/compare_revisions.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  before=str(trees["before"]), after=str(trees["after"]), before_rev=revs["before"],
                  after_rev=revs["after"], repeats=opts.repeats, quick=opts.quick, scenarios=[])
    with tempfile.TemporaryDirectory(prefix="hf_tlcv_compare_") as workdir:
        specs, runs = {}, {name: {side: [] for side in SIDES} for name in opts.scenarios}
        for name in opts.scenarios:
            spec = dict(benches["before"].SCENARIOS[name], k=5, workdir=workdir, variant="hf_tlcv", name=name)
            del spec["variants"]
            if opts.quick:
                quick = benches["before"].QUICK
                size = quick["image_size_lite0"] if spec["model"] == "lite0" else quick["image_size_vit"]
                spec.update(n_rows=quick["n_rows"], epochs=quick["epochs"], image_size=size)
            if spec["model"] != "lite0":
                benches["before"]._make_vit(Path(workdir))  # the random ViT-6 checkpoint the worker reads
            specs[name] = spec
        for r in range(opts.repeats):
            for name in opts.scenarios:
                for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                    result = run_worker(benches[side], trees[side], specs[name])
                    runs[name][side].append(result)
                    log(f"  repeat {r + 1} {name} {side}: {result['wall_s']:.1f} s, "
                        f"mean accuracy {statistics.mean(result['accuracy']):.4f}")
        report["scenarios"] = [summarise(name, specs[name], runs[name]) for name in opts.scenarios]
    default = "quick_compare_revisions.json" if opts.quick else "compare_revisions.json"
    output = opts.output or HERE / "results" / default
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    output.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
