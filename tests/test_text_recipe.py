"""recipes/text_kfold.py: argument parsing and one short real run of the pretrained MiniLM on real text."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import load_recipe

pytestmark = pytest.mark.integration  # the embedded real models and data


def _recipe():
    return load_recipe("text_kfold")


def test_defaults_and_overrides():
    recipe = _recipe()
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[])
    assert (script_args.model_name_or_path, script_args.dataset_name) == ("builtin:minilm-l6",
                                                                         "builtin:movie-snippets")
    assert script_args.auto_group_column == "group" and config.finetune_strategy == "linear_probe"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--finetune_strategy", "lora", "--lora_target_modules", "query", "value", "--from_scratch",
        "--dataset_name", "builtin:trec", "--max_length", "32"])
    assert config.lora_target_modules == ["query", "value"] and script_args.from_scratch
    assert script_args.dataset_name == "builtin:trec" and config.max_length == 32


def test_short_real_run_groups_near_duplicates(tmp_path, capsys):
    recipe = _recipe()
    out = tmp_path / "run"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--max_samples", "60", "--n_folds", "2", "--num_train_epochs", "1", "--max_length", "32",
        "--finetune_strategy", "lora", "--output_dir", str(out), "--disable_tqdm", "true",
        "--save_fold_models", "false"])
    recipe.main(script_args, config)
    printed = capsys.readouterr().out
    assert "Grouped folds" in printed and "Summary over 2 folds" in printed
    saved = json.loads((out / "cv_results.json").read_text())
    assert saved["config"]["group_column"] == "group"
    assert saved["metadata"]["fold_strategy"] == "stratified_group"
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    assert len(oof) == 60 and oof["row"].is_unique
    assert np.allclose(oof.filter(like="prob_").sum(axis=1), 1.0)


def test_an_explicit_ungrouped_strategy_is_respected(tmp_path, capsys):
    recipe = _recipe()
    out = tmp_path / "run"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--max_samples", "40", "--n_folds", "2", "--num_train_epochs", "1", "--max_length", "16",
        "--fold_strategy", "stratified", "--output_dir", str(out), "--disable_tqdm", "true",
        "--save_fold_models", "false", "--eval_on_train", "false"])
    recipe.main(script_args, config)
    assert "Grouped folds" not in capsys.readouterr().out
    saved = json.loads((out / "cv_results.json").read_text())
    assert saved["metadata"]["fold_strategy"] == "stratified" and saved["config"]["group_column"] is None
