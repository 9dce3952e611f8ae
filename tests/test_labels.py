"""String labels, as every CSV and pandas dataset has them: encoded once into a ClassLabel (sorted names) before the
folds are cut, and the names carried into stratification, predictions, results, card, plots and the ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import image_dataset, load_recipe, make_config, tiny_model
from datasets import ClassLabel, Dataset, Value

from hf_tlcv import CVResults, KFoldEnsemble, KFoldTrainer
from hf_tlcv.data import encode_labels

NAMES = {0: "cat", 1: "ant", 2: "bird"}


def _string_labelled() -> Dataset:
    data = image_dataset()
    ids = np.asarray(data.with_format(None)["label"])
    return data.remove_columns("label").add_column("label", [NAMES[i] for i in ids])


def test_encode_labels():
    data = Dataset.from_dict({"x": [1, 2, 3, 4], "label": ["b", "a", "c", "a"]})
    encoded = encode_labels(data, "label")
    assert encoded.features["label"] == ClassLabel(names=["a", "b", "c"]) and encoded["label"] == [1, 0, 2, 0]
    flags = encode_labels(Dataset.from_dict({"label": [True, False, True]}), "label")
    assert flags.features["label"].names == ["false", "true"] and flags["label"] == [1, 0, 1]
    ints = Dataset.from_dict({"label": [3, 1, 2]})
    assert encode_labels(ints, "label") is ints  # integer labels without names keep working
    with pytest.raises(ValueError, match="1 missing label"):
        encode_labels(Dataset.from_dict({"label": ["a", None, "b"]}, features=None), "label")


def test_string_labels_train_with_their_names_everywhere(tmp_path):
    data = _string_labelled()
    assert data.features["label"] == Value("string")
    out = tmp_path / "cv"
    trainer = KFoldTrainer(tiny_model("vit"), make_config(out, n_folds=3, num_train_epochs=1, save_fold_models=True),
                           train_dataset=data)
    assert trainer.fold_strategy == "stratified"  # a ClassLabel now: auto stratifies
    results = trainer.cross_validate()
    assert results.label_names == ["ant", "bird", "cat"]  # sorted, stated
    oof = results.oof_predictions.sort_values("row")
    expected = [["ant", "bird", "cat"].index(NAMES[i]) for i in np.asarray(image_dataset()["label"])]
    assert oof["label"].tolist() == expected
    for fold in results.folds:  # stratified: every class in every eval fold
        assert set(fold.predictions["label"]) == {0, 1, 2}
    assert json.loads((out / "cv_results.json").read_text())["label_names"] == ["ant", "bird", "cat"]
    assert "Classes (3): ant, bird, cat" in (out / "README.md").read_text()
    assert CVResults.load(out).label_names == ["ant", "bird", "cat"]
    ensemble = KFoldEnsemble.from_pretrained(out)
    prediction = ensemble.predict(image_dataset().select(range(6)))
    assert prediction.labels == [["ant", "bird", "cat"][i] for i in prediction.probabilities.argmax(-1)]
    for fold in results.folds:  # each of the 6 rows, by the fold model that held it out: its saved probabilities
        index = ensemble.fold_names.index(f"fold_0_{fold.fold}")
        held_out = fold.predictions[fold.predictions["row"] < 6]
        np.testing.assert_allclose(prediction.fold_probabilities[index][held_out["row"].to_numpy()],
                                   held_out.filter(like="prob_").to_numpy(), atol=1e-6, rtol=0)
    assert sum((f.predictions["row"] < 6).sum() for f in results.folds) == 6
    # a held-out test set with string labels is mapped by name, whatever order its own labels come in
    test = _string_labelled().select(range(9))
    trainer = KFoldTrainer(tiny_model("vit"), make_config(tmp_path / "with_test", n_folds=3, num_train_epochs=1),
                           train_dataset=data, eval_dataset=test)
    fold = trainer.cross_validate().folds[0]
    assert fold.test_predictions["label"].tolist() == expected[:9]


@pytest.mark.integration  # a one-process recipe run (the embedded MiniLM)
def test_the_text_recipe_reads_a_csv_with_string_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = {"spam": ["win", "prize", "free", "cash", "now"], "ham": ["see", "you", "at", "lunch", "today"]}
    rows = []
    for i in range(40):
        label = "spam" if i % 2 else "ham"
        rows.append((" ".join(rng.choice(words[label], size=4)), label))
    csv = tmp_path / "texts.csv"
    csv.write_text("text,label\n" + "\n".join(f"{t},{label}" for t, label in rows) + "\n")
    recipe = load_recipe("text_kfold")
    out = tmp_path / "run"
    from hf_tlcv.recipe import cli

    assert cli(recipe.make_parser, ["--dataset_name", str(csv), "--max_samples", "0", "--n_folds", "2",
                                    "--num_train_epochs", "1", "--output_dir", str(out), "--disable_tqdm", "true",
                                    "--save_fold_models", "false"]) == 0
    saved = json.loads((out / "cv_results.json").read_text())
    assert saved["label_names"] == ["ham", "spam"] and len(saved["folds"]) == 2
    assert saved["metadata"]["data"]["name"] == str(csv)
    assert "Summary over 2 folds" in capsys.readouterr().out
