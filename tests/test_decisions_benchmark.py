"""benchmarks/decisions.py: its smoke mode runs a whole unit end to end (study, truth fits, aggregation) and its pure
parts (pool and draws, intervals by name, the alternatives' decisions) behave. Structure, not numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "decisions.py"


def _bench():
    from conftest import load_script

    return load_script(SCRIPT, "decisions_bench")


def test_draws_are_disjoint_stratified_and_keep_every_class():
    bench = _bench()
    labels = np.array([0] * 300 + [1] * 60 + [2] * 16)
    rest = np.random.default_rng(0).permutation(len(labels))
    draws = [bench.draw_rows(labels, rest, 40, r, 5) for r in range(3)]
    assert all(len(d) == 40 for d in draws)
    assert len(np.unique(np.concatenate(draws))) == 120  # disjoint
    assert all(np.sum(labels[d] == 2) >= 5 for d in draws)  # the rare class reaches the folds' minimum
    assert bench.draw_rows(labels, rest, 40, 2, 5) is not None and bench.draw_rows(labels, rest, 40, 3, 5) is None


def test_pool_keeps_groups_whole():
    import datasets

    bench = _bench()
    groups = np.repeat(np.arange(50), 4)
    data = datasets.Dataset.from_dict({"text": ["x"] * 200, "label": [0, 1] * 100, "group": groups})
    pool, rest = bench.split_rows(data, 30, seed=1)
    assert len(pool) >= 30 and not set(groups[pool]) & set(groups[rest])
    assert len(pool) + len(rest) == 200


def test_every_interval_method_is_a_function_of_saved_results():
    bench = _bench()
    assert {"corrected", "nested"} <= set(bench.CI_METHODS)  # the library's ci_method values, by name
    from hf_tlcv.config import CI_METHODS

    assert set(CI_METHODS) <= set(bench.CI_METHODS)


def test_a_finished_unit_asked_for_a_further_tier_runs_only_the_study_groups_it_lacks(tmp_path, monkeypatch):
    import datasets
    from types import SimpleNamespace

    bench = _bench()
    full = datasets.Dataset.from_dict({"x": list(range(120)), "label": [0, 1] * 60})
    cache = {"toy": (full, np.arange(20), np.arange(20, 120))}
    grid = {**bench.GRID, "tasks": {"toy": {"data": "-", "model": "-", "kind": "image", "pool": 20, "train": {}}},
            "studies": {"cheap_q": {"tier": "cheap"}, "costly_q": {"tier": "expensive"}}}
    ran = []

    class Study:  # what run_unit reads of a study: run(), runs, variants
        def __init__(self, folder):
            self.folder, self.runs, self.variants = folder, {"a": "a"}, {"a": SimpleNamespace(classical=False)}

        def run(self):  # a study writes its folder
            self.folder.mkdir(parents=True)
            ran.append(self.folder.name)

    monkeypatch.setattr(bench, "make_study", lambda grid, task, spec, train, pool, out, draw: Study(out))
    monkeypatch.setattr(bench, "truth_fit", lambda *args: {"accuracy": 0.5})
    first = bench.run_unit(grid, "toy", 40, 0, tmp_path, {"cheap"}, cache)
    assert ran == ["cheap_q"] and set(first["studies"]) == {"cheap_q"}
    assert bench.run_unit(grid, "toy", 40, 0, tmp_path, {"cheap"}, cache) == first and ran == ["cheap_q"]
    both = bench.run_unit(grid, "toy", 40, 0, tmp_path, {"cheap", "expensive"}, cache)
    assert ran == ["cheap_q", "costly_q"]  # the finished group is not run again
    assert both["studies"]["cheap_q"] == first["studies"]["cheap_q"] and set(both["studies"]) == {"cheap_q", "costly_q"}
    assert both["rows"] == first["rows"] and both["seconds"] >= first["seconds"]
    # A finished unit whose draw no longer gives the same rows is not extended with other rows.
    marker = tmp_path / "toy" / "n40" / "draw0" / bench.UNIT_DONE
    marker.write_text(json.dumps({**first, "rows": first["rows"][::-1]}))
    with pytest.raises(RuntimeError, match="rows differ"):
        bench.run_unit(grid, "toy", 40, 0, tmp_path, {"cheap", "expensive"}, cache)


def test_the_paired_comparison_is_over_units_and_counts_each_decision_once():
    bench = _bench()

    def question(draw, cv, holdout):
        methods = {m: {"regret": r, "significant": [], "distinguishable": False, "gap_runner_up": 0.0}
                   for m, r in (("cv", cv), ("holdout", holdout), ("uncorrected", cv))}
        return {"kind": "question", "task": "t", "n": 10, "draw": draw, "question": "lr", "methods": methods}

    # unit 0: holdout loses 0.04 and 0.0 more; unit 1: 0.02 more and 0.02 less; unit 2: 0.03 more, twice
    regrets = [(0, 0.0, 0.04), (0, 0.01, 0.01), (1, 0.0, 0.02), (1, 0.02, 0.0), (2, 0.0, 0.03), (2, 0.01, 0.04)]
    paired = bench.summarize_records([question(*r) for r in regrets], [])["t|10"]["paired"]
    diffs = [h - c for _, c, h in regrets]
    unit_means = [0.02, 0.0, 0.03]
    assert paired["holdout_minus_cv_mean"] == pytest.approx(np.mean(diffs))
    assert paired["se_over_units"] == pytest.approx(np.std(unit_means, ddof=1) / np.sqrt(3))
    assert (paired["units"], paired["cv_better"], paired["tie"], paired["holdout_better"]) == (3, 4, 1, 1)
    # the sign test counts units (decisions of a unit share its data): 2 units favour the study, 1 is even
    assert (paired["units_cv_better"], paired["units_holdout_better"]) == (2, 0)
    assert paired["sign_test_p"] == pytest.approx(0.5)  # two-sided, 2 of 2


def test_the_noisy_truth_ceiling_matches_a_simulation_and_widening_restores_coverage():
    """An interval exact for the true accuracy, scored against a truth measured on a finite pool, covers it less
    often than 95%: `noisy_truth_coverage` says how much, and a simulation with known truth agrees."""
    bench = _bench()
    rng = np.random.default_rng(0)
    true, sigma, tau, z = 0.7, 0.03, 0.015, 1.959964
    centres = true + sigma * rng.standard_normal(200_000)  # the interval's centre: exact, sd sigma
    truths = true + tau * rng.standard_normal(200_000)  # the measured truth: sd tau around the true accuracy
    measured = np.mean(np.abs(centres - truths) <= z * sigma)
    assert bench.noisy_truth_coverage(true - z * sigma, true + z * sigma, tau) == pytest.approx(measured, abs=0.003)
    assert measured < 0.94  # the effect is real at these sizes
    wide = [bench.widened([c - z * sigma, c + z * sigma], tau) for c in centres[:20_000]]
    assert np.mean([lo <= t <= hi for (lo, hi), t in zip(wide, truths[:20_000])]) == pytest.approx(0.95, abs=0.006)
    assert bench.noisy_truth_coverage(0.6, 0.8, 0.0) == pytest.approx(0.95, abs=1e-4)


def test_a_variant_trained_in_two_study_groups_counts_once_and_ties_are_reported():
    bench = _bench()
    variant = {"kind": "variant", "task": "t", "n": 10, "draw": 0, "truth": 0.5, "truth_se": 0.01,
               "coverage": {}, "overfit_flag": None, "heldout_loss_rising": None, "fold_models_mean": None}
    records = [{**variant, "study": "probe_lr", "variant": "lr_0.001", "same_as": "x"},
               {**variant, "study": "freeze", "variant": "linear_probe", "same_as": "x"},
               {**variant, "study": "freeze", "variant": "freeze_4", "same_as": "y"},
               {**variant, "draw": 1, "study": "freeze", "variant": "linear_probe", "same_as": "x"}]
    assert [(r["study"], r["draw"]) for r in bench.unique_variants(records)] == [
        ("probe_lr", 0), ("freeze", 0), ("freeze", 1)]
    methods = {m: {"regret": 0.05, "tied": 3, "regret_random_tie": 0.02, "significant": [],
                   "distinguishable": False, "gap_runner_up": 0.0} for m in ("cv", "holdout", "uncorrected")}
    question = {"kind": "question", "task": "t", "n": 10, "draw": 0, "question": "lr", "methods": methods}
    summary = bench.summarize_records([question], [])["t|10"]["methods"]["holdout"]
    assert (summary["ties"], summary["regret_mean"], summary["regret_random_tie_mean"]) == (1, 0.05, 0.02)


@pytest.mark.slow
def test_smoke_mode_writes_the_tables(tmp_path):
    out = tmp_path / "decisions_smoke"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--output", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["meta"]["grid_hash"] and saved["meta"]["smoke"] is True and saved["meta"]["units"] == 1
    overall = saved["summary"]["all|all"]
    assert set(overall["methods"]) == {"cv", "holdout", "uncorrected"}
    for method in overall["methods"].values():
        assert {"regret_median", "regret_p90", "wrong_rate", "not_distinguishable"} <= set(method)
    assert {"corrected", "uncorrected_t", "holdout_wilson"} <= set(overall["coverage"])
    assert {"holdout_minus_cv_mean", "se_over_units", "sign_test_p"} <= set(overall["paired"])
    assert overall["coverage"]["corrected"]["n"] > 0
    kinds = {r["kind"] for r in saved["records"]}
    assert kinds == {"question", "variant"}
    question = next(r for r in saved["records"] if r["kind"] == "question")
    assert all(0.0 <= question["truth"][v] <= 1.0 for v in question["variants"])
    assert question["tier"] == "cheap" and all(1 <= m["tied"] <= len(question["variants"])
                                                for m in question["methods"].values())
    assert all(r["same_as"] for r in saved["records"] if r["kind"] == "variant")
    assert saved["summary_expensive"] == {}  # the smoke run asks no expensive question
    markdown = out.with_suffix(".md").read_text()
    assert "regret" in markdown and "Coverage" in markdown and "Overfitting" in markdown
