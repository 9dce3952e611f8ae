"""KFoldEnsemble: fold models rebuilt from a run's output_dir reproduce each fold's out-of-fold probabilities."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import transformers as tf
from conftest import IMAGE_SIZE, dataset_for, make_config, tiny_model
from safetensors.torch import load_file

from hf_tlcv import KFoldEnsemble, KFoldTrainer
from hf_tlcv.fold_models import FOLD_MODEL_INFO, TRAINABLE_WEIGHTS


def save_base(directory, name: str = "vit") -> str:
    """A tiny model saved as a pretrained folder with its processor, so runs can name it (`model_name_or_path`)."""
    tiny_model(name).save_pretrained(directory)
    if name == "bert":
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
        (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tf.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    else:
        processor = (tf.EfficientNetImageProcessor if name == "efficientnet" else tf.ViTImageProcessor)(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(autouse=True)
def no_full_gc(monkeypatch):
    """KFoldTrainer frees each fold's model with gc.collect(), ~0.6 s per call in a process holding torch and
    transformers: these tests check saved models and predictions, not memory release, so they skip it."""
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)


# (model, finetune_strategy, extra settings, fold model format expected); efficientnet + freeze has its own test.
CASES = {
    "vit-linear_probe": ("vit", "linear_probe", {}, "trainable"),
    "vit-lora": ("vit", "lora", {}, "adapter"),
    "bert-freeze": ("bert", "freeze", {"freeze_layers": 1}, "trainable"),
    "vit-full": ("vit", "full", {}, "full"),
}


def _check_reproduces_oof(ensemble, results, data, atol=1e-6):
    prediction = ensemble.predict(data)
    assert prediction.fold_probabilities.shape == (len(results.folds), len(data), 3)
    for fold in results.folds:
        index = ensemble.fold_names.index(f"fold_{fold.repeat}_{fold.fold}")
        rows = fold.predictions["row"].to_numpy()
        saved = fold.predictions.filter(like="prob_").to_numpy()
        np.testing.assert_allclose(prediction.fold_probabilities[index][rows], saved, atol=atol, rtol=0)
        assert (prediction.votes[index][rows] == fold.predictions["prediction"].to_numpy()).all()
    np.testing.assert_allclose(prediction.probabilities, prediction.fold_probabilities.mean(axis=0))
    assert (prediction.predictions == prediction.probabilities.argmax(-1)).all()
    return prediction


@pytest.mark.parametrize("case", list(CASES))
def test_ensemble_reproduces_each_fold_out_of_fold(case, tmp_path):
    name, strategy, extra, expected = CASES[case]
    base = save_base(tmp_path / "base", name)
    data = dataset_for(name)
    args = make_config(tmp_path / "cv", finetune_strategy=strategy, save_fold_models=True, n_folds=2, **extra)
    results = KFoldTrainer(base, args, train_dataset=data).cross_validate()

    for fold_dir in sorted((tmp_path / "cv").glob("fold_*")):
        info = json.loads((fold_dir / "model" / FOLD_MODEL_INFO).read_text())
        assert info["format"] == expected and info["base_model"] == base
    ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv")
    assert len(ensemble) == 2 and ensemble.label_names == ["c0", "c1", "c2"]
    _check_reproduces_oof(ensemble, results, data)


def test_freeze_saves_trained_parameters_and_their_batchnorm_statistics(tmp_path):
    """The unfrozen blocks' running statistics move during training: without them the fold model is not the one
    that was evaluated. Frozen blocks contribute nothing."""
    base = save_base(tmp_path / "base", "efficientnet")
    data = dataset_for("efficientnet")
    args = make_config(tmp_path / "cv", finetune_strategy="freeze", freeze_layers=2, save_fold_models=True,
                       n_folds=2)
    results = KFoldTrainer(base, args, train_dataset=data).cross_validate()
    _check_reproduces_oof(KFoldEnsemble.from_pretrained(tmp_path / "cv"), results, data)
    saved = load_file(tmp_path / "cv" / "fold_0_0" / "model" / TRAINABLE_WEIGHTS)
    assert "classifier.weight" in saved
    assert any(k.startswith("efficientnet.encoder.blocks.2.") and k.endswith("running_mean") for k in saved)
    assert not any(k.startswith(("efficientnet.embeddings.", "efficientnet.encoder.blocks.0.",
                                 "efficientnet.encoder.blocks.1.")) for k in saved)
    full = tiny_model("efficientnet").state_dict()
    moved = [k for k in saved if k.endswith("running_mean") and not np.allclose(saved[k].numpy(), full[k].numpy())]
    assert moved, "training should have moved the unfrozen blocks' batch-norm statistics"
    assert sum(v.numel() for v in saved.values()) < sum(v.numel() for v in full.values())


def test_built_model_without_a_base_saves_full_weights(tmp_path):
    """A model passed as an object (or from scratch) has no pretrained name to restore the frozen part from."""
    data = dataset_for("vit")
    args = make_config(tmp_path / "cv", finetune_strategy="linear_probe", save_fold_models=True, n_folds=2)
    results = KFoldTrainer(tiny_model("vit"), args, train_dataset=data).cross_validate()
    info = json.loads((tmp_path / "cv" / "fold_0_0" / "model" / FOLD_MODEL_INFO).read_text())
    assert info == {**info, "format": "full", "reason": "no pretrained base", "base_model": None}
    _check_reproduces_oof(KFoldEnsemble.from_pretrained(tmp_path / "cv"), results, data)


def test_ensemble_predicts_raw_text_and_says_when_there_are_no_models(tmp_path):
    base = save_base(tmp_path / "base", "bert")
    args = make_config(tmp_path / "cv", finetune_strategy="linear_probe", save_fold_models=True, n_folds=2,
                       num_train_epochs=1, max_length=8)
    KFoldTrainer(base, args, train_dataset=dataset_for("bert")).cross_validate()
    texts = ["w1 w2 w3", "w40 w41", "w50"]
    ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv")
    prediction = ensemble(texts)
    # recomputed here: each fold model on each text alone (tokenised as the run did, unpadded), then the mean
    import torch

    tokenizer = tf.AutoTokenizer.from_pretrained(base)
    with torch.no_grad():
        expected = np.stack([[torch.softmax(model(**tokenizer(t, truncation=True, max_length=8, return_tensors="pt"))
                                            .logits[0], -1).numpy() for t in texts] for model in ensemble.models])
    assert prediction.fold_names == ["fold_0_0", "fold_0_1"]
    np.testing.assert_allclose(prediction.fold_probabilities, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(prediction.probabilities, expected.mean(axis=0), atol=1e-5, rtol=0)
    assert prediction.votes.tolist() == expected.argmax(-1).tolist()
    assert prediction.labels == [["c0", "c1", "c2"][i] for i in expected.mean(axis=0).argmax(-1)]
    assert prediction.agreement.tolist() == (expected.argmax(-1) == expected.mean(axis=0).argmax(-1)).mean(0).tolist()

    args = make_config(tmp_path / "none", finetune_strategy="linear_probe", n_folds=2, num_train_epochs=1)
    KFoldTrainer(base, args, train_dataset=dataset_for("bert")).cross_validate()
    with pytest.raises(FileNotFoundError, match="no fold models"):
        KFoldEnsemble.from_pretrained(tmp_path / "none")


def _raw_texts(n: int = 24):
    """Texts of 1 to 6 words of the tiny tokenizer's vocabulary, so that every batch is padded differently."""
    from datasets import ClassLabel, Dataset

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    texts = [" ".join(f"w{5 + 15 * c + int(rng.integers(0, 15))}" for _ in range(1 + i % 6))
             for i, c in enumerate(labels)]
    return Dataset.from_dict({"text": texts, "label": labels}).cast_column("label",
                                                                          ClassLabel(names=["c0", "c1", "c2"]))


