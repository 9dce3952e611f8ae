"""The dependence detector (hf_tlcv.dependence): Moran's I and time autocorrelation of out-of-fold errors, their
false-alarm rate, the demonstrator, and the run's diagnostics, summary and card."""

import functools
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset

from hf_tlcv.dependence import (
    compare_blocked,
    dependence_lines,
    detect_dependence,
    find_dependence_columns,
    morans_i,
    oof_residuals,
    time_autocorrelation,
)
from hf_tlcv.diagnostics import rows_dependence
from hf_tlcv.folds import split_indices

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "dependence.py"


def load_benchmark():
    from conftest import load_script

    return load_script(BENCHMARK, "dependence_benchmark")


def dense_morans_i(values, xy, k):
    """Moran's I from its textbook formula with the full n x n weight matrix (the reference for small n)."""
    n = len(values)
    distances = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    weights = np.zeros((n, n))
    nearest = np.argsort(distances, axis=1)[:, :k]
    weights[np.arange(n)[:, None], nearest] = 1.0 / k
    z = values - values.mean()
    return n / weights.sum() * (z @ weights @ z) / (z @ z)


def test_morans_i_equals_the_dense_formula():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, size=(150, 2))
    values = np.sin(xy[:, 0]) + rng.normal(scale=0.5, size=150)
    for k in (1, 4, 8):
        assert morans_i(values, xy, k=k, n_permutations=9)["value"] == pytest.approx(dense_morans_i(values, xy, k))


def test_morans_i_fires_on_a_smooth_field_and_its_false_alarm_rate_is_nominal():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 10, size=(300, 2))
    smooth = np.sin(xy[:, 0]) + np.cos(xy[:, 1]) + rng.normal(scale=0.5, size=300)
    assert morans_i(smooth, xy)["p_value"] <= 0.01
    # shuffled coordinates: the same values, no spatial structure; 100 simulations at 5%
    alarms = [morans_i(smooth, xy[rng.permutation(300)], n_permutations=99, seed=i)["p_value"] < 0.05
              for i in range(100)]
    assert 0 <= np.mean(alarms) <= 0.12  # binomial(100, 0.05): P(> 12) < 0.001


def test_morans_i_memory_stays_linear_at_20000_rows():
    rng = np.random.default_rng(2)
    n = 20_000
    xy = rng.uniform(0, 1000, size=(n, 2))
    values = (rng.random(n) < 0.2).astype(float)
    tracemalloc.start()
    result = morans_i(values, xy, n_permutations=19)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60e6  # all pairs would be n * n * 8 bytes = 3.2 GB
    assert result["n"] == n and result["p_value"] > 0.0


def test_morans_i_with_great_circle_neighbours():
    rng = np.random.default_rng(3)
    lonlat = np.column_stack([rng.uniform(-5, 5, 400), rng.uniform(40, 50, 400)])
    smooth = np.sin(lonlat[:, 0]) + np.cos(lonlat[:, 1])
    assert morans_i(smooth, lonlat, geographic=True)["p_value"] <= 0.01
    assert morans_i(rng.normal(size=400), lonlat, geographic=True)["p_value"] > 0.01


def test_time_autocorrelation_fires_on_an_ar1_and_not_on_noise():
    rng = np.random.default_rng(4)
    n = 600
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.8 * ar[i - 1] + rng.normal()
    times = rng.permutation(n).astype(float)  # rows stored out of time order: the test sorts by time
    stored = np.empty(n)
    stored[np.argsort(times)] = ar
    result = time_autocorrelation(stored, times)
    assert result["p_value"] <= 0.01 and result["value"] == pytest.approx(0.8, abs=0.1)
    alarms = [time_autocorrelation(rng.normal(size=n), times, n_permutations=99, seed=i)["p_value"] < 0.05
              for i in range(60)]
    assert np.mean(alarms) <= 0.15


def test_oof_residuals_average_repeats_and_use_the_true_class_probability():
    oof = pd.DataFrame({"row": [0, 1, 0, 1], "repeat": [0, 0, 1, 1], "fold": 0, "label": [1, 0, 1, 0],
                        "prediction": [1, 1, 0, 0], "prob_0": [0.2, 0.6, 0.7, 0.9], "prob_1": [0.8, 0.4, 0.3, 0.1]})
    rows, residuals = oof_residuals(oof)
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_allclose(residuals, [(0.2 + 0.7) / 2, (0.4 + 0.1) / 2])


