"""Where k-fold is the wrong tool: random folds against spatial blocks and time-series folds, checked against rows
that were truly held out, and the false-alarm rate and power of hf_tlcv's dependence detector.

Data (all offline; named before any number was computed):

- **Photo tiles** (real images): the two photographs that ship inside scikit-learn (`sklearn.datasets.
  load_sample_images()`: `china.jpg`, a temple in a landscape, and `flower.jpg`, 427 x 640 px each), cut into a grid
  of 32 px tiles every 16 px (neighbouring tiles overlap by half, as neighbouring satellite tiles share ground), with
  the tile centre as coordinates (the flower photo placed 700 px to the right of the temple). Label: the *content* of
  the tile's neighbourhood, one of 4 colour classes (k-means, seeded, on the mean colour of the 64 px around the tile
  centre: sky, foliage, roofs, petals...). Features: grey-level texture only (a 4x4 thumbnail, the intensity mean,
  spread and quantiles, and an 8-bin histogram of gradient orientations weighted by magnitude), so the label is not a
  function of the features and the model must generalise from texture to content.
- **Random field with known truth** (synthetic): on a 60 x 60 grid, three observed Gaussian random fields `f1, f2, f3`
  (white noise smoothed with a Gaussian of width 4 cells, standardised) and one latent field `g` of the same law,
  label `1[f1 + 0.5 f2 + g > 0]`. `g` is never observed: on new ground the best any model can do from the features is
  the Bayes accuracy `1/2 + arcsin(rho) / pi` with `rho = corr(f1 + 0.5 f2, f1 + 0.5 f2 + g) = sqrt(1.25 / 2.25)`
  (0.768), and a held-out region of an independent field is measured too.
- **Drifting stream** (synthetic, for time; none of the builtin datasets has timestamps): 3,000 rows in time order,
  observed features `x1, x2` and a sensor baseline that drifts as a random walk (a feature correlated with time, as
  real drifting sensors give), label `1[x1 + 0.5 x2 + g(t) > 0]` where `g` is an unobserved AR(1) process with
  coefficient 0.99 (conditions that change slowly, memory about 100 rows) of the same variance as `x1 + 0.5 x2`;
  Bayes accuracy from `x1, x2` on a new period: 0.768, as for the field. Held out: the last 20% of the stream.

Learners (cheap enough for two shared CPU cores; no fine-tuning): a 5-nearest-neighbour classifier and a logistic
regression on standardised features (scikit-learn); and, for the photo tiles, the library itself end to end:
`KFoldTrainer` with the builtin EfficientNet-Lite0 (ImageNet weights) as a linear probe on the 32 px tiles (frozen
features, computed once by the feature cache), `coordinate_columns=["x", "y"]` and `check_dependence=True`, the
held-out band passed as its `eval_dataset`, for 4 of the 8 bands (every other one; ~100 s each). The folds are hf_tlcv's: `split_indices` with `"stratified"`
(random), `"spatial"` (block size chosen by `choose_block_size` from the labels, as `KFoldConfig` does by default)
and `"timeseries"` (with `fold_gap`). Estimates are the mean of the fold accuracies with hf_tlcv's corrected interval
(`hf_tlcv.stats.summarize`). The truly held-out score: the learner fitted on all rows outside the region (tiles that
share no pixel with it) scores the region. Each photo is held out in 4 vertical bands in turn.

Detector: `hf_tlcv.dependence.morans_i` / `time_autocorrelation` on the random-fold out-of-fold residuals (1 - the
probability of the true class), as a run does. False alarms: the same residuals with the coordinates (times)
shuffled over the rows, and independent residuals on random positions; power: the real data and 100 random fields.

Usage:
    nice -n 10 .venv/bin/python benchmarks/dependence.py            # everything (~8 min on one shared core)
    nice -n 10 .venv/bin/python benchmarks/dependence.py --quick --trainer_bands 2   # a check that it runs (~2 min)
Writes benchmarks/results/dependence.{json,md} (dependence_quick.{json,md} with --quick).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hf_tlcv.dependence import morans_i, time_autocorrelation
from hf_tlcv.folds import choose_block_size, split_indices
from hf_tlcv.stats import summarize

RESULTS = Path(__file__).resolve().parent / "results"
TILE, STRIDE, OFFSET = 32, 16, 700.0
N_FOLDS = 5


# ---- data -----------------------------------------------------------------------------------------------------------
def _texture(grey: np.ndarray) -> np.ndarray:
    """Grey-level texture of one tile: 4x4 thumbnail, mean, spread, quartiles, gradient-orientation histogram."""
    h, w = grey.shape
    thumb = grey.reshape(4, h // 4, 4, w // 4).mean(axis=(1, 3)).ravel()
    gy, gx = np.gradient(grey)
    magnitude, angle = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    hog = np.bincount(np.minimum((angle / np.pi * 8).astype(int), 7).ravel(), weights=magnitude.ravel(), minlength=8)
    hog = hog / max(hog.sum(), 1e-9)
    stats = [grey.mean(), grey.std(), *np.quantile(grey, [0.1, 0.5, 0.9]), magnitude.mean()]
    return np.concatenate([thumb, stats, hog])


def photo_tiles(tile: int = TILE, stride: int = STRIDE, n_classes: int = 4, seed: int = 0) -> dict:
    """Overlapping tiles of scikit-learn's two sample photographs: texture features, content labels, coordinates."""
    from scipy.ndimage import uniform_filter
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_sample_images

    features, colours, xy, image, pixels = [], [], [], [], []
    for k, photo in enumerate(load_sample_images().images):
        rgb = photo.astype(np.float64) / 255.0
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        around = np.stack([uniform_filter(rgb[..., c], size=2 * tile, mode="nearest") for c in range(3)], axis=-1)
        for top in range(0, rgb.shape[0] - tile + 1, stride):
            for left in range(0, rgb.shape[1] - tile + 1, stride):
                cy, cx = top + tile // 2, left + tile // 2
                features.append(_texture(grey[top:top + tile, left:left + tile]))
                pixels.append(photo[top:top + tile, left:left + tile])
                colours.append(around[cy, cx])
                xy.append((cx + k * OFFSET, cy))
                image.append(k)
    colours = np.asarray(colours)
    labels = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(colours)
    return {"features": np.asarray(features), "labels": labels.astype(np.int64), "xy": np.asarray(xy, dtype=float),
            "image": np.asarray(image), "tile": tile, "pixels": np.asarray(pixels)}


