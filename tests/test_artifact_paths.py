"""No artifact names the machine that wrote it: every file of a run, an audit, a study, a search and a push names paths
relative to its folder, or a source as the user named it (issue 24, "Artifacts without server paths").

The runs (tests/scripts/artifact_runs.py: the builtin model on builtin data, as the Space runs them) go in a
subprocess whose HOME, HF_HOME and XDG_CACHE_HOME are folders of this test: the builtin assets, `datasets`' cache
files and the frozen-feature caches are made there, so the test knows every folder that must not appear.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from artifact_paths import server_paths_in
from conftest import image_dataset, make_config, subprocess_env, tiny_model
from transformers import TrainerCallback

from hf_tlcv import CVResults, KFoldEnsemble, KFoldTrainer
from hf_tlcv.data import describe_dataset
from hf_tlcv.studies.report import StudyReport
from hf_tlcv.sources import source_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "artifact_runs.py"


def test_the_search_finds_a_root_in_every_kind_of_file_and_in_a_zip(tmp_path):
    import pandas as pd

    root = tmp_path / "server"
    run = tmp_path / "run"
    (run / "fold_0_0").mkdir(parents=True)
    (run / "cv_results.json").write_text(json.dumps({"config": {"output_dir": str(root / "run-1")}}))
    (run / "README.md").write_text(f"Trained on `{root}/.cache/data.arrow`.\n")
    pd.DataFrame({"file": [f"{root}/a.png", "b.png"]}).to_parquet(run / "fold_0_0" / "predictions.parquet")
    (run / "clean.md").write_text("Trained on `builtin:animal-mnist`; trials in `trials/0`.\n")
    found = server_paths_in(run, [root])
    assert sorted(line.split(":")[0] for line in found) == [
        "README.md", "cv_results.json", "fold_0_0/predictions.parquet (column 'file' row 0)"]
    with zipfile.ZipFile(tmp_path / "run.zip", "w") as archive:
        for path in run.rglob("*"):
            archive.write(path, path.relative_to(run).as_posix())
    assert sorted(server_paths_in(tmp_path / "run.zip", [root])) == sorted(found)
    assert server_paths_in(run, [tmp_path / "elsewhere"]) == []
    assert server_paths_in(run, ["/", ""]) == []  # never "every absolute path"


def test_a_builtin_dataset_is_recorded_by_its_name_and_its_fingerprint_not_by_the_cache_it_is_read_from(
        tmp_path, monkeypatch):
    import shutil

    from hf_tlcv.assets import load_dataset
    from hf_tlcv.assets.datasets import builtin_dataset_folder
    from hf_tlcv.data import subsample

    def row_sets(digits):
        return (digits, subsample(digits, 50, "label"), digits.shuffle(seed=0).select(range(20)))

    records = [describe_dataset(rows) for rows in row_sets(load_dataset("builtin:digits"))]
    for record in records:
        assert record["name"] == "builtin:digits" and record["data_files"] == []
    assert len({r["fingerprint"] for r in records}) == 3
    # The same rows read from another cache folder (another machine, another $HF_TLCV_CACHE) are the same data.
    shutil.copytree(builtin_dataset_folder("digits"), builtin_dataset_folder("digits", tmp_path))
    monkeypatch.setenv("HF_TLCV_CACHE", str(tmp_path))
    moved = load_dataset("builtin:digits")
    assert moved.cache_files[0]["filename"].startswith(str(tmp_path))
    assert [describe_dataset(rows) for rows in row_sets(moved)] == records
    assert describe_dataset(image_dataset())["name"] is None  # rows built in code have no source


def test_a_local_model_folder_is_named_where_it_came_from(tmp_path):
    from hf_tlcv.assets import builtin_model_path

    lite0 = builtin_model_path("builtin:efficientnet-lite0")
    assert source_name(lite0) == source_name(f"{lite0}/config.json") == "builtin:efficientnet-lite0"
    snapshot = tmp_path / "hub" / "models--google--vit-base-patch16-224" / "snapshots" / "0a1b2c"
    assert source_name(snapshot) == "google/vit-base-patch16-224"
    assert source_name(tmp_path / "hub" / "models--gpt2" / "snapshots" / "0a1b2c") == "gpt2"
    # anything else as it was given: a Hub id, a source's name, a folder the user chose
    for name in ("google/vit-base-patch16-224", "builtin:minilm-l6", str(tmp_path), "my_model"):
        assert source_name(name) == name


def test_a_moved_folder_of_the_previous_format_loads_and_resumes(tmp_path):
    """Folders written before the settings dropped `output_dir` record the absolute path where they ran."""
    first = tmp_path / "first"
    args = make_config(first, n_folds=2, num_train_epochs=1, finetune_strategy="linear_probe")
    KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset()).cross_validate()
    saved = json.loads((first / "cv_results.json").read_text())
    assert "output_dir" not in saved["config"] and saved["config"]["finetune_strategy"] == "linear_probe"
    saved["config"]["output_dir"] = str(first)  # as the previous version wrote it
    (first / "cv_results.json").write_text(json.dumps(saved))
    moved = shutil.move(first, tmp_path / "moved")
    assert CVResults.load(moved).config["output_dir"] == str(first)
    starts = []
    resumed = KFoldTrainer(tiny_model("vit"), make_config(moved, n_folds=2, num_train_epochs=1,
                                                          finetune_strategy="linear_probe"),
                           train_dataset=image_dataset(), callbacks=[_Starts(starts)]).cross_validate()
    assert starts == [] and len(resumed.folds) == 2  # nothing trained again
    assert "output_dir" not in json.loads((Path(moved) / "cv_results.json").read_text())["config"]


class _Starts(TrainerCallback):
    def __init__(self, starts: list):
        self.starts = starts

    def on_train_begin(self, args, state, control, **kwargs):
        self.starts.append(args.output_dir)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The output folders of a cross-validation (with fold models), its audit and grouped rerun, a study and a
    search, made with HOME and the caches in known folders; and those folders."""
    base = tmp_path_factory.mktemp("artifacts")
    home, hf_home, xdg = base / "home", base / "hf_home", base / "xdg_cache"
    env = {k: v for k, v in subprocess_env().items()
           if k not in ("HF_TLCV_CACHE", "HF_TLCV_FEATURE_CACHE", "HF_DATASETS_CACHE", "HF_HUB_CACHE")}
    env.update(HOME=str(home), HF_HOME=str(hf_home), XDG_CACHE_HOME=str(xdg), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output_dir", str(base / "out")], cwd=base, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base / "out", [base, home, hf_home, xdg]


@pytest.mark.integration
def test_no_artifact_names_the_machine_that_wrote_it(artifacts, local_hub, tmp_path):
    out, roots = artifacts
    # the caches were where the test put them, so their absence from the artifacts means something
    assert (roots[1] / ".cache" / "hf_tlcv" / "datasets" / "animal-mnist").is_dir()
    assert {p.name for p in out.iterdir()} == {"cv", "cv-grouped", "study", "search"}
    assert (out / "cv" / "audit.json").is_file() and (out / "search" / "trials" / "0" / "cv_results.json").is_file()
    # what a push sends (its card is rendered again for the Hub)
    CVResults.load(out / "cv").push_to_hub("me/run", token="hf_TESTtokenDoNotLeak0123456789")
    pushed = tmp_path / "pushed"
    for name, data in local_hub.files("me/run").items():
        (pushed / name).parent.mkdir(parents=True, exist_ok=True)
        (pushed / name).write_bytes(data)
    assert (pushed / "README.md").is_file()
    leaks = server_paths_in(out, roots) + [f"pushed {line}" for line in server_paths_in(pushed, roots)]
    assert not leaks, "\n".join(leaks)

    # the sources as the user named them
    results = CVResults.load(out / "cv")
    assert results.config["model_name_or_path"] == "builtin:efficientnet-lite0"
    assert results.metadata["model"]["name_or_path"] == "builtin:efficientnet-lite0"
    assert results.metadata["data"]["name"] == "builtin:animal-mnist"
    assert "`builtin:animal-mnist`" in (out / "cv" / "README.md").read_text()
    assert "output_dir" not in results.config
    # the folders read back, moved or not: a study's variants, a fold ensemble from the saved fold models
    report = StudyReport.load(out / "study")
    assert {"pretrained", "scratch"} <= set(report.variants)
    assert "output_dir" not in report.variants["pretrained"].config
    moved = shutil.copytree(out / "cv", tmp_path / "moved")
    assert len(KFoldEnsemble.from_pretrained(moved)) == 3