def test_columns_are_recognised_by_name_and_type():
    ds = Dataset.from_dict({"lon": [1.0, 2.0], "lat": [3.0, 4.0], "timestamp": [1, 2], "label": [0, 1]})
    assert find_dependence_columns(ds) == {"space": ["lon", "lat"], "time": "timestamp"}
    text = Dataset.from_dict({"x": ["a", "b"], "y": ["c", "d"], "label": [0, 1]})
    assert find_dependence_columns(text) == {"space": None, "time": None}  # names alone are not enough
    assert find_dependence_columns(text, coordinate_columns=["east", "north"])["space"] == ["east", "north"]
    with pytest.raises(ValueError, match="time_column"):
        find_dependence_columns(text, time_column="when")


class _Config:
    coordinate_columns = None
    coordinate_system = "auto"
    time_column = None
    n_folds = 5
    label_column = "label"


@functools.cache
def _tiles_oof():
    """The demonstrator's photo tiles, random 5-fold with a 5-NN: the run's out-of-fold frame, positions and labels."""
    bench = load_benchmark()
    data = bench.photo_tiles()
    X, y = data["features"], data["labels"]
    frames = []
    make = bench._learners()["5-NN"]
    for fold in split_indices(len(y), "stratified", 5, labels=y):
        model = make().fit(X[fold.train_indices], y[fold.train_indices])
        proba = model.predict_proba(X[fold.eval_indices])
        frame = pd.DataFrame({"row": fold.eval_indices, "repeat": 0, "fold": fold.fold, "label": y[fold.eval_indices],
                              "prediction": proba.argmax(1)})
        for c in range(proba.shape[1]):
            frame[f"prob_{c}"] = proba[:, c]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), data["xy"], y


def _tiles_run(shuffle: bool = False, seed: int = 0):
    """The out-of-fold frame of the photo tiles and their dataset, the coordinates shuffled over the rows if asked."""
    oof, xy, y = _tiles_oof()
    if shuffle:
        xy = xy[np.random.default_rng(seed).permutation(len(xy))]
    return oof, Dataset.from_dict({"x": xy[:, 0], "y": xy[:, 1], "label": y})


def test_detector_fires_on_the_photo_tiles_and_proposes_the_blocked_run():
    oof, dataset = _tiles_run()
    found = detect_dependence(oof, dataset, _Config(), "stratified")
    assert found["source"] == "detected" and found["kind"] == "space" and found["columns"] == ["x", "y"]
    assert found["significant"] and found["p_value"] < 0.01 and found["value"] > 0.1
    settings = found["proposal"]["settings"]
    assert settings["fold_strategy"] == "spatial" and settings["spatial_block_size"] > 16  # wider than one stride
    assert found["proposal"]["command"] == ("--fold_strategy spatial --coordinate_columns x y --spatial_block_size "
                                            f"{settings['spatial_block_size']}")
    assert rows_dependence({"fold_strategy": "stratified"}, {"dependence": found}) == found["detail"]
    lines = dependence_lines({"dependence": found})
    assert "autocorrelated in space" in lines[0] and found["proposal"]["command"] in lines[1]
    # blocked folds are not checked again: their dependence is declared by the strategy
    assert detect_dependence(oof, dataset, _Config(), "spatial") is None


def test_detector_stays_quiet_on_shuffled_coordinates():
    alarms = []
    for seed in range(5):
        oof, dataset = _tiles_run(shuffle=True, seed=seed)
        found = detect_dependence(oof, dataset, _Config(), "stratified")
        alarms.append(found["significant"])
        assert "not measurably" in found["detail"] and "proposal" not in found
        assert rows_dependence({"fold_strategy": "stratified"}, {"dependence": found}) is None
    assert sum(alarms) <= 1  # 5 tests at 5%: P(>= 2 alarms) = 0.02


def test_compare_blocked_reads_like_the_audit():
    random = {"accuracy": {"mean": 0.93, "ci95": [0.91, 0.95]}}
    blocked = {"accuracy": {"mean": 0.81, "ci95": [0.74, 0.87]}}
    check = compare_blocked(random, blocked, "space", "accuracy")
    assert check["flattery"] == pytest.approx(0.12)
    assert check["text"] == ("accuracy: random folds 0.93 [0.91, 0.95], spatial blocks 0.81 [0.74, 0.87]: k-fold "
                             "flatters this data by 0.12; report the blocked estimate")
    assert "do not flatter" in compare_blocked(blocked, random, "time", "accuracy")["text"]


