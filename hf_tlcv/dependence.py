"""Is k-fold the wrong tool for these rows? Dependence of out-of-fold errors in space and time, measured.

Random folds put near neighbours in training and evaluation. When rows close in space (tiles of one scene, fields of
one farm) or in time (frames of one stream) resemble each other, a model is scored on rows much like the ones it
trained on, and the cross-validated score overstates how it does on a new region or a later period (Roberts et al.
2017, "Cross-validation strategies for data with temporal, spatial, hierarchical, or phylogenetic structure",
Ecography 40; Ploton et al. 2020, Nature Communications 11). The symptom a finished run can measure is that its
out-of-fold errors are themselves autocorrelated: a row's error resembles its neighbours' errors.

- Space: Moran's I of the out-of-fold residuals (1 - probability of the true class) with row-standardised weights on
  each row's `k` nearest neighbours (Moran 1950; Cliff & Ord 1981), tested one-sided by permuting the residuals over
  the positions. The neighbours come from a KD-tree (a ball tree with the haversine metric for longitude/latitude):
  memory is `n * k`, never `n * n`.
- Time: the autocorrelation of the residuals in time order at lags 1..L, summarised by the Ljung-Box statistic
  (Ljung & Box 1978), tested by permuting the residuals over time.

[`detect_dependence`] writes the result into `CVResults.diagnostics["dependence"]` in the shape
`hf_tlcv.diagnostics` documents, with the blocked run to try: spatial blocks of the size at which the errors stop
being autocorrelated, or time-series folds with a gap of the lag at which they do. The false-alarm rate of the test
(shuffled coordinates) and its power are measured in `benchmarks/dependence.py` (docs/dependence.md).

Example:

```python
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> xy = rng.uniform(0, 10, size=(400, 2))
>>> smooth = np.sin(xy[:, 0]) + np.cos(xy[:, 1])           # a residual field that varies smoothly in space
>>> morans_i(smooth, xy)["p_value"] < 0.05, morans_i(rng.normal(size=400), xy)["p_value"] < 0.05
(True, False)

```
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .diagnostics import SIGNIFICANCE
from .folds import _tree_query, autocorrelation_range, neighbour_tree, read_coordinates
from .options import option

__all__ = ["RANDOM_FOLD_STRATEGIES", "blocked_folds", "command_of", "compare_blocked", "dependence_lines",
           "detect_dependence", "find_dependence_columns", "morans_i", "oof_residuals", "time_autocorrelation"]

DEPENDENCE_CHECK_DIR = "dependence_check"  # the blocked folds of check_dependence, in the run folder
RANDOM_FOLD_STRATEGIES = ("kfold", "stratified")
"""Strategies that ignore where and when rows were taken: the ones the detector checks."""
_XY_NAMES = (("x", "y"), ("easting", "northing"), ("col", "row"), ("column", "row"))
_LONLAT_NAMES = (("lon", "lat"), ("lng", "lat"), ("long", "lat"), ("longitude", "latitude"))
_TIME_NAMES = ("time", "timestamp", "datetime", "date", "time_stamp", "created_at", "t")
_NEIGHBOURS = 8
_PERMUTATIONS = 199
_MAX_LAG = 10


# ---- the columns ---------------------------------------------------------------------------------------------------
def _numeric(dataset, column: str, time: bool = False) -> bool:
    feature = dataset.features.get(column)
    dtype = str(getattr(feature, "dtype", ""))
    return dtype.startswith(("int", "uint", "float")) or (time and dtype.startswith(("timestamp", "date")))


def find_dependence_columns(dataset, coordinate_columns: Optional[Sequence[str]] = None,
                            time_column: Optional[str] = None) -> dict[str, Any]:
    """The coordinate and time columns of a dataset: the ones named, else recognised by name and type (numeric
    `x`/`y`, `lon`/`lat`, `longitude`/`latitude`...; a numeric or timestamp `time`, `timestamp`, `date`...).

    Returns:
        `dict` with `space` (two column names or `None`) and `time` (a column name or `None`).
    """
    names = {c.lower(): c for c in dataset.column_names}
    space = list(coordinate_columns) if coordinate_columns else None
    if space is None:
        for a, b in (*_LONLAT_NAMES, *_XY_NAMES):
            if a in names and b in names and _numeric(dataset, names[a]) and _numeric(dataset, names[b]):
                space = [names[a], names[b]]
                break
    time = time_column
    if time is None:
        time = next((names[n] for n in _TIME_NAMES if n in names and _numeric(dataset, names[n], time=True)), None)
    elif time not in dataset.column_names:
        raise ValueError(f"{option('time_column', time)} is not a column of the dataset (columns: "
                         f"{', '.join(dataset.column_names)}); set {option('time_column')} to the column with each "
                         "row's time.")
    return {"space": space, "time": time}


# ---- the statistics -----------------------------------------------------------------------------------------------
def morans_i(values: np.ndarray, coordinates: np.ndarray, geographic: bool = False, k: int = _NEIGHBOURS,
             n_permutations: int = _PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """Moran's I of `values` with row-standardised weights on each row's `k` nearest neighbours, and its one-sided
    permutation p-value.

    `I = sum_i z_i * mean(z_j, j in knn(i)) / sum_i z_i^2` with `z = values - mean(values)`: about `-1/(n-1)` for
    values placed at random, positive when neighbours resemble each other. The p-value is `(1 + #{I_perm >= I}) /
    (1 + n_permutations)` over random permutations of the values (exact under the null of exchangeable values).
    Memory is `O(n k)`.

    Returns:
        `dict`: `statistic`, `value`, `expected`, `p_value`, `k`, `n`.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    coordinates = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    n = len(values)
    k = int(min(k, n - 1))
    out = {"statistic": "Moran's I", "expected": -1.0 / max(n - 1, 1), "k": k, "n": n}
    z = values - values.mean()
    denominator = float(z @ z)
    if n < 3 or k < 1 or denominator <= 0:
        return {**out, "value": float("nan"), "p_value": 1.0}
    _, neighbours = _tree_query(neighbour_tree(coordinates, geographic), coordinates, geographic, k=k + 1)
    # Drop each row itself (not always first when positions repeat): keep the k neighbours that are other rows.
    rows = np.arange(n)[:, None]
    others = neighbours != rows
    others[others.sum(1) > k, -1] = False
    neighbours = neighbours[others].reshape(n, k)

    def statistic(v: np.ndarray) -> float:
        return float(v @ v[neighbours].mean(axis=1)) / denominator

    observed = statistic(z)
    rng = np.random.default_rng(seed)
    exceed = sum(statistic(rng.permutation(z)) >= observed for _ in range(n_permutations))
    return {**out, "value": observed, "p_value": (1 + exceed) / (1 + n_permutations)}


