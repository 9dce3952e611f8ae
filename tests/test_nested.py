"""Nested cross-validation: the selection never sees its outer eval rows, and the outer scores it reports are the
selected variant's scores on those rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import image_dataset, make_config, tiny_model

from hf_tlcv import KFoldTrainer, TransferStudy
from hf_tlcv.folds import load_folds


@pytest.mark.integration  # a study inside each of the outer folds: the suite's heaviest in-process run
def test_nested_selection_never_sees_its_outer_eval_rows(tmp_path, monkeypatch):
    data = image_dataset(n_per_class=8)
    data = data.add_column("uid", list(range(1000, 1000 + len(data))))  # row identity that survives select()
    seen = []  # (output_dir, uids) of every KFoldTrainer: a superset of every row it trained or evaluated on
    original_init = KFoldTrainer.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        seen.append((str(self.args.output_dir), {int(u) for u in self.raw_dataset.with_format(None)["uid"]}))

    monkeypatch.setattr(KFoldTrainer, "__init__", recording_init)
    # the inner runs' own cross-validation plots are not under test
    monkeypatch.setattr("hf_tlcv.plots.cv.save_plots", lambda results, directory: {})
    args = make_config(tmp_path, n_folds=3, num_train_epochs=1)
    study = TransferStudy(tiny_model("vit", seed=1), data, args, nested=True, inner_folds=2,
                          variants={"slow": {"learning_rate": 1e-3}, "fast": {"learning_rate": 2e-2}})
    report = study.run()

    outer_folds, _ = load_folds(tmp_path / "slow" / "folds.json")
    uid = np.asarray(data.with_format(None)["uid"])
    nested = report.nested["custom"]
    assert [row["fold"] for row in nested["outer_folds"]] == [f.name for f in outer_folds]
    for fold, row in zip(outer_folds, nested["outer_folds"]):
        inner = [rows for out, rows in seen if f"/nested/custom/{fold.name}/" in out]
        assert len(inner) == 2  # one inner cross-validation per candidate
        for rows in inner:
            assert rows.isdisjoint(uid[fold.eval_indices])  # the selection never saw the outer eval rows
            assert rows == set(uid[fold.train_indices])  # and it used every outer-train row
        # selected by the inner means; scored by the selected variant on this outer fold's eval rows
        assert row["selected"] == max(row["inner_means"], key=row["inner_means"].get)
        outer = next(f for f in report.variants[row["selected"]].folds if (f.repeat, f.fold) == (0, fold.fold))
        assert row["outer_score"] == outer.eval_metrics["accuracy"]
        assert row["n_eval"] == len(fold.eval_indices)
    scores = [row["outer_score"] for row in nested["outer_folds"]]
    assert nested["estimate"]["mean"] == pytest.approx(np.mean(scores))
    assert nested["naive_mean"] == max(report.variants[n].summary["accuracy"]["mean"] for n in ("slow", "fast"))
    # the selection's verdict leads with the nested estimate: the winner's own mean is optimistic
    assert report.verdict("custom").text.startswith(
        f"Choosing the best of 2 variants and training it scores accuracy {nested['estimate']['mean']:.3f} (nested")
    assert nested["estimate"]["ci_method"] == "corrected_wilson"
    verdict = report.verdict("custom (nested)")
    assert "2-fold inner CV on each outer-train part" in verdict.text
    assert f"{nested['estimate']['mean']:.3f}" in verdict.text
    assert "nested cross-validation" in (tmp_path / "report.md").read_text()