def _spatial_text_data(n_per_class=40):
    """The tiny text data of the other tests, with positions; in the left half the label is a property of the 5 x 5
    cell (something no token says), so random folds can only learn it from neighbours."""
    from conftest import text_dataset

    ds = text_dataset(n_per_class=n_per_class)
    labels = np.array(ds["label"])
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 30, len(labels)), rng.uniform(0, 30, len(labels))
    cell = (np.floor(x / 5) * 7 + np.floor(y / 5)).astype(int)
    labels = np.where(x < 15, (cell * 7919) % 3, labels)
    ds = ds.remove_columns("label").add_column("label", labels.tolist())
    ds = ds.cast_column("label", ClassLabel(names=["c0", "c1", "c2"]))
    return ds.add_column("x", x.tolist()).add_column("y", y.tolist())


def test_a_run_saves_the_detection_and_its_card_says_so(tmp_path):
    from conftest import make_config, tiny_model

    from hf_tlcv import CVResults, KFoldTrainer

    config = make_config(tmp_path / "cv", coordinate_columns=["x", "y"], num_train_epochs=3)
    cv = KFoldTrainer(model=tiny_model("bert"), args=config, train_dataset=_spatial_text_data()).cross_validate()
    found = cv.diagnostics["dependence"]
    assert found["kind"] == "space" and found["columns"] == ["x", "y"] and 0 < found["p_value"] <= 1
    saved = json.loads((tmp_path / "cv" / "cv_results.json").read_text())["diagnostics"]["dependence"]
    assert saved["value"] == pytest.approx(found["value"])
    assert CVResults.load(tmp_path / "cv").diagnostics["dependence"]["p_value"] == found["p_value"]
    card = (tmp_path / "cv" / "README.md").read_text()
    assert "Where k-fold may flatter" in card and "Moran" in card
    table = cv.format_table()  # the console's summary says it too
    assert "Dependence:" in table and ("no autocorrelation" in table) == (not found["significant"])


@pytest.mark.integration
def test_check_dependence_runs_the_blocked_folds_and_compares(tmp_path):
    from conftest import make_config, tiny_model

    from hf_tlcv import KFoldTrainer
    from hf_tlcv.folds import load_folds, spatial_blocks

    config = make_config(tmp_path / "cv", coordinate_columns=["x", "y"], num_train_epochs=3, check_dependence=True,
                         save_fold_models=True)
    data = _spatial_text_data()
    cv = KFoldTrainer(model=tiny_model("bert"), args=config, train_dataset=data).cross_validate()
    # The blocked folds train in their own folders: nothing of the run's folds (their models included) is written
    # once the check has started, and the check keeps no fold models of its own.
    check_started = (tmp_path / "cv" / "dependence_check" / "folds.json").stat().st_mtime
    run_files = [f for d in (tmp_path / "cv").glob("fold_*") for f in d.rglob("*") if f.is_file()]
    assert any(f.parent.name == "model" for f in run_files)
    assert max(f.stat().st_mtime for f in run_files) <= check_started
    assert not list((tmp_path / "cv" / "dependence_check").glob("fold_*/model"))
    found = cv.diagnostics["dependence"]
    assert found["significant"], found  # the left half's labels are spatial
    check = found["check"]
    assert check["metric"] == "accuracy" and "spatial blocks" in check["text"]
    assert check["random"]["mean"] == pytest.approx(cv.summary["accuracy"]["mean"])
    blocked, meta = load_folds(tmp_path / "cv" / "dependence_check" / "folds.json")
    size = meta["proposal"]["spatial_block_size"]
    ids = spatial_blocks(np.column_stack([data["x"], data["y"]]), size, seed=config.fold_seed)
    for fold in blocked:  # whole blocks in each evaluation part
        assert not set(ids[fold.eval_indices]) & set(ids[fold.train_indices])


def test_config_settings_join_the_resume_check_and_the_nested_refusal():
    from transformers import HfArgumentParser

    from hf_tlcv import KFoldConfig
    from hf_tlcv.config import RESULT_SETTINGS

    for name in ("coordinate_columns", "coordinate_system", "spatial_block_size", "spatial_buffer", "fold_gap"):
        assert name in RESULT_SETTINGS
    common = dict(output_dir="unused", fold_strategy="spatial", coordinate_columns=["x", "y"], report_to="none")
    assert KFoldConfig(ci_method="nested", **common).ci_method == "nested"  # whole blocks nest
    with pytest.raises(ValueError, match="spatial_buffer"):
        KFoldConfig(ci_method="nested", spatial_buffer=5.0, **common)
    with pytest.raises(ValueError, match="fold_gap"):
        KFoldConfig(output_dir="unused", fold_gap=3, report_to="none")
    parser = HfArgumentParser(KFoldConfig)
    assert "--spatial_buffer" in parser.format_help()
    (config,) = parser.parse_args_into_dataclasses(["--output_dir", "unused", "--fold_strategy", "spatial",
                                                    "--coordinate_columns", "lon", "lat", "--spatial_buffer", "25",
                                                    "--report_to", "none"])
    assert config.coordinate_columns == ["lon", "lat"] and config.spatial_buffer == 25.0