def time_autocorrelation(values: np.ndarray, times: np.ndarray, max_lag: int = _MAX_LAG,
                         n_permutations: int = _PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """The autocorrelation of `values` in the order of `times` at lags 1..`max_lag`, the Ljung-Box statistic
    `Q = n (n + 2) sum_l r_l^2 / (n - l)` and its permutation p-value.

    Returns:
        `dict`: `statistic` ("lag-1 autocorrelation", the `value` reported), `value`, `acf` (lags 1..L),
        `ljung_box`, `p_value`, `n`.
    """
    order = np.argsort(np.asarray(times), kind="stable")
    z = np.asarray(values, dtype=np.float64)[order]
    z = z - z.mean()
    n = len(z)
    max_lag = int(max(1, min(max_lag, n // 4)))
    out = {"statistic": "lag-1 autocorrelation", "n": n}
    denominator = float(z @ z)
    if n < 8 or denominator <= 0:
        return {**out, "value": float("nan"), "acf": [], "ljung_box": float("nan"), "p_value": 1.0}
    lags = np.arange(1, max_lag + 1)

    def acf(v: np.ndarray) -> np.ndarray:
        return np.array([float(v[:-lag] @ v[lag:]) for lag in lags]) / denominator

    def ljung_box(r: np.ndarray) -> float:
        return float(n * (n + 2) * np.sum(r ** 2 / (n - lags)))

    r = acf(z)
    observed = ljung_box(r)
    rng = np.random.default_rng(seed)
    exceed = sum(ljung_box(acf(rng.permutation(z))) >= observed for _ in range(n_permutations))
    return {**out, "value": float(r[0]), "acf": [float(v) for v in r], "ljung_box": observed,
            "p_value": (1 + exceed) / (1 + n_permutations)}


# ---- from a run ----------------------------------------------------------------------------------------------------
def oof_residuals(oof) -> tuple[np.ndarray, np.ndarray]:
    """`(rows, residuals)` of out-of-fold predictions: per row, 1 - the predicted probability of the true class (the
    error indicator when there are no probabilities), averaged over repeats."""
    if oof is None or len(oof) == 0 or "label" not in oof.columns:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    labels = oof["label"].to_numpy(dtype=np.int64)
    probs = oof.filter(like="prob_").to_numpy(dtype=np.float64)
    if probs.shape[1] > int(labels.max(initial=0)):
        residual = 1.0 - probs[np.arange(len(labels)), labels]
    else:
        residual = (oof["prediction"].to_numpy() != labels).astype(np.float64)
    rows = oof["row"].to_numpy(dtype=np.int64)
    unique, inverse = np.unique(rows, return_inverse=True)
    means = np.bincount(inverse, weights=residual) / np.bincount(inverse)
    return unique, means


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if value == value else "n/a"


def _space_proposal(coordinates, residuals, geographic, columns, system, n_folds) -> dict:
    """Spatial blocks of the size at which the residuals stop being autocorrelated."""
    from .folds import choose_block_size

    size = choose_block_size(coordinates, residuals, n_folds, geographic)
    settings = {"fold_strategy": "spatial", "coordinate_columns": list(columns), "spatial_block_size": size}
    if system != "auto":
        settings["coordinate_system"] = system
    return {"settings": settings, "range": autocorrelation_range(coordinates, residuals, geographic)[0]}


def _time_proposal(acf: Sequence[float], n: int, time_column: str) -> dict:
    """Time-series folds with a gap of the first lag whose autocorrelation is within noise (2 / sqrt(n))."""
    noise = 2.0 / np.sqrt(max(n, 1))
    gap = next((lag for lag, r in enumerate(acf, start=1) if r < noise), len(acf))
    return {"settings": {"fold_strategy": "timeseries", "fold_gap": int(gap)}, "sort_by": time_column}


def command_of(settings: dict) -> str:
    """Command-line flags of settings: `--fold_strategy spatial --coordinate_columns x y ...`."""
    parts = []
    for key, value in settings.items():
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        parts.append(f"--{key} {shown}")
    return " ".join(parts)


def detect_dependence(oof, dataset, config, fold_strategy: str) -> Optional[dict]:
    """The `diagnostics["dependence"]` entry of a run with random folds whose rows have coordinates or times (named
    in `config`, or recognised by [`find_dependence_columns`]); `None` when there is nothing to measure.

    Args:
        oof: the run's out-of-fold predictions (`CVResults.oof_predictions`).
        dataset: the rows the folds were cut from.
        config: the run's [`KFoldConfig`] (`coordinate_columns`, `coordinate_system`, `time_column`, `n_folds`).
        fold_strategy: the resolved fold strategy; only random folds are checked.

    Returns:
        `dict`: `source` ("detected"), `kind` ("space" or "time"), `statistic`, `value`, `p_value`, `detail`, and
        `columns`, `significant`, `proposal` (`settings` of the blocked run and its `command`); with both
        coordinates and times, the other test under `also`.
    """
    if fold_strategy not in RANDOM_FOLD_STRATEGIES:
        return None
    columns = find_dependence_columns(dataset, getattr(config, "coordinate_columns", None),
                                      getattr(config, "time_column", None))
    rows, residuals = oof_residuals(oof)
    if len(rows) < 8 or (columns["space"] is None and columns["time"] is None):
        return None
    found = []
    if columns["space"] is not None:
        system = getattr(config, "coordinate_system", "auto")
        coordinates, geographic = read_coordinates(dataset.select(rows), columns["space"], system)
        test = morans_i(residuals, coordinates, geographic)
        unit = " km" if geographic else ""
        are = "are" if test["p_value"] < SIGNIFICANCE else "are not measurably"
        detail = (f"out-of-fold errors {are} autocorrelated in space (Moran's I {_fmt(test['value'])} on the "
                  f"{test['k']} nearest neighbours by {', '.join(columns['space'])}, p = {_fmt(test['p_value'], 2)})")
        entry = {"kind": "space", "columns": columns["space"], **test, "detail": detail}
        if test["p_value"] < SIGNIFICANCE:
            entry["proposal"] = _space_proposal(coordinates, residuals, geographic, columns["space"], system,
                                                config.n_folds)
            entry["proposal"]["unit"] = unit.strip()
        found.append(entry)
    if columns["time"] is not None:
        times = np.asarray(dataset.select(rows).with_format("numpy")[columns["time"]])
        if times.dtype.kind == "M":
            times = times.astype("datetime64[ns]").astype(np.int64)
        test = time_autocorrelation(residuals, times)
        are = "are" if test["p_value"] < SIGNIFICANCE else "are not measurably"
        detail = (f"out-of-fold errors {are} autocorrelated in time (lag-1 autocorrelation {_fmt(test['value'])} in "
                  f"the order of {columns['time']!r}, Ljung-Box over {len(test['acf'])} lags p = "
                  f"{_fmt(test['p_value'], 2)})")
        entry = {"kind": "time", "columns": [columns["time"]], **test, "detail": detail}
        if test["p_value"] < SIGNIFICANCE:
            entry["proposal"] = _time_proposal(test["acf"], test["n"], columns["time"])
        found.append(entry)
    found.sort(key=lambda e: (e["p_value"], -abs(e["value"]) if e["value"] == e["value"] else 0))
    best = {"source": "detected", **found[0], "significant": found[0]["p_value"] < SIGNIFICANCE}
    if "proposal" in best:
        best["proposal"]["command"] = command_of(best["proposal"]["settings"])
    if len(found) > 1:
        best["also"] = found[1]
    return best


def blocked_folds(dataset, config, found: dict, seed: int):
    """The blocked folds a detection proposes, on the rows as they are: spatial blocks, or time-series folds cut in
    the order of the time column (their indices refer to the dataset's own row order)."""
    from .folds import make_folds, split_indices, Fold

    settings = found["proposal"]["settings"]
    if settings["fold_strategy"] == "spatial":
        return make_folds(dataset, "spatial", config.n_folds, 1, seed, label_column=config.label_column,
                          coordinate_columns=settings["coordinate_columns"],
                          coordinate_system=settings.get("coordinate_system", "auto"),
                          block_size=settings["spatial_block_size"])
    times = np.asarray(dataset.with_format("numpy")[found["proposal"]["sort_by"]])
    order = np.argsort(times, kind="stable")
    folds = split_indices(len(order), "timeseries", config.n_folds, gap=settings["fold_gap"])
    return [Fold(repeat=f.repeat, fold=f.fold, train_indices=order[f.train_indices],
                 eval_indices=order[f.eval_indices]) for f in folds]


def compare_blocked(random_summary: dict, blocked_summary: dict, kind: str, metric: str) -> dict:
    """The random and blocked estimates of `metric` side by side, and by how much random folds flatter."""
    random, blocked = random_summary[metric], blocked_summary[metric]
    name = "spatial blocks" if kind == "space" else "time-series folds"
    flattery = float(random["mean"] - blocked["mean"])
    loss_like = "loss" in metric or "error" in metric
    if loss_like:
        flattery = -flattery
    verdict = (f"k-fold flatters this data by {flattery:.2f}; report the blocked estimate" if flattery > 0
               else "random folds do not flatter this data")
    text = (f"{metric}: random folds {random['mean']:.2f} [{random['ci95'][0]:.2f}, {random['ci95'][1]:.2f}], "
            f"{name} {blocked['mean']:.2f} [{blocked['ci95'][0]:.2f}, {blocked['ci95'][1]:.2f}]: {verdict}")
    return {"metric": metric, "random": {"mean": random["mean"], "ci95": list(random["ci95"])},
            "blocked": {"mean": blocked["mean"], "ci95": list(blocked["ci95"]), "folds": name},
            "flattery": flattery, "text": text}


def dependence_lines(diagnostics: dict | None) -> list[str]:
    """The lines a run's summary and card carry about dependence (none when nothing was measured)."""
    found = (diagnostics or {}).get("dependence")
    if not found or found.get("source") != "detected":
        return []
    if not found.get("significant"):
        what = {"space": "space", "time": "time"}[found["kind"]]
        return [f"Dependence: no autocorrelation of the out-of-fold errors found in {what} ({found['statistic']} "
                f"{_fmt(found['value'])}, p = {_fmt(found['p_value'], 2)}); random folds look fine here."]
    lines = [f"Dependence: {found['detail']}. Random folds put near neighbours in training and evaluation, so these "
             "scores are likely optimistic for new " + ("regions." if found["kind"] == "space" else "periods.")]
    proposal = found.get("proposal")
    if proposal:
        sort = f" (rows sorted by {proposal['sort_by']!r})" if proposal.get("sort_by") else ""
        lines.append(f"  Cross-validate with blocked folds{sort}: {proposal['command']}, or add --check_dependence "
                     "to run both and compare.")
    check = found.get("check")
    if check:
        lines.append(f"  {check['text']}.")
    return lines

