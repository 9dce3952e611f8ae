"""The figures of a cross-validation run (`output_dir/plots/`), drawn on matplotlib `Figure` objects (no pyplot, the
caller's backend untouched), each bounded in size whatever the number of classes or folds.

- `cv`: the figures and [`save_plots`]; studies, searches and audits draw theirs with `bounded_figure` and `literal`;
- `callback`: [`PlotsCallback`], which draws them at the end of a cross-validation.

The names load on first use (PEP 562), so registering the callback does not import matplotlib. A feature on top of
the core: it reaches `hf_tlcv` only through the core's public API (docs/concepts.md).
"""

from __future__ import annotations

from .._imports import lazy_names

_NAMES = {name: ".cv" for name in (
    "PLOT_FILES", "bounded_figure", "confusion_counts", "literal", "plot_confusion_matrix", "plot_fold_scores",
    "plot_per_class_f1", "plot_train_vs_eval", "save_plots", "short_label")}
_NAMES["PlotsCallback"] = ".callback"

__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_names(__name__, _NAMES)