def test_a_spatial_run_records_its_blocks_resumes_and_refuses_other_blocks(tmp_path):
    from conftest import make_config, tiny_model

    from hf_tlcv import KFoldTrainer
    from hf_tlcv.folds import load_folds

    data = _spatial_text_data(n_per_class=20)
    config = make_config(tmp_path / "cv", fold_strategy="spatial", coordinate_columns=["x", "y"], num_train_epochs=1)
    cv = KFoldTrainer(model=tiny_model("bert"), args=config, train_dataset=data).cross_validate()
    folds, meta = load_folds(tmp_path / "cv" / "folds.json")
    assert meta["fold_strategy"] == "spatial" and meta["spatial_block_size"] > 0  # chosen from the data, recorded
    assert "dependence" not in cv.diagnostics  # blocked folds declare their dependence; nothing to detect
    # resumed: the same folds, nothing trained again
    again = KFoldTrainer(model=tiny_model("bert"), args=config, train_dataset=data).cross_validate()
    assert [f.eval_metrics for f in again.folds] == [f.eval_metrics for f in cv.folds]
    other = make_config(tmp_path / "cv", fold_strategy="spatial", coordinate_columns=["x", "y"], num_train_epochs=1,
                        spatial_block_size=meta["spatial_block_size"] / 2)
    with pytest.raises(ValueError, match="spatial_block_size"):
        KFoldTrainer(model=tiny_model("bert"), args=other, train_dataset=data).cross_validate()


@pytest.mark.integration  # a study with inner cross-validations in every outer fold
def test_nested_study_inner_folds_use_the_outer_blocks(tmp_path, monkeypatch):
    from conftest import image_dataset, make_config, tiny_model

    from hf_tlcv import TransferStudy
    from hf_tlcv.folds import load_folds, spatial_blocks

    monkeypatch.setattr("hf_tlcv.plots.cv.save_plots", lambda results, directory: {})
    data = image_dataset(n_per_class=16)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, size=(len(data), 2))
    data = data.add_column("x", xy[:, 0].tolist()).add_column("y", xy[:, 1].tolist())
    args = make_config(tmp_path, n_folds=3, num_train_epochs=1, fold_strategy="spatial", coordinate_columns=["x", "y"],
                       spatial_block_size=10.0)
    study = TransferStudy(tiny_model("vit", seed=1), data, args, nested=True, inner_folds=2,
                          variants={"slow": {"learning_rate": 1e-3}, "fast": {"learning_rate": 2e-2}})
    study.run()
    outer_folds, meta = load_folds(tmp_path / "slow" / "folds.json")
    assert meta["spatial_block_size"] == 10.0
    blocks = spatial_blocks(xy, 10.0, seed=args.fold_seed)
    for fold in outer_folds:
        inner_dirs = sorted((tmp_path / "nested" / "custom" / fold.name).glob("*/folds.json"))
        assert inner_dirs
        for path in inner_dirs:
            inner, inner_meta = load_folds(path)
            assert inner_meta["fold_strategy"] == "spatial" and inner_meta["spatial_block_size"] == 10.0
            outer_rows = fold.train_indices  # inner indices refer to the outer-train rows
            for f in inner:  # an outer block is never split between an inner fold's train and eval rows
                assert not set(blocks[outer_rows[f.eval_indices]]) & set(blocks[outer_rows[f.train_indices]])


def test_blocked_time_folds_follow_the_time_column_with_the_proposed_gap():
    from hf_tlcv.dependence import blocked_folds

    rng = np.random.default_rng(5)
    times = rng.permutation(200).astype(float)  # rows stored out of time order
    dataset = Dataset.from_dict({"timestamp": times, "label": [0, 1] * 100})
    found = {"proposal": {"settings": {"fold_strategy": "timeseries", "fold_gap": 6}, "sort_by": "timestamp"}}
    folds = blocked_folds(dataset, _Config(), found, seed=0)
    assert len(folds) == 5
    for fold in folds:
        train_times, eval_times = times[fold.train_indices], times[fold.eval_indices]
        assert eval_times.min() - train_times.max() - 1 == 6  # the gap, counted in time order
        assert sorted(train_times) == list(range(int(train_times.max()) + 1))  # the whole past