def _smooth_field(rng, n: int, width: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=(n, n)), width, mode="wrap")
    return (field - field.mean()) / field.std()


FIELD_RHO = np.sqrt(1.25 / 2.25)
FIELD_BAYES = 0.5 + np.arcsin(FIELD_RHO) / np.pi


def random_field(seed: int, n: int = 60, width: float = 4.0, latent: float = 1.0) -> dict:
    """Observed fields f1, f2, f3 and a latent field g on an n x n grid; label 1[f1 + 0.5 f2 + latent * g > 0]."""
    rng = np.random.default_rng(seed)
    f1, f2, f3, g = (_smooth_field(rng, n, width) for _ in range(4))
    yy, xx = np.mgrid[0:n, 0:n]
    labels = (f1 + 0.5 * f2 + latent * g > 0).astype(np.int64).ravel()
    features = np.column_stack([f1.ravel(), f2.ravel(), f3.ravel()])
    return {"features": features, "labels": labels, "xy": np.column_stack([xx.ravel(), yy.ravel()]).astype(float),
            "tile": 1}


STREAM_RHO = np.sqrt(1.25 / 2.25)


def drifting_stream(seed: int = 0, n: int = 3000, memory: float = 0.99, drift: float = 0.08) -> dict:
    """Rows in time order: observed features x1, x2 and a drifting sensor baseline b (a random walk); label
    1[x1 + 0.5 x2 + g(t) > 0] with g an unobserved AR(1) process (coefficient `memory`) of the same variance as
    x1 + 0.5 x2 (the conditions of the moment, which drift)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    g = np.zeros(n)
    innovations = rng.normal(scale=np.sqrt(1 - memory ** 2), size=n)
    g[0] = rng.normal()
    for i in range(1, n):
        g[i] = memory * g[i - 1] + innovations[i]
    g *= np.sqrt(1.25) / g.std()
    labels = (x[:, 0] + 0.5 * x[:, 1] + g > 0).astype(np.int64)
    baseline = np.cumsum(rng.normal(scale=drift, size=n))
    return {"features": np.column_stack([x, baseline]), "labels": labels, "time": np.arange(n, dtype=float)}


# ---- learners and estimates ----------------------------------------------------------------------------------------
def _learners() -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"5-NN": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)),
            "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))}


def cross_validate(make, X, y, folds) -> dict:
    """Fold accuracies, their hf_tlcv summary, and the out-of-fold residuals (1 - p(true class)) of repeat 0."""
    scores, residual = [], np.full(len(y), np.nan)
    for fold in folds:
        model = make().fit(X[fold.train_indices], y[fold.train_indices])
        proba = model.predict_proba(X[fold.eval_indices])
        columns = np.searchsorted(model.classes_, y[fold.eval_indices])
        known = (columns < len(model.classes_)) & (model.classes_[np.minimum(columns, len(model.classes_) - 1)]
                                                   == y[fold.eval_indices])
        p_true = np.where(known, proba[np.arange(len(columns)), np.minimum(columns, proba.shape[1] - 1)], 0.0)
        scores.append(float(np.mean(model.classes_[proba.argmax(1)] == y[fold.eval_indices])))
        if fold.repeat == 0:
            residual[fold.eval_indices] = 1.0 - p_true
    n_train = float(np.mean([len(f.train_indices) for f in folds]))
    n_eval = float(np.mean([len(f.eval_indices) for f in folds]))
    s = summarize(scores, n_train=n_train, n_eval=n_eval, bounded=True, n_rows=len(y))
    return {"mean": float(s["mean"]), "ci95": [float(v) for v in s["ci95"]], "residual": residual}


def holdout_score(make, X, y, train, test) -> float:
    model = make().fit(X[train], y[train])
    return float(np.mean(model.predict(X[test]) == y[test]))


def _bands(data: dict, n_bands: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Vertical bands of each image held out in turn: (pool, region) row sets sharing no pixel."""
    xy, tile = data["xy"], data["tile"]
    groups = data.get("image", np.zeros(len(xy), dtype=int))
    out = []
    for k in np.unique(groups):
        inside = groups == k
        lo, hi = xy[inside, 0].min(), xy[inside, 0].max()
        edges = np.linspace(lo, hi + 1e-9, n_bands + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            region = inside & (xy[:, 0] >= a) & (xy[:, 0] < b)
            # no overlap: pool tiles are at least one tile width away from every region tile (centre to centre)
            pool = ~inside | (xy[:, 0] < a - tile) | (xy[:, 0] >= b + tile)
            out.append((np.flatnonzero(pool), np.flatnonzero(region)))
    return out


def spatial_table(data: dict, name: str, seed: int = 42, n_bands: int = 4) -> dict:
    """Random folds, spatial blocks and the truly held-out region, per held-out band and learner."""
    X, y, xy = data["features"], data["labels"], data["xy"]
    rows = []
    for band, (pool, region) in enumerate(_bands(data, n_bands)):
        block = choose_block_size(xy[pool], y[pool], N_FOLDS, categorical=True)
        random_folds = split_indices(len(pool), "stratified", N_FOLDS, seed=seed, labels=y[pool])
        spatial_folds = split_indices(len(pool), "spatial", N_FOLDS, seed=seed, labels=y[pool], coordinates=xy[pool],
                                      block_size=block)
        for learner, make in _learners().items():
            random = cross_validate(make, X[pool], y[pool], random_folds)
            blocked = cross_validate(make, X[pool], y[pool], spatial_folds)
            held = holdout_score(make, X, y, pool, region)
            rows.append({"data": name, "band": band, "learner": learner, "n_pool": len(pool),
                         "n_region": len(region), "block_size": block,
                         "random": {k: random[k] for k in ("mean", "ci95")},
                         "spatial": {k: blocked[k] for k in ("mean", "ci95")}, "held_out": held,
                         "random_covers": random["ci95"][0] <= held <= random["ci95"][1],
                         "spatial_covers": blocked["ci95"][0] <= held <= blocked["ci95"][1],
                         "moran": _moran(random["residual"], xy[pool])})
    return {"rows": rows}


def _moran(residual, xy, seed=0) -> dict:
    test = morans_i(residual, xy, seed=seed)
    return {"value": test["value"], "p_value": test["p_value"]}


def field_truth(seed: int, learner) -> float:
    """Accuracy on a fresh, independent field of the learner trained on a whole field: the truth for new ground."""
    train, test = random_field(seed), random_field(seed + 10_000)
    return holdout_score(learner, np.r_[train["features"], test["features"]], np.r_[train["labels"], test["labels"]],
                         np.arange(len(train["labels"])), len(train["labels"]) + np.arange(len(test["labels"])))


def time_table(seed: int = 0) -> dict:
    data = drifting_stream(seed)
    X, y, t = data["features"], data["labels"], data["time"]
    n = len(y)
    cut = int(0.8 * n)
    pool, future = np.arange(cut), np.arange(cut, n)
    rows = []
    random_folds = split_indices(cut, "stratified", N_FOLDS, labels=y[pool])
    time_folds = {gap: split_indices(cut, "timeseries", N_FOLDS, gap=gap) for gap in (0, 100)}
    for learner, make in _learners().items():
        random = cross_validate(make, X[pool], y[pool], random_folds)
        row = {"learner": learner, "n_pool": cut, "n_future": n - cut,
               "random": {k: random[k] for k in ("mean", "ci95")},
               "held_out": holdout_score(make, X, y, pool, future)}
        for gap, folds in time_folds.items():
            blocked = cross_validate(make, X[pool], y[pool], folds)
            row[f"timeseries_gap_{gap}"] = {k: blocked[k] for k in ("mean", "ci95")}
        for key in ("random", "timeseries_gap_0", "timeseries_gap_100"):
            low, high = row[key]["ci95"]
            row[key]["covers"] = low <= row["held_out"] <= high
        test = time_autocorrelation(random["residual"], t[pool])
        row["autocorrelation"] = {"lag1": test["value"], "p_value": test["p_value"]}
        rows.append(row)
    return {"rows": rows}


def trainer_table(data: dict, bands: list[int], epochs: int = 5) -> dict:
    """The library end to end on the photo tiles: `KFoldTrainer` with the builtin EfficientNet-Lite0 (ImageNet
    weights) as a linear probe on 32 px tiles, random folds with `coordinate_columns` and `check_dependence=True`, the
    held-out band as its `eval_dataset` (the test set every fold model scores)."""
    import tempfile

    from datasets import ClassLabel, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    from hf_tlcv import KFoldConfig, KFoldTrainer

    names = [f"colour_{c}" for c in range(int(data["labels"].max()) + 1)]
    features = Features({"image": Image(), "label": ClassLabel(names=names), "x": Value("float64"),
                         "y": Value("float64")})

    def dataset(rows):
        return Dataset.from_dict({"image": [PILImage.fromarray(data["pixels"][i]) for i in rows],
                                  "label": data["labels"][rows].tolist(), "x": data["xy"][rows, 0].tolist(),
                                  "y": data["xy"][rows, 1].tolist()}, features=features)

    rows = []
    for band in bands:
        pool, region = _bands(data)[band]
        start = time.time()
        with tempfile.TemporaryDirectory() as out:
            config = KFoldConfig(output_dir=out, n_folds=N_FOLDS, finetune_strategy="linear_probe", image_size=32,
                                 num_train_epochs=epochs, learning_rate=1e-2, per_device_train_batch_size=32,
                                 coordinate_columns=["x", "y"], check_dependence=True, report_to="none", use_cpu=True,
                                 save_fold_models=False, disable_tqdm=True, seed=0, metrics=["accuracy"],
                                 eval_on_train=False)
            cv = KFoldTrainer(model="builtin:efficientnet-lite0", args=config, train_dataset=dataset(pool),
                              eval_dataset=dataset(region)).cross_validate()
        found = cv.diagnostics.get("dependence", {})
        check = found.get("check", {})
        rows.append({"band": band, "n_pool": len(pool), "n_region": len(region),
                     "random": check.get("random"), "spatial": check.get("blocked"),
                     "block_size": found.get("proposal", {}).get("settings", {}).get("spatial_block_size"),
                     "held_out_fold_models": cv.test_summary["accuracy"]["mean"],
                     "held_out_ensemble": cv.test_metrics.get("accuracy"),
                     "moran": {"value": found.get("value"), "p_value": found.get("p_value")},
                     "text": check.get("text"), "seconds": time.time() - start})
    return {"rows": rows, "model": "builtin:efficientnet-lite0", "image_size": 32, "epochs": epochs}


# ---- the detector's error rates -------------------------------------------------------------------------------------
def false_alarms(residual: np.ndarray, xy: np.ndarray, n_sims: int, seed: int = 0) -> float:
    """Share of significant tests (p < 0.05) when the coordinates are shuffled over the rows."""
    rng = np.random.default_rng(seed)
    hits = [morans_i(residual, xy[rng.permutation(len(xy))], seed=i)["p_value"] < 0.05 for i in range(n_sims)]
    return float(np.mean(hits))


def simulated_null(n_sims: int, n: int = 500, seed: int = 0) -> dict:
    """Independent residuals (binary errors and continuous 1 - p) on random positions: the share called significant."""
    rng = np.random.default_rng(seed)
    space_binary, space_continuous, time_binary = [], [], []
    for i in range(n_sims):
        xy = rng.uniform(0, 100, size=(n, 2))
        space_binary.append(morans_i((rng.random(n) < 0.2).astype(float), xy, seed=i)["p_value"] < 0.05)
        space_continuous.append(morans_i(rng.beta(1, 3, size=n), xy, seed=i)["p_value"] < 0.05)
        times = rng.permutation(n).astype(float)
        time_binary.append(time_autocorrelation((rng.random(n) < 0.2).astype(float), times, seed=i)["p_value"] < 0.05)
    return {"space_binary": float(np.mean(space_binary)), "space_continuous": float(np.mean(space_continuous)),
            "time_binary": float(np.mean(time_binary)), "n_sims": n_sims, "n": n}


def field_power(n_fields: int, learner_name: str = "5-NN") -> dict:
    """Random-fold residuals of `n_fields` independent random fields: the share the detector flags."""
    make = _learners()[learner_name]
    hits, values = [], []
    for seed in range(n_fields):
        data = random_field(seed)
        folds = split_indices(len(data["labels"]), "stratified", N_FOLDS, seed=seed, labels=data["labels"])
        residual = cross_validate(make, data["features"], data["labels"], folds)["residual"]
        test = morans_i(residual, data["xy"], seed=seed)
        hits.append(test["p_value"] < 0.05)
        values.append(test["value"])
    return {"power": float(np.mean(hits)), "median_moran": float(np.median(values)), "n_fields": n_fields,
            "learner": learner_name}


def power_curve(n_fields: int, latents=(0.0, 0.25, 0.5, 1.0), sides=(20, 40), learner_name: str = "5-NN") -> list:
    """Detection rate against the strength of the unobserved field g and the number of rows, with what random folds
    overstate there: the random-fold mean minus the accuracy on an independent field (the truth for new ground)."""
    make = _learners()[learner_name]
    cells = []
    for side in sides:
        for latent in latents:
            hits, flattery = [], []
            for seed in range(n_fields):
                data, fresh = random_field(seed, n=side, latent=latent), random_field(seed + 10_000, n=side,
                                                                                      latent=latent)
                folds = split_indices(len(data["labels"]), "stratified", N_FOLDS, seed=seed, labels=data["labels"])
                cv = cross_validate(make, data["features"], data["labels"], folds)
                hits.append(morans_i(cv["residual"], data["xy"], seed=seed)["p_value"] < 0.05)
                model = make().fit(data["features"], data["labels"])
                flattery.append(cv["mean"] - float(np.mean(model.predict(fresh["features"]) == fresh["labels"])))
            cells.append({"rows": side * side, "latent": latent, "detected": float(np.mean(hits)),
                          "flattery": float(np.mean(flattery)), "n_fields": n_fields, "learner": learner_name})
    return cells


def residual_power(n_sims: int, weights=(0.0, 0.1, 0.2, 0.3, 0.5), sides=(20, 40), width: float = 2.0) -> list:
    """The test alone against weak dependence: residuals `(1 - w) e + w g` with `e` independent noise and `g` a smooth
    Gaussian field (width 2 cells) on a side x side grid; the share called significant and the mean Moran's I."""
    cells = []
    for side in sides:
        yy, xx = np.mgrid[0:side, 0:side]
        xy = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
        for w in weights:
            rng = np.random.default_rng(int(w * 100) + side)
            tests = [morans_i((1 - w) * rng.normal(size=side * side) + w * _smooth_field(rng, side, width).ravel(),
                              xy, seed=i) for i in range(n_sims)]
            cells.append({"rows": side * side, "weight": w, "detected": float(np.mean([t["p_value"] < 0.05
                                                                                         for t in tests])),
                          "mean_moran": float(np.mean([t["value"] for t in tests])), "n_sims": n_sims})
    return cells


# ---- report ----------------------------------------------------------------------------------------------------------
def _interval(e: dict) -> str:
    return f"{e['mean']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"


def markdown(result: dict) -> str:
    lines = ["# Random folds, spatial blocks, time-series folds and truly held-out rows", "",
             f"Generated by `benchmarks/dependence.py` in {result['seconds']:.0f} s "
             f"({'--quick' if result['quick'] else 'full run'}). Accuracy; intervals are hf_tlcv's corrected 95% "
             "intervals of the fold mean.", ""]
    for key, title in (("photo", "Photo tiles (scikit-learn's china.jpg and flower.jpg)"),
                       ("field", "Random field with known truth")):
        rows = result[key]["rows"]
        lines += [f"## {title}", "",
                  "| held-out band | learner | random folds | spatial blocks (size) | held-out region | Moran's I of "
                  "random-fold errors (p) |", "|---|---|---|---|---:|---|"]
        for r in rows:
            lines.append(f"| {r['band']} | {r['learner']} | {_interval(r['random'])}{'' if r['random_covers'] else ' ✗'}"
                         f" | {_interval(r['spatial'])}{'' if r['spatial_covers'] else ' ✗'} ({r['block_size']:g}) | "
                         f"{r['held_out']:.3f} | {r['moran']['value']:.3f} ({r['moran']['p_value']:.3f}) |")
        for learner in sorted({r["learner"] for r in rows}):
            mine = [r for r in rows if r["learner"] == learner]
            lines.append("")
            lines.append(f"{learner}: mean over bands: random {np.mean([r['random']['mean'] for r in mine]):.3f}, "
                         f"spatial {np.mean([r['spatial']['mean'] for r in mine]):.3f}, held-out "
                         f"{np.mean([r['held_out'] for r in mine]):.3f}; the held-out accuracy is inside the random "
                         f"interval {sum(r['random_covers'] for r in mine)}/{len(mine)} times, inside the spatial one "
                         f"{sum(r['spatial_covers'] for r in mine)}/{len(mine)} times.")
        if key == "field":
            lines.append("")
            lines.append(f"Truth: Bayes accuracy from the observed fields {FIELD_BAYES:.3f}; the learners trained on a "
                         f"whole field score on an independent field: " + ", ".join(
                             f"{k} {v:.3f}" for k, v in result["field"]["truth"].items()) + ".")
        lines.append("")
    lines += ["## Drifting stream (time)", "",
              "| learner | random folds | time-series folds | time-series, fold_gap=100 | future 20% held out | "
              "lag-1 autocorrelation of random-fold errors (p) |", "|---|---|---|---|---:|---|"]
    for r in result["time"]["rows"]:
        mark = {k: "" if r[k]["covers"] else " ✗" for k in ("random", "timeseries_gap_0", "timeseries_gap_100")}
        lines.append(f"| {r['learner']} | {_interval(r['random'])}{mark['random']} | "
                     f"{_interval(r['timeseries_gap_0'])}{mark['timeseries_gap_0']} | "
                     f"{_interval(r['timeseries_gap_100'])}{mark['timeseries_gap_100']} | {r['held_out']:.3f} | "
                     f"{r['autocorrelation']['lag1']:.3f} ({r['autocorrelation']['p_value']:.3f}) |")
    lines += ["", "✗: the held-out accuracy is outside that interval.", ""]
    if result.get("trainer"):
        t = result["trainer"]
        lines += [f"## The library end to end: KFoldTrainer, {t['model']} linear probe at {t['image_size']} px, "
                  f"{t['epochs']} epochs, `coordinate_columns=['x', 'y']`, `check_dependence=True`", "",
                  "| held-out band | random folds | spatial blocks (size) | held-out region: fold models / ensemble | "
                  "Moran's I (p) | seconds |", "|---|---|---|---|---|---:|"]
        for r in t["rows"]:
            held = r["held_out_fold_models"]
            marks = {k: "" if r[k]["ci95"][0] <= held <= r[k]["ci95"][1] else " ✗" for k in ("random", "spatial")}
            lines.append(f"| {r['band']} | {_interval(r['random'])}{marks['random']} | "
                         f"{_interval(r['spatial'])}{marks['spatial']} ({r['block_size']:g}) | {held:.3f} / "
                         f"{r['held_out_ensemble']:.3f} | {r['moran']['value']:.3f} ({r['moran']['p_value']:.3f}) | "
                         f"{r['seconds']:.0f} |")
        lines += ["", "What the run itself printed for each band:", ""] + [f"- band {r['band']}: {r['text']}"
                                                                          for r in t["rows"]] + [""]
    d = result["detector"]
    lines += ["## The detector's error rates", "",
              "| what | rate | simulations |", "|---|---:|---:|",
              f"| false alarms, photo residuals with shuffled coordinates | {d['false_alarm_photo']:.3f} | "
              f"{d['n_shuffles']} |",
              f"| false alarms, field residuals with shuffled coordinates | {d['false_alarm_field']:.3f} | "
              f"{d['n_shuffles']} |",
              f"| false alarms, independent binary errors at random positions (space) | "
              f"{d['null']['space_binary']:.3f} | {d['null']['n_sims']} |",
              f"| false alarms, independent continuous residuals at random positions (space) | "
              f"{d['null']['space_continuous']:.3f} | {d['null']['n_sims']} |",
              f"| false alarms, independent binary errors in random time order | {d['null']['time_binary']:.3f} | "
              f"{d['null']['n_sims']} |",
              f"| power, random-fold errors of independent random fields ({d['field_power']['learner']}) | "
              f"{d['field_power']['power']:.3f} (median I {d['field_power']['median_moran']:.3f}) | "
              f"{d['field_power']['n_fields']} |",
              f"| power, photo tiles (all bands and learners) | {d['power_photo']:.3f} | {d['n_photo']} |", ""]
    if d.get("power_curve"):
        lines += ["Detection rate against the strength of the unobserved field `g` (label `1[f1 + 0.5 f2 + s g > 0]`) "
                  "and the number of rows, 5-NN, random 5-fold; 'flattery': the random-fold mean minus the accuracy "
                  "of the model trained on the whole field on an independent field (the truth for new ground).", "",
                  "| rows | s | detected | flattery | fields |", "|---:|---:|---:|---:|---:|"]
        for c in d["power_curve"]:
            lines.append(f"| {c['rows']} | {c['latent']:g} | {c['detected']:.2f} | {c['flattery']:+.3f} | "
                         f"{c['n_fields']} |")
        lines.append("")
    if d.get("residual_power"):
        lines += ["The test alone against weak dependence: residuals `(1 - w) e + w g`, `e` independent, `g` a smooth "
                  "field (width 2 cells) on a grid.", "", "| rows | w | mean Moran's I | detected | simulations |",
                  "|---:|---:|---:|---:|---:|"]
        for c in d["residual_power"]:
            lines.append(f"| {c['rows']} | {c['weight']:g} | {c['mean_moran']:.3f} | {c['detected']:.2f} | "
                         f"{c['n_sims']} |")
        lines.append("")
    return "\n".join(lines)


def main(quick: bool = False, trainer_bands: tuple[int, ...] = (0, 2, 4, 6)) -> dict:
    start = time.time()
    photo = photo_tiles()
    field = random_field(0)
    result = {"quick": quick, "photo": spatial_table(photo, "photo", n_bands=2 if quick else 4),
              "field": spatial_table(field, "field", n_bands=2 if quick else 4)}
    result["field"]["truth"] = {name: field_truth(0, make) for name, make in _learners().items()}
    result["field"]["bayes"] = float(FIELD_BAYES)
    result["time"] = time_table()
    # The residuals the shuffles start from: random 5-fold, 5-NN, all rows.
    make = _learners()["5-NN"]
    n_shuffles = 40 if quick else 200
    residuals = {}
    for key, data in (("photo", photo), ("field", field)):
        folds = split_indices(len(data["labels"]), "stratified", N_FOLDS, labels=data["labels"])
        residuals[key] = cross_validate(make, data["features"], data["labels"], folds)["residual"]
    photo_rows = result["photo"]["rows"]
    result["detector"] = {
        "n_shuffles": n_shuffles,
        "false_alarm_photo": false_alarms(residuals["photo"], photo["xy"], n_shuffles),
        "false_alarm_field": false_alarms(residuals["field"], field["xy"], n_shuffles, seed=1),
        "null": simulated_null(100 if quick else 500),
        "field_power": field_power(10 if quick else 100),
        "power_curve": power_curve(5 if quick else 30),
        "residual_power": residual_power(20 if quick else 200),
        "power_photo": float(np.mean([r["moran"]["p_value"] < 0.05 for r in photo_rows])),
        "n_photo": len(photo_rows),
        "photo_all_rows": _moran(residuals["photo"], photo["xy"]),
    }
    if trainer_bands:
        result["trainer"] = trainer_table(photo, trainer_bands, epochs=2 if quick else 5)
    result["seconds"] = time.time() - start
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer bands and simulations: a check that it runs")
    parser.add_argument("--trainer_bands", default="0,2,4,6",
                        help="held-out bands of the KFoldTrainer part (comma-separated; empty: skip it)")
    args = parser.parse_args()
    out = main(quick=args.quick, trainer_bands=tuple(int(b) for b in args.trainer_bands.split(",") if b))
    name = "dependence_quick" if args.quick else "dependence"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1, default=float))
    (RESULTS / f"{name}.md").write_text(markdown(out))
    print(markdown(out))