def _count_calls(module, counter: list):
    return module.register_forward_hook(lambda *_: counter.append(1))


# (model, finetune_strategy, extra settings, a layer inside the frozen part: it runs only when the part does)
SHARED = {
    "vit-linear_probe": ("vit", "linear_probe", {}, "vit.embeddings.patch_embeddings"),
    "efficientnet-freeze": ("efficientnet", "freeze", {"freeze_layers": 2}, "efficientnet.embeddings.convolution"),
    "bert-freeze-padded-text": ("bert", "freeze", {"freeze_layers": 1, "max_length": 8},
                                "bert.embeddings.word_embeddings"),
    "bert-linear_probe-padded-text": ("bert", "linear_probe", {"max_length": 8}, "bert.embeddings.word_embeddings"),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.integration) if c.startswith("efficientnet")
                                  else c for c in SHARED])  # EfficientNet's BatchNorm: the heaviest tiny model
def test_the_frozen_part_runs_once_for_all_fold_models_with_the_same_predictions(case, tmp_path):
    name, strategy, extra, first_frozen = SHARED[case]
    base = save_base(tmp_path / "base", name)
    data = _raw_texts() if name == "bert" else dataset_for(name)
    args = make_config(tmp_path / "cv", finetune_strategy=strategy, save_fold_models=True, n_folds=3, **extra)
    results = KFoldTrainer(base, args, train_dataset=data).cross_validate()
    ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv")

    calls = [[] for _ in ensemble.models]
    hooks = [_count_calls(m.get_submodule(first_frozen), c) for m, c in zip(ensemble.models, calls)]
    inputs = list(data["text"]) if name == "bert" else data
    shared = ensemble.predict(inputs, batch_size=8)
    once = [len(c) for c in calls]
    for c in calls:
        c.clear()
    whole = ensemble.predict(inputs, batch_size=8, share_frozen=False)
    every = [len(c) for c in calls]
    for hook in hooks:
        hook.remove()

    batches = -(-len(data) // 8)
    assert every == [batches] * 3  # each fold model ran its own copy of the frozen part
    assert once[1:] == [0, 0] and batches <= once[0] <= batches + 1  # once in all (+ the cache's exactness check)
    np.testing.assert_allclose(shared.fold_probabilities, whole.fold_probabilities, atol=1e-6, rtol=0)
    assert (shared.predictions == whole.predictions).all()
    if name != "bert":  # rows in the run's order: the fold models reproduce their out-of-fold probabilities
        _check_reproduces_oof(ensemble, results, data)


def test_fold_models_whose_frozen_parts_differ_are_run_whole(tmp_path):
    base = save_base(tmp_path / "base", "vit")
    data = dataset_for("vit")
    args = make_config(tmp_path / "cv", finetune_strategy="linear_probe", save_fold_models=True, n_folds=2)
    KFoldTrainer(base, args, train_dataset=data).cross_validate()
    ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv")
    import torch

    with torch.no_grad():
        ensemble.models[1].vit.embeddings.patch_embeddings.projection.weight.mul_(1.5)
    calls = []
    hook = _count_calls(ensemble.models[1].vit.embeddings.patch_embeddings, calls)
    shared = ensemble.predict(data, batch_size=8)
    hook.remove()
    assert len(calls) == -(-len(data) // 8)  # not shared: model 1 ran its own (different) frozen part
    np.testing.assert_allclose(shared.fold_probabilities, ensemble.predict(data, share_frozen=False).fold_probabilities,
                               atol=1e-6, rtol=0)
