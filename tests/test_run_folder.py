"""The run folder a colleague opens: readable files (umask), what data and model were used, a README with the
results, a format version, and resuming across versions (unknown settings and fields, the previous format)."""

from __future__ import annotations

import json
import os
import stat
import warnings

import pytest
from conftest import image_dataset, make_config, tiny_model

from hf_tlcv import CVResults, KFoldTrainer
from hf_tlcv.run_dir import FORMAT_VERSION, atomic_path
from hf_tlcv.sources import load_data


class Starts:
    def __init__(self):
        self.n = 0

    def on_train_begin(self, *args, **kwargs):
        self.n += 1

    def __getattr__(self, name):  # every other TrainerCallback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _run(out, callbacks=(), **overrides):
    args = make_config(out, n_folds=2, num_train_epochs=1, **overrides)
    return KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset(), callbacks=list(callbacks))


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "cv"
    _run(out, finetune_strategy="linear_probe").cross_validate()
    return out


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
        assert stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode) == 0o644
        out = tmp_path / "cv"
        _run(out, finetune_strategy="linear_probe", save_fold_models=True).cross_validate()
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044, path  # group and others can read


def test_results_record_the_data_and_model_and_the_folder_has_a_readme(tmp_path):
    csv = tmp_path / "rows.csv"
    data = image_dataset()
    csv.write_text("x,label\n" + "\n".join(f"{i},{'abc'[label]}" for i, label in enumerate(data["label"])))
    loaded = load_data(str(csv))
    raw = data.add_column("source_row", loaded["x"])
    out = tmp_path / "cv"
    raw.info.dataset_name = str(csv)
    results = KFoldTrainer(tiny_model("vit"), make_config(out, n_folds=2, num_train_epochs=1),
                           train_dataset=raw).cross_validate()
    saved = json.loads((out / "cv_results.json").read_text())
    assert saved["format_version"] == FORMAT_VERSION
    data_record = saved["metadata"]["data"]
    assert data_record["name"] == str(csv) and data_record["n_rows"] == len(raw) and data_record["fingerprint"]
    model = saved["metadata"]["model"]
    assert model["class"] == "ViTForImageClassification" and len(model["fingerprint"]) == 64
    assert saved["metadata"]["processes"] == {"world_size": 1, "fold_processes": 1, "parallel_folds": False,
                                              "global_train_batch_size": 8}
    readme = (out / "README.md").read_text()
    # a person reads the fold table and the summary there, with the numbers of cv_results.json
    assert "| repeat | fold | n_train | n_eval |" in readme and "2 folds (2-fold x 1 repeat(s)); 1 process" in readme
    assert f"{results.summary['accuracy']['mean']:.4f}" in readme and str(csv) in readme


def test_an_unknown_setting_and_unknown_fields_load_and_resume(finished):
    folds_path = finished / "folds.json"
    payload = json.loads(folds_path.read_text())
    payload["config"]["setting_from_the_future"] = 3  # written by a newer version
    folds_path.write_text(json.dumps(payload))
    fold_file = finished / "fold_0_0" / "fold_result.json"
    fold = json.loads(fold_file.read_text())
    fold["field_from_the_future"] = {"x": 1}
    fold_file.write_text(json.dumps(fold))
    results_file = finished / "cv_results.json"
    saved = json.loads(results_file.read_text())
    saved["folds"][0]["field_from_the_future"] = 1
    results_file.write_text(json.dumps(saved))

    with pytest.warns(UserWarning, match="field_from_the_future"):
        CVResults.load(finished)
    starts = Starts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = _run(finished, [starts], finetune_strategy="linear_probe").cross_validate()
    assert starts.n == 0 and len(resumed.folds) == 2  # nothing trained again


def test_a_folder_of_the_previous_format_resumes(finished):
    """hf_tlcv 0.1 wrote no format_version, another data fingerprint, no process layout and no test fields."""
    folds_path = finished / "folds.json"
    payload = json.loads(folds_path.read_text())
    for key in ("format_version", "processes"):
        payload.pop(key)
    payload["data_fingerprint"] = "0123456789abcdef"  # Dataset._fingerprint, not comparable
    payload["config"].pop("eval_strategy")  # a setting recorded under another rule: missing means its default
    folds_path.write_text(json.dumps(payload))
    for fold_file in finished.glob("fold_*/fold_result.json"):
        fold = json.loads(fold_file.read_text())
        for key in ("format_version", "test_metrics"):
            fold.pop(key)
        fold_file.write_text(json.dumps(fold))
    starts = Starts()
    resumed = _run(finished, [starts], finetune_strategy="linear_probe").cross_validate()
    assert starts.n == 0 and [f.test_metrics for f in resumed.folds] == [{}, {}]
    # a real change is still refused
    with pytest.raises(ValueError, match="config.learning_rate"):
        _run(finished, finetune_strategy="linear_probe", learning_rate=1.0).cross_validate()


def test_a_run_resumes_on_its_rows_stored_elsewhere_and_on_the_fingerprint_earlier_versions_recorded(tmp_path):
    """The data fingerprint is of the rows, not of where they are stored: the same rows read from another folder
    (another cache, another machine) resume the run. hf_tlcv 0.4 recorded datasets' Hasher, which hashes a
    memory-mapped dataset by its files' paths; such a folder resumes where its rows are stored as it recorded."""
    import shutil

    from datasets import load_from_disk
    from datasets.fingerprint import Hasher

    image_dataset().save_to_disk(str(tmp_path / "here"))
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    here, there = load_from_disk(str(tmp_path / "here")), load_from_disk(str(tmp_path / "there"))
    assert Hasher.hash(here) != Hasher.hash(there)  # what made the resume fail

    def run(rows, callbacks=()):
        args = make_config(tmp_path / "cv", n_folds=2, num_train_epochs=1, finetune_strategy="linear_probe")
        return KFoldTrainer(tiny_model("vit"), args, train_dataset=rows, callbacks=list(callbacks)).cross_validate()

    first = run(here)
    starts = Starts()
    assert run(there, [starts]).folds[0].eval_metrics == first.folds[0].eval_metrics and starts.n == 0
    folds_path = tmp_path / "cv" / "folds.json"
    payload = json.loads(folds_path.read_text())
    payload["data_fingerprint"] = Hasher.hash(there)  # as hf_tlcv 0.4 recorded it
    folds_path.write_text(json.dumps(payload))
    assert run(there, [starts]).folds[0].eval_metrics == first.folds[0].eval_metrics and starts.n == 0
    # other rows (the same rows in another order) are still refused
    with pytest.raises(ValueError, match="data_fingerprint changed"):
        run(there.select(list(range(len(there)))[::-1]))


def test_a_run_is_not_resumed_under_another_process_layout(finished):
    folds_path = finished / "folds.json"
    payload = json.loads(folds_path.read_text())
    payload["processes"] = {"fold_processes": 2, "global_train_batch_size": 16}  # as written by a 2-process DDP run
    folds_path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"processes changed.*number of processes per fold"):
        _run(finished, finetune_strategy="linear_probe").cross_validate()
