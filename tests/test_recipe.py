"""recipes/vit_kfold.py: argument parsing, one short real run, and the offline error for Hub ids."""

from __future__ import annotations

import json

import pytest
from conftest import load_recipe

from hf_tlcv.assets import HubUnreachableError


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("vit_kfold")


def test_no_arguments_is_the_embedded_default(recipe):
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[])
    assert script_args.model_name_or_path == "builtin:efficientnet-lite0"
    assert script_args.dataset_name == "builtin:animal-mnist"
    assert config.n_folds == 5 and config.finetune_strategy == "linear_probe"
    assert config.image_size == recipe.RECIPE_DEFAULTS["image_size"]


def test_user_arguments_override_the_defaults(recipe):
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--model_name_or_path", "google/vit-base-patch16-224-in21k", "--dataset_name", "beans",
        "--finetune_strategy", "freeze", "--freeze_layers", "8", "--n_folds", "10", "--max_samples", "0",
        "--learning_rate", "2e-5", "--output_dir", "somewhere",
    ])
    assert script_args.dataset_name == "beans" and script_args.max_samples == 0
    assert (config.finetune_strategy, config.freeze_layers, config.n_folds) == ("freeze", 8, 10)
    assert config.learning_rate == 2e-5 and config.output_dir == "somewhere"


@pytest.mark.integration
def test_short_real_run(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--dataset_name", "builtin:digits", "--max_samples", "60", "--n_folds", "2", "--num_train_epochs", "1",
        "--image_size", "32", "--output_dir", str(out), "--disable_tqdm", "true", "--save_fold_models", "false",
    ])
    recipe.main(script_args, config)
    printed = capsys.readouterr().out
    assert "Summary over 2 folds" in printed and "accuracy" in printed
    saved = json.loads((out / "cv_results.json").read_text())
    assert len(saved["folds"]) == 2
    assert saved["config"]["model_name_or_path"] == "builtin:efficientnet-lite0"
    # the subset is stratified: 60 of 1,797 digits, 6 of each class
    assert sum(f["n_eval"] for f in saved["folds"]) == 60


@pytest.mark.integration  # the other argument stays the embedded default (builtin:animal-mnist, builtin:efficientnet-lite0)
@pytest.mark.parametrize("flag, value", [("--model_name_or_path", "google/vit-base-patch16-224-in21k"),
                                         ("--dataset_name", "beans")])
def test_hub_id_offline_names_the_builtin_options(recipe, tmp_path, monkeypatch, flag, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(
        args=[flag, value, "--output_dir", str(tmp_path / "x"), "--max_samples", "60"])
    with pytest.raises(HubUnreachableError, match="builtin:") as info:
        recipe.main(script_args, config)
    assert value in str(info.value)