def test_detector_finds_dependence_in_time_and_proposes_gapped_time_folds():
    rng = np.random.default_rng(6)
    n = 400
    drift = np.zeros(n)
    for i in range(1, n):
        drift[i] = 0.9 * drift[i - 1] + rng.normal(scale=0.3)
    p_true = 1 / (1 + np.exp(-(1.0 + drift)))  # the model is worse in some stretches of time than in others
    order = rng.permutation(n)  # row r was recorded at time order[r]
    oof = pd.DataFrame({"row": np.arange(n), "repeat": 0, "fold": 0, "label": 1, "prediction": 1,
                        "prob_0": 1 - p_true[order], "prob_1": p_true[order]})
    dataset = Dataset.from_dict({"when": order.astype(float), "label": [1] * n})

    class Config(_Config):
        time_column = "when"

    found = detect_dependence(oof, dataset, Config(), "kfold")
    assert found["kind"] == "time" and found["significant"] and found["value"] > 0.5
    gap = found["proposal"]["settings"]["fold_gap"]
    assert found["proposal"]["command"] == f"--fold_strategy timeseries --fold_gap {gap}" and gap >= 2
    assert "sorted by 'when'" in dependence_lines({"dependence": found})[1]
    # the same residuals in the stored (random) order of time: quiet
    shuffled = Dataset.from_dict({"when": rng.permutation(n).astype(float), "label": [1] * n})
    assert not detect_dependence(oof, shuffled, Config(), "kfold")["significant"]


def test_study_report_names_the_variants_whose_errors_are_dependent():
    from hf_tlcv.studies.report import StudyReport
    from hf_tlcv.results import CVResults, FoldResult

    def cv(scores, dependence=None):
        folds = [FoldResult(repeat=0, fold=i, n_train=80, n_eval=20, eval_metrics={"accuracy": s})
                 for i, s in enumerate(scores)]
        return CVResults(folds, diagnostics={"dependence": dependence} if dependence else None)

    found = {"source": "detected", "kind": "space", "statistic": "Moran's I", "value": 0.41, "p_value": 0.005,
             "significant": True, "proposal": {"command": "--fold_strategy spatial --coordinate_columns x y"}}
    quiet = {**found, "value": 0.01, "p_value": 0.4, "significant": False}
    info = {"a": {"run": "a", "label": ""}, "b": {"run": "b", "label": ""}}
    flagged = StudyReport([], {"a": cv([0.8, 0.9, 0.85], found), "b": cv([0.7, 0.8, 0.75], quiet)}, {}, info,
                          "accuracy").to_markdown()
    assert "Where k-fold may flatter" in flagged and "a (Moran's I 0.410, p = 0.005)" in flagged
    assert "b (Moran" not in flagged and "`--fold_strategy spatial --coordinate_columns x y`" in flagged
    clean = StudyReport([], {"a": cv([0.8, 0.9, 0.85]), "b": cv([0.7, 0.8, 0.75], quiet)}, {}, info, "accuracy")
    assert "Where k-fold" not in clean.to_markdown()


@pytest.mark.integration  # 9 extra fits beside the folds
def test_nested_interval_runs_on_spatial_blocks(tmp_path):
    from conftest import make_config, tiny_model

    from hf_tlcv import KFoldTrainer
    from hf_tlcv.folds import load_folds, spatial_blocks

    data = _spatial_text_data(n_per_class=20)
    config = make_config(tmp_path / "cv", fold_strategy="spatial", coordinate_columns=["x", "y"], num_train_epochs=1,
                         spatial_block_size=6.0, ci_method="nested")
    cv = KFoldTrainer(model=tiny_model("bert"), args=config, train_dataset=data).cross_validate()
    assert cv.nested and "accuracy" in cv.nested["metrics"]
    extra, meta = load_folds(tmp_path / "cv" / "nested_folds.json")
    assert meta["spatial_block_size"] == 6.0 and {f.repeat for f in extra} == {1}
    blocks = spatial_blocks(np.column_stack([data["x"], data["y"]]), 6.0, seed=config.fold_seed, repeat=1)
    for fold in extra:  # the second repeat re-draws the blocks, and keeps them whole
        assert not set(blocks[fold.eval_indices]) & set(blocks[fold.train_indices])
